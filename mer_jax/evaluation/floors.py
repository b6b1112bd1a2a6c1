"""The two floors every evaluation reports beside the model (docs/method.md, 'Benchmarks').

`copy` holds each first-frame annotation still (`vos.CopyFirstFrame`: no features at all; TAP-Vid
holds each query point still) and `lab` propagates with raw Lab pixels (`features.LabEncoder`).
Both are scored by the benchmark's own code, so a model's number means something only where it
clears them.
"""

from typing import Sequence

from mer_jax.evaluation import features, vos

FLOORS = ("copy", "lab")


def floor_encoders(
    lab_mean: Sequence[float], lab_std: Sequence[float], stride: int
) -> dict[str, vos.FrameEncoder | vos.CopyFirstFrame]:
    """{"copy": the held first-frame annotation, "lab": raw Lab pixels normalised by lab_mean, lab_std,
    averaged to `stride` (the preset's, so that the floor is propagated as the model is)}."""
    return {"copy": vos.CopyFirstFrame(), "lab": features.LabEncoder(lab_mean, lab_std, stride=stride)}
