"""Training: `python -m mer_jax.train --config=configs/demo.py --workdir=DIR`.

Multi-process (several hosts, or several processes on one): run the same command in each process
with `--coordinator_address=HOST:PORT --num_processes=N --process_id=I` (see `distributed`).

`train_and_evaluate` builds the model, optimizer and data, restores the latest checkpoint in
`workdir` (or initialises), and runs the jitted, data-parallel `train_step` to the end, writing
TensorBoard scalars and checkpoints. Killing and restarting the same command resumes from the
latest checkpoint with the same data order.
"""

import functools
import json
import logging as logging_lib
import math
import os
import time
from typing import Any, Callable

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
    distributed,
    evaluate,
    export,
    input_pipeline,
    metric_writer,
    sharding,
    train_state,
)
from mer_jax.data import sources, synthetic_video
from mer_jax.evaluation import features, synthetic
from mer_jax.models import mer

Batch = dict[str, jax.Array]


@flax.struct.dataclass
class TrainMetrics(clu_metrics.Collection):
    loss: clu_metrics.Average.from_output("loss")
    loss_recon: clu_metrics.Average.from_output("loss_recon")
    loss_pn: clu_metrics.Average.from_output("loss_pn")
    recon_error: clu_metrics.Average.from_output("recon_error")
    grad_norm: clu_metrics.Average.from_output("grad_norm")
    lr: clu_metrics.LastValue.from_output("lr")


def _global_norm(tree: Any) -> jax.Array:
    """L2 norm of all leaves of a pytree together."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def train_step(
    state: train_state.TrainState, batch: Batch, *, loss_fn: Callable, schedule: optax.Schedule
) -> tuple[train_state.TrainState, TrainMetrics]:
    """One optimisation step on a global batch ('frames', 'video_id', and 'flow' with use_flow)."""
    rng = jax.random.fold_in(state.rng, state.step)

    def loss_of(params):
        return loss_fn(params, state.batch_stats, batch, rng, state.step, state.memory_bank)

    (loss, aux), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        batch_stats=aux.batch_stats,
        opt_state=opt_state,
        memory_bank=aux.memory_bank,
    )
    step_metrics = TrainMetrics.single_from_model_output(
        loss=loss, grad_norm=_global_norm(grads), lr=schedule(state.step), **aux.parts
    )
    return new_state, step_metrics


def num_train_steps(config: ml_collections.ConfigDict, num_videos: int) -> int:
    """config.num_train_steps if positive, else the steps of num_epochs epochs."""
    if config.num_train_steps > 0:
        return config.num_train_steps
    clips = config.num_epochs * num_videos * config.data.clips_per_video
    return math.ceil(clips / config.batch_size)


def make_loss_fn(config: ml_collections.ConfigDict, model: mer.MER, total_steps: int) -> Callable:
    """`mer.clip_loss` bound to the config's hyper-parameters and switches."""
    if config.model.use_pos_neg and config.model.reconstruction.ref_fusion != "joint":
        raise ValueError("use_pos_neg needs model.reconstruction.ref_fusion='joint' (negatives join one softmax)")
    loss = dict(config.loss)
    if loss["gamma_ramp_steps"] <= 0:
        loss["gamma_ramp_steps"] = total_steps
    if not loss["pn_normalize"]:
        loss["pn_temperature"] = config.model.reconstruction.temperature
    ven = config.model.ven
    return functools.partial(
        mer.clip_loss,
        model=model,
        lab_mean=tuple(config.data.lab_mean),
        lab_std=tuple(config.data.lab_std),
        reconstruction=dict(config.model.reconstruction),
        loss=loss,
        sampler_args=dict(config.model.sampler) if config.model.use_sampler else None,
        weight_map_window=(ven.ven_window, ven.ven_beta) if config.model.use_weight_map else None,
        memory=dict(bank_pixels=config.memory.bank_pixels, num_negatives=config.memory.num_negatives)
        if config.model.use_pos_neg
        else None,
        remat=config.remat,
    )


def _non_finite_loss(loss: float, step: int, last_checkpoint: int | None, workdir: str) -> FloatingPointError:
    return FloatingPointError(
        f"Non-finite loss ({loss}) at step {step}. The last checkpoint is step {last_checkpoint} in "
        f"{workdir}; lower the learning rate (--config.optim.lr) or inspect the data, then rerun."
    )


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    mesh: Mesh | None = None,
    stop_at_step: int | None = None,
) -> train_state.TrainState:
    """Trains to the end of the schedule (resuming from `workdir` if it has checkpoints).

    Args:
      config: see configs/ytvos.py.
      workdir: checkpoints, TensorBoard events and config.json go here.
      mesh: devices to train on (default: all devices, 'data' axis).
      stop_at_step: return, without saving, once this step is reached, as if the run had been
        killed there (for preemption tests); the schedule still spans the whole run.

    Returns:
      The final train state.
    """
    workdir = os.path.abspath(os.path.expanduser(workdir))
    mesh = mesh if mesh is not None else sharding.make_mesh()
    sharding.check_batch_size(config.batch_size, mesh)
    source = sources.make_source(config.data, config.seed)
    total_steps = num_train_steps(config, len(source))

    model, init_fn, schedule = train_state.make_initializer(config, total_steps)
    replicated = sharding.replicated(mesh)
    abstract_state = checkpointing.with_sharding(jax.eval_shape(init_fn), replicated)
    checkpointer = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=config.keep_checkpoints)
    state = checkpointer.restore_or_init(jax.jit(init_fn, out_shardings=replicated), abstract_state)
    start_step = int(state.step)
    if jax.process_index() == 0:
        checkpointing.save_config(workdir, config)

    step_fn = jax.jit(
        functools.partial(train_step, loss_fn=make_loss_fn(config, model, total_steps), schedule=schedule),
        in_shardings=(replicated, sharding.batch_sharding(mesh)),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )
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
    accumulated, previous = None, None
    interval_start, interval_steps = time.perf_counter(), 0

    def finish(step: int, step_metrics: TrainMetrics) -> None:
        """Host-side bookkeeping of a completed step (run one step late to keep the device busy)."""
        nonlocal accumulated, interval_start, interval_steps
        loss = float(step_metrics.loss.compute())
        if not math.isfinite(loss):
            raise _non_finite_loss(loss, step, checkpointer.latest_step(), workdir)
        accumulated = step_metrics if accumulated is None else accumulated.merge(step_metrics)
        interval_steps += 1
        progress.update(1)
        progress.set_postfix(loss=f"{loss:.4f}")
        if (step + 1) % config.log_every_steps == 0 or step + 1 == total_steps:
            elapsed = time.perf_counter() - interval_start
            scalars = {k: float(v) for k, v in accumulated.compute().items()}
            scalars.update(
                step_time_s=elapsed / interval_steps, clips_per_s=config.batch_size * interval_steps / elapsed
            )
            writer.write_scalars(step + 1, scalars)
            accumulated, interval_start, interval_steps = None, time.perf_counter(), 0

    try:
        for step in range(start_step, end_step):
            state, step_metrics = step_fn(state, sharding.global_batch(next(batches), mesh))
            if previous is not None:
                finish(*previous)
            previous = (step, step_metrics)
            if (step + 1) % config.checkpoint_every_steps == 0 or step + 1 == total_steps:
                finish(*previous)  # Never checkpoint a non-finite state.
                previous = None
                checkpointer.save(step + 1, state)
        if previous is not None:
            finish(*previous)
    finally:
        batches.close()
        progress.close()
        checkpointer.close()
        writer.close()
    if config.eval.run_at_end and end_step == total_steps:
        evaluate_held_out(config, model, state, workdir)
    return state


def evaluate_held_out(
    config: ml_collections.ConfigDict, model: mer.MER, state: train_state.TrainState, workdir: str
) -> dict[str, dict[str, float]]:
    """J&F of the trained encoder and of the raw-Lab baseline on held-out procedural videos.

    Writes {"trained": {"J&F-Mean": ...}, "lab": {...}} to workdir/eval_results.json and prints it.
    """
    size = config.data.image_size
    videos = synthetic_video.generate_videos(
        config.eval.seed, config.eval.num_videos, num_frames=config.eval.num_frames, height=size, width=size,
        num_objects=config.eval.num_objects, flow_gap=config.data.flow_gap,
    )  # fmt: skip
    # Host copies of the replicated variables: every process evaluates on its own devices, with
    # no collective (process 0 writes the results).
    variables = jax.tree.map(
        lambda x: np.asarray(x.addressable_data(0)), {"params": state.params, "batch_stats": state.batch_stats}
    )
    encoders = {
        "trained": features.TrainedEncoder(export.ExportedModel(model, variables, config), batch=config.batch_size),
        "lab": features.LabEncoder(tuple(config.data.lab_mean), tuple(config.data.lab_std)),
    }
    results = {}
    for name, encoder in encoders.items():
        preset = evaluate.make_preset(config.eval.presets[config.eval.preset], name, config.eval.lab_temperature)
        results[name] = synthetic.evaluate(encoder, preset, videos)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "eval_results.json"), "w") as f:
            json.dump(results, f, indent=2)
        print(
            f"Held-out J&F-Mean ({len(videos)} procedural videos, preset {config.eval.preset}): "
            f"trained {results['trained']['J&F-Mean']:.4f}, lab baseline {results['lab']['J&F-Mean']:.4f}"
        )
    return results


def _quiet_orbax_info(record: logging_lib.LogRecord) -> bool:
    """Drops Orbax's per-save INFO chatter (dozens of lines per checkpoint) from the log."""
    return record.levelno >= logging_lib.WARNING or f"{os.sep}orbax{os.sep}" not in record.pathname


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_quiet_orbax_info)
    f = flags.FLAGS
    distributed.initialize(f.coordinator_address, f.num_processes, f.process_id, auto=f.distributed_auto)
    train_and_evaluate(f.config, f.workdir)


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events and config.json.")
    config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
    flags.DEFINE_string(
        "coordinator_address", None, "Multi-process runs: HOST:PORT of process 0 (or $JAX_COORDINATOR_ADDRESS)."
    )
    flags.DEFINE_integer("num_processes", None, "Multi-process runs: number of processes (or $JAX_NUM_PROCESSES).")
    flags.DEFINE_integer(
        "process_id", None, "Multi-process runs: this process, 0..num_processes-1 (or $JAX_PROCESS_ID)."
    )
    flags.DEFINE_bool("distributed_auto", False, "Detect the multi-process job from SLURM, Open MPI, K8s or Cloud TPU.")
    flags.mark_flags_as_required(["workdir", "config"])
    app.run(main)
