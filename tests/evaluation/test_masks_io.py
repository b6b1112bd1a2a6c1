"""Tests for mer_jax.evaluation.masks_io: indexed PNG masks and the DAVIS palette."""

import numpy as np
import pytest
from PIL import Image

from mer_jax.evaluation import masks_io


def test_davis_palette_entries():
    palette = masks_io.davis_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    np.testing.assert_array_equal(palette[0], [0, 0, 0])
    np.testing.assert_array_equal(palette[1], [128, 0, 0])
    np.testing.assert_array_equal(palette[2], [0, 128, 0])
    np.testing.assert_array_equal(palette[3], [128, 128, 0])
    np.testing.assert_array_equal(palette[4], [0, 0, 128])
    np.testing.assert_array_equal(palette[8], [64, 0, 0])
    np.testing.assert_array_equal(palette[255], [224, 224, 192])
    assert len(np.unique(palette, axis=0)) == 256


def test_round_trip_default_palette(tmp_path):
    mask = np.array([[0, 1, 2], [3, 255, 7]], dtype=np.uint8)
    path = tmp_path / "nested" / "dir" / "00000.png"
    masks_io.write_mask(path, mask)
    with Image.open(path) as image:
        assert image.mode == "P"
    read = masks_io.read_mask(path)
    assert read.dtype == np.uint8 and read.flags.writeable
    np.testing.assert_array_equal(read, mask)
    np.testing.assert_array_equal(masks_io.read_palette(path), masks_io.davis_palette())


def test_round_trip_custom_short_palette(tmp_path):
    mask = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    palette = np.array([[10, 20, 30], [40, 50, 60], [70, 80, 90]], dtype=np.uint8)
    path = tmp_path / "m.png"
    masks_io.write_mask(path, mask, palette)
    np.testing.assert_array_equal(masks_io.read_mask(path), mask)
    read = masks_io.read_palette(path)
    assert read.shape == (256, 3)
    np.testing.assert_array_equal(read[:3], palette)
    assert not read[3:].any()


def test_palette_indices_are_read_not_colours(tmp_path):
    # Index 1 painted black: the mask must still read 1, not the grey value of its colour.
    mask = np.array([[0, 1]], dtype=np.uint8)
    path = tmp_path / "m.png"
    masks_io.write_mask(path, mask, np.zeros((256, 3), np.uint8))
    np.testing.assert_array_equal(masks_io.read_mask(path), mask)


def test_grey_and_one_bit_masks(tmp_path):
    grey = np.array([[0, 255], [7, 0]], dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(masks_io.read_mask(tmp_path / "grey.png"), grey)
    assert masks_io.read_palette(tmp_path / "grey.png") is None
    Image.fromarray(np.array([[True, False]])).save(tmp_path / "bits.png")
    np.testing.assert_array_equal(masks_io.read_mask(tmp_path / "bits.png"), [[1, 0]])


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_colour_masks_rejected(tmp_path, mode):
    path = tmp_path / "colour.png"
    Image.new(mode, (4, 3)).save(path)
    with pytest.raises(ValueError, match=rf"{mode}.*"):
        masks_io.read_mask(path)
    with pytest.raises(ValueError, match="colour.png"):
        masks_io.read_mask(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.png"):
        masks_io.read_mask(tmp_path / "nothing.png")
    with pytest.raises(FileNotFoundError, match="nothing.png"):
        masks_io.read_palette(tmp_path / "nothing.png")


def test_unreadable_files(tmp_path):
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not a png at all")
    with pytest.raises(ValueError, match="garbage.png"):
        masks_io.read_mask(garbage)
    whole = tmp_path / "whole.png"
    masks_io.write_mask(whole, np.random.default_rng(0).integers(0, 5, (64, 64), dtype=np.uint8))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(whole.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated.png"):
        masks_io.read_mask(truncated)


def test_write_mask_validates(tmp_path):
    with pytest.raises(ValueError, match="H, W"):
        masks_io.write_mask(tmp_path / "a.png", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match="0, 255"):
        masks_io.write_mask(tmp_path / "b.png", np.array([[0, 256]]))
    with pytest.raises(ValueError, match="Palette"):
        masks_io.write_mask(tmp_path / "c.png", np.zeros((2, 2), np.uint8), np.zeros((256, 4), np.uint8))
    masks_io.write_mask(tmp_path / "d.png", np.array([[0, 3]], dtype=np.int64))
    np.testing.assert_array_equal(masks_io.read_mask(tmp_path / "d.png"), [[0, 3]])
