"""Evaluators that run during training, declared in the config as `config.evals.<name>`.

Contract with `train.py`: for each entry, `EVALUATORS[name](**fields)` (every field but
`every_steps` and `at_end`, names unchanged) is built once; at every multiple of `every_steps` and
at the last step `run(model, workdir)` gets the current weights as an `export.ExportedModel` (host
variables, `model.config` the training config) and returns flat scalars {key: float}, which
train.py writes to TensorBoard as `<name>/<key>`. Each scores the trained encoder (`trained`), its
VEN-refined queries when the model has a VEN (`trained_ven`, `eval.use_ven`), and the two floors
(`floors/copy`, `floors/lab`: `floors.py`), which do not change with training and are scored at
the first run only (docs/method.md, 'Benchmarks'). The synthetic evaluator runs whole on every
process, with no collective; the DAVIS one splits its sequences over every device of the run
(`video_shards`). Only process 0 writes the merged files and prints.
"""

import json
import math
import os
from typing import Any, Mapping

import jax

from mer_jax import export
from mer_jax.data import synthetic_video
from mer_jax.evaluation import davis, features, floors, protocol, reports, synthetic, vos
from mer_jax.models import encoder as encoder_lib


def _model_encoders(
    model: export.ExportedModel, feature_batch: int, score_ven: bool = True
) -> dict[str, vos.FrameEncoder]:
    """{"trained": encoder features, "trained_ven": VEN-refined queries (models with a VEN, with score_ven)}."""
    encoders = {"trained": features.TrainedEncoder(model, batch=feature_batch)}
    if model.model.use_ven and score_ven:
        encoders["trained_ven"] = features.TrainedEncoder(model, batch=feature_batch, use_ven=True)
    return encoders


def _flatten(results: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested {name: {key: number}} -> {"<name>/<key>": float}, leaving out per-object lists."""
    flat = {}
    for key, value in results.items():
        if isinstance(value, Mapping):
            if key != "per_object":
                flat.update(_flatten(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)):
            flat[f"{prefix}{key}"] = float(value)
    return flat


class SyntheticEvaluator:
    """J&F on held-out procedural videos at the training image size (`synthetic.evaluate`).

    The videos follow the training data's generator (`config.data.synthetic.kind`). Writes
    `workdir/eval_results.json` = {"preset", "kind", "videos", "trained": scores, "trained_ven":
    scores (models with a VEN), "floors": {"copy": scores, "lab": scores}} with `synthetic.evaluate`'s
    scores (per-object J&F included), and prints the J&F-Means side by side.

    Args:
      num_videos, num_frames, num_objects: the held-out videos (`synthetic_video.generate_videos`).
      seed: their seed (distinct from the training seed: held out).
      preset: the propagation preset's name in `presets`; its window radius must be at most a
        quarter of the feature grid's side (e.g. `mer_small` for 64x64 frames), so the search
        stays local.
      presets: {name: Preset fields} (configs/propagation.py).
      lab_temperature: the lab floor's temperature (`protocol.make_preset`).
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
        if preset not in presets:
            raise ValueError(f"preset must be one of {sorted(presets)}, got {preset!r}")
        self.num_videos, self.num_frames, self.num_objects, self.seed = num_videos, num_frames, num_objects, seed
        self.preset_name, self.feature_batch = preset, feature_batch
        self.preset = protocol.make_preset(presets[preset], "trained", lab_temperature)
        self.lab_preset = protocol.make_preset(presets[preset], "lab", lab_temperature)
        self._floors: dict[str, dict] | None = None

    def videos(self, image_size: int, flow_gap: int, kind: str) -> list[synthetic_video.SyntheticVideo]:
        """The held-out videos at the training image size, with flow to the frame `flow_gap` before."""
        grid = math.ceil(image_size / encoder_lib.OUTPUT_STRIDE)
        if 4 * self.preset.radius > grid:
            raise ValueError(
                f"preset {self.preset_name!r} has radius {self.preset.radius}: a global search on the {grid}x{grid} "
                f"feature grid of {image_size}x{image_size} frames. Use a preset whose radius is at most "
                f"{grid // 4} (a quarter of the grid side), e.g. --config.evals.synthetic.preset=mer_small."
            )
        return synthetic_video.generate_videos(
            self.seed, self.num_videos, num_frames=self.num_frames, height=image_size, width=image_size,
            num_objects=self.num_objects, flow_gap=flow_gap, kind=kind,
        )  # fmt: skip

    def run(self, model: export.ExportedModel, workdir: str) -> dict[str, float]:
        """Scores the model's paths and the floors; returns {"trained/J&F-Mean": ..., "floors/copy/J&F-Mean": ...}."""
        data = model.config.data
        videos = self.videos(data.image_size, data.flow_gap, data.synthetic.kind)
        results: dict[str, Any] = {"preset": self.preset_name, "kind": data.synthetic.kind, "videos": len(videos)}
        for name, encoder in _model_encoders(model, self.feature_batch).items():
            results[name] = synthetic.evaluate(encoder, self.preset, videos)
        if self._floors is None:
            encoders = floors.floor_encoders(data.lab_mean, data.lab_std)
            self._floors = {name: synthetic.evaluate(encoders[name], self.lab_preset, videos) for name in floors.FLOORS}
        results["floors"] = self._floors
        if jax.process_index() == 0:
            with open(os.path.join(workdir, "eval_results.json"), "w") as f:
                json.dump(reports.jsonable(results), f, indent=2)
            paths = [name for name in ("trained", "trained_ven") if name in results]
            scores = [f"{name} {results[name]['J&F-Mean']:.4f}" for name in paths]
            scores += [f"{name} {self._floors[name]['J&F-Mean']:.4f}" for name in floors.FLOORS]
            objects = results["floors"]["copy"]["objects"]
            print(
                f"Held-out J&F-Mean ({len(videos)} {data.synthetic.kind} procedural videos, {objects} objects, "
                f"preset {self.preset_name}): " + ", ".join(scores)
            )
        return _flatten({key: value for key, value in results.items() if isinstance(value, Mapping)})


class DavisEvaluator:
    """DAVIS J&F (`davis.Evaluator`) of the model's paths and of the floors, over all devices.

    Results go to `workdir/eval_davis/<path>` and `workdir/eval_davis/floors/<floor>` (overwritten
    at each run, no overlays).

    Args:
      davis_root, year, subset, sequences: as `davis.Evaluator`; davis_root None is refused at
        construction, naming the flag.
      preset, presets, lab_temperature, feature_batch: as `SyntheticEvaluator` (no radius check:
        DAVIS grids are large).
      score_ven: also score the VEN-refined queries (`trained_ven`, models with a VEN). On a CPU
        this path dominates at 480p: the VEN attends from every query to every pooled key of its
        references (README, 'Training on real video').
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
        score_ven: bool,
    ):
        if davis_root is None:  # Checked when train.py builds the evaluators: before training.
            raise ValueError(
                "config.evals.davis needs the DAVIS folder (JPEGImages/, Annotations/, ImageSets/): pass "
                "--config.evals.davis.davis_root=PATH/DAVIS"
            )
        if preset not in presets:
            raise ValueError(f"preset must be one of {sorted(presets)}, got {preset!r}")
        self.evaluator = davis.Evaluator(
            davis_root=davis_root, year=year, subset=subset, sequences=sequences, save_overlays=False
        )
        self.preset = protocol.make_preset(presets[preset], "trained", lab_temperature)
        self.lab_preset = protocol.make_preset(presets[preset], "lab", lab_temperature)
        self.feature_batch, self.score_ven = feature_batch, score_ven
        self._floors: dict[str, dict] | None = None

    def run(self, model: export.ExportedModel, workdir: str) -> dict[str, float]:
        """Scores the model (and the floors, once); returns {"trained/J&F-Mean": ..., ...}.

        Every process runs it: the sequences are split over all devices of the run
        (`video_shards`), and every process returns the merged scores."""
        output = os.path.join(workdir, "eval_davis")
        if self._floors is None:
            encoders = floors.floor_encoders(model.config.data.lab_mean, model.config.data.lab_std)
            self._floors = {
                name: self.evaluator.run(encoders[name], self.lab_preset, os.path.join(output, "floors", name))
                for name in floors.FLOORS
            }
        results: dict[str, Any] = {
            name: self.evaluator.run(encoder, self.preset, os.path.join(output, name))
            for name, encoder in _model_encoders(model, self.feature_batch, self.score_ven).items()
        }
        results["floors"] = self._floors
        rows = {name: scores for name, scores in results.items() if name != "floors"}
        rows.update({f"{name} floor": scores for name, scores in self._floors.items()})
        if jax.process_index() == 0:
            print(reports.comparison_table(rows, floors.HEADLINE_KEYS["davis"]))
        return _flatten(results)


EVALUATORS = {"synthetic": SyntheticEvaluator, "davis": DavisEvaluator}
