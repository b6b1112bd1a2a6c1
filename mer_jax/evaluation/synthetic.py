"""J&F of label propagation on held-out procedural videos (the demo's end-of-training check).

Every object visible in a video's first frame is propagated from its first-frame mask; the
scores use the DAVIS definitions (`davis_metrics`), with objects that are absent from the first
frame removed from the ground truth. Encoders that fuse flow get the videos' exact flow.
"""

import numpy as np

from mer_jax.data import synthetic_video
from mer_jax.evaluation import davis_metrics, propagation


def evaluate(encoder, preset: propagation.Preset, videos: list[synthetic_video.SyntheticVideo]) -> dict[str, float]:
    """Object-weighted {"J&F-Mean", "J-Mean", "F-Mean", "objects"} over the videos."""
    propagator = propagation.Propagator(preset)
    j_means, f_means = [], []
    for video in videos:
        object_ids = [int(i) for i in np.unique(video.masks[0]) if i != 0]
        if not object_ids:
            continue
        lookup = np.zeros(256, np.uint8)
        lookup[object_ids] = np.arange(1, len(object_ids) + 1)
        gt = lookup[video.masks]
        predicted = np.zeros_like(gt)
        segments = propagation.segment_video(
            encoder, propagator, video.frames, {0: video.masks[0]}, object_ids, flow=video.flow
        )
        for t, mask in segments:
            predicted[t] = lookup[mask]
        frames = davis_metrics.evaluate_sequence(gt, predicted, None, len(object_ids))
        for k in range(len(object_ids)):
            j_means.append(davis_metrics.statistics(frames["J"][k])[0])
            f_means.append(davis_metrics.statistics(frames["F"][k])[0])
    j_mean, f_mean = float(np.mean(j_means)), float(np.mean(f_means))
    return {"J&F-Mean": (j_mean + f_mean) / 2, "J-Mean": j_mean, "F-Mean": f_mean, "objects": len(j_means)}
