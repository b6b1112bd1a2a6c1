"""The train state (what a checkpoint holds), the model and optimizer built from a config, and
their initialisation."""

import functools
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from mer_jax import memory_bank
from mer_jax.models import mer


class TrainState(flax.struct.PyTreeNode):
    """Everything a run needs to continue: what Orbax saves."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array
    memory_bank: memory_bank.MemoryBank | None
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)


def make_optimizer(
    total_steps: int,
    *,
    lr: float,
    b1: float,
    b2: float,
    weight_decay: float,
    final_lr_fraction: float,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Adam with L2 weight decay added to the gradient (as torch.optim.Adam's weight_decay) and
    a per-step cosine decay from lr to final_lr_fraction * lr."""
    schedule = optax.cosine_decay_schedule(lr, max(total_steps, 1), alpha=final_lr_fraction)
    tx = optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_adam(b1=b1, b2=b2),
        optax.scale_by_learning_rate(schedule),
    )
    return tx, schedule


COMPUTE_DTYPES = ("float32", "bfloat16")


def build_model(config: ml_collections.ConfigDict) -> mer.MER:
    """The `MER` network of a config (encoder, and flow fusion / VEN when switched on), computing in
    `config.compute_dtype` with `config.remat`; config sections are passed through unchanged."""
    if config.compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"config.compute_dtype must be one of {COMPUTE_DTYPES}, got {config.compute_dtype!r}")
    return mer.MER(
        encoder=dict(config.model.encoder),
        use_flow=config.model.use_flow,
        flow=dict(config.model.flow),
        use_ven=config.model.use_ven,
        ven=dict(config.model.ven),
        value_map=dict(config.model.value_map),
        lab_mean=tuple(config.data.lab_mean),
        lab_std=tuple(config.data.lab_std),
        dtype=jnp.dtype(config.compute_dtype),
        remat=config.remat,
    )


def create_train_state(
    rng: jax.Array,
    model: mer.MER,
    tx: optax.GradientTransformation,
    clip_shape: tuple[int, ...],
    bank: dict | None,
) -> TrainState:
    """Initial state for clips of shape [B, N, H, W, 3]; `bank` holds `memory_bank.create`'s
    arguments, or None without the positive/negative loss."""
    init_rng, state_rng = jax.random.split(rng)
    flow = jnp.zeros((*clip_shape[:-1], 2), jnp.float32) if model.use_flow else None
    variables = model.init({"params": init_rng, "dropkey": init_rng}, jnp.zeros(clip_shape, jnp.float32), flow)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        opt_state=tx.init(variables["params"]),
        rng=state_rng,
        memory_bank=memory_bank.create(**bank) if bank is not None else None,
        tx=tx,
    )


def make_initializer(
    config: ml_collections.ConfigDict, total_steps: int
) -> tuple[mer.MER, Callable[[], TrainState], optax.Schedule]:
    """The model, a function creating the initial TrainState, and the learning-rate schedule."""
    model = build_model(config)
    tx, schedule = make_optimizer(total_steps, **config.optim)
    clip_shape = (1, config.data.num_refs + 1, config.data.image_size, config.data.image_size, 3)
    bank = None
    if config.model.use_pos_neg:
        bank = dict(
            bank_frames=config.memory.bank_frames,
            bank_pixels=config.memory.bank_pixels,
            key_dim=config.model.encoder.embed_dim,
            value_dim=3,
        )
    init_fn = functools.partial(create_train_state, jax.random.PRNGKey(config.seed), model, tx, clip_shape, bank)
    return model, init_fn, schedule
