"""Where training videos come from: the embedded procedural videos or a prepared TFDS dataset.

`make_source(config.data, seed)` returns a `VideoSource`: random access to the frames (and flow)
of a set of videos at the training size.
"""

from typing import Protocol

import numpy as np

from mer_jax.data import synthetic_video, video_dataset


class VideoSource(Protocol):
    """Random access to the frames (and flow) of a set of videos, at training size S x S."""

    def __len__(self) -> int: ...

    def num_frames(self, video: int) -> int: ...

    def name(self, video: int) -> str: ...

    def read(self, video: int, frames: np.ndarray, with_flow: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Frames [N] of video -> (uint8 RGB [N, S, S, 3], float32 [N, S, S, 2] flow to `flow_gap`
        frames earlier in pixels, or None without `with_flow`)."""
        ...


class SyntheticSource:
    """The embedded procedural videos (`synthetic_video`, exact flow), generated once in memory.

    `kind` is the generator ('easy' or 'camouflage', docs/synthetic.md).
    """

    def __init__(
        self, seed: int, num_videos: int, num_frames: int, num_objects: int, kind: str, image_size: int, flow_gap: int
    ):
        self.videos = synthetic_video.generate_videos(
            seed, num_videos, num_frames=num_frames, height=image_size, width=image_size, num_objects=num_objects,
            flow_gap=flow_gap, kind=kind,
        )  # fmt: skip

    def __len__(self) -> int:
        return len(self.videos)

    def num_frames(self, video: int) -> int:
        return self.videos[video].frames.shape[0]

    def name(self, video: int) -> str:
        return f"synthetic_{video}"

    def read(self, video: int, frames: np.ndarray, with_flow: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        clip = self.videos[video]
        return clip.frames[frames], (clip.flow[frames] if with_flow else None)


def make_source(data_config, seed: int) -> VideoSource:
    """Builds the training video source named by `data_config.source`.

    Raises:
      FileNotFoundError: the prepared dataset is missing, naming where it was looked for and the
        command that prepares it.
      ValueError: the dataset does not match the config (flow gap) or is inconsistent.
    """
    if data_config.source == "synthetic":
        return SyntheticSource(
            seed, image_size=data_config.image_size, flow_gap=data_config.flow_gap, **data_config.synthetic
        )
    if data_config.source == "tfds":
        return video_dataset.TfdsSource(
            data_config.data_dir, data_config.name, image_size=data_config.image_size, flow_gap=data_config.flow_gap
        )
    raise ValueError(f"config.data.source must be 'synthetic' or 'tfds', got {data_config.source!r}")
