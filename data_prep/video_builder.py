"""Writes `mer_jax.data.video_dataset`'s format from a stream of prepared videos.

The examples are streamed into array_record shards as they come, and TFDS's metadata
(`dataset_info.json`, `features.json`, `metadata.json`) is written beside them with
`tfds.folder_dataset.write_metadata`, so `tfds.builder_from_directory` reads the result. TFDS's own
generator builder is not used: it holds every example in memory up to 1 GB and then spills to
temporary files through TensorFlow, which is not a dependency (a 256x256 dataset passes 1 GB at
about 4,000 frames).
"""

import os
from typing import Iterator, NamedTuple

import numpy as np
import tensorflow_datasets as tfds
from array_record.python import array_record_module
from etils import epath
from tensorflow_datasets.core import example_serializer

from mer_jax.data import video_dataset

SHARD_BYTES = 1 << 30  # A new shard starts once a shard holds this many bytes of examples.
FILE_FORMAT = "array_record"
DESCRIPTION = "Whole training videos for mer_jax: one example per frame, in video and frame order."


class PreparedVideo(NamedTuple):
    """One video ready to write: JPEG bytes (uint8 [n]) per frame and float16 flow [T, h, w, 2]."""

    name: str
    jpegs: list[np.ndarray]
    flow: np.ndarray


def write_dataset(
    name: str, videos: Iterator[PreparedVideo | str], metadata: dict, data_dir: str
) -> tuple[str, list[str]]:
    """Writes dataset `name` into data_dir/name/<version> from `videos`, where a string stands for a
    skipped video (its error message); `metadata` goes into metadata.json with the videos' names,
    frame counts and the skipped messages.

    Examples are written in video and frame order, one per frame (example index = first index of
    the video + frame index), into `incomplete.<version>` first and renamed when complete.

    Returns:
      (the dataset's folder, the skipped messages).

    Raises:
      ValueError: every video was skipped.
    """
    folder = os.path.join(data_dir, name, video_dataset.VERSION)
    incomplete = os.path.join(data_dir, name, f"incomplete.{video_dataset.VERSION}")
    os.makedirs(incomplete)
    features = video_dataset.features()
    serializer = example_serializer.ExampleSerializer(features.get_serialized_info())
    names, lengths, skipped = [], [], []
    shard_lengths, shard_bytes, total_bytes = [], 0, 0
    writer = None
    for video in videos:
        if isinstance(video, str):
            skipped.append(video)
            continue
        for t, jpeg in enumerate(video.jpegs):
            example = {"video_id": len(names), "frame_index": t, "jpeg": jpeg, "flow": video.flow[t]}
            record = serializer.serialize_example(features.encode_example(example))
            if writer is None or shard_bytes >= SHARD_BYTES:
                if writer is not None:
                    writer.close()
                path = os.path.join(incomplete, f"shard{len(shard_lengths):05d}")
                writer = array_record_module.ArrayRecordWriter(path, "group_size:1")  # As TFDS writes.
                shard_lengths.append(0)
                shard_bytes = 0
            writer.write(record)
            shard_lengths[-1] += 1
            shard_bytes += len(record)
            total_bytes += len(record)
        names.append(video.name)
        lengths.append(len(video.jpegs))
    if writer is not None:
        writer.close()
    if not names:
        raise ValueError(f"no usable video: {len(skipped)} skipped")
    template = tfds.core.ShardedFileTemplate(
        data_dir=epath.Path(incomplete), dataset_name=name, split=video_dataset.SPLIT, filetype_suffix=FILE_FORMAT
    )
    for index in range(len(shard_lengths)):
        shard = template.sharded_filepath(shard_index=index, num_shards=len(shard_lengths))
        os.rename(os.path.join(incomplete, f"shard{index:05d}"), os.fspath(shard))
    split = tfds.core.SplitInfo(
        name=video_dataset.SPLIT, shard_lengths=shard_lengths, num_bytes=total_bytes, filename_template=template
    )
    tfds.folder_dataset.write_metadata(
        data_dir=incomplete, features=features, split_infos=[split], version=video_dataset.VERSION,
        filename_template=template, check_data=False, description=DESCRIPTION, disable_shuffling=True,
        metadata=tfds.core.MetadataDict(metadata, videos=names, num_frames=lengths, skipped=skipped),
    )  # fmt: skip
    os.rename(incomplete, folder)
    return folder, skipped
