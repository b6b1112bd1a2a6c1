"""Tests for mer_jax.data.synthetic_video: shapes, determinism, exact flow, lighting and colour overlap for
both generator kinds; easy's output pinned; camouflage objects look like the background but move."""

import hashlib

import cv2
import numpy as np
import pytest

from configs import ytvos
from mer_jax.data import sources
from mer_jax.data.synthetic_video import SyntheticVideo, generate_video, generate_videos

SIZE = dict(num_frames=10, height=64, width=64)
KINDS = ("easy", "camouflage")


def _warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Samples `image` [H, W, C] at x + flow [H, W, 2]; returns float32 [H, W, C].

    Bicubic, because bilinear interpolation of the frames themselves already errs by ~2 grey levels on
    high-contrast 8 px stripes, which would measure the interpolator rather than the flow.
    """
    rows, cols = np.mgrid[0 : flow.shape[0], 0 : flow.shape[1]].astype(np.float32)
    return cv2.remap(
        image.astype(np.float32),
        cols + flow[..., 0],
        rows + flow[..., 1],
        cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REPLICATE,
    )


def _interior(mask: np.ndarray, radius: int = 2) -> np.ndarray:
    """True where every pixel within `radius` (square) has the same instance id."""
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    return cv2.erode(mask, kernel) == cv2.dilate(mask, kernel)


def _warp_errors(video: SyntheticVideo, gap: int, first: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compares frames[t] with frames[t - gap] warped by flow[t], on pixels whose surface is visible in both
    (`first`: the frames t < gap with frames[t + gap] warped by -flow[t]).

    Returns:
      Per compared pixel: the mean (over channels) abs error with the flow, the same with zero flow, and
      the instance id. Pixels within 2 px of a mask boundary (in either frame) or leaving the frame are skipped.
    """
    num_frames, height, width = video.masks.shape
    rows, cols = np.mgrid[0:height, 0:width]
    flow_errors, zero_errors, ids = [], [], []
    for t in range(gap) if first else range(gap, num_frames):
        source, flow = (t + gap, -video.flow[t]) if first else (t - gap, video.flow[t])
        target_x = np.rint(cols + flow[..., 0]).astype(int)
        target_y = np.rint(rows + flow[..., 1]).astype(int)
        in_frame = (target_x >= 2) & (target_x < width - 2) & (target_y >= 2) & (target_y < height - 2)
        target_x, target_y = np.clip(target_x, 0, width - 1), np.clip(target_y, 0, height - 1)
        valid = (
            in_frame
            & _interior(video.masks[t])
            & _interior(video.masks[source])[target_y, target_x]
            & (video.masks[t] == video.masks[source][target_y, target_x])
        )
        current = video.frames[t].astype(np.float32)
        flow_errors.append(np.abs(_warp(video.frames[source], flow) - current)[valid].mean(axis=-1))
        zero_errors.append(np.abs(video.frames[source].astype(np.float32) - current)[valid].mean(axis=-1))
        ids.append(video.masks[t][valid])
    return np.concatenate(flow_errors), np.concatenate(zero_errors), np.concatenate(ids)


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Exact float64 bilinear sampling of a grey [H, W] image (cv2.remap rounds positions to 1/32 px)."""
    x, y = np.clip(x, 0.0, image.shape[1] - 1.000001), np.clip(y, 0.0, image.shape[0] - 1.000001)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    top = image[y0, x0] * (1.0 - fx) + image[y0, x0 + 1] * fx
    bottom = image[y0 + 1, x0] * (1.0 - fx) + image[y0 + 1, x0 + 1] * fx
    return top * (1.0 - fy) + bottom * fy


def _estimate_translation(previous: np.ndarray, current: np.ndarray, border: int = 4) -> np.ndarray:
    """Gauss-Newton estimate of the constant d minimising |previous(x + d) - current(x)|^2 (grey images)."""
    rows, cols = np.mgrid[0 : previous.shape[0], 0 : previous.shape[1]].astype(np.float64)
    crop = (slice(border, -border), slice(border, -border))
    displacement = np.zeros(2)
    for _ in range(10):
        warped = _bilinear(previous.astype(np.float64), cols + displacement[0], rows + displacement[1])
        grad_y, grad_x = np.gradient(warped)
        grad_x, grad_y, residual = grad_x[crop].ravel(), grad_y[crop].ravel(), (warped - current)[crop].ravel()
        hessian = np.array([[grad_x @ grad_x, grad_x @ grad_y], [grad_x @ grad_y, grad_y @ grad_y]])
        displacement -= np.linalg.solve(hessian, [grad_x @ residual, grad_y @ residual])
    return displacement


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_dtypes(kind):
    video = generate_video(0, num_frames=5, height=48, width=40, num_objects=4, kind=kind)
    assert isinstance(video, SyntheticVideo)
    assert video.frames.shape == (5, 48, 40, 3) and video.frames.dtype == np.uint8
    assert video.masks.shape == (5, 48, 40) and video.masks.dtype == np.uint8
    assert video.flow.shape == (5, 48, 40, 2) and video.flow.dtype == np.float32
    assert np.all(np.isfinite(video.flow))


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_video(kind):
    video = generate_video(3, num_frames=1, height=1, width=1, num_objects=2, kind=kind)
    assert video.frames.shape == (1, 1, 1, 3) and np.all(video.flow == 0.0)


@pytest.mark.parametrize("kind", KINDS)
def test_determinism(kind):
    first, second = generate_video(7, **SIZE, kind=kind), generate_video(7, **SIZE, kind=kind)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    other = generate_video(8, **SIZE, kind=kind)
    assert np.abs(other.frames.astype(int) - first.frames).mean() > 5.0
    assert not np.array_equal(other.masks, first.masks)


@pytest.mark.parametrize("kind", KINDS)
def test_generate_videos_uses_distinct_derived_seeds(kind):
    videos = generate_videos(0, 3, **SIZE, kind=kind)
    again = generate_videos(0, 3, **SIZE, kind=kind)
    assert len(videos) == 3
    for a, b in zip(videos, again):
        np.testing.assert_array_equal(a.frames, b.frames)
    assert not np.array_equal(videos[0].frames, videos[1].frames)
    assert not np.array_equal(videos[1].frames, videos[2].frames)
    assert not np.array_equal(generate_videos(1, 1, **SIZE, kind=kind)[0].frames, videos[0].frames)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(6))
def test_masks_ids_and_every_object_visible(seed, kind):
    video = generate_video(seed, num_frames=24, height=64, width=64, num_objects=3, kind=kind)
    np.testing.assert_array_equal(np.unique(video.masks), [0, 1, 2, 3])
    for frame_masks in video.masks:  # The background stays visible and objects do not fill the frame.
        assert (frame_masks == 0).mean() > 0.2


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [0, 2, 5])
def test_background_pan_flow_is_the_measured_translation(seed, kind):
    video = generate_video(seed, num_frames=8, height=64, width=64, num_objects=0, lighting=False, kind=kind)
    assert np.all(video.masks == 0)
    grey = video.frames.astype(np.float32).mean(axis=-1)
    for t in range(1, 8):
        flow = video.flow[t].reshape(-1, 2)
        np.testing.assert_allclose(flow, np.broadcast_to(flow[0], flow.shape), atol=1e-4)  # Pure translation.
        assert 0.02 < np.abs(flow[0]).max() < 1.5  # Slow, mostly sub-pixel pan.
        np.testing.assert_allclose(_estimate_translation(grey[t - 1], grey[t]), flow[0], atol=0.03)
    flow_errors, zero_errors, _ = _warp_errors(video, gap=1)
    # The pan can be as slow as ~0.2 px/frame, where ignoring it costs little more than 8-bit rounding and
    # resampling (~0.3 grey levels on the fine speckle texture).
    assert flow_errors.mean() < 1.0 and zero_errors.mean() > 1.5 * flow_errors.mean()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [0, 3, 4, 7])
@pytest.mark.parametrize("gap", [1, 2])
def test_flow_with_objects_matches_frame_content(seed, gap, kind):
    video = generate_video(seed, **SIZE, num_objects=3, flow_gap=gap, lighting=False, kind=kind)
    flow_errors, zero_errors, ids = _warp_errors(video, gap)
    assert len(ids) > 0.5 * (SIZE["num_frames"] - gap) * SIZE["height"] * SIZE["width"]
    assert flow_errors.mean() < 1.0
    assert zero_errors.mean() > 2.5 * flow_errors.mean()
    for instance in range(4):  # Each surface separately, so small objects are not drowned by the background.
        assert (ids == instance).sum() > 100
        assert flow_errors[ids == instance].mean() < 1.0


@pytest.mark.parametrize("kind", KINDS)
def test_flow_gap_composes_from_single_steps_on_background(kind):
    single = generate_video(2, num_frames=6, height=32, width=32, num_objects=0, lighting=False, kind=kind)
    double = generate_video(2, num_frames=6, height=32, width=32, num_objects=0, lighting=False, flow_gap=2, kind=kind)
    np.testing.assert_allclose(double.flow[2:], single.flow[2:] + single.flow[1:-1], atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("gap", [1, 2])
def test_first_frames_get_the_negated_flow_to_later_frames(gap, kind):
    """Frames t < gap have no frame gap earlier: their flow is minus the exact displacement to t + gap."""
    video = generate_video(3, **SIZE, num_objects=3, flow_gap=gap, lighting=False, kind=kind)
    flow_errors, zero_errors, ids = _warp_errors(video, gap, first=True)
    assert len(ids) > 0.5 * gap * SIZE["height"] * SIZE["width"]
    assert flow_errors.mean() < 1.0 and zero_errors.mean() > 2.5 * flow_errors.mean()
    assert np.abs(video.flow[:gap]).mean() > 0.2  # Real motion, not zero.


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(3))
def test_lighting_changes_brightness_only(seed, kind):
    lit = generate_video(seed, num_frames=24, height=48, width=48, num_objects=0, lighting=True, kind=kind)
    unlit = generate_video(seed, num_frames=24, height=48, width=48, num_objects=0, lighting=False, kind=kind)

    def relative_range(frames: np.ndarray) -> float:
        means = frames.reshape(len(frames), -1).mean(axis=1)
        return float((means.max() - means.min()) / means.mean())

    assert relative_range(lit.frames) > 0.08
    assert relative_range(unlit.frames) < 0.05
    np.testing.assert_array_equal(lit.masks, unlit.masks)
    np.testing.assert_array_equal(lit.flow, unlit.flow)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(6))
def test_object_and_background_colours_overlap(seed, kind):
    video = generate_video(seed, num_frames=8, height=64, width=64, num_objects=3, lighting=False, kind=kind)
    objects = video.frames[video.masks > 0].astype(np.float32)
    background = video.frames[video.masks == 0].astype(np.float32)
    spread = np.maximum(objects.std(axis=0), background.std(axis=0))
    assert np.all(np.abs(objects.mean(axis=0) - background.mean(axis=0)) < spread)
    luminance_hists = [
        np.histogram(pixels.mean(axis=1), bins=32, range=(0, 256))[0] / len(pixels) for pixels in (objects, background)
    ]
    assert np.minimum(*luminance_hists).sum() > 0.3


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(num_frames=0, height=8, width=8),
        dict(num_frames=2, height=0, width=8),
        dict(num_frames=2, height=8, width=-1),
        dict(num_frames=2, height=8, width=8, flow_gap=0),
        dict(num_frames=2, height=8, width=8, num_objects=-1),
        dict(num_frames=2, height=8, width=8, num_objects=256),
        dict(num_frames=2, height=8, width=8, kind="hard"),
    ],
)
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        generate_video(0, **kwargs)


def test_unknown_kind_names_the_valid_kinds():
    with pytest.raises(ValueError, match="'easy', 'camouflage'"):
        generate_videos(0, 1, **SIZE, kind="Camouflage")


def test_bad_seed_or_count_raises():
    with pytest.raises(ValueError):
        generate_video(-1, **SIZE)
    with pytest.raises(ValueError):
        generate_videos(0, -1, **SIZE)


# sha256 of (frames, masks, flow) bytes, recorded before the camouflage kind existed (numpy 2.4, opencv 5.0).
EASY_CHECKSUMS = [
    (
        0,
        dict(num_frames=4, height=48, width=40, num_objects=3),
        [
            "c451e66357b679a00c390821e158f0465016d10d080f5d2464a24c31192bdfef",
            "cd48231cbd72a4ca79fd2797bd16917048cec6670405e591eb3a563b52bf5820",
            "4a291173462fdc136e59be80d5a0621622296d7aba1bb9e295835a2cf8556132",
        ],
    ),
    (
        5,
        dict(num_frames=3, height=32, width=32, num_objects=2, flow_gap=2, lighting=False),
        [
            "05dbf5429fff85f5d5fa65038c62decb46bfe845ec93c1b5b8eb3df20e5eabfd",
            "9f2391e00dfe9570dbc6c1fed12c104c3043672a170b4182d15deade68199d60",
            "84d9d5717dff239a057d7b0b235c796d017d5fff3a0d929bc16c8c594086d8ef",
        ],
    ),
]


@pytest.mark.parametrize("seed,kwargs,checksums", EASY_CHECKSUMS)
def test_easy_output_is_unchanged(seed, kwargs, checksums):
    video = generate_video(seed, **kwargs)
    # Frames, masks and the flow of frames with a frame flow_gap earlier (the first frames' flow
    # became the negated forward flow in issue 12).
    arrays = (video.frames, video.masks, video.flow[kwargs.get("flow_gap", 1) :])
    assert [hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest() for array in arrays] == checksums
    np.testing.assert_array_equal(generate_video(seed, **kwargs, kind="easy").frames, video.frames)


def _appearance_differences(kind: str, num_videos: int = 16, size: int = 64) -> np.ndarray:
    """Single-frame appearance of objects vs background, averaged over videos: [8] float.

    Per pixel of frame 0 (3 px or more from a mask boundary): R, G, B and the local contrast (std of grey in a
    7x7 window). Per video and feature: |mean_object - mean_background| / pooled std (4 values), then
    |log(std_object / std_background)| (4 values).
    """
    rows = []
    for video in generate_videos(11, num_videos, num_frames=1, height=size, width=size, lighting=False, kind=kind):
        rgb, masks = video.frames[0].astype(np.float32), video.masks[0]
        grey = rgb.mean(axis=-1)
        local_mean = cv2.blur(grey, (7, 7))
        contrast = np.sqrt(np.maximum(cv2.blur(grey * grey, (7, 7)) - local_mean**2, 0.0))
        pixels = np.concatenate([rgb, contrast[..., None]], axis=-1)
        inside, outside = pixels[_interior(masks, 3) & (masks > 0)], pixels[_interior(masks, 3) & (masks == 0)]
        pooled = np.sqrt(0.5 * (inside.var(axis=0) + outside.var(axis=0)))
        rows.append(
            np.concatenate(
                [
                    np.abs(inside.mean(axis=0) - outside.mean(axis=0)) / pooled,
                    np.abs(np.log(inside.std(axis=0) / outside.std(axis=0))),
                ]
            )
        )
    return np.mean(rows, axis=0)


def test_camouflage_objects_are_not_separable_by_single_frame_appearance():
    camouflage, easy = _appearance_differences("camouflage"), _appearance_differences("easy")
    # Each surface is another realisation of the same texture: only sampling noise separates them (largest of
    # the 8 values measured 0.16-0.31 over 8 sets of 16 videos; 0.62-1.21 when each object draws its own
    # colours and pattern scale from the same distribution instead).
    assert np.all(camouflage < 0.45), camouflage
    # Easy objects differ in texture kind, so in local contrast (measured 1.2-2.6, 5-14x camouflage's).
    assert easy[3] > 1.0 and easy[3] > 2.5 * camouflage[3], (easy, camouflage)


def test_camouflage_object_boundaries_are_not_edges():
    ratios = []
    for video in generate_videos(12, 16, num_frames=1, height=64, width=64, lighting=False, kind="camouflage"):
        grey = video.frames[0].astype(np.float32).mean(axis=-1)
        gradient = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))[2:-2, 2:-2]
        boundary = ~_interior(video.masks[0], 1)[2:-2, 2:-2]
        ratios.append(gradient[boundary].mean() / gradient[~boundary].mean())
    # Mean gradient magnitude within 1 px of a mask boundary over elsewhere: measured 1.18-1.21 (5 sets of 16
    # videos); the smooth `blobs` texture in the same scenes gives 2.6-2.9, its cut outlining each object.
    assert np.mean(ratios) < 1.4, ratios


@pytest.mark.parametrize("size", [64, 128])
def test_camouflage_objects_move_relative_to_the_background(size):
    to_128 = 128.0 / size  # Object speeds scale with the frame side; the background pan does not.
    for video in generate_videos(3, 4, num_frames=6, height=size, width=size, lighting=False, kind="camouflage"):
        flow, masks = video.flow[1:], video.masks[1:]
        speed = np.hypot(flow[..., 0], flow[..., 1])
        objects, background = speed[masks > 0].mean(), speed[masks == 0].mean()
        assert 2.0 < objects * to_128 < 4.5 and background < 1.0
        # Over 40 videos: >= 1.04 at 64 px (where the pan is relatively faster), >= 1.89 at 128 px.
        assert (objects - background) * to_128 > 0.8
        background_flow = np.stack(
            [frame_flow[frame_masks == 0].mean(axis=0) for frame_flow, frame_masks in zip(flow, masks)]
        )
        relative = np.hypot(*np.moveaxis(flow - background_flow[:, None, None], -1, 0))
        assert relative[masks > 0].mean() * to_128 > 1.5  # Over 40 videos: >= 2.0 at 64 px, >= 2.46 at 128 px.


@pytest.mark.parametrize("size", [64, 128])
def test_camouflage_objects_are_large(size):
    # Alone in the video, so the visible area is the object's (in-frame) area, not what others leave of it.
    areas = [
        (video.masks == 1).mean(axis=(1, 2)).max()
        for video in generate_videos(5, 8, num_frames=2, height=size, width=size, num_objects=1, kind="camouflage")
    ]
    # Over 100 objects: >= 0.051 of the frame, median 0.14-0.15 (~145 cells of a stride-4 grid at 128 px).
    assert min(areas) > 0.045 and np.median(areas) > 0.09, areas


def test_synthetic_source_passes_the_kind():
    config = ytvos.get_config("debug")
    config.data.synthetic.kind = "camouflage"
    source = sources.make_source(config.data, seed=4)
    expected = generate_videos(
        4, 1, num_frames=config.data.synthetic.num_frames, height=config.data.image_size,
        width=config.data.image_size, num_objects=config.data.synthetic.num_objects, flow_gap=config.data.flow_gap,
        kind="camouflage",
    )[0]  # fmt: skip
    np.testing.assert_array_equal(source.videos[0].frames, expected.frames)
