"""The TFDS builder that writes `mer_jax.data.video_dataset`'s format from a stream of prepared videos."""

import types
from typing import Iterator, NamedTuple

import numpy as np
import tensorflow_datasets as tfds

from mer_jax.data import video_dataset


class PreparedVideo(NamedTuple):
    """One video ready to write: JPEG bytes (uint8 [n]) per frame and float16 flow [T, h, w, 2]."""

    name: str
    jpegs: list[np.ndarray]
    flow: np.ndarray


class _VideoFrames(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes the examples of `mer_jax.data.video_dataset` from a stream of prepared videos."""

    VERSION = tfds.core.Version(video_dataset.VERSION)

    def __init__(self, *, videos: Iterator[PreparedVideo | str], metadata: dict, **kwargs):
        self._videos = videos
        self._build_metadata = metadata
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="Whole training videos for mer_jax: one example per frame, in video and frame order.",
            features=video_dataset.features(),
            disable_shuffling=True,  # Examples stay in key order, so a frame's index is computable.
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        return {video_dataset.SPLIT: self._generate_examples()}

    def _generate_examples(self):
        names, lengths, skipped = [], [], []
        for video in self._videos:
            if isinstance(video, str):
                skipped.append(video)
                continue
            video_id = len(names)
            for t, jpeg in enumerate(video.jpegs):
                example = {"video_id": video_id, "frame_index": t, "jpeg": jpeg, "flow": video.flow[t]}
                yield f"{video_id:08d}_{t:06d}", example
            names.append(video.name)
            lengths.append(len(video.jpegs))
        if not names:
            raise ValueError(f"no usable video: {len(skipped)} skipped")
        self.info.metadata.update(self._build_metadata, videos=names, num_frames=lengths, skipped=skipped)


def make_builder(
    name: str, videos: Iterator[PreparedVideo | str], metadata: dict, data_dir: str
) -> tfds.core.GeneratorBasedBuilder:
    """A builder writing dataset `name` (array_record) into data_dir from `videos`, where a string
    stands for a skipped video (its error message); `metadata` goes into metadata.json."""
    builder_class = types.new_class(
        "".join(part.title() for part in name.split("_")),
        (_VideoFrames,),
        {"skip_registration": True},
        lambda namespace: namespace.update(name=name, __module__=__name__),
    )
    return builder_class(videos=videos, metadata=metadata, data_dir=data_dir, file_format="array_record")
