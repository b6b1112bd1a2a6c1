"""Module diagnostics: what each of MER's switchable modules does, measured on a fixed probe
(docs/method.md, 'Diagnostics').

This file owns the probe (held-out procedural clips with exact object masks, built once on the
host by `make_probe`, the same whatever the training source), the scalars computed on it by
`compute` (one eval-mode forward, no backward, through the `Objective`'s own stages), the exact
ROC AUC they need (`roc_auc`), and their output: `Prober` runs the jitted computation on one local
device at each log step and `write_json` writes `workdir/diagnostics.json`. A key whose module is
switched off is left out.
"""

import functools
import json
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mer_jax import (
    color,
    cpu_compiler,
    diagnostic_images,
    feature_maps,
    input_pipeline,
    memory_bank,
    objective,
    sampler,
    train_state,
)
from mer_jax.data import sources
from mer_jax.evaluation import vos
from mer_jax.models import encoder as encoder_lib

JSON_FILE = "diagnostics.json"


class Probe(NamedTuple):
    """A fixed batch of P clips (num_refs references, then the target) with the target's masks.

    Attributes:
      frames: [P, N, H, W, 3] uint8 RGB.
      flow: [P, N, H, W, 2] float32 flow (dx, dy) in pixels to `data.flow_gap` frames earlier.
      object_ids: [P, H, W] uint8, the target's object ids (0 background, 1..K objects).
      object_pixels: [P, H, W] bool, the target's object pixels (object_ids > 0).
      object_cells: [P, h, w] bool, the same nearest-sampled to the stride-4 feature grid as
        evaluation samples labels (`vos.labels_at_stride`: cell (i, j) takes pixel
        (floor(i H / h), floor(j W / w))).
      ref_labels: [P, N - 1, h, w, 1 + K] float32 one-hot labels of the references' objects,
        sampled the same way (channel k: object k), for the propagated masks of the pictures.
      rng: [2] uint32 PRNG key of the positive/negative term's negatives.
    """

    frames: np.ndarray | jax.Array
    flow: np.ndarray | jax.Array
    object_ids: np.ndarray | jax.Array
    object_pixels: np.ndarray | jax.Array
    object_cells: np.ndarray | jax.Array
    ref_labels: np.ndarray | jax.Array
    rng: np.ndarray | jax.Array


def make_probe(config: ml_collections.ConfigDict) -> Probe:
    """The probe of a training config: `diagnostics.probe_clips` held-out procedural videos.

    The videos are built like the synthetic training source (`sources.SyntheticSource` with every
    field of `data.synthetic` but `num_videos`, at `data.image_size`, flow to `data.flow_gap`
    frames earlier) from `diagnostics.probe_seed` instead of `seed`; clip i is drawn from video i
    by `input_pipeline.sample_clip` (`data.num_refs`, `.frame_gaps`, `.gap_probs`) with the RNG
    seeded by (probe_seed, i). The same config gives the same probe.

    Raises:
      ValueError: probe_seed equals `seed` with synthetic training data (the probe would be
        training videos).
    """
    probe_seed, num_clips = config.diagnostics.probe_seed, config.diagnostics.probe_clips
    if config.data.source == "synthetic" and probe_seed == config.seed:
        raise ValueError(f"config.diagnostics.probe_seed={probe_seed} must differ from config.seed: held out")
    fields = dict(config.data.synthetic, num_videos=num_clips)
    source = sources.SyntheticSource(
        probe_seed, image_size=config.data.image_size, flow_gap=config.data.flow_gap, **fields
    )
    data, frames, flows, masks = config.data, [], [], []
    for i in range(num_clips):
        rng = np.random.default_rng([probe_seed, i])
        clip = input_pipeline.sample_clip(
            rng, source.num_frames(i), data.num_refs, tuple(data.frame_gaps), tuple(data.gap_probs)
        )
        clip_frames, clip_flow = source.read(i, clip, with_flow=True)
        frames.append(clip_frames)
        flows.append(clip_flow)
        masks.append(source.videos[i].masks[clip])
    masks = np.stack(masks)  # [P, N, H, W]
    h, w = (-(-s // encoder_lib.OUTPUT_STRIDE) for s in masks.shape[2:])
    object_ids = list(range(1, data.synthetic.num_objects + 1))
    labels = np.stack([[vos.labels_at_stride(m, object_ids, h, w) for m in clip] for clip in masks])
    return Probe(
        frames=np.stack(frames),
        flow=np.stack(flows).astype(np.float32),
        object_ids=masks[:, -1],
        object_pixels=masks[:, -1] > 0,
        object_cells=labels[:, -1, ..., 0] == 0,
        ref_labels=labels[:, :-1],
        rng=np.asarray(jax.random.PRNGKey(probe_seed)),
    )


def roc_auc(scores: jax.Array, positive: jax.Array) -> jax.Array:
    """Exact ROC AUC of `scores` as a detector of `positive` (Mann-Whitney, ties counted half).

    AUC = (1 / (n_pos n_neg)) sum over positive i and negative j of [s_i > s_j] + [s_i = s_j] / 2,
    the probability that a random positive outscores a random negative; computed from the sorted
    negatives in O(n log n), jit-compatible.

    Args:
      scores: [...] finite float scores.
      positive: [...] bool, same shape.

    Returns:
      Scalar float32 in [0, 1]; NaN when there are no positives or no negatives.
    """
    scores, positive = scores.ravel().astype(jnp.float32), positive.ravel()
    negatives = jnp.sort(jnp.where(positive, jnp.inf, scores))  # positives sort last, above any score
    below = jnp.searchsorted(negatives, scores, side="left")
    at_or_below = jnp.searchsorted(negatives, scores, side="right")
    num_pos = jnp.sum(positive)
    num_neg = positive.size - num_pos
    # Each positive's share of negatives it beats, ties half: each term in [0, 1] keeps float32 exact enough.
    share = (below + at_or_below).astype(jnp.float32) / (2.0 * num_neg)
    return jnp.sum(jnp.where(positive, share, 0.0)) / num_pos


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of values [...] over the entries where mask [...] (bool) holds (NaN if none)."""
    return jnp.sum(jnp.where(mask, values, 0)) / jnp.sum(mask)


def object_ratio(values: jax.Array, objects: jax.Array) -> jax.Array:
    """Mean of values [...] on the objects over their mean on the background (objects [...] bool)."""
    return masked_mean(values, objects) / masked_mean(values, ~objects)


def sampler_scalars(sampled: sampler.SamplerOutput, object_cells: jax.Array) -> dict[str, jax.Array]:
    """Where the sampler grows regions and which radii it gives, on object and background cells.

    Args:
      sampled: `sampler.Sampler`'s output (regions [P, h, w], -1 outside every grown region;
        radius [P, h, w]).
      object_cells: [P, h, w] bool.

    Returns:
      {"sampler_object_coverage", "sampler_background_coverage"}: the share of object (background)
      cells inside a grown region; {"sampler_radius_object", "sampler_radius_background"}: the mean
      radius there.
    """
    inside = sampled.regions >= 0
    return {
        "sampler_object_coverage": masked_mean(inside, object_cells),
        "sampler_background_coverage": masked_mean(inside, ~object_cells),
        "sampler_radius_object": masked_mean(sampled.radius, object_cells),
        "sampler_radius_background": masked_mean(sampled.radius, ~object_cells),
    }


def feature_collapse(features: jax.Array) -> jax.Array:
    """Mean cosine of each pixel's feature to its frame's mean feature: 1 when all pixels of a
    frame share one direction (collapse), near 0 for spread-out features.

    Args:
      features: [..., h, w, D] per-frame feature maps.

    Returns:
      Scalar float32, the mean over frames and pixels.
    """
    frame_mean = jnp.mean(features, axis=(-3, -2), keepdims=True)
    cosine = jnp.sum(feature_maps.l2_normalize(features) * feature_maps.l2_normalize(frame_mean), axis=-1)
    return jnp.mean(cosine)


def addition_ratio(refined: jax.Array, features: jax.Array) -> jax.Array:
    """Mean over pixels of |refined - features| / |features| (L2 over channels, [P, h, w, C] each):
    how large the VEN's addition is next to the feature it refines (0 at a zero-initialised VEN)."""
    added = jnp.linalg.norm(refined - features, axis=-1)
    return jnp.mean(added / jnp.maximum(jnp.linalg.norm(features, axis=-1), 1e-12))


def _heldout_error(obj: objective.Objective, target: jax.Array, prediction: jax.Array) -> jax.Array:
    """The objective's mean error of a reconstruction [P, h, w, 3] against the clean target
    [P, H, W, 3], on all three channels (no channel was dropped)."""
    dropped = jnp.zeros(target.shape[0], jnp.int32)  # Unused with 'all'.
    return jnp.mean(obj.loss.error(prediction, target, dropped, channels="all"))


def compute(
    obj: objective.Objective,
    params: Any,
    batch_stats: Any,
    bank: memory_bank.MemoryBank | None,
    probe: Probe,
    step: jax.Array,
) -> tuple[dict[str, jax.Array], objective.Intermediates, jax.Array]:
    """The diagnostics of a model on the probe (keys in docs/method.md, 'Diagnostics'), the
    objective's intermediates on it and the propagated masks (for `diagnostic_images`).

    The objective's stages run in eval mode (no DropKey, BatchNorm's running statistics) on the
    clean normalised Lab clips: no channel dropout, so every channel is reconstructed. The
    sampler's regions, the value map and the weight map are the stages' own (`objective.Stages`).

    Args:
      obj: the run's objective (its model, switches and config sections).
      params, batch_stats: the network's variables.
      bank: the memory bank (None without the positive/negative term).
      probe: `make_probe`'s clips.
      step: the training step (the weight map's gamma).

    Returns:
      ({key: float32 scalar}, the keys of the modules switched on; the stages' `Intermediates`;
      [P, h, w] int32 the target's object ids propagated from the references' `ref_labels`
      through the encoder features' affinities in the objective's windows, as the reconstruction
      copies colours: the most probable label of each cell).
    """
    clean = color.uint8_rgb_to_normalized_lab(probe.frames, obj.lab_mean, obj.lab_std)  # [P, N, H, W, 3]
    flow = probe.flow if obj.model.use_flow else None
    stages = obj.stages({"params": params, "batch_stats": batch_stats}, clean, clean, flow, step)
    out, ref_colours, windows, found = stages.out, stages.ref_colours, stages.windows, stages.intermediates
    target, refs = out.features[:, -1], out.features[:, :-1]
    error = functools.partial(_heldout_error, obj, clean[:, -1])
    cells, pixels = probe.object_cells, probe.object_pixels

    scalars = {
        "feature_collapse": feature_collapse(out.features),
        "heldout_recon_encoder": error(obj.reconstruct(target, refs, ref_colours, windows)),
        "heldout_recon_copy": error(ref_colours[:, 0]),  # The first reference held still.
    }
    if obj.model.use_ven:
        scalars["heldout_recon_ven"] = error(obj.reconstruct(out.query, refs, ref_colours, windows))
        scalars["ven_addition_ratio"] = addition_ratio(out.query, target)
    if obj.model.use_flow:
        scalars["flow_alpha"] = params["flow_fusion"]["alpha"]
    if found.value_map is not None:
        scalars["value_map_auc"] = roc_auc(found.value_map, cells)
    if found.sampled is not None:
        scalars.update(sampler_scalars(found.sampled, cells))
    if found.weight_map is not None:
        # The weights the objective puts on the target's pixels [P, H, W] at this step's gamma.
        scalars["weight_map_ratio"] = object_ratio(found.weight_map, pixels)
    if obj.memory is not None:
        # The probe's videos are in no batch: every filled bank entry is a candidate negative.
        video_id = jnp.full(target.shape[0], -1, jnp.int32)
        pos_neg = obj.positive_negative(out, ref_colours, probe.rng, video_id, bank, windows)
        scalars["pn_positive_mass"] = jnp.mean(jnp.exp(pos_neg.log_positive_mass))
    propagated = jnp.argmax(obj.reconstruct(target, refs, probe.ref_labels, windows), axis=-1)
    return {key: jnp.asarray(value, jnp.float32) for key, value in scalars.items()}, found, propagated


class Prober:
    """The diagnostics of a run: its probe, built once on the host, and `compute` compiled once.

    Called on a train state, it runs on the first local device holding the replicated variables
    (no collective, nothing gathered to the host but the scalars and the first `image_clips`
    clips' maps), so any process may call it alone; train.py calls it on process 0 only.
    """

    def __init__(self, obj: objective.Objective, config: ml_collections.ConfigDict):
        self.probe = make_probe(config)
        self.image_clips = min(config.diagnostics.image_clips, config.diagnostics.probe_clips)
        k = self.image_clips  # The pictured clips' targets, flow and objects, kept on the host.
        self._pictured = (self.probe.frames[:k, -1], self.probe.flow[:k, -1], self.probe.object_ids[:k])
        self._compute = cpu_compiler.jit(functools.partial(compute, obj))

    def __call__(self, state: train_state.TrainState, step: int) -> tuple[dict[str, float], np.ndarray | None]:
        """({key: value} of `compute` on the state's variables and memory bank at `step`, the
        `diagnostic_images.panel` of the first `image_clips` clips, or None without them)."""
        local = jax.tree.map(lambda x: x.addressable_data(0), (state.params, state.batch_stats, state.memory_bank))
        device = next(iter(jax.tree.leaves(local)[0].devices()))
        self.probe = jax.device_put(self.probe, device)  # Copied once; a no-op afterwards.
        scalars, found, propagated = self._compute(*local, self.probe, jnp.int32(step))
        scalars = {key: float(value) for key, value in scalars.items()}
        if not self.image_clips:
            return scalars, None
        regions = None if found.sampled is None else found.sampled.regions
        maps = jax.device_get(
            [
                None if x is None else x[: self.image_clips]
                for x in (propagated, found.value_map, found.weight_map, regions)
            ]
        )
        frames, flow, masks = self._pictured
        picture = diagnostic_images.panel(frames, masks, flow, *maps)
        return scalars, picture


def write_json(workdir: str, step: int, scalars: dict[str, float]) -> None:
    """Writes `workdir/diagnostics.json` = {"step": step, key: value, ...}, atomically (a reader
    never sees a half-written file)."""
    path = os.path.join(workdir, JSON_FILE)
    temporary = os.path.join(workdir, f".{JSON_FILE}.tmp")
    with open(temporary, "w") as f:
        json.dump({"step": int(step), **{key: float(value) for key, value in scalars.items()}}, f, indent=2)
    os.replace(temporary, path)
