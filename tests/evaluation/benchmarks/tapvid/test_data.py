"""TAP-Vid pickles: both published layouts, encoded frames, resizing, query-first queries, raster
scaling, and a clear error for every kind of bad pickle."""

import io
import pickle

import numpy as np
import pytest
from PIL import Image

from mer_jax.evaluation.benchmarks.tapvid import data as tapvid_data


def example(num_frames=3, num_points=2, height=32, width=48, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "video": rng.integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8),
        "points": rng.uniform(0, 1, (num_points, num_frames, 2)).astype(np.float32),
        "occluded": np.zeros((num_points, num_frames), bool),
    }


def dump(path, data):
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return str(path)


def test_dict_pickle_is_resized_scaled_and_queried_first(tmp_path):
    davis = example()
    davis["occluded"][0, :2] = True  # point 0 first visible at frame 2
    never = example(seed=1)
    never["occluded"][1] = True  # point 1 never visible: dropped
    path = dump(tmp_path / "tapvid_davis.pkl", {"bear": davis, "dog": never})
    videos = list(tapvid_data.read_videos(path, size=16))
    assert [v.name for v in videos] == ["bear", "dog"]
    bear, dog = videos
    assert bear.frames.shape == (3, 16, 16, 3) and bear.frames.dtype == np.uint8
    expected = np.asarray(Image.fromarray(davis["video"][1]).resize((16, 16), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(bear.frames[1], expected)
    np.testing.assert_array_equal(bear.query_frames, [2, 0])
    np.testing.assert_allclose(bear.tracks, davis["points"] * 16, rtol=1e-6)  # raster coordinates
    assert dog.tracks.shape == (1, 3, 2) and dog.occluded.shape == (1, 3)
    only = list(tapvid_data.read_videos(path, size=16, names=["dog"]))
    assert [v.name for v in only] == ["dog"]
    with pytest.raises(FileNotFoundError, match="cat"):
        list(tapvid_data.read_videos(path, size=16, names=["cat"]))


def test_list_shards_with_jpeg_frames_in_a_folder(tmp_path):
    kinetics = example(height=16, width=16)
    encoded = []
    for frame in kinetics["video"]:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG")
        encoded.append(buffer.getvalue())
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in encoded])
    dump(tmp_path / "0000_of_0010.pkl", [dict(kinetics, video=encoded)])
    dump(tmp_path / "0001_of_0010.pkl", [example(height=16, width=16), example(height=16, width=16, seed=3)])
    videos = list(tapvid_data.read_videos(str(tmp_path), size=16))
    assert [v.name for v in videos] == ["0000_of_0010_0000", "0001_of_0010_0000", "0001_of_0010_0001"]
    np.testing.assert_array_equal(videos[0].frames, decoded)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda e: e.pop("occluded"), r"has no \['occluded'\]"),
        (lambda e: e.update(video=e["video"][..., 0]), "'video' is uint8 \\(3, 32, 48\\)"),
        (lambda e: e.update(video=e["video"].astype(np.float32)), "'video' is float32"),
        (lambda e: e.update(points=e["points"][:, :2]), "'points' is float32 \\(2, 2, 2\\) for 3 frames"),
        (lambda e: e.update(occluded=np.zeros((2, 4), bool)), "'occluded' is bool \\(2, 4\\)"),
        (lambda e: e.update(occluded=np.full((2, 3), 0.5)), "'occluded' is float64"),
        (lambda e: e.update(points=np.full((2, 3, 2), np.nan)), "not finite at a visible frame"),
        (lambda e: e["occluded"].fill(True), "no point visible in any frame"),
    ],
)
def test_bad_examples_are_named(tmp_path, change, message):
    bad = example()
    change(bad)
    path = dump(tmp_path / "bad.pkl", {"bear": bad})
    with pytest.raises(ValueError, match=message) as error:
        list(tapvid_data.read_videos(path))
    assert "bad.pkl" in str(error.value) and "'bear'" in str(error.value)


def test_bad_files_are_named(tmp_path):
    (tmp_path / "text.pkl").write_text("not a pickle")
    with pytest.raises(ValueError, match="cannot read TAP-Vid pickle .*text.pkl"):
        list(tapvid_data.read_videos(str(tmp_path / "text.pkl")))
    with pytest.raises(ValueError, match="holds a int; expected a dict or list"):
        list(tapvid_data.read_videos(dump(tmp_path / "int.pkl", 3)))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tapvid_data.list_pickles(str(tmp_path / "missing.pkl"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .pkl file"):
        tapvid_data.list_pickles(str(tmp_path / "empty"))


def test_write_pickle_round_trips_and_checks(tmp_path):
    examples = {"a": example(), "b": example(seed=2)}
    path = str(tmp_path / "out" / "synthetic.pkl")
    tapvid_data.write_pickle(path, examples)
    with open(path, "rb") as f:
        loaded = pickle.load(f)
    assert list(loaded) == ["a", "b"]
    np.testing.assert_array_equal(loaded["b"]["points"], examples["b"]["points"])
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["synthetic.pkl"]
    with pytest.raises(ValueError, match="has no"):
        tapvid_data.write_pickle(str(tmp_path / "x.pkl"), {"a": {"video": examples["a"]["video"]}})
    assert not (tmp_path / "x.pkl").exists()
