"""Multi-process data-parallel training: two processes on 127.0.0.1 (CPU collectives), reading a
prepared dataset, train like one process with two devices; their checkpoints restore on another
device count."""

import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import demo
from data_prep import build
from mer_jax import distributed, sharding, train
from mer_jax.data import synthetic_video
from tests import fake_data, subprocess_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_dataset(root) -> str:
    """A prepared TFDS dataset of 6 generated 32x32 videos (exact flow); returns its data_dir."""
    for i, clip in enumerate(synthetic_video.generate_videos(7, 6, num_frames=10, height=32, width=32, num_objects=2)):
        names = [f"{t:05d}.jpg" for t in range(len(clip.frames))]
        for name, frame in zip(names, clip.frames):
            fake_data.write_jpeg(os.path.join(root, "frames", f"video_{i}", name), frame)
        os.makedirs(os.path.join(root, "flow"), exist_ok=True)
        np.savez(os.path.join(root, "flow", f"video_{i}.npz"), flow=clip.flow.astype(np.float16),
                 frames=np.asarray(names), flow_gap=1)  # fmt: skip
    build.build("ytvos", os.path.join(root, "frames"), os.path.join(root, "tfds"), flow_root=os.path.join(root, "flow"),
                image_size=32)  # fmt: skip
    return os.path.join(root, "tfds")


def train_in_two_processes(workdir, data_dir):
    """The training command run as process 0 and 1 of a job, one CPU device each, each reading
    its own part of every batch from the prepared dataset."""
    port = free_port()
    env = subprocess_env.subprocess_env(device_count=1)
    logs, processes = [], []
    for process_id in range(2):
        command = [sys.executable, "-m", "mer_jax.train", "--config=configs/demo.py:debug", f"--workdir={workdir}",
                   f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={process_id}",
                   "--config.model.encoder.bn_mode=batch", "--config.evals.synthetic.at_end=True",
                   "--config.data.source=tfds", f"--config.data.data_dir={data_dir}"]  # fmt: skip
        logs.append(open(os.path.join(os.path.dirname(workdir), f"process_{process_id}.log"), "w+"))
        processes.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=logs[-1], stderr=subprocess.STDOUT))
    for process, log in zip(processes, logs):
        returncode = process.wait(timeout=600)
        log.seek(0)
        assert returncode == 0, log.read()[-4000:]
        log.close()


def debug_config(data_dir):
    config = demo.get_config("debug")
    config.model.encoder.bn_mode = "batch"  # Batch statistics must be global across processes.
    config.data.source, config.data.data_dir = "tfds", data_dir
    return config


def params(state):
    return jax.tree.map(np.asarray, state.params)


def assert_trees_close(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6), a, b)


@pytest.mark.slow
def test_two_processes_train_like_one_process_with_two_devices(tmp_path):
    assert len(jax.devices()) >= 2, "tests/conftest.py should provide 2 host devices"
    data_dir = build_dataset(str(tmp_path / "data"))
    train_in_two_processes(str(tmp_path / "two_processes"), data_dir)
    assert sorted(os.listdir(tmp_path / "two_processes" / "checkpoints")) == ["2", "4"]  # written once
    assert (tmp_path / "two_processes" / "eval_results.json").exists()
    config = debug_config(data_dir)
    one_process = train.train_and_evaluate(config, str(tmp_path / "one"), mesh=sharding.make_mesh(jax.devices()[:2]))
    # Restoring the two-process checkpoint on one device (the run is complete: nothing to train).
    restored = train.train_and_evaluate(
        config, str(tmp_path / "two_processes"), mesh=sharding.make_mesh(jax.devices()[:1])
    )
    assert int(restored.step) == 4
    assert_trees_close(params(restored), params(one_process))
    # Resuming its step-2 checkpoint on one device ends where the two processes ended.
    shutil.copytree(tmp_path / "two_processes", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "4")
    resumed = train.train_and_evaluate(config, str(tmp_path / "resumed"), mesh=sharding.make_mesh(jax.devices()[:1]))
    assert_trees_close(params(resumed), params(restored))


def test_incomplete_job_descriptions_are_rejected(monkeypatch):
    for name in (distributed.ENV_ADDRESS, distributed.ENV_COUNT, distributed.ENV_ID):
        monkeypatch.delenv(name, raising=False)
    assert distributed.initialize() is False  # A single-process run.
    with pytest.raises(ValueError, match=r"missing \['num_processes', 'process_id'\]"):
        distributed.initialize("127.0.0.1:1234")
    monkeypatch.setenv(distributed.ENV_COUNT, "2")
    monkeypatch.setenv(distributed.ENV_ID, "2")
    with pytest.raises(ValueError, match=r"process_id must be in \[0, 2\), got 2"):
        distributed.initialize("127.0.0.1:1234")
    monkeypatch.setenv(distributed.ENV_ID, "one")
    with pytest.raises(ValueError, match="JAX_PROCESS_ID='one' must be an integer"):
        distributed.initialize()
