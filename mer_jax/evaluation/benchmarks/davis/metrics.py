"""DAVIS video object segmentation metrics in pure NumPy, with the official toolkit's semantics.

Owns the maths of the DAVIS semi-supervised benchmark as the official `davis2017-evaluation` toolkit
computes it: region similarity J (IoU), boundary F-measure F (1-px boundaries matched within a disk
tolerance of ceil(0.008 x image diagonal) px), the per-object statistics (mean, recall, decay) and
the scoring of one sequence from its id maps. Reading files and aggregating over a data set live in
`davis.py`.
"""

import warnings

import cv2
import numpy as np

_N_DECAY_BINS = 4


def jaccard(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> np.ndarray:
    """Region similarity J: IoU of the masks outside the void pixels.

    Args:
        gt: [T, H, W] bool ground-truth masks.
        pred: [T, H, W] bool predicted masks.
        void: [T, H, W] bool pixels to ignore, or None.

    Returns:
        [T] float64 IoU per frame; 1 where the union (outside void) is empty.
    """
    gt = np.asarray(gt, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    if gt.shape != pred.shape:
        raise ValueError(f"Ground truth {gt.shape} and prediction {pred.shape} shapes differ")
    valid = np.ones_like(gt) if void is None else ~np.asarray(void, dtype=bool)
    inter = np.sum(gt & pred & valid, axis=(-2, -1))
    union = np.sum((gt | pred) & valid, axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / union
    return np.where(union == 0, 1.0, iou)


def seg_to_boundary(seg: np.ndarray) -> np.ndarray:
    """1-px boundary of a binary mask: pixels that differ from their E, S or SE neighbour.

    Pixels of the last row compare only with E, of the last column only with S; the bottom-right
    pixel is never a boundary (the official `_seg2bmap` at the mask's own size).

    Args:
        seg: [H, W] binary mask.

    Returns:
        [H, W] bool boundary map.
    """
    seg = np.asarray(seg, dtype=bool)
    boundary = np.zeros_like(seg)
    boundary[:, :-1] |= seg[:, :-1] ^ seg[:, 1:]
    boundary[:-1, :] |= seg[:-1, :] ^ seg[1:, :]
    boundary[:-1, :-1] |= seg[:-1, :-1] ^ seg[1:, 1:]
    boundary[-1, -1] = False
    return boundary


def disk(radius: float) -> np.ndarray:
    """Disk structuring element: offsets (x, y) in arange(-r, r + 1) with x^2 + y^2 <= r^2.

    Args:
        radius: r (skimage.morphology.disk semantics, also for a float radius).

    Returns:
        [2r + 1, 2r + 1] bool footprint for an integer r.
    """
    offsets = np.arange(-radius, radius + 1)
    return offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2


def boundary_f(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None, bound_th: float = 0.008) -> float:
    """Boundary F-measure F between two masks.

    A boundary pixel of one mask is matched when a boundary pixel of the other lies within a disk of
    radius bound_pix: bound_th itself if bound_th >= 1, else ceil(bound_th * sqrt(H^2 + W^2)).
    Precision is over the predicted boundary, recall over the ground-truth boundary; an empty
    boundary on one side gives the official (precision, recall): predicted empty -> (1, 0),
    ground truth empty -> (0, 1), both empty -> (1, 1).

    Args:
        gt: [H, W] binary ground-truth mask.
        pred: [H, W] binary predicted mask.
        void: [H, W] bool pixels removed from both masks before taking boundaries, or None.
        bound_th: tolerance, in pixels if >= 1, else as a fraction of the image diagonal.

    Returns:
        F = 2PR / (P + R), 0 when P + R = 0.
    """
    gt = np.asarray(gt, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    if gt.shape != pred.shape:
        raise ValueError(f"Ground truth {gt.shape} and prediction {pred.shape} shapes differ")
    if void is not None:
        valid = ~np.asarray(void, dtype=bool)
        gt, pred = gt & valid, pred & valid
    bound_pix = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(gt.shape))
    kernel = disk(bound_pix).astype(np.uint8)
    gt_boundary = seg_to_boundary(gt)
    pred_boundary = seg_to_boundary(pred)
    # cv2.dilate leaves outside-image pixels out of the max, as the official toolkit's call does.
    gt_dilated = cv2.dilate(gt_boundary.astype(np.uint8), kernel).astype(bool)
    pred_dilated = cv2.dilate(pred_boundary.astype(np.uint8), kernel).astype(bool)
    n_pred = int(pred_boundary.sum())
    n_gt = int(gt_boundary.sum())
    if n_pred == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_pred > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_pred == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = np.sum(pred_boundary & gt_dilated) / n_pred
        recall = np.sum(gt_boundary & pred_dilated) / n_gt
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def decay_bins(num_frames: int) -> list[slice]:
    """The 4 overlapping frame ranges whose means define decay (first minus last).

    Bin edges are ids = round(linspace(1, T, 5) + 1e-10) - 1, bin i = [ids[i], ids[i + 1]]. The ids are
    cast to uint8 as in the official toolkit, so they wrap past 256 frames exactly as its numbers do
    (its `ids[i + 1] + 1` does not wrap: the numpy it needs, < 1.24, promotes uint8 + int to int64).

    Args:
        num_frames: T.

    Returns:
        4 slices into a [T] per-frame array.
    """
    ids = (np.round(np.linspace(1, num_frames, _N_DECAY_BINS + 1) + 1e-10) - 1).astype(np.int64).astype(np.uint8)
    return [slice(int(ids[i]), int(ids[i + 1]) + 1) for i in range(_N_DECAY_BINS)]


def statistics(per_frame: np.ndarray) -> tuple[float, float, float]:
    """Per-object statistics of a per-frame measure (J or F).

    Args:
        per_frame: [T] per-frame values.

    Returns:
        (mean, recall, decay): nanmean of the values; fraction of frames above 0.5 (a NaN frame
        counts as below); nanmean of the first decay bin minus that of the last. NaN where undefined
        (no frames).
    """
    per_frame = np.asarray(per_frame, dtype=np.float64)
    bins = decay_bins(len(per_frame))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = np.nanmean(per_frame)
        recall = np.nanmean(per_frame > 0.5)
        decay = np.nanmean(per_frame[bins[0]]) - np.nanmean(per_frame[bins[-1]])
    return float(mean), float(recall), float(decay)


def evaluate_sequence(
    gt_ids: np.ndarray,
    pred_ids: np.ndarray,
    void: np.ndarray | None,
    num_objects: int,
    name: str = "sequence",
) -> dict[str, np.ndarray]:
    """Per-frame J and F of every object of one sequence, first and last frames excluded.

    Object k (1..num_objects) is the pixels with id k. A prediction without some object scores it as
    an empty mask; an id above num_objects in a scored predicted frame is an error, as officially.

    Args:
        gt_ids: [T, H, W] uint8 ground-truth ids (void already set to background).
        pred_ids: [T, H, W] uint8 predicted ids; frames 0 and T - 1 are not read.
        void: [T, H, W] bool pixels to ignore, or None (the official semi-supervised scoring uses none).
        num_objects: N, the number of ground-truth objects.
        name: sequence name for error messages.

    Returns:
        {"J": [N, T - 2] float64, "F": [N, T - 2] float64}; row k - 1 is object k.

    Raises:
        ValueError: on mismatched shapes or predicted ids above num_objects.
    """
    if gt_ids.shape != pred_ids.shape:
        raise ValueError(f"{name}: ground truth {gt_ids.shape} and prediction {pred_ids.shape} shapes differ")
    gt_ids, pred_ids = gt_ids[1:-1], pred_ids[1:-1]
    void = None if void is None else void[1:-1]
    pred_objects = int(pred_ids.max()) if pred_ids.size else 0
    if pred_objects > num_objects:
        raise ValueError(
            f"{name}: the results hold object id {pred_objects} but the ground truth has only {num_objects} objects"
        )
    num_frames = len(gt_ids)
    j_frames = np.zeros((num_objects, num_frames))
    f_frames = np.zeros((num_objects, num_frames))
    for k in range(num_objects):
        gt = gt_ids == k + 1
        pred = pred_ids == k + 1
        j_frames[k] = jaccard(gt, pred, void)
        for t in range(num_frames):
            f_frames[k, t] = boundary_f(gt[t], pred[t], None if void is None else void[t])
    return {"J": j_frames, "F": f_frames}
