"""End-to-end training on the debug config: checkpoints, resume equality, device-count
equality, TensorBoard scalars and module diagnostics, clear errors, and the export round trip."""

import glob
import json
import os
import struct
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tensorboardX.proto import event_pb2

from configs import demo, ytvos
from mer_jax import color, export, objective, sharding, train, train_state
from tests import subprocess_env, test_diagnostics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_scalars(workdir):
    """{tag: {step: value}} from the TensorBoard event files in workdir (TFRecord framing)."""
    scalars = {}
    for path in glob.glob(os.path.join(workdir, "events.out.tfevents.*")):
        with open(path, "rb") as f:
            data = f.read()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


def debug_config(**overrides):
    config = demo.get_config("debug")
    for key, value in overrides.items():
        config[key] = value
    return config


def params_of(state):
    return jax.tree.map(np.asarray, state.params)


def assert_trees_close(a, b, rtol, atol):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b)


@pytest.mark.slow
def test_training_writes_checkpoints_scalars_and_config(tmp_path):
    state = train.train_and_evaluate(debug_config(), str(tmp_path))
    assert int(state.step) == 4
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]
    scalars = read_scalars(str(tmp_path))
    assert {"loss", "lr", "step_time_s", "grad_norm", "clips_per_s"} <= set(scalars)
    assert sorted(scalars["loss"]) == [2, 4]
    assert all(np.isfinite(v) for v in scalars["loss"].values())
    np.testing.assert_allclose(scalars["lr"][2], 1e-3 * (0.2 + 0.8 * 0.5 * (1 + np.cos(np.pi * 1 / 4))), rtol=1e-5)
    assert (tmp_path / "config.json").exists()
    # Module diagnostics: every module's keys at each log step, the last also in diagnostics.json.
    probed = json.loads((tmp_path / "diagnostics.json").read_text())
    assert probed.pop("step") == 4 and set(probed) == test_diagnostics.ALL_KEYS
    for key, value in probed.items():
        assert sorted(scalars[f"diagnostics/{key}"]) == [2, 4]
        assert scalars[f"diagnostics/{key}"][4] == pytest.approx(value, rel=1e-6)


@pytest.mark.slow
def test_interrupted_and_resumed_run_ends_with_the_same_parameters(tmp_path):
    config = debug_config(num_train_steps=6)
    uninterrupted = train.train_and_evaluate(config, str(tmp_path / "a"))
    # "Killed" after step 5 completed: the step-4 checkpoint is the latest on disk.
    killed = train.train_and_evaluate(config, str(tmp_path / "b"), stop_at_step=5)
    assert int(killed.step) == 5
    assert sorted(os.listdir(tmp_path / "b" / "checkpoints")) == ["2", "4"]
    resumed = train.train_and_evaluate(config, str(tmp_path / "b"))
    assert int(resumed.step) == 6
    assert_trees_close(params_of(resumed), params_of(uninterrupted), rtol=1e-6, atol=1e-7)
    different_seed = train.train_and_evaluate(debug_config(num_train_steps=6, seed=1), str(tmp_path / "c"))
    with pytest.raises(AssertionError):
        assert_trees_close(params_of(different_seed), params_of(uninterrupted), rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_one_and_two_devices_give_the_same_loss_curve(tmp_path):
    assert len(jax.devices()) >= 2, "tests/conftest.py should provide 2 host devices"
    config = debug_config()
    config.model.encoder.bn_mode = "batch"  # Batch statistics must be global, not per device.
    one = train.train_and_evaluate(config, str(tmp_path / "one"), mesh=sharding.make_mesh(jax.devices()[:1]))
    two = train.train_and_evaluate(config, str(tmp_path / "two"), mesh=sharding.make_mesh(jax.devices()[:2]))
    loss_one, loss_two = read_scalars(str(tmp_path / "one"))["loss"], read_scalars(str(tmp_path / "two"))["loss"]
    np.testing.assert_allclose([loss_two[s] for s in (2, 4)], [loss_one[s] for s in (2, 4)], rtol=1e-5)
    # Two devices sum the gradients in another order, and Adam divides each update by the
    # gradient's own running magnitude: where a gradient is rounding noise its update is too (up
    # to lr = 1e-3 a step). After 4 steps the encoder's kernels differ by at most 2.4e-6 and the
    # VEN's value MLP, reached only through the zero-initialised output, by 1.3e-5 (its hidden
    # bias); a sharding error would move every parameter by ~lr.
    assert_trees_close(params_of(two), params_of(one), rtol=1e-4, atol=5e-5)
    assert_trees_close(jax.tree.map(np.asarray, two.batch_stats), jax.tree.map(np.asarray, one.batch_stats), 1e-4, 1e-6)


def test_batch_not_divisible_by_devices_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="batch_size=3 is not divisible by the 2 devices"):
        train.train_and_evaluate(debug_config(batch_size=3), str(tmp_path), mesh=sharding.make_mesh(jax.devices()[:2]))


def test_missing_ytvos_data_names_location_and_command(tmp_path):
    config = ytvos.get_config()
    config.data.data_dir = str(tmp_path / "tfds")
    with pytest.raises(FileNotFoundError) as error:
        train.train_and_evaluate(config, str(tmp_path / "work"))
    assert str(tmp_path / "tfds" / "ytvos") in str(error.value)
    assert "python -m data_prep.build --dataset=ytvos" in str(error.value)


@pytest.mark.slow
def test_non_finite_loss_stops_naming_the_step(tmp_path):
    config = debug_config()
    config.loss.loss_scale = float("nan")
    with pytest.raises(FloatingPointError, match="Non-finite loss or gradient at step 0"):
        train.train_and_evaluate(config, str(tmp_path))
    assert not os.listdir(tmp_path / "checkpoints")


def finite_loss_nan_gradient(params, batch_stats, batch, rng, step, bank):
    """A finite loss whose gradient is NaN: 0 * sqrt(|w|) at w = 0."""
    loss = jnp.sum((params["w"] - 1.0) ** 2) + 0.0 * jnp.sum(jnp.sqrt(jnp.abs(params["w"])))
    parts = {"loss_recon": loss, "loss_recon_encoder": jnp.zeros(()), "loss_pn": jnp.zeros(()), "recon_error": loss}
    return loss, objective.LossOutput(batch_stats, bank, parts, objective.Intermediates(None, None, None))


def test_a_non_finite_gradient_with_a_finite_loss_is_not_applied():
    tx = optax.adam(0.1)

    def state_at(w):
        params = {"w": jnp.asarray(w, jnp.float32)}
        return train_state.TrainState(jnp.int32(0), params, {}, tx.init(params), jax.random.PRNGKey(0), None, tx)

    step = jax.jit(lambda s: train.train_step(s, {}, loss_fn=finite_loss_nan_gradient, schedule=lambda _: 0.1))
    state, metrics, finite = step(state_at([0.0, 0.5]))
    assert np.isfinite(float(metrics.loss.compute())) and not bool(finite)
    np.testing.assert_array_equal(np.asarray(state.params["w"]), [0.0, 0.5])  # Not applied.
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(state.opt_state) if x.dtype != jnp.int32)
    assert int(state.step) == 1
    state, _, finite = step(state_at([0.25, 0.5]))  # Away from 0 the gradient is finite: applied.
    assert bool(finite) and not np.allclose(np.asarray(state.params["w"]), [0.25, 0.5])


@pytest.mark.slow
def test_a_non_finite_gradient_stops_training_before_saving(tmp_path, monkeypatch):
    """Step 1's loss is finite and its gradient NaN: the run stops naming step 1, nothing saved."""
    from_config = objective.from_config

    def nan_gradient_at_step_1(config, model, total_steps):
        loss_fn = from_config(config, model, total_steps)

        def wrapped(params, batch_stats, batch, rng, step, bank):
            loss, aux = loss_fn(params, batch_stats, batch, rng, step, bank)
            alpha = params["encoder"]["Conv_0"]["kernel"]
            # sqrt(|x - x|) has a NaN gradient where the offset is 0 (step 1), none elsewhere.
            offset = jnp.where(step == 1, 0.0, 1.0)
            return loss + 0.0 * jnp.sum(jnp.sqrt(jnp.abs(alpha - jax.lax.stop_gradient(alpha)) + offset)), aux

        return wrapped

    monkeypatch.setattr(train.objective, "from_config", nan_gradient_at_step_1)
    with pytest.raises(
        FloatingPointError, match="Non-finite loss or gradient at step 1.*last good checkpoint is step None"
    ):
        train.train_and_evaluate(debug_config(), str(tmp_path))
    assert not os.listdir(tmp_path / "checkpoints")


@pytest.mark.slow
def test_demo_ends_with_both_paths_and_the_floors(tmp_path, capsys):
    config = debug_config()
    config.evals.synthetic.at_end = True
    train.train_and_evaluate(config, str(tmp_path))
    results = json.loads((tmp_path / "eval_results.json").read_text())
    assert set(results) == {"preset", "kind", "videos", "trained", "trained_ven", "floors"}
    for scores in (results["trained"], results["trained_ven"], *results["floors"].values()):
        assert 0.0 <= scores["J&F-Mean"] <= 1.0
        assert scores["J&F-Mean"] == pytest.approx((scores["J-Mean"] + scores["F-Mean"]) / 2)
    scalars = read_scalars(str(tmp_path))
    trained = scalars["synthetic/trained/J_F-Mean"]  # TensorBoard writes "&" as "_".
    assert trained[4] == pytest.approx(results["trained"]["J&F-Mean"], rel=1e-6)
    assert scalars["synthetic/floors/copy/J_F-Mean"][4] == pytest.approx(results["floors"]["copy"]["J&F-Mean"])
    table = capsys.readouterr().out.split("synthetic (mer_small preset) beside its floors:\n")[-1].splitlines()
    assert [line.split()[0] for line in table[1:5]] == ["trained", "trained_ven", "copy", "lab"]


def test_unknown_evaluator_is_a_clear_error(tmp_path):
    config = debug_config()
    config.evals.unknown = dict(every_steps=2, at_end=False)
    with pytest.raises(ValueError, match="config.evals.unknown: unknown benchmark; use one of"):
        train.train_and_evaluate(config, str(tmp_path))


def test_paper_config_train_step_traces_at_full_size():
    """Full MER at the paper's size (batch 32, 256x256, 4096 negatives) traces with the right shapes."""
    config = ytvos.get_config()
    model, init_fn, schedule = train.train_state.make_initializer(config, total_steps=10)
    state = jax.eval_shape(init_fn)
    clip = (config.batch_size, config.data.num_refs + 1, 256, 256)
    batch = {
        "frames": jax.ShapeDtypeStruct((*clip, 3), np.uint8),
        "flow": jax.ShapeDtypeStruct((*clip, 2), np.float32),
        "video_id": jax.ShapeDtypeStruct((config.batch_size,), np.int32),
    }
    loss_fn = objective.from_config(config, model, total_steps=10)
    new_state, metrics, _ = jax.eval_shape(
        lambda s, b: train.train_step(s, b, loss_fn=loss_fn, schedule=schedule), state, batch
    )
    assert jax.tree.map(lambda x: x.shape, new_state.params) == jax.tree.map(lambda x: x.shape, state.params)
    assert new_state.memory_bank.keys.shape == (3250 * 256, 64)
    assert metrics.loss.total.shape == ()


@pytest.mark.slow
def test_command_line_train_override_and_export(tmp_path):
    workdir, exported = tmp_path / "work", tmp_path / "export"
    env = subprocess_env.subprocess_env()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mer_jax.train",
            "--config=configs/demo.py:debug",
            f"--workdir={workdir}",
            "--config.optim.lr=3e-4",
            "--config.num_train_steps=2",
        ],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    assert '"lr": 0.0003' in (workdir / "config.json").read_text()
    result = subprocess.run(
        [sys.executable, "-m", "mer_jax.export", f"--workdir={workdir}", f"--output={exported}"],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    assert "Exported step 2" in result.stdout
    loaded = export.load_exported(str(exported))
    assert "opt_state" not in loaded.variables and set(loaded.variables) == {"params", "batch_stats"}
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(2, 32, 40, 3), dtype=np.uint8)
    flow = rng.normal(size=(2, 32, 40, 2)).astype(np.float32)
    features = export.embed(loaded, frames, flow)
    assert features.shape == (2, 8, 10, loaded.config.model.encoder.embed_dim)
    # The same weights through the training code path give the same features.
    state = train.train_and_evaluate(loaded.config, str(workdir))  # already finished: restores only
    lab = color.uint8_rgb_to_normalized_lab(frames, (50.0, 0.0, 0.0), (50.0, 127.0, 127.0))
    direct = loaded.model.apply(
        {"params": state.params, "batch_stats": state.batch_stats}, lab[:, None], flow[:, None], refine=False
    ).features[:, 0]
    np.testing.assert_allclose(np.asarray(features), np.asarray(direct), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="fuses optical flow"):
        export.embed(loaded, frames)
    with pytest.raises(FileExistsError):
        export.export(str(workdir), str(exported))
