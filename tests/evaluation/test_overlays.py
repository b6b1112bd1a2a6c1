"""Overlay drawing: each object in its DAVIS palette colour at half opacity with a full-colour
edge, the background untouched, the same drawing in the MP4 videos."""

import cv2
import numpy as np
import pytest

from mer_jax.evaluation import masks_io, overlays, vos

GREY = (100, 50, 200)
RED = (128, 0, 0)  # DAVIS colour of id 1
GREEN = (0, 128, 0)  # DAVIS colour of id 2


def block_mask(size=8, top=1, left=1, side=6, object_id=1):
    mask = np.zeros((size, size), np.uint8)
    mask[top : top + side, left : left + side] = object_id
    return mask


def test_inside_is_half_the_palette_colour_the_edge_the_full_colour_the_background_the_frame():
    frame = np.full((8, 8, 3), GREY, np.uint8)
    drawn = overlays.draw_mask(frame, block_mask(), contour_px=1)
    # Inside, past the 1-px edge: round(0.5 * (100, 50, 200) + 0.5 * (128, 0, 0)).
    assert drawn[3, 3].tolist() == [114, 25, 100]
    np.testing.assert_array_equal(drawn[2:6, 2:6], np.full((4, 4, 3), (114, 25, 100)))
    for y, x in [(1, 1), (1, 4), (6, 6), (4, 1), (3, 6)]:  # The block's outermost ring
        assert drawn[y, x].tolist() == list(RED)
    background = block_mask() == 0
    np.testing.assert_array_equal(drawn[background], frame[background])
    assert drawn.dtype == np.uint8 and frame[3, 3].tolist() == list(GREY)  # The input is untouched.


def test_the_default_edge_is_two_pixels_wide():
    drawn = overlays.draw_mask(np.full((8, 8, 3), GREY, np.uint8), block_mask())
    assert overlays.CONTOUR_PX == 2
    assert drawn[2, 2].tolist() == list(RED) and drawn[2, 4].tolist() == list(RED)  # second ring
    np.testing.assert_array_equal(drawn[3:5, 3:5], np.full((2, 2, 3), (114, 25, 100)))


def test_blend_of_a_textured_frame_is_the_rounded_mean_pixel_by_pixel():
    frame = np.random.default_rng(0).integers(0, 256, (10, 12, 3)).astype(np.uint8)
    mask = np.zeros((10, 12), np.uint8)
    mask[2:9, 3:11] = 3
    drawn = overlays.draw_mask(frame, mask, contour_px=1)
    colour = masks_io.davis_palette()[3]  # (128, 128, 0)
    expected = np.round(0.5 * frame[3:8, 4:10] + 0.5 * colour.astype(np.float64)).astype(np.uint8)
    np.testing.assert_array_equal(drawn[3:8, 4:10], expected)


def test_touching_objects_each_get_their_own_edge_and_the_image_border_is_no_edge():
    frame = np.full((6, 8, 3), GREY, np.uint8)
    mask = np.zeros((6, 8), np.uint8)
    mask[:, :4], mask[:, 4:] = 1, 2  # Two objects filling the frame, meeting between columns 3 and 4.
    drawn = overlays.draw_mask(frame, mask, contour_px=1)
    assert drawn[2, 3].tolist() == list(RED) and drawn[2, 4].tolist() == list(GREEN)
    # Row 0 and column 0 touch the image border only: blended, not edge.
    assert drawn[0, 1].tolist() == [114, 25, 100] and drawn[2, 0].tolist() == [114, 25, 100]
    assert drawn[2, 6].tolist() == [50, 89, 100]  # round(0.5 * (100, 50, 200) + 0.5 * (0, 128, 0))


def test_a_given_palette_is_used_and_a_size_mismatch_is_refused():
    palette = np.zeros((256, 3), np.uint8)
    palette[1] = (0, 0, 255)
    drawn = overlays.draw_mask(np.zeros((8, 8, 3), np.uint8), block_mask(), palette, contour_px=1)
    assert drawn[1, 1].tolist() == [0, 0, 255] and drawn[3, 3].tolist() == [0, 0, 128]
    with pytest.raises(ValueError, match="differ in size"):
        overlays.draw_mask(np.zeros((8, 9, 3), np.uint8), block_mask())


def test_joints_and_points_are_drawn_on_a_copy():
    frame = np.zeros((20, 20, 3), np.uint8)
    joints = overlays.draw_joints(frame, np.array([[5.0, 6.0]]))
    assert joints[6, 5].tolist() == list(overlays.JOINT_COLOUR) and not frame.any()
    points = overlays.draw_points(
        frame, np.array([[10.0, 10.0], [3.0, 15.0]]), np.array([True, False]), np.array([0, 1])
    )
    assert points[10, 10].tolist() == list(overlays.point_colour(0))  # a filled dot
    assert points[15, 3].tolist() == [0, 0, 0] and points[13, 3].tolist() == list(overlays.point_colour(1))  # a ring
    assert not frame.any()


def test_overlay_videos_use_the_davis_colours_whatever_the_masks_palette(tmp_path):
    # A palette PNG saved without colours (Pillow's default) gives id 1 the colour (1, 1, 1): drawn
    # with it, the object was a faint grey tint.
    grey_palette = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    frames = np.full((3, 64, 64, 3), 100, np.uint8)
    masks = np.stack([block_mask(64, 16, 16, 32)] * 3)
    video = vos.Video("grey", frames, {0: masks[0]}, [1], ["0", "1", "2"], palette=grey_palette)
    vos.write_overlay(str(tmp_path / "grey.mp4"), video, masks)
    capture = cv2.VideoCapture(str(tmp_path / "grey.mp4"))
    ok, bgr = capture.read()
    capture.release()
    assert ok
    inside = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)[28:36, 28:36].reshape(-1, 3).mean(0)
    np.testing.assert_allclose(inside, [114, 50, 50], atol=8)  # Half DAVIS red over grey 100, MPEG-4 lossy.
