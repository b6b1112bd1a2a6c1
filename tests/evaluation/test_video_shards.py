"""Evaluation split over devices and processes (`video_shards`): the assignment is a partition,
and every benchmark's files and numbers on 2 devices, and on 2 processes, equal a 1-device run's
byte for byte."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import davis as davis_config
from configs import demo, ytvos_val
from configs import jhmdb as jhmdb_config
from configs import tapvid as tapvid_config
from mer_jax import evaluate, export, train_state
from mer_jax.data import synthetic_tracks
from mer_jax.evaluation import features, protocol, reports, video_shards
from mer_jax.evaluation.benchmarks.davis import evaluator as davis
from mer_jax.evaluation.benchmarks.tapvid import data as tapvid_data
from tests import fake_data, subprocess_env

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def one_device(monkeypatch):
    """Runs `video_shards` on the first device only: the 1-device reference run."""

    def use_one_device():
        monkeypatch.setattr(video_shards, "run_devices", lambda: jax.devices()[:1])

    return use_one_device


def output_files(root) -> dict[str, bytes | list]:
    """{relative path: bytes} of every file under root; a zip as its [(entry, bytes)] in order
    (its timestamps are the files')."""
    files = {}
    for path in sorted(pathlib.Path(root).rglob("*")):
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                files[str(path.relative_to(root))] = [(name, archive.read(name)) for name in archive.namelist()]
        elif path.is_file():
            files[str(path.relative_to(root))] = path.read_bytes()
    return files


def test_assignment_is_a_deterministic_round_robin_partition():
    devices = jax.devices()
    assert len(devices) == 2, "tests/conftest.py should provide 2 host devices"
    for slots in (devices, ["a", "b", "c"]):
        for num_videos in (0, 1, 2, 7):
            owners = [video_shards.device_of(i, slots) for i in range(num_videos)]
            assert owners == [video_shards.device_of(i, list(slots)) for i in range(num_videos)]  # deterministic
            shares = [[i for i, owner in enumerate(owners) if owner == slot] for slot in slots]
            assert sorted(i for share in shares for i in share) == list(range(num_videos))  # each video once
            assert max(map(len, shares)) - min(map(len, shares)) <= 1  # balanced


def test_map_videos_runs_each_video_once_on_its_device_and_keeps_the_order():
    read = []

    def reader(i):
        def read_video():
            read.append(i)
            return np.full(3, i, np.float32)

        return read_video

    def work(share, videos):
        assert jax.config.jax_default_device == share.device and share.label == f" [{share.device}]"
        for video in videos:
            doubled = jnp.asarray(video) * 2  # Runs on the share's device.
            yield int(doubled[0]) // 2, doubled.devices(), share.device

    results = video_shards.map_videos([reader(i) for i in range(7)], work)
    assert [index for index, _, _ in results] == list(range(7)) and sorted(read) == list(range(7))
    for i, (_, ran_on, device) in enumerate(results):
        assert ran_on == {device} == {video_shards.device_of(i, jax.devices())}


def test_map_videos_raises_the_first_error_of_a_reader_or_of_work():
    def bad_reader():
        raise FileNotFoundError("frame 3 is missing")

    readers = [lambda: 0, bad_reader, lambda: 2, lambda: 3]
    with pytest.raises(FileNotFoundError, match="frame 3 is missing"):
        video_shards.map_videos(readers, lambda share, videos: list(videos))
    with pytest.raises(RuntimeError, match="work returned 0 results for 2 videos"):
        video_shards.map_videos([lambda: 0] * 4, lambda share, videos: [video for video in videos if False])

    def failing_walk():
        yield lambda: 0
        raise ValueError("bad pickle")

    with pytest.raises(ValueError, match="bad pickle"):
        video_shards.map_videos(failing_walk(), lambda share, videos: list(videos))


def small(config):
    """Small windows for 48x64 frames."""
    for preset in config.presets.values():
        preset.radius = 4
        preset.crw_context = 3
    return config


def benchmark_config(name, tmp_path):
    """A lab-encoder config of benchmark `name` on 3 tiny videos written under tmp_path."""
    if name == "davis":
        fake_data.davis_tree(str(tmp_path / "DAVIS"), num_sequences=3, num_frames=5)
        config = small(davis_config.get_config())
        config.davis_root = str(tmp_path / "DAVIS")
    elif name == "ytvos":
        fake_data.ytvos_tree(str(tmp_path / "valid"), num_frames=5, late_frame=2, num_videos=3)
        config = small(ytvos_val.get_config())
        config.update(dict(ytvos_root=str(tmp_path / "valid"), preset="crw"))
    elif name == "jhmdb":
        fake_data.jhmdb_tree(str(tmp_path / "JHMDB"), num_frames=4, num_test_videos=3)
        config = small(jhmdb_config.get_config())
        config.jhmdb_root = str(tmp_path / "JHMDB")
    else:
        path = str(tmp_path / "tapvid.pkl")
        examples = synthetic_tracks.tapvid_examples(0, 3, num_points=6, num_frames=6, height=32, width=32)
        tapvid_data.write_pickle(path, examples)
        config = tapvid_config.get_config()
        config.update(dict(tapvid_path=path, tapvid_size=32, preset="crw_small"))
    config.encoder = "lab"
    return config


@pytest.mark.parametrize(
    "name", ["davis", *(pytest.param(name, marks=pytest.mark.slow) for name in ("ytvos", "jhmdb", "tapvid"))]
)
def test_two_devices_write_what_one_device_writes(name, tmp_path, one_device):
    config = benchmark_config(name, tmp_path)
    config.output = str(tmp_path / "two")
    two = evaluate.evaluate(config)
    one_device()
    config.output = str(tmp_path / "one")
    one = evaluate.evaluate(config)
    one_files, two_files = output_files(tmp_path / "one"), output_files(tmp_path / "two")
    assert list(two_files) == list(one_files) and len(one_files) > 2
    for file, content in one_files.items():
        if name == "ytvos" and file == "summary.json":  # It names each run's own submission.zip.
            content = content.replace(str(tmp_path / "one").encode(), str(tmp_path / "two").encode())
        assert two_files[file] == content, file
    expected = json.dumps(reports.jsonable(one)).replace(str(tmp_path / "one"), str(tmp_path / "two"))
    assert json.dumps(reports.jsonable(two)) == expected


@pytest.fixture(scope="module")
def random_model():
    """The debug config's model (flow fusion and a VEN) with random host (NumPy) variables, as
    training hands its evaluators: parameters N(0, 0.1), BatchNorm statistics 0 and 1."""
    config = demo.get_config("debug")
    _, init_fn, _ = train_state.make_initializer(config, total_steps=1)
    shapes = jax.eval_shape(init_fn)  # No compilation: the shapes only.
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda x: rng.normal(0.0, 0.1, x.shape).astype(x.dtype), shapes.params)
    batch_stats = jax.tree_util.tree_map_with_path(
        lambda path, x: np.full(x.shape, "var" in jax.tree_util.keystr(path), x.dtype), shapes.batch_stats
    )
    variables = {"params": params, "batch_stats": batch_stats}
    return export.ExportedModel(train_state.build_model(config), variables, config)


def test_two_devices_embed_with_the_trained_encoder_as_one_does(random_model, tmp_path, one_device):
    root = tmp_path / "DAVIS"
    fake_data.davis_tree(str(root), num_sequences=3, num_frames=5, height=32, width=48)
    evaluator = davis.Evaluator(davis_root=str(root), year="2017", subset="val", sequences=None, save_overlays=False)
    preset = protocol.make_preset(small(davis_config.get_config()).presets.mer, "trained", 0.05)
    encoder = features.TrainedEncoder(random_model, batch=4, use_ven=True)
    two = evaluator.run(encoder, preset, str(tmp_path / "two"))
    assert len(encoder._placed) == 2  # The variables were copied to each device.
    one_device()
    one = evaluator.run(features.TrainedEncoder(random_model, batch=4, use_ven=True), preset, str(tmp_path / "one"))
    assert output_files(tmp_path / "two") == output_files(tmp_path / "one")
    assert json.dumps(two) == json.dumps(one)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_merge_into_one_process_results(tmp_path, one_device):
    root = tmp_path / "DAVIS"
    fake_data.davis_tree(str(root), num_sequences=3, num_frames=5)
    config = davis_config.get_config("debug")
    config.update(dict(davis_root=str(root), output=str(tmp_path / "one")))
    one_device()
    evaluate.evaluate(config)
    port = free_port()
    env = subprocess_env.subprocess_env(device_count=1)
    logs, processes = [], []
    for process_id in range(2):
        command = [sys.executable, "-m", "mer_jax.evaluate", "--config=configs/davis.py:debug",
                   f"--config.davis_root={root}", f"--config.output={tmp_path / 'two'}",
                   f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                   f"--process_id={process_id}"]  # fmt: skip
        logs.append(open(tmp_path / f"process_{process_id}.log", "w+"))
        processes.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=logs[-1], stderr=subprocess.STDOUT))
    outputs = []
    for process, log in zip(processes, logs):
        returncode = process.wait(timeout=300)
        log.seek(0)
        outputs.append(log.read())
        log.close()
        assert returncode == 0, outputs[-1][-4000:]
    assert "beside its floors" in outputs[0] and "beside its floors" not in outputs[1]  # Process 0 prints.
    assert "process 1 of 2" in outputs[1]  # Its progress bars name it.
    assert output_files(tmp_path / "two") == output_files(tmp_path / "one")
