"""DAVIS on disk: the sequence lists, ground-truth annotations, result PNGs and the videos to segment.

Layout (users download it): `<root>/JPEGImages/480p/<seq>/<frame>.jpg`,
`<root>/Annotations/480p/<seq>/<frame>.png` and `<root>/ImageSets/<year>/<subset>.txt`.
DAVIS-2017 annotations are palette PNGs with ids 0..N and 255 for void; DAVIS-2016 ones are
grey 0/255 with one object. `annotation_ids` is the one place that turns either into object ids.
Scoring is in `davis.py`.
"""

import pathlib

import numpy as np

from mer_jax.data import frames_io
from mer_jax.evaluation import masks_io, vos

YEARS = ("2016", "2017")
VOID_ID = 255


def annotation_ids(raw: np.ndarray, year: str) -> tuple[np.ndarray, np.ndarray]:
    """Object ids and void pixels of annotation masks, as the official toolkit reads them.

    Args:
        raw: [..., H, W] uint8 annotation values.
        year: "2017" (ids 0..N, 255 void: void becomes background 0) or "2016" (one object:
            id = value > 0, no void).

    Returns:
        (ids [..., H, W] uint8, void [..., H, W] bool).
    """
    if year not in YEARS:
        raise ValueError(f"year must be one of {YEARS}, got {year!r}")
    if year == "2016":
        return (raw > 0).astype(np.uint8), np.zeros(raw.shape, dtype=bool)
    void = raw == VOID_ID
    return np.where(void, 0, raw).astype(np.uint8), void


def read_sequence_list(davis_root: str | pathlib.Path, year: str, subset: str) -> list[str]:
    """Sequence names of a split, from `ImageSets/<year>/<subset>.txt` (one a line).

    Args:
        davis_root: the `DAVIS` folder.
        year: "2016" or "2017".
        subset: split name, e.g. "val".

    Returns:
        Sequence names in file order.
    """
    path = pathlib.Path(davis_root) / "ImageSets" / year / f"{subset}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"Sequence list not found: {path}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def read_ground_truth(
    davis_root: str | pathlib.Path, sequence: str, year: str
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Ground-truth ids of every annotated frame of a sequence (see `annotation_ids`).

    Args:
        davis_root: the `DAVIS` folder.
        sequence: sequence name.
        year: "2016" or "2017".

    Returns:
        ids: [T, H, W] uint8 object ids.
        void: [T, H, W] bool void pixels (all False for 2016).
        frame_names: the T frame names (PNG stems), sorted.
    """
    folder = pathlib.Path(davis_root) / "Annotations" / "480p" / sequence
    paths = sorted(folder.glob("*.png"))
    if not paths:
        raise FileNotFoundError(f"No annotation PNGs for sequence {sequence!r} in {folder}")
    raw = [masks_io.read_mask(path) for path in paths]
    for path, mask in zip(paths, raw):
        if mask.shape != raw[0].shape:
            raise ValueError(f"Annotation {path} is {mask.shape}, but {paths[0]} is {raw[0].shape}")
    ids, void = annotation_ids(np.stack(raw), year)
    return ids, void, [path.stem for path in paths]


def read_results(
    results_dir: str | pathlib.Path,
    sequence: str,
    frame_names: list[str],
    shape: tuple[int, int],
    binary: bool = False,
) -> np.ndarray:
    """Result ids of the given frames, `<results_dir>/<sequence>/<frame>.png`.

    Args:
        results_dir: results folder.
        sequence: sequence name.
        frame_names: frames to read.
        shape: (H, W) every result must have (that of the annotations).
        binary: binarise the ids (> 0), for single-object DAVIS-2016 scoring.

    Returns:
        [len(frame_names), H, W] uint8 ids.

    Raises:
        FileNotFoundError: if the sequence folder or a frame is missing.
        ValueError: if a frame is unreadable, not a palette/grey mask, or of another size.
    """
    folder = pathlib.Path(results_dir) / sequence
    if not folder.is_dir():
        raise FileNotFoundError(f"No results for sequence {sequence!r}: {folder} is not a folder")
    ids = np.zeros((len(frame_names), *shape), dtype=np.uint8)
    for t, name in enumerate(frame_names):
        path = folder / f"{name}.png"
        mask = masks_io.read_mask(path)
        if mask.shape != tuple(shape):
            raise ValueError(
                f"Result {path} is {mask.shape[1]}x{mask.shape[0]} (WxH) but the annotation is {shape[1]}x{shape[0]}"
            )
        ids[t] = mask > 0 if binary else mask
    return ids


def read_video(davis_root: str | pathlib.Path, sequence: str, year: str) -> vos.Video:
    """A sequence's frames and first-frame annotation, to segment.

    Args:
        davis_root: the `DAVIS` folder.
        sequence: sequence name.
        year: "2016" or "2017" (how the annotation is read, see `annotation_ids`).

    Returns:
        The video: every JPEG frame, annotation {0: ids} (void as background), the objects of
        the first frame, the frame names and the annotation's palette (None for grey PNGs).

    Raises:
        FileNotFoundError: the first frame's annotation is missing.
        ValueError: it differs in size from the frames, or a frame cannot be decoded.
    """
    root = pathlib.Path(davis_root)
    frame_dir = root / "JPEGImages" / "480p" / sequence
    names = [pathlib.Path(n).stem for n in frames_io.list_frames(str(frame_dir), (".jpg", ".jpeg"))]
    first_path = root / "Annotations" / "480p" / sequence / f"{names[0]}.png"
    if not first_path.is_file():
        raise FileNotFoundError(f"missing first-frame annotation {first_path} of sequence {sequence!r}")
    first = masks_io.read_mask(first_path)
    palette = masks_io.read_palette(first_path)
    frames = frames_io.read_frames([str(frame_dir / f"{n}.jpg") for n in names])
    if first.shape != frames.shape[1:3]:
        raise ValueError(
            f"annotation {first_path} is {first.shape[::-1]} (WxH) but the frames are {frames.shape[2:0:-1]}"
        )
    first, _ = annotation_ids(first, year)
    object_ids = [int(i) for i in np.unique(first) if i != 0]
    return vos.Video(sequence, frames, {0: first}, object_ids, names, palette=palette)
