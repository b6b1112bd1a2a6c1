"""J&F of label propagation on held-out procedural videos (the demo's check during training).

Every object visible in a video's first frame is propagated from its first-frame mask by the VOS
loop (`vos.py`); the scores use the DAVIS definitions (`davis_metrics`), with objects that are
absent from the first frame removed from the ground truth. Encoders that fuse flow get the
videos' exact flow (docs/method.md, 'Benchmarks').
"""

import numpy as np

from mer_jax.data import synthetic_video
from mer_jax.evaluation import davis_metrics, protocol, vos


def to_video(index: int, video: synthetic_video.SyntheticVideo) -> vos.Video | None:
    """The VOS video of a procedural one (None when its first frame shows no object)."""
    object_ids = [int(i) for i in np.unique(video.masks[0]) if i != 0]
    if not object_ids:
        return None
    names = [f"{t:05d}" for t in range(len(video.frames))]
    return vos.Video(f"{index:05d}", video.frames, {0: video.masks[0]}, object_ids, names, flow=video.flow)


def evaluate(
    encoder: vos.FrameEncoder | vos.CopyFirstFrame,
    preset: protocol.Preset,
    videos: list[synthetic_video.SyntheticVideo],
) -> dict:
    """Object-weighted scores over the videos.

    Returns:
      {"J&F-Mean", "J-Mean", "F-Mean": float, "objects": int, "per_object": {"<video>_<object
      id>": J&F of that object}}; the per-object keys are the same for every encoder on the same
      videos (for paired differences).
    """
    pairs = [(to_video(i, video), video.masks) for i, video in enumerate(videos)]
    pairs = [(video, truth) for video, truth in pairs if video is not None]
    segmented = vos.segment_videos([video for video, _ in pairs], encoder, preset, desc="held-out videos")
    j_means, f_means, per_object = [], [], {}
    for (video, predicted), (_, truth) in zip(segmented, pairs):
        # Ids in label-channel order: objects absent from frame 0 become background.
        lookup = np.zeros(256, np.uint8)
        lookup[video.object_ids] = np.arange(1, len(video.object_ids) + 1)
        frames = davis_metrics.evaluate_sequence(lookup[truth], lookup[predicted], None, len(video.object_ids))
        for k, object_id in enumerate(video.object_ids):
            j_means.append(davis_metrics.statistics(frames["J"][k])[0])
            f_means.append(davis_metrics.statistics(frames["F"][k])[0])
            per_object[f"{video.name}_{object_id}"] = (j_means[-1] + f_means[-1]) / 2
    j_mean, f_mean = float(np.mean(j_means)), float(np.mean(f_means))
    return {
        "J&F-Mean": (j_mean + f_mean) / 2, "J-Mean": j_mean, "F-Mean": f_mean, "objects": len(j_means),
        "per_object": per_object,
    }  # fmt: skip
