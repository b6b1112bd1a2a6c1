"""The prepared training dataset (written by `data_prep.build`) and random access to its clips.

A TFDS dataset in `array_record` files with one example per frame, videos stored whole,
contiguous and in frame order (example index = first index of the video + frame index), so that
sampling a clip reads only the frames it uses:
  video_id     int64          index into metadata['videos']
  frame_index  int64          position of the frame in its video
  jpeg         uint8 [bytes]  the frame, RGB, JPEG-encoded
  flow         float16 [H, W, 2] (zlib)  flow of the frame to `flow_gap` frames earlier, pixels
metadata.json holds 'videos' (names), 'num_frames', 'flow_gap', 'image_size' (0: frames kept at
their size), 'dataset', 'jpeg_quality' and 'skipped' ([name, reason] of videos left out).
Reading needs neither TensorFlow nor the builder class (`tfds.builder_from_directory`).
"""

import os

import cv2
import numpy as np
import tensorflow_datasets as tfds

from mer_jax.data import resize

VERSION = "1.0.0"
SPLIT = "train"
BUILD_COMMAND = (
    "python -m data_prep.build --dataset=ytvos --frames_root=YTVOS/train_all_frames/JPEGImages "
    "--flow_root=FLOWDIR --data_dir={data_dir}"
)


def features() -> tfds.features.FeaturesDict:
    """The per-frame example (see the module docstring)."""
    return tfds.features.FeaturesDict(
        {
            "video_id": tfds.features.Tensor(shape=(), dtype=np.int64),
            "frame_index": tfds.features.Tensor(shape=(), dtype=np.int64),
            "jpeg": tfds.features.Tensor(shape=(None,), dtype=np.uint8),
            # TFDS needs an encoding for more than one unknown dimension; zlib is lossless.
            "flow": tfds.features.Tensor(shape=(None, None, 2), dtype=np.float16, encoding="zlib"),
        }
    )


def dataset_dir(data_dir: str, name: str) -> str:
    """The folder of dataset `name` (its version folder) under data_dir.

    Raises:
      FileNotFoundError: not built yet, naming the location and the command that builds it.
    """
    data_dir = os.path.expanduser(data_dir)
    path = os.path.join(data_dir, name, VERSION)
    if not os.path.isfile(os.path.join(path, "dataset_info.json")):
        raise FileNotFoundError(
            f"No prepared '{name}' dataset at {path} (config.data.data_dir={data_dir!r}, config.data.name="
            f"{name!r}). Prepare it with\n  {BUILD_COMMAND.format(data_dir=data_dir)}\n"
            "or train on the embedded videos with --config=configs/demo.py."
        )
    return path


class TfdsSource:
    """A `sources.VideoSource` over a dataset built by `data_prep.build`.

    Frames are decoded with OpenCV and resized (with their flow, vectors scaled) to
    image_size x image_size. Each read checks what it decodes and raises ValueError naming the
    video, the frame and the dataset folder: an undecodable frame, non-finite flow, a flow whose
    size differs from its frame's, or an example that is not the frame the index promises.
    """

    def __init__(self, data_dir: str, name: str, image_size: int, flow_gap: int):
        self.path = dataset_dir(data_dir, name)
        builder = tfds.builder_from_directory(self.path)
        self.records = builder.as_data_source(split=SPLIT)
        metadata = builder.info.metadata
        self.names = list(metadata["videos"])
        self.lengths = np.asarray(metadata["num_frames"], np.int64)
        self.first = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.size = (image_size, image_size)
        if int(metadata["flow_gap"]) != flow_gap:
            raise ValueError(
                f"{self.path} holds flow to {metadata['flow_gap']} frames earlier, but config.data.flow_gap is "
                f"{flow_gap}: set --config.data.flow_gap={metadata['flow_gap']} or rebuild with --flow_gap={flow_gap}"
            )
        if self.lengths.sum() != len(self.records):
            raise ValueError(
                f"{self.path} is inconsistent: metadata.json counts {self.lengths.sum()} frames, the "
                f"array_record files hold {len(self.records)}; rebuild it with data_prep.build --overwrite"
            )

    def __len__(self) -> int:
        return len(self.names)

    def num_frames(self, video: int) -> int:
        return int(self.lengths[video])

    def name(self, video: int) -> str:
        return self.names[video]

    def _where(self, video: int, frame: int) -> str:
        return f"frame {frame} of video {self.names[video]} in {self.path}"

    def read(self, video: int, frames: np.ndarray, with_flow: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Frames [N] of video -> (uint8 RGB [N, S, S, 3], float32 flow [N, S, S, 2] or None)."""
        examples = self.records.__getitems__([int(self.first[video] + t) for t in frames])
        images, flows = [], []
        for t, example in zip(frames, examples):
            where = self._where(video, int(t))
            if (int(example["video_id"]), int(example["frame_index"])) != (video, int(t)):
                raise ValueError(
                    f"{where}: the example there is frame {example['frame_index']} of video {example['video_id']}; "
                    "the dataset is inconsistent, rebuild it with data_prep.build --overwrite"
                )
            bgr = cv2.imdecode(example["jpeg"], cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError(f"{where}: the stored JPEG cannot be decoded (corrupt dataset file); rebuild it")
            images.append(resize.resize_frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), self.size))
            if with_flow:
                flow = example["flow"]
                if flow.shape[:2] != bgr.shape[:2]:
                    raise ValueError(
                        f"{where}: flow is {flow.shape[1]}x{flow.shape[0]} but the frame is "
                        f"{bgr.shape[1]}x{bgr.shape[0]}"
                    )
                if not np.isfinite(flow).all():
                    raise ValueError(f"{where}: flow contains NaN or infinite values")
                flows.append(resize.resize_flow(flow, self.size))
        return np.stack(images), (np.stack(flows) if with_flow else None)
