"""DAVIS on disk: the sequence lists, ground-truth annotations, result PNGs and the videos to segment.

Layout (users download it): `<root>/JPEGImages/480p/<seq>/<frame>.jpg`,
`<root>/Annotations/480p/<seq>/<frame>.png` and `<root>/ImageSets/<year>/<subset>.txt`.
DAVIS-2017 annotations are palette PNGs with ids 0..N and 255 for void; DAVIS-2016 ones are
grey 0/255 with one object. `annotation_ids` is the one place that turns either into object ids.
Frames and annotations are matched by name (`<frame>.jpg` with `<frame>.png`), never by position:
a sequence whose annotations and frames disagree is refused with the files named, since a
missing frame would otherwise shift the start of propagation onto a later frame's ground truth.
Scoring is in `davis.py`.
"""

import pathlib

import numpy as np

from mer_jax.data import frames_io
from mer_jax.evaluation import masks_io, vos

YEARS = ("2016", "2017")
VOID_ID = 255
_FRAME_EXTENSIONS = (".jpg", ".jpeg")
_LISTED = 5  # Paths named in an error message; the rest are counted.


def _some(paths: list[pathlib.Path]) -> str:
    """The first few paths, comma-separated, and how many more there are."""
    shown = ", ".join(str(path) for path in paths[:_LISTED])
    return shown + (f" and {len(paths) - _LISTED} more" if len(paths) > _LISTED else "")


def _frame_files(frame_dir: pathlib.Path) -> dict[str, pathlib.Path]:
    """{frame name (file stem): JPEG path} of a sequence's frame folder, sorted by name.

    Raises:
        FileNotFoundError: the folder is missing or holds no JPEG.
        ValueError: two JPEGs share a name (e.g. `00000.jpg` and `00000.jpeg`).
    """
    files = {}
    for file_name in frames_io.list_frames(str(frame_dir), _FRAME_EXTENSIONS):
        name = pathlib.Path(file_name).stem
        if name in files:
            raise ValueError(f"frames {files[name]} and {frame_dir / file_name} share the name {name!r}: remove one")
        files[name] = frame_dir / file_name
    return files


def frame_files(davis_root: str | pathlib.Path, sequence: str) -> dict[str, pathlib.Path]:
    """{frame name: JPEG path} of a sequence's frames (`JPEGImages/480p/<sequence>`), sorted by name.

    Raises:
        FileNotFoundError: the folder is missing or holds no JPEG.
        ValueError: two JPEGs share a name.
    """
    return _frame_files(pathlib.Path(davis_root) / "JPEGImages" / "480p" / sequence)


def _annotation_files(annotation_dir: pathlib.Path) -> dict[str, pathlib.Path]:
    """{frame name: PNG path} of a sequence's annotation folder, sorted by name ({} if it is missing)."""
    return {path.stem: path for path in sorted(annotation_dir.glob("*.png"))}


def _check_annotations_have_frames(
    sequence: str, frames: dict[str, pathlib.Path], annotations: dict[str, pathlib.Path], frame_dir: pathlib.Path
) -> None:
    """Raises FileNotFoundError naming every annotation whose frame (same name) has no JPEG."""
    orphans = [name for name in annotations if name not in frames]
    if orphans:
        start = (
            "The first annotated frame has no image, so propagation would start from a later frame's ground truth. "
            if orphans[0] < min(frames)
            else ""
        )
        raise FileNotFoundError(
            f"sequence {sequence!r}: {len(orphans)} annotation(s) have no frame: "
            f"{_some([annotations[name] for name in orphans])}; missing "
            f"{_some([frame_dir / f'{name}.jpg' for name in orphans])}. {start}Frames and annotations are matched "
            "by name: restore the missing JPEGs from the DAVIS download."
        )


def _check_frames_have_annotations(
    sequence: str,
    frames: dict[str, pathlib.Path],
    annotations: dict[str, pathlib.Path],
    annotation_dir: pathlib.Path,
) -> None:
    """Raises FileNotFoundError naming every frame without an annotation of the same name."""
    unannotated = [name for name in frames if name not in annotations]
    if unannotated:
        raise FileNotFoundError(
            f"sequence {sequence!r}: {len(unannotated)} frame(s) have no annotation: "
            f"{_some([frames[name] for name in unannotated])}; missing "
            f"{_some([annotation_dir / f'{name}.png' for name in unannotated])}. The ground truth of DAVIS "
            "train/val annotates every frame (test-dev/test-challenge give only the first, and are scored by the "
            "DAVIS server): restore the missing PNGs from the DAVIS download."
        )


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

    When the sequence's frame folder `JPEGImages/480p/<sequence>` exists, the annotations must be
    exactly its frames, matched by name (scoring needs the ground truth of every frame); without
    it (a tree of annotations only) the annotations are taken as they are.

    Args:
        davis_root: the `DAVIS` folder.
        sequence: sequence name.
        year: "2016" or "2017".

    Returns:
        ids: [T, H, W] uint8 object ids.
        void: [T, H, W] bool void pixels (all False for 2016).
        frame_names: the T frame names (PNG stems), sorted.

    Raises:
        FileNotFoundError: no annotation, an annotation without a JPEG frame, or a frame without an
            annotation (each named).
        ValueError: annotations differ in size.
    """
    root = pathlib.Path(davis_root)
    folder = root / "Annotations" / "480p" / sequence
    annotations = _annotation_files(folder)
    if not annotations:
        raise FileNotFoundError(f"No annotation PNGs for sequence {sequence!r} in {folder}")
    frame_dir = root / "JPEGImages" / "480p" / sequence
    if frame_dir.is_dir():
        frames = _frame_files(frame_dir)
        _check_annotations_have_frames(sequence, frames, annotations, frame_dir)
        _check_frames_have_annotations(sequence, frames, annotations, folder)
    paths = list(annotations.values())
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

    Frames and annotations are matched by name. The annotations must be either the first frame's
    alone (test-dev/test-challenge) or exactly one per frame (train/val).

    Args:
        davis_root: the `DAVIS` folder.
        sequence: sequence name.
        year: "2016" or "2017" (how the annotation is read, see `annotation_ids`).

    Returns:
        The video: every JPEG frame, annotation {0: ids} (void as background), the objects of
        the first frame, the frame names and the annotation's palette (None for grey PNGs).

    Raises:
        FileNotFoundError: the frame folder or the first frame's annotation is missing, an
            annotation has no JPEG frame (a missing first JPEG among them), or, when later frames
            are annotated, a frame has no annotation (each named).
        ValueError: the annotation differs in size from the frames, or a frame cannot be decoded.
    """
    root = pathlib.Path(davis_root)
    frame_dir = root / "JPEGImages" / "480p" / sequence
    annotation_dir = root / "Annotations" / "480p" / sequence
    frame_files = _frame_files(frame_dir)
    annotations = _annotation_files(annotation_dir)
    _check_annotations_have_frames(sequence, frame_files, annotations, frame_dir)
    names = list(frame_files)
    first_path = annotation_dir / f"{names[0]}.png"
    if names[0] not in annotations:
        raise FileNotFoundError(
            f"missing first-frame annotation {first_path} of sequence {sequence!r}: propagation starts from it; "
            "restore it from the DAVIS download."
        )
    if len(annotations) > 1:
        _check_frames_have_annotations(sequence, frame_files, annotations, annotation_dir)
    first = masks_io.read_mask(first_path)
    palette = masks_io.read_palette(first_path)
    frames = frames_io.read_frames([str(path) for path in frame_files.values()])
    if first.shape != frames.shape[1:3]:
        raise ValueError(
            f"annotation {first_path} is {first.shape[::-1]} (WxH) but the frames are {frames.shape[2:0:-1]}"
        )
    first, _ = annotation_ids(first, year)
    object_ids = [int(i) for i in np.unique(first) if i != 0]
    return vos.Video(sequence, frames, {0: first}, object_ids, names, palette=palette)
