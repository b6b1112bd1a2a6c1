"""The report's thumbnails: which frames a strip shows and how small they are drawn."""

import numpy as np

from mer_jax.evaluation import overlays, thumbnails


def test_first_middle_last_and_the_earliest_worst_scored_frame():
    per_frame = np.array([np.nan, 0.9, 0.2, 0.7, 0.2, np.nan])
    assert thumbnails.pick_frames(per_frame, "J") == [
        (0, "first, frame 0"),
        (3, "middle, frame 3, J 0.700"),
        (5, "last, frame 5"),
        (2, "worst, frame 2, J 0.200"),
    ]


def test_no_scored_frame_shows_no_worst():
    assert [t for t, _ in thumbnails.pick_frames(np.full(4, np.nan), "J")] == [0, 2, 3]


def test_thumbnails_are_160_wide_with_the_aspect_kept_and_never_enlarged():
    assert thumbnails.thumbnail_size(480, 854) == (90, 160)
    assert thumbnails.thumbnail_size(240, 320) == (120, 160)
    assert thumbnails.thumbnail_size(48, 64) == (48, 64)


def test_a_mask_thumbnail_is_drawn_at_the_thumbnail_size():
    frame = np.full((240, 320, 3), 100, np.uint8)
    mask = np.zeros((240, 320), np.uint8)
    mask[40:200, 80:240] = 1
    picture = thumbnails.mask_thumbnail(frame, mask, "first, frame 0")
    assert picture.image.shape == (120, 160, 3) and picture.caption == "first, frame 0"
    assert picture.image[60, 80].tolist() == [114, 50, 50]  # Inside: half DAVIS red over grey.
    assert picture.image[20, 40].tolist() == [128, 0, 0]  # The 1-px edge at half the size.
    assert picture.image[5, 5].tolist() == [100, 100, 100]


def test_joints_and_points_are_scaled_to_the_thumbnail():
    frame = np.zeros((240, 320, 3), np.uint8)
    picture = thumbnails.joints_thumbnail(frame, np.array([[100.5, 60.5]]), "")
    assert picture.image[30, 50].tolist() == list(overlays.JOINT_COLOUR)  # (x + 0.5) / 2 - 0.5
    picture = thumbnails.points_thumbnail(frame, np.array([[200.5, 100.5]]), np.array([True]), np.array([4]), "")
    assert picture.image[50, 100].tolist() == list(overlays.point_colour(4))
