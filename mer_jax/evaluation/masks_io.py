"""Reading and writing object-id masks as indexed PNG files.

Owns the on-disk mask format shared by the benchmarks: a mask is an [H, W] uint8 map of object ids
stored as a palette ('P') PNG whose pixel indices are the ids, or as a grey ('L') PNG whose values
are. Palette PNGs are read by index, never through their colours, so two files with different
palettes but the same indices hold the same mask. Also owns the standard DAVIS / PASCAL VOC palette.
"""

import pathlib

import numpy as np
from PIL import Image

# '1' is what Pillow opens 1-bit PNGs as (e.g. a saved bool array): pixels read as 0/1 ids.
_MASK_MODES = ("P", "L", "1")


def _open_image(path: str | pathlib.Path) -> Image.Image:
    """Opens and fully decodes an image, with errors that name the file.

    Args:
        path: image file.

    Returns:
        The decoded Pillow image.

    Raises:
        FileNotFoundError: if there is no file at `path`.
        ValueError: if the file cannot be decoded as an image.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Mask file not found: {path}")
    try:
        image = Image.open(path)
        image.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"Cannot read mask image {path}: {err}") from err
    return image


def read_mask(path: str | pathlib.Path) -> np.ndarray:
    """Reads the object ids of a mask PNG.

    Args:
        path: a palette ('P'), grey ('L') or 1-bit ('1') image file.

    Returns:
        [H, W] uint8 ids: the palette indices of a 'P' image, the grey values of an 'L' image, 0/1
        for a '1' image.

    Raises:
        FileNotFoundError: if there is no file at `path`.
        ValueError: if the file is unreadable or holds colour (RGB, RGBA, ...) or another mode.
    """
    image = _open_image(path)
    if image.mode not in _MASK_MODES:
        raise ValueError(
            f"Mask {path} has image mode {image.mode!r}; masks must be palette ('P') or grey ('L') PNGs "
            "whose pixel values are object ids, not colour images."
        )
    return np.array(image, dtype=np.uint8)


def read_palette(path: str | pathlib.Path) -> np.ndarray | None:
    """Reads the colour palette of an indexed image.

    Args:
        path: image file.

    Returns:
        [256, 3] uint8 palette (entries past the file's own palette are zero), or None when the image
        is not a palette ('P') image.

    Raises:
        FileNotFoundError: if there is no file at `path`.
        ValueError: if the file is unreadable.
    """
    image = _open_image(path)
    if image.mode != "P":
        return None
    entries = np.asarray(image.getpalette("RGB"), dtype=np.uint8).reshape(-1, 3)[:256]
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: len(entries)] = entries
    return palette


def davis_palette() -> np.ndarray:
    """The DAVIS / PASCAL VOC colour map.

    Colour of index i: bits 0, 1, 2 of i go to the top bits of red, green, blue, bits 3, 4, 5 to the
    next bits, and so on (1 -> (128, 0, 0), 2 -> (0, 128, 0), 3 -> (128, 128, 0), 8 -> (64, 0, 0)).

    Returns:
        [256, 3] uint8 palette.
    """
    index = np.arange(256)
    palette = np.zeros((256, 3), dtype=np.int64)
    for bit in range(8):
        for channel in range(3):
            palette[:, channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
    return palette.astype(np.uint8)


def write_mask(path: str | pathlib.Path, mask: np.ndarray, palette: np.ndarray | None = None) -> None:
    """Writes object ids as a palette PNG, creating parent folders.

    Args:
        path: output file.
        mask: [H, W] integer ids in [0, 255].
        palette: [256, 3] (or [N, 3], N <= 256) uint8 colours; defaults to `davis_palette()`.

    Raises:
        ValueError: if `mask` is not 2-D integer ids in [0, 255] or `palette` is not [N <= 256, 3].
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == bool):
        raise ValueError(f"Mask for {path} must be [H, W] integer ids, got {mask.dtype} {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError(f"Mask for {path} has ids outside [0, 255]: {mask.min()}..{mask.max()}")
    palette = davis_palette() if palette is None else np.asarray(palette)
    if palette.ndim != 2 or palette.shape[1] != 3 or palette.shape[0] > 256:
        raise ValueError(f"Palette for {path} must be [N <= 256, 3], got {palette.shape}")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(mask.astype(np.uint8))
    image.putpalette(palette.astype(np.uint8).tobytes(), rawmode="RGB")
    image.save(path, format="PNG")
