"""The diagnostics' pictures against hand-computed pixels, and their TensorBoard event."""

import glob

import cv2
import numpy as np
from tensorboardX.proto import event_pb2

from mer_jax import diagnostic_images, metric_writer
from mer_jax.evaluation import masks_io


def test_flow_colours_give_direction_by_hue_and_speed_by_brightness():
    flow = np.zeros((2, 3, 2), np.float32)
    flow[0, 0] = (2.0, 0.0)  # Right at the top speed: pure red.
    flow[0, 1] = (0.0, -2.0)  # Up (y down in images): hue 90 degrees, (128, 255, 0).
    flow[0, 2] = (-1.0, 0.0)  # Left at half speed: cyan at half brightness.
    rgb = diagnostic_images.flow_to_rgb(flow)
    np.testing.assert_array_equal(rgb[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(rgb[0, 1], [128, 255, 0])
    np.testing.assert_array_equal(rgb[0, 2], [0, 128, 128])
    np.testing.assert_array_equal(rgb[1], 0)  # Still: black.
    np.testing.assert_array_equal(diagnostic_images.flow_to_rgb(np.zeros((2, 2, 2))), 0)


def test_maps_regions_and_overlays():
    np.testing.assert_array_equal(
        diagnostic_images.heat(np.array([[1.0, 3.0], [2.0, 3.0]]))[..., 0], [[0, 255], [128, 255]]
    )
    np.testing.assert_array_equal(diagnostic_images.heat(np.full((2, 2), 7.0)), 0)
    palette = masks_io.davis_palette()
    regions = diagnostic_images.regions_to_rgb(np.array([[-1, 0], [2, 0]]))
    np.testing.assert_array_equal(regions, palette[[[0, 1], [3, 1]]])
    frame = np.full((1, 2, 3), 100, np.uint8)
    blended = diagnostic_images.overlay(frame, np.array([[0, 1]], np.uint8))
    np.testing.assert_array_equal(blended[0, 0], 100)
    np.testing.assert_array_equal(blended[0, 1], np.round(0.5 * 100 + 0.5 * palette[1].astype(float)))


def test_panel_rows_are_clips_and_grid_maps_cover_their_cells():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 8, 12, 3), dtype=np.uint8)
    masks = np.zeros((2, 8, 12), np.uint8)
    flow = rng.normal(size=(2, 8, 12, 2)).astype(np.float32)
    value_map = rng.uniform(size=(2, 2, 3))
    regions = np.array([[[-1, 0, 1], [1, 1, 0]]] * 2)
    propagated = np.array([[[0, 2, 0], [1, 0, 0]]] * 2)
    picture = diagnostic_images.panel(frames, masks, flow, propagated, value_map, None, regions)
    assert picture.shape == (16, 6 * 12, 3)
    np.testing.assert_array_equal(picture[8:, :12], frames[1])
    # The propagated objects over the frame: cell (0, 1) covers pixels [0:4, 4:8], object 2.
    palette = masks_io.davis_palette()
    expected = np.round(0.5 * frames[0, :4, 4:8] + 0.5 * palette[2].astype(float)).astype(np.uint8)
    np.testing.assert_array_equal(picture[:4, 24 + 4 : 24 + 8], expected)
    np.testing.assert_array_equal(picture[:4, 24 : 24 + 4], frames[0, :4, :4])  # Background: the frame.
    np.testing.assert_array_equal(picture[:8, 36:48], diagnostic_images.flow_to_rgb(flow[0]))
    heat = diagnostic_images.heat(value_map[1])
    np.testing.assert_array_equal(picture[8 + 4 : 16, 48 + 8 : 60], np.broadcast_to(heat[1, 2], (4, 4, 3)))
    np.testing.assert_array_equal(picture[:4, 60:64], np.broadcast_to(palette[0], (4, 4, 3)))  # Outside: black.
    np.testing.assert_array_equal(picture[4:8, 60:64], np.broadcast_to(palette[2], (4, 4, 3)))  # Region 1.


def test_images_reach_tensorboard(tmp_path):
    writer = metric_writer.MetricWriter(str(tmp_path))
    image = np.zeros((4, 6, 3), np.uint8)
    image[1, 2] = (255, 0, 0)
    writer.write_images(3, {"diagnostics/probe": image})
    writer.close()
    (path,) = glob.glob(str(tmp_path / "events.out.tfevents.*"))
    data, offset, found = open(path, "rb").read(), 0, []
    while offset < len(data):  # TFRecord framing: length, its CRC, the event, its CRC.
        length = int.from_bytes(data[offset : offset + 8], "little")
        event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
        found += [(event.step, value.tag, value.image) for value in event.summary.value if value.HasField("image")]
        offset += 12 + length + 4
    ((step, tag, encoded),) = found
    assert (step, tag, encoded.height, encoded.width) == (3, "diagnostics/probe", 4, 6)

    decoded = cv2.cvtColor(
        cv2.imdecode(np.frombuffer(encoded.encoded_image_string, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
    )
    np.testing.assert_array_equal(decoded, image)  # PNG: lossless.


def test_the_weight_map_is_drawn_on_its_absolute_scale():
    frames = np.zeros((1, 4, 4, 3), np.uint8)
    weights = np.full((1, 4, 4), 1.0)
    weights[0, 0, 0] = 0.5  # Min-max scaling would draw this pixel black and the rest white.
    picture = diagnostic_images.panel(
        frames, np.zeros((1, 4, 4), np.uint8), np.zeros((1, 4, 4, 2)), np.zeros((1, 1, 1), int), None, weights, None
    )
    assert picture.shape == (4, 5 * 4, 3)
    np.testing.assert_array_equal(picture[0, 16], 128)
    np.testing.assert_array_equal(picture[1:, 16:], 255)
