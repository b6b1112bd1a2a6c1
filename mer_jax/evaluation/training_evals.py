"""Evaluators that run during training, declared in the config as `config.evals.<name>`.

Contract with `train.py`: for each entry, `EVALUATORS[name](**fields)` (every field but
`every_steps`, names unchanged) is built once; at every multiple of `every_steps` and at the last
step `run(model, workdir)` gets the current weights as an `export.ExportedModel` (host variables,
`model.config` the training config) and returns flat scalars {key: float}, which train.py writes to
TensorBoard as `<name>/<key>`. Each scores the trained encoder beside its raw-Lab floor
(docs/method.md, 'Benchmarks'). Every process evaluates on its own devices, with no collective;
only process 0 writes files.
"""

import json
import os
from typing import Any, Mapping

import jax

from mer_jax import export
from mer_jax.data import synthetic_video
from mer_jax.evaluation import davis, features, protocol, synthetic, vos


def _presets(preset: str, presets: Mapping[str, Mapping[str, Any]], lab_temperature: float) -> dict:
    """{encoder: Preset} of the chosen preset for the trained and the lab encoder."""
    if preset not in presets:
        raise ValueError(f"preset must be one of {sorted(presets)}, got {preset!r}")
    return {name: protocol.make_preset(presets[preset], name, lab_temperature) for name in features.ENCODERS}


def _encoders(model: export.ExportedModel, feature_batch: int) -> dict[str, vos.FrameEncoder]:
    """The trained encoder and the raw-Lab baseline with the training run's Lab normalisation."""
    data = model.config.data
    return {
        "trained": features.TrainedEncoder(model, batch=feature_batch),
        "lab": features.LabEncoder(data.lab_mean, data.lab_std),
    }


def _flatten(results: dict[str, dict[str, float]]) -> dict[str, float]:
    """{encoder: {key: value}} -> {"<encoder>/<key>": float(value)}."""
    return {f"{encoder}/{key}": float(value) for encoder, scores in results.items() for key, value in scores.items()}


class SyntheticEvaluator:
    """J&F on held-out procedural videos at the training image size (`synthetic.evaluate`).

    Writes `workdir/eval_results.json` = {"trained": {"J&F-Mean", "J-Mean", "F-Mean", "objects"},
    "lab": {...}} and prints the two J&F-Means.

    Args:
      num_videos, num_frames, num_objects: the held-out videos (`synthetic_video.generate_videos`).
      seed: their seed (distinct from the training seed: held out).
      preset: the propagation preset's name in `presets`.
      presets: {name: Preset fields} (configs/propagation.py).
      lab_temperature: the lab encoder's temperature (`protocol.make_preset`).
      feature_batch: frames the trained encoder embeds at a time.
    """

    def __init__(
        self,
        *,
        num_videos: int,
        num_frames: int,
        num_objects: int,
        seed: int,
        preset: str,
        presets: Mapping[str, Mapping[str, Any]],
        lab_temperature: float,
        feature_batch: int,
    ):
        self.num_videos, self.num_frames, self.num_objects, self.seed = num_videos, num_frames, num_objects, seed
        self.preset, self.feature_batch = preset, feature_batch
        self.presets = _presets(preset, presets, lab_temperature)

    def videos(self, image_size: int, flow_gap: int) -> list[synthetic_video.SyntheticVideo]:
        """The held-out videos at the training image size, with flow to the frame `flow_gap` before."""
        return synthetic_video.generate_videos(
            self.seed, self.num_videos, num_frames=self.num_frames, height=image_size, width=image_size,
            num_objects=self.num_objects, flow_gap=flow_gap,
        )  # fmt: skip

    def run(self, model: export.ExportedModel, workdir: str) -> dict[str, float]:
        """Scores both encoders; returns {"trained/J&F-Mean": ..., "lab/J&F-Mean": ..., ...}."""
        videos = self.videos(model.config.data.image_size, model.config.data.flow_gap)
        encoders = _encoders(model, self.feature_batch)
        results = {name: synthetic.evaluate(encoders[name], self.presets[name], videos) for name in features.ENCODERS}
        if jax.process_index() == 0:
            with open(os.path.join(workdir, "eval_results.json"), "w") as f:
                json.dump(results, f, indent=2)
            print(
                f"Held-out J&F-Mean ({len(videos)} procedural videos, preset {self.preset}): "
                f"trained {results['trained']['J&F-Mean']:.4f}, lab baseline {results['lab']['J&F-Mean']:.4f}"
            )
        return _flatten(results)


class DavisEvaluator:
    """DAVIS J&F (`davis.Evaluator`) of the trained encoder and of raw Lab, on process 0.

    Results go to `workdir/eval_davis/{trained,lab}` (overwritten at each run, no overlays); the
    lab baseline does not change with training and is computed at the first run only.

    Args:
      davis_root, year, subset, sequences: as `davis.Evaluator`.
      preset, presets, lab_temperature, feature_batch: as `SyntheticEvaluator`.
    """

    def __init__(
        self,
        *,
        davis_root: str | None,
        year: str,
        subset: str,
        sequences: str | None,
        preset: str,
        presets: Mapping[str, Mapping[str, Any]],
        lab_temperature: float,
        feature_batch: int,
    ):
        self.evaluator = davis.Evaluator(
            davis_root=davis_root, year=year, subset=subset, sequences=sequences, save_overlays=False
        )
        self.presets, self.feature_batch = _presets(preset, presets, lab_temperature), feature_batch
        self._lab: dict[str, float] | None = None

    def run(self, model: export.ExportedModel, workdir: str) -> dict[str, float]:
        """Scores the trained encoder (and raw Lab, once); returns {"trained/J&F-Mean": ..., ...}
        on process 0 and {} on the others."""
        if jax.process_index() != 0:
            return {}
        encoders = _encoders(model, self.feature_batch)
        output = os.path.join(workdir, "eval_davis")
        if self._lab is None:
            self._lab = self.evaluator.run(encoders["lab"], self.presets["lab"], os.path.join(output, "lab"))
        trained = self.evaluator.run(encoders["trained"], self.presets["trained"], os.path.join(output, "trained"))
        return _flatten({"trained": trained, "lab": self._lab})


EVALUATORS = {"synthetic": SyntheticEvaluator, "davis": DavisEvaluator}
