"""The train state (what a checkpoint holds), the optimizer, and their initialisation."""

import functools
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from mer_jax.models import mer


class TrainState(flax.struct.PyTreeNode):
    """Everything a run needs to continue: what Orbax saves."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array
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


def create_train_state(rng: jax.Array, model: mer.MER, tx: optax.GradientTransformation, clip_shape) -> TrainState:
    """Initial state for clips of shape [B, N, H, W, 3]."""
    init_rng, state_rng = jax.random.split(rng)
    variables = model.init(init_rng, jnp.zeros(clip_shape, jnp.float32))
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        opt_state=tx.init(variables["params"]),
        rng=state_rng,
        tx=tx,
    )


def make_initializer(
    config: ml_collections.ConfigDict, total_steps: int
) -> tuple[mer.MER, Callable[[], TrainState], optax.Schedule]:
    """The model, a function creating the initial TrainState, and the learning-rate schedule."""
    model = mer.MER(encoder=dict(config.model.encoder))
    tx, schedule = make_optimizer(total_steps, **config.optim)
    clip_shape = (1, config.data.num_refs + 1, config.data.image_size, config.data.image_size, 3)
    init_fn = functools.partial(create_train_state, jax.random.PRNGKey(config.seed), model, tx, clip_shape)
    return model, init_fn, schedule
