"""Video sources (`data.sources`) -> per-process batches of training clips (no model code).

A clip is `num_refs` reference frames and one later target frame; consecutive clip frames are
`frame_gaps` apart, drawn with `gap_probs`. The clip order is a pure function of (seed, step):
every epoch visits each video `clips_per_video` times in a permutation seeded by the epoch, so a
resumed run continues exactly the order of an uninterrupted one, and each process reads only its
own slice of every global batch.
"""

import collections
import concurrent.futures
import functools
from typing import Iterator

import numpy as np

from mer_jax.data import sources

Batch = dict[str, np.ndarray]


def sample_clip(
    rng: np.random.Generator,
    num_frames: int,
    num_refs: int,
    frame_gaps: tuple[int, ...],
    gap_probs: tuple[float, ...],
) -> np.ndarray:
    """Frame indices [num_refs + 1] of one clip, increasing, the target last.

    Gaps are drawn from `frame_gaps` with `gap_probs`; when the drawn clip does not fit in the
    video, every gap falls back to the smallest one.

    Raises:
      ValueError: the video is too short even for the smallest gaps.
    """
    gaps = rng.choice(np.asarray(frame_gaps), size=num_refs, p=np.asarray(gap_probs))
    if gaps.sum() >= num_frames:
        gaps = np.full(num_refs, min(frame_gaps))
        if gaps.sum() >= num_frames:
            raise ValueError(f"a clip of {num_refs + 1} frames {min(frame_gaps)} apart needs more than {num_frames}")
    start = rng.integers(0, num_frames - gaps.sum())
    return start + np.concatenate([[0], np.cumsum(gaps)])


@functools.lru_cache(maxsize=4)
def _epoch_order(seed: int, epoch: int, epoch_len: int, num_videos: int) -> np.ndarray:
    """The video of each position [epoch_len] within one epoch."""
    return np.random.default_rng([seed, 0, epoch]).permutation(epoch_len) % num_videos


def clip_plan(
    step: int,
    global_batch: int,
    positions: range,
    num_videos: int,
    *,
    seed: int,
    clips_per_video: int,
) -> tuple[np.ndarray, list[np.random.Generator]]:
    """Which video each of the given batch positions of `step` draws, with its own RNG.

    Returns:
      (video indices [len(positions)], one Generator per position for its frame sampling).
    """
    epoch_len = num_videos * clips_per_video
    videos, rngs = [], []
    for j in positions:
        position = step * global_batch + j
        epoch, within = divmod(position, epoch_len)
        videos.append(_epoch_order(seed, epoch, epoch_len, num_videos)[within])
        rngs.append(np.random.default_rng([seed, 1, position]))
    return np.asarray(videos, np.int32), rngs


class ClipLoader:
    """Iterates over this process's part of the global batches, from a given step on.

    Yields dicts {'frames': uint8 [B_local, num_refs + 1, S, S, 3], 'video_id': int32 [B_local]}
    (plus 'flow': float32 [B_local, num_refs + 1, S, S, 2] with `with_flow`), prepared `prefetch`
    steps ahead in a background thread, the clips of a batch read by `num_workers` threads
    (decoding in OpenCV and zlib releases the GIL).
    """

    def __init__(
        self,
        source: sources.VideoSource,
        *,
        global_batch: int,
        process_index: int,
        process_count: int,
        seed: int,
        num_refs: int,
        frame_gaps: tuple[int, ...],
        gap_probs: tuple[float, ...],
        clips_per_video: int,
        prefetch: int,
        with_flow: bool = False,
        num_workers: int = 1,
    ):
        if global_batch % process_count:
            raise ValueError(f"batch_size {global_batch} is not divisible by the {process_count} processes")
        if len(frame_gaps) != len(gap_probs) or not np.isclose(sum(gap_probs), 1.0):
            raise ValueError(f"gap_probs {gap_probs} must match frame_gaps {frame_gaps} and sum to 1")
        needed = num_refs * min(frame_gaps) + 1
        too_short = [v for v in range(len(source)) if source.num_frames(v) < needed]
        if too_short:
            listed = ", ".join(f"{source.name(v)} ({source.num_frames(v)} frames)" for v in too_short[:10])
            raise ValueError(
                f"{len(too_short)} videos are too short for a clip of {num_refs + 1} frames {min(frame_gaps)} apart "
                f"(at least {needed} frames): {listed}. Rebuild the dataset with --min_frames={needed} --skip_bad."
            )
        local = global_batch // process_count
        self.positions = range(process_index * local, (process_index + 1) * local)
        self.source = source
        self.global_batch = global_batch
        self.seed = seed
        self.num_refs = num_refs
        self.frame_gaps = tuple(frame_gaps)
        self.gap_probs = tuple(gap_probs)
        self.clips_per_video = clips_per_video
        self.prefetch = max(prefetch, 1)
        self.with_flow = with_flow
        self.readers = concurrent.futures.ThreadPoolExecutor(max(num_workers, 1))

    def _read_clip(self, video: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        frames = sample_clip(rng, self.source.num_frames(video), self.num_refs, self.frame_gaps, self.gap_probs)
        return self.source.read(video, frames, self.with_flow)

    def load(self, step: int) -> Batch:
        """The local batch of `step`."""
        videos, rngs = clip_plan(
            step,
            self.global_batch,
            self.positions,
            len(self.source),
            seed=self.seed,
            clips_per_video=self.clips_per_video,
        )
        clips = list(self.readers.map(self._read_clip, videos, rngs))
        batch = {"frames": np.stack([frames for frames, _ in clips]), "video_id": videos}
        if self.with_flow:
            batch["flow"] = np.stack([flow for _, flow in clips]).astype(np.float32)
        return batch

    def iterate(self, start_step: int) -> Iterator[Batch]:
        """Batches of steps start_step, start_step + 1, ... (forever)."""
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = collections.deque(
                pool.submit(self.load, s) for s in range(start_step, start_step + self.prefetch)
            )
            step = start_step + self.prefetch
            while True:
                batch = pending.popleft().result()
                pending.append(pool.submit(self.load, step))
                step += 1
                yield batch
