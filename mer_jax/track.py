"""Tracking objects through a user's video from a first-frame mask: `python -m mer_jax.track`.

    python -m mer_jax.track --video=clip.mp4 --mask=first.png --output=DIR \\
        [--checkpoint=WORKDIR_OR_EXPORT] [--preset=mer|crw|crw_os8] [--max_height=480] [--overwrite]

Reads the video and mask (`evaluation/user_video.py`), propagates the mask with the DAVIS
evaluation's encoder and preset settings through the same loop (`vos.segment_videos`), and writes
into `--output`: `masks/<frame>.png` (palette PNGs at the frames' own size; frame 0 is the given
mask), `overlay.mp4` (the masks over the frames at the processing size) and `summary.json`
(frames, objects, seconds, frames/s and the run's settings). Every input is checked before any
work; the results are written into a sibling `<output>.partial-<pid>` folder and moved into place
only when all of them are written, so a failed run leaves nothing behind and an earlier run
(replaced with `--overwrite`) stays intact until then.
"""

import json
import os
import shutil
import sys
import time

import cv2
import ml_collections
import numpy as np
from absl import app, flags

from configs import propagation as propagation_configs
from mer_jax import checkpointing, export
from mer_jax.evaluation import background, features, protocol, vos
from mer_jax.evaluation.benchmarks.user_video import data as user_video

PRESETS = ("mer", "crw", "crw_os8")  # crw_os8: converted stride-8 encoders (`mer_jax.convert`).
SUMMARY = "summary.json"
# What a track run writes into its output folder: the only entries `--overwrite` replaces.
RUN_ENTRIES = frozenset({"masks", "overlay.mp4", SUMMARY})


def _check_output(output: str, overwrite: bool) -> bool:
    """Whether `output` holds an earlier track run to replace (False: missing or empty).

    Raises:
      UserInputError: `output` is a file, holds another run without `overwrite`, or holds anything
        a track run does not write (never deleted, even with `overwrite`).
    """
    if not os.path.exists(output):
        return False
    if not os.path.isdir(output):
        raise user_video.UserInputError(f"--output {output} is a file, not a folder: choose another --output.")
    entries = set(os.listdir(output))
    if not entries:
        return False
    try:
        with open(os.path.join(output, SUMMARY)) as f:
            earlier_run = json.load(f).get("command") == "track"
    except (OSError, ValueError, AttributeError):
        earlier_run = False
    others = sorted(entries - RUN_ENTRIES)
    if not earlier_run or others:
        listed = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise user_video.UserInputError(
            f"--output {output} holds files that track did not write ({listed or 'no track summary.json'}); "
            "they are never deleted, even with --overwrite: choose another (empty or new) --output folder."
        )
    if not overwrite:
        raise user_video.UserInputError(
            f"--output {output} holds another run (its {SUMMARY}); pass --overwrite to replace it or choose another "
            "--output folder."
        )
    return True


def _check_checkpoint(checkpoint: str) -> None:
    """Raises UserInputError unless `checkpoint` is an export or a training workdir."""
    path = os.path.abspath(os.path.expanduser(checkpoint))
    if not any(os.path.isdir(os.path.join(path, folder)) for folder in (export.VARIABLES_DIR, "checkpoints")):
        raise user_video.UserInputError(
            f"--checkpoint {path} is neither an export (no {export.VARIABLES_DIR}/) nor a training workdir (no "
            "checkpoints/): pass the folder of `python -m mer_jax.train` or `python -m mer_jax.export`, or leave "
            "--checkpoint out to track with raw Lab colours."
        )


def write_overlay(path: str, video: vos.Video, masks: np.ndarray, fps: float | None) -> None:
    """Writes an MP4 of the masks [T, H', W'] over the frames [T, h, w, 3] at the frames' (processing)
    size: masks are resized to the frames by nearest sampling (ids stay ids), frames never enlarged."""
    height, width = video.frames.shape[1:3]
    if masks.shape[1:] != (height, width):
        masks = np.stack([cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST) for mask in masks])
    vos.write_overlay(path, video, masks, **({} if fps is None else {"fps": fps}))


def _move_into_place(partial: str, output: str, replace: bool) -> None:
    """Renames the finished `partial` folder to `output`, replacing an earlier run (`replace`) or an empty folder."""
    if not replace:
        if os.path.isdir(output):
            os.rmdir(output)  # Empty (checked); rmdir refuses a folder that filled up since.
        os.rename(partial, output)
        return
    old = f"{output}.old-{os.getpid()}"
    os.rename(output, old)
    try:
        os.rename(partial, output)
    except BaseException:
        os.rename(old, output)
        raise
    shutil.rmtree(old)


def track(
    video: str,
    mask: str,
    output: str,
    *,
    checkpoint: str | None = None,
    preset: str = "mer",
    max_height: int = 480,
    overwrite: bool = False,
    feature_batch: int | None = None,
    presets: ml_collections.ConfigDict | None = None,
) -> dict:
    """Propagates a first-frame mask through a video and writes the masks, an overlay and a summary.

    The encoder, preset numbers and Lab settings are the DAVIS evaluation's
    (`configs/propagation.py`), so on a DAVIS sequence folder with its first annotation the masks
    equal the DAVIS evaluator's for the same preset and encoder.

    Args:
      video: an MP4/AVI file or a folder of JPEG/PNG frames (sorted by name).
      mask: the first frame's mask PNG at the frames' size (`user_video.read_first_mask`).
      output: the results folder: missing, empty, or holding an earlier track run (with `overwrite`).
      checkpoint: a training workdir or an export (the trained encoder), or None (raw Lab colours).
      preset: the propagation preset, 'mer' or 'crw'.
      max_height: frames taller than this are processed at this height (masks are written at the
        frames' own size).
      overwrite: replace an earlier track run in `output` (only once the new run has succeeded).
      feature_batch: frames encoded at a time by a trained encoder (None: the config's).
      presets: the preset fields by name (None: `propagation_configs.presets()`).

    Returns:
      The summary written to `<output>/summary.json`: frames, objects, seconds, frames_per_s,
      command, video, mask, output, encoder, checkpoint, preset, object_ids, frame_size [H, W],
      processed_size [h, w].

    Raises:
      UserInputError: a bad input or output folder (named, with the fix); nothing is written.
    """
    start = time.perf_counter()
    defaults = propagation_configs.benchmark_config("davis")  # The evaluation's settings: track equals DAVIS.
    presets = propagation_configs.presets() if presets is None else presets
    if preset not in PRESETS:
        raise user_video.UserInputError(f"--preset must be one of {PRESETS}, got {preset!r}")
    video, mask, output = (os.path.abspath(os.path.expanduser(path)) for path in (video, mask, output))
    replace = _check_output(output, overwrite)
    if checkpoint is not None:
        _check_checkpoint(checkpoint)
    clip = user_video.read_video(video, mask, max_height)
    encoder_name = "lab" if checkpoint is None else "trained"
    encoder = features.make_encoder(
        encoder_name,
        checkpoint,
        feature_batch=defaults.feature_batch if feature_batch is None else feature_batch,
        lab_mean=defaults.lab_mean,
        lab_std=defaults.lab_std,
    )
    propagation_preset = protocol.make_preset(presets[preset], encoder_name, defaults.lab_temperature)
    try:
        protocol.check_stride(preset, propagation_preset, encoder.stride, presets)
    except ValueError as error:
        raise user_video.UserInputError(f"--preset {preset}: {error}") from None
    frame_size = clip.output_size or clip.frames.shape[1:3]
    summary = {
        "command": "track",
        "video": video,
        "mask": mask,
        "output": output,
        "encoder": encoder_name,
        "checkpoint": None if checkpoint is None else os.path.abspath(os.path.expanduser(checkpoint)),
        "preset": preset,
        "frames": len(clip.frames),
        "objects": len(clip.object_ids),
        "object_ids": clip.object_ids,
        "frame_size": [int(n) for n in frame_size],
        "processed_size": [int(n) for n in clip.frames.shape[1:3]],
    }
    fps = user_video.frame_rate(video)
    partial = f"{output}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)  # Left by a killed process that had this id.
    try:
        os.makedirs(partial)
        with background.Writer() as writer:
            for segmented, masks in vos.segment_videos([clip], encoder, propagation_preset, desc="track"):
                writer.submit(vos.write_masks, os.path.join(partial, "masks"), segmented, masks)
                writer.submit(write_overlay, os.path.join(partial, "overlay.mp4"), segmented, masks, fps)
        seconds = time.perf_counter() - start
        summary.update(seconds=seconds, frames_per_s=len(clip.frames) / seconds)
        with open(os.path.join(partial, SUMMARY), "w") as f:
            json.dump(summary, f, indent=2)
        _move_into_place(partial, output, replace)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    print(
        f"track: {summary['frames']} frames, {summary['objects']} object(s) in {seconds:.1f} s "
        f"({summary['frames_per_s']:.1f} frames/s) -> {output}"
    )
    return summary


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    try:
        track(
            f.video,
            f.mask,
            f.output,
            checkpoint=f.checkpoint,
            preset=f.preset,
            max_height=f.max_height,
            overwrite=f.overwrite,
            feature_batch=f.feature_batch,
        )
    except (user_video.UserInputError, checkpointing.CheckpointRestoreError) as error:
        sys.exit(f"error: {error}")  # Each message names the file and the fix; nothing was written.


if __name__ == "__main__":
    flags.DEFINE_string("video", None, "The video: an MP4/AVI file or a folder of JPEG/PNG frames (sorted by name).")
    flags.DEFINE_string(
        "mask", None, "First-frame mask PNG at the frames' size: palette ids, or grey (0/255 for one object)."
    )
    flags.DEFINE_string("output", None, "Results folder (masks/, overlay.mp4, summary.json); new or empty.")
    flags.DEFINE_string("checkpoint", None, "A training workdir or an export; without it, raw Lab colours (lab).")
    flags.DEFINE_enum("preset", "mer", list(PRESETS), "Propagation preset (configs/propagation.py).")
    flags.DEFINE_integer(
        "max_height", 480, "Frames taller than this are processed resized to it; masks keep the original size."
    )
    flags.DEFINE_bool("overwrite", False, "Replace an earlier track run in --output (once the new one succeeded).")
    flags.DEFINE_integer(
        "feature_batch",
        propagation_configs.benchmark_config("davis").feature_batch,
        "Frames a trained encoder embeds at a time.",
    )
    flags.mark_flags_as_required(["video", "mask", "output"])
    app.run(main)
