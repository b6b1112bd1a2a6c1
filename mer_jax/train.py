"""Training: `python -m mer_jax.train --config=configs/demo.py --workdir=DIR`.

Multi-process (several hosts, or several processes on one): run the same command in each process
with `--coordinator_address=HOST:PORT --num_processes=N --process_id=I` (see `distributed`).

`train_and_evaluate` builds the model, optimizer and data, restores the latest checkpoint in
`workdir` (or initialises), and runs the jitted, data-parallel `train_step` to the end, writing
TensorBoard scalars, module diagnostics (`diagnostics`, also to `workdir/diagnostics.json`) and
checkpoints. Killing and restarting the same command resumes from the latest checkpoint with the
same data order.
"""

import errno
import functools
import json
import logging as logging_lib
import math
import os
import sys
import time
from typing import Callable, Mapping

import flax
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from absl import app, flags, logging
from clu import metrics as clu_metrics
from jax.sharding import Mesh
from ml_collections import config_flags

from mer_jax import (
    checkpointing,
    cpu_compiler,
    diagnostics,
    distributed,
    export,
    input_pipeline,
    metric_writer,
    objective,
    run_config,
    sharding,
    train_state,
    workdir_lock,
)
from mer_jax.data import sources
from mer_jax.evaluation import training_evals
from mer_jax.models import mer

Batch = dict[str, jax.Array]


@flax.struct.dataclass
class TrainMetrics(clu_metrics.Collection):
    loss: clu_metrics.Average.from_output("loss")
    loss_recon: clu_metrics.Average.from_output("loss_recon")
    loss_recon_encoder: clu_metrics.Average.from_output("loss_recon_encoder")
    loss_pn: clu_metrics.Average.from_output("loss_pn")
    recon_error: clu_metrics.Average.from_output("recon_error")
    grad_norm: clu_metrics.Average.from_output("grad_norm")
    lr: clu_metrics.LastValue.from_output("lr")


def train_step(
    state: train_state.TrainState, batch: Batch, *, loss_fn: Callable, schedule: optax.Schedule
) -> tuple[train_state.TrainState, TrainMetrics, jax.Array]:
    """One optimisation step on a global batch ('frames', 'video_id', and 'flow' with use_flow).

    Returns:
      (new state, metrics, finite): `finite` is a bool scalar, False when the loss, the gradient
      norm or the updated parameters are not finite; the update is then not applied (the new
      state keeps the old parameters, optimizer state, BatchNorm statistics and memory bank, and
      only the step advances).
    """
    rng = jax.random.fold_in(state.rng, state.step)

    def loss_of(params):
        return loss_fn(params, state.batch_stats, batch, rng, state.step, state.memory_bank)

    (loss, aux), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
    grad_norm = optax.tree_utils.tree_norm(grads)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(optax.tree_utils.tree_norm(params))
    updated = (params, opt_state, aux.batch_stats, aux.memory_bank)
    kept = (state.params, state.opt_state, state.batch_stats, state.memory_bank)
    params, opt_state, batch_stats, bank = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, kept)
    new_state = state.replace(
        step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state, memory_bank=bank
    )
    step_metrics = TrainMetrics.single_from_model_output(
        loss=loss, grad_norm=grad_norm, lr=schedule(state.step), **aux.parts
    )
    return new_state, step_metrics, finite


def num_train_steps(config: ml_collections.ConfigDict, num_videos: int) -> int:
    """config.num_train_steps if set, else the steps of num_epochs epochs."""
    if config.num_train_steps is not None:
        return config.num_train_steps
    clips = config.num_epochs * num_videos * config.data.clips_per_video
    return math.ceil(clips / config.batch_size)


@jax.jit
def _first_non_finite(first: jax.Array, step: jax.Array, finite: jax.Array) -> jax.Array:
    """The first step whose update was refused (-1 while none), folded on the device."""
    return jnp.where((first < 0) & ~finite, step, first)


def _non_finite_error(step: int, last_checkpoint: int | None, workdir: str) -> FloatingPointError:
    return FloatingPointError(
        f"Non-finite loss or gradient at step {step}: its update was not applied and nothing after it "
        f"was saved. The last good checkpoint is step {last_checkpoint} in {workdir}; lower the learning "
        "rate (--config.optim.lr) or inspect the data, then rerun."
    )


def _exploded_state_error(step: int, last_checkpoint: int | None, workdir: str) -> FloatingPointError:
    return FloatingPointError(
        f"The state after step {step} gives a non-finite loss itself (its update was finite but blew up the "
        f"parameters), so it was not saved. The last good checkpoint is step {last_checkpoint} in {workdir}; "
        "lower the learning rate (--config.optim.lr), then rerun."
    )


def _host_variables(state: train_state.TrainState) -> dict:
    """Host copies of the replicated model variables: each process evaluates on its own devices,
    with no collective."""
    return jax.tree.map(
        lambda x: np.asarray(x.addressable_data(0)), {"params": state.params, "batch_stats": state.batch_stats}
    )


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    mesh: Mesh | None = None,
    stop_at_step: int | None = None,
    allow_config_change: bool = False,
    floors: Mapping[str, Mapping[str, dict]] | None = None,
) -> train_state.TrainState:
    """Trains to the end of the schedule (resuming from `workdir` if it has checkpoints).

    The run holds `workdir`'s lock throughout (`workdir_lock`): a second run on it stops at once.

    Args:
      config: see configs/ytvos.py.
      workdir: checkpoints, TensorBoard events, config.json and diagnostics.json go here.
      mesh: devices to train on (default: all devices, 'data' axis).
      stop_at_step: return, without saving, once this step is reached, as if the run had been
        killed there (for preemption tests); the schedule still spans the whole run.
      allow_config_change: a resumed run may change `run_config.RESUMABLE_WITH_FLAG` fields.
      floors: {evaluation name: {"copy": scores, "lab": scores}} already scored for that
        `config.evals` section (a sweep's, `sweep.sweep_floors`); they are not scored again.

    Returns:
      The final train state.

    Raises:
      run_config.ConfigChangedError: resuming with a config that changes the run.
      workdir_lock.WorkdirLockedError: another live run holds `workdir`.
      FloatingPointError: a non-finite update or state (nothing after the last good checkpoint saved).
    """
    workdir = os.path.abspath(os.path.expanduser(workdir))
    mesh = mesh if mesh is not None else sharding.make_mesh()
    sharding.check_batch_size(config.batch_size, mesh)
    evaluators = training_evals.from_config(config, floors)  # Checks their data before training starts.
    with workdir_lock.WorkdirLock(workdir, jax.process_index()) as lock:
        return _train(config, workdir, mesh, stop_at_step, allow_config_change, evaluators, lock)


def _train(
    config: ml_collections.ConfigDict,
    workdir: str,
    mesh: Mesh,
    stop_at_step: int | None,
    allow_config_change: bool,
    evaluators: dict[str, training_evals.TrainingEvaluation],
    lock: workdir_lock.WorkdirLock,
) -> train_state.TrainState:
    """`train_and_evaluate` once the workdir is locked."""
    source = sources.make_source(config.data, config.seed)
    total_steps = num_train_steps(config, len(source))

    model, init_fn, schedule = train_state.make_initializer(config, total_steps)
    loss_fn = objective.from_config(config, model, total_steps)
    replicated = sharding.replicated(mesh)
    abstract_state = checkpointing.with_sharding(jax.eval_shape(init_fn), replicated)
    checkpointer = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=config.keep_checkpoints)
    stored, history = run_config.read(workdir)
    changed = {}
    if stored is not None:
        path = os.path.join(workdir, run_config.CONFIG_FILE)
        if checkpointer.latest_step() is not None:  # Resuming: the state must continue the same run.
            changed = run_config.check_resume(stored, config, allow_changes=allow_config_change, path=path)
        else:
            changed = run_config.differences(stored, json.loads(config.to_json()))
    state = checkpointer.restore_or_init(jax.jit(init_fn, out_shardings=replicated), abstract_state)
    start_step = int(state.step)
    if jax.process_index() == 0:
        run_config.record_start(workdir, config, start_step, changed, history)

    step_fn = cpu_compiler.jit(
        functools.partial(train_step, loss_fn=loss_fn, schedule=schedule),
        in_shardings=(replicated, sharding.batch_sharding(mesh)),
        out_shardings=(replicated, replicated, replicated),
        donate_argnums=0,
    )

    def own_loss_is_finite(state: train_state.TrainState, batch: Batch) -> bool:
        """Whether a state about to be saved gives a finite loss and gradient itself, on the batch it
        was just trained on: a finite update can still make parameters whose own loss is not finite
        (an exploding learning rate). One more step on a copy, with the compiled step, discarded."""
        _, _, finite = step_fn(jax.tree.map(jnp.copy, state), batch)
        return bool(finite)

    loader = input_pipeline.ClipLoader(
        source,
        global_batch=config.batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        seed=config.seed,
        num_refs=config.data.num_refs,
        frame_gaps=tuple(config.data.frame_gaps),
        gap_probs=tuple(config.data.gap_probs),
        clips_per_video=config.data.clips_per_video,
        prefetch=config.data.prefetch,
        with_flow=config.model.use_flow,
        num_workers=config.data.num_workers,
    )
    # Module diagnostics on held-out procedural clips (built here, once), on process 0.
    prober = diagnostics.Prober(loss_fn, config) if jax.process_index() == 0 else None
    writer = metric_writer.MetricWriter(workdir)
    if start_step == 0:
        writer.write_hparams(dict(config.to_dict(), num_train_steps=total_steps, devices=mesh.devices.size))
    logging.info("Training steps %d..%d on %d devices", start_step, total_steps, mesh.devices.size)

    progress = tqdm.tqdm(
        total=total_steps,
        initial=start_step,
        desc="train",
        disable=not config.progress_bar or jax.process_index() != 0,
        mininterval=1.0,
    )
    end_step = total_steps if stop_at_step is None else min(stop_at_step, total_steps)
    batches = loader.iterate(start_step)
    # Metrics stay on the device and are read on the host only at log and checkpoint steps.
    accumulated, first_bad = None, jnp.int32(-1)
    interval_start, interval_steps = time.perf_counter(), 0

    def check_finite() -> None:
        bad = int(first_bad)
        if bad >= 0:
            raise _non_finite_error(bad, checkpointer.last_good_step(), workdir)

    try:
        # Evaluations due at the step this run resumes from that did not complete (the run stopped
        # during them, or their section changed): run them before training on.
        pending = [
            name
            for name, evaluation in evaluators.items()
            if start_step > 0
            and evaluation.due(start_step, total_steps)
            and not evaluation.completed(workdir, start_step)
        ]
        if pending:
            run_evaluators(config, model, state, evaluators, pending, start_step, workdir, writer)
        for step in range(start_step, end_step):
            batch = sharding.global_batch(next(batches), mesh)
            state, step_metrics, finite = step_fn(state, batch)
            first_bad = _first_non_finite(first_bad, step, finite)
            accumulated = step_metrics if accumulated is None else accumulated.merge(step_metrics)
            interval_steps += 1
            progress.update(1)
            done = step + 1
            if done % config.log_every_steps == 0 or done == total_steps:
                check_finite()
                scalars = {k: float(v) for k, v in accumulated.compute().items()}
                elapsed = time.perf_counter() - interval_start
                scalars.update(
                    step_time_s=elapsed / interval_steps, clips_per_s=config.batch_size * interval_steps / elapsed
                )
                writer.write_scalars(done, scalars)
                if prober is not None:
                    probed, picture = prober(state, done)
                    writer.write_scalars(done, {f"diagnostics/{key}": value for key, value in probed.items()})
                    if picture is not None:
                        writer.write_images(done, {"diagnostics/probe": picture})
                    diagnostics.write_json(workdir, done, probed)
                progress.set_postfix(loss=f"{scalars['loss']:.4f}")
                lock.heartbeat()
                checkpointer.check_for_errors()  # A failed background save ends the run now.
                accumulated, interval_start, interval_steps = None, time.perf_counter(), 0
            if done % config.checkpoint_every_steps == 0 or done == total_steps:
                check_finite()  # Never checkpoint a state after a refused update,
                if not own_loss_is_finite(state, batch):  # nor one whose own loss is not finite.
                    raise _exploded_state_error(done, checkpointer.last_good_step(), workdir)
                checkpointer.save(done, state)
            due = [name for name, evaluation in evaluators.items() if evaluation.due(done, total_steps)]
            if due:
                check_finite()
                run_evaluators(config, model, state, evaluators, due, done, workdir, writer)
        check_finite()
    finally:
        batches.close()
        progress.close()
        checkpointer.close()
        writer.close()
    return state


def run_evaluators(
    config: ml_collections.ConfigDict,
    model: mer.MER,
    state: train_state.TrainState,
    evaluators: dict[str, training_evals.TrainingEvaluation],
    names: list[str],
    step: int,
    workdir: str,
    writer: metric_writer.MetricWriter,
) -> None:
    """Runs the named evaluators on the current model; writes their scalars as `<name>/<key>` and
    records each as completed at `step`."""
    exported = export.ExportedModel(model, _host_variables(state), config)
    for name in names:
        scalars = evaluators[name].run(exported, workdir)
        writer.write_scalars(step, {f"{name}/{key}": value for key, value in scalars.items()})
        evaluators[name].record(workdir, step)


# Errors of the storage, not of the program: reported in one line, without a traceback.
STORAGE_ERRORS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EEXIST)


def _quiet_orbax_info(record: logging_lib.LogRecord) -> bool:
    """Drops Orbax's per-save INFO chatter (dozens of lines per checkpoint) from the log."""
    return record.levelno >= logging_lib.WARNING or f"{os.sep}orbax{os.sep}" not in record.pathname


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_quiet_orbax_info)
    f = flags.FLAGS
    distributed.initialize(f.coordinator_address, f.num_processes, f.process_id, auto=f.distributed_auto)
    try:
        train_and_evaluate(f.config, f.workdir, allow_config_change=f.allow_config_change)
    except OSError as error:
        if error.errno not in STORAGE_ERRORS:
            raise
        sys.exit(f"error: {error}")  # One line naming the path and the cause; checkpoints are intact.
    except (
        workdir_lock.WorkdirLockedError,
        run_config.ConfigChangedError,
        checkpointing.CheckpointRestoreError,
    ) as error:
        sys.exit(f"error: {error}")  # Each message says what is wrong and what to do.


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events and config.json.")
    config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
    distributed.define_flags()
    flags.DEFINE_bool(
        "allow_config_change",
        False,
        "Resume although the run's length or arithmetic changed (num_train_steps, num_epochs, compute_dtype, remat).",
    )
    flags.mark_flags_as_required(["workdir", "config"])
    app.run(main)
