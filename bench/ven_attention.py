"""Where the Value Extraction Network's time goes: the whole VEN and its parts, per attention kernel.

  python bench/ven_attention.py [--batch=1] [--size=64] [--steps=2] [--kernels=chunked,fused]
      [--query_chunk=N] [--json=PATH]

On random features [batch, size, size, C] (C = the ytvos config's encoder embed_dim, its VEN
fields and num_refs references) it times, compiled ahead, the fastest of `--steps` calls, forward
('fwd') and forward + backward ('fwd+bwd', gradients of a sum of squares with respect to every
input and parameter) of:
  'ven'         the whole VEN (value map, projections, attention), eval and train (DropKey);
  'attention'   `multi_head_attention` alone on random q, k, v of the VEN's shapes, eval and train;
  'projections' the VEN's Dense layers (value MLP, W_q, W_k, W_v on pooled refs, W_o);
  'value_map'   `window_value_map`.
'temp MB' is XLA's compiled temporary memory of the fwd+bwd function. JSON: a list of rows
{"part", "attention", "train", "fwd_s", "fwd_bwd_s", "temp_mb", "batch", "size", "device"}.
"""

import argparse
import json
import os
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import ytvos  # noqa: E402
from mer_jax import feature_maps  # noqa: E402
from mer_jax.models import ven as ven_lib  # noqa: E402


def timed(fn, args, steps: int) -> tuple[float, float]:
    """(fastest of `steps` calls of the compiled fn in seconds, its temporary memory in MB).

    The fastest, not the mean: on a shared machine the other calls measure the neighbours.
    """
    compiled = jax.jit(fn).lower(*args).compile()
    jax.block_until_ready(compiled(*args))  # first call: allocations, thread pools
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return min(times), compiled.memory_analysis().temp_size_in_bytes / 2**20


def fwd_and_grad(fn):
    """fn(*args) -> array, and the gradient of sum(fn(*args)**2) with respect to every argument."""

    def loss(*args):
        return jnp.sum(jnp.square(fn(*args).astype(jnp.float32)))

    return fn, lambda *args: jax.grad(loss, argnums=tuple(range(len(args))))(*args)


def projections(params, target, refs, value_map, pos, *, kv_pool: int):
    """The VEN's Dense layers on inputs of its shapes (W_o applied to the queries, as a stand-in
    for the attention output); returns their outputs concatenated."""

    def dense(name, x):
        return x @ params[name]["kernel"] + (params[name]["bias"] if "bias" in params[name] else 0.0)

    embedding = dense("value_mlp_out", nn.relu(dense("value_mlp_hidden", value_map[..., None]))) + pos
    q = dense("query", target + embedding)
    k = dense("key", feature_maps.average_pool(refs + pos, kv_pool))
    v = dense("value", feature_maps.average_pool(refs, kv_pool))
    return jnp.concatenate([dense("out", q).reshape(-1), k.reshape(-1), v.reshape(-1)])


def run(batch: int, size: int, steps: int, kernels: list[str], query_chunk: int | None) -> list[dict]:
    config = ytvos.get_config()
    channels, num_refs = config.model.encoder.embed_dim, config.data.num_refs
    ven_fields = dict(config.model.ven)
    if query_chunk is not None:
        ven_fields["query_chunk"] = query_chunk
    rng = np.random.default_rng(0)
    target = jnp.asarray(rng.normal(size=(batch, size, size, channels)), jnp.float32)
    refs = jnp.asarray(rng.normal(size=(batch, num_refs, size, size, channels)), jnp.float32)
    drop_rng = jax.random.PRNGKey(1)
    rows = []

    def record(part, attention, train, fn, args):
        fwd, fwd_bwd = fwd_and_grad(fn)
        fwd_s, _ = timed(fwd, args, steps)
        fwd_bwd_s, temp_mb = timed(fwd_bwd, args, steps)
        rows.append({"part": part, "attention": attention, "train": train, "fwd_s": fwd_s,
                     "fwd_bwd_s": fwd_bwd_s, "temp_mb": temp_mb})  # fmt: skip
        print(f"  {part} {attention} train={train}: {fwd_s:.3f} s, {fwd_bwd_s:.3f} s", file=sys.stderr, flush=True)

    heads, pool = ven_fields["num_heads"], ven_fields["kv_pool"]
    rows_pooled = -(-size // pool)
    num_keys = num_refs * rows_pooled**2
    q = jnp.asarray(rng.normal(size=(batch, size * size, heads, channels // heads)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(batch, num_keys, heads, channels // heads)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(batch, num_keys, heads, channels // heads)), jnp.float32)
    query_cells = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="ij"), -1).reshape(-1, 2) // pool
    key_cells = np.stack(np.meshgrid(np.arange(rows_pooled), np.arange(rows_pooled), indexing="ij"), -1)
    key_cells = np.tile(key_cells.reshape(-1, 2), (num_refs, 1))
    for attention in kernels:
        fields = {**ven_fields, "attention": attention, "zero_init_out": False}
        model = ven_lib.ValueExtractionNetwork(**fields, **config.model.value_map)
        params = model.init(jax.random.PRNGKey(0), target, refs, train=False)["params"]
        for train in (False, True):

            def whole(params, target, refs, model=model, train=train):
                return model.apply({"params": params}, target, refs, train=train, rngs={"dropkey": drop_rng}).features

            def attend(q, k, v, attention=attention, train=train):
                return ven_lib.multi_head_attention(
                    q, k, v, attention=attention, chunk=ven_fields["query_chunk"],
                    query_cells=query_cells.astype(np.int32), key_cells=key_cells.astype(np.int32),
                    radius=ven_fields["radius"], drop_rng=drop_rng if train else None,
                    drop_rate=ven_fields["dropkey_rate"],
                )  # fmt: skip

            record("ven", attention, train, whole, (params, target, refs))
            record("attention", attention, train, attend, (q, k, v))

    value_map = ven_lib.window_value_map(target, refs, config.model.value_map.window, config.model.value_map.beta)
    pos = ven_lib.sincos_position_encoding(size, size, channels)

    def project(params, target, refs, value_map):
        return projections(params, target, refs, value_map, pos, kv_pool=pool)

    def value(target, refs):
        return ven_lib.window_value_map(target, refs, config.model.value_map.window, config.model.value_map.beta)

    record("projections", "-", False, project, (params, target, refs, value_map))
    record("value_map", "-", False, value, (target, refs))
    device = jax.devices()[0].device_kind
    return [{**row, "batch": batch, "size": size, "device": device} for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=64, help="feature grid side (64: 256x256 frames)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--kernels", default=",".join(ven_lib.ATTENTION_KERNELS))
    parser.add_argument("--query_chunk", type=int, default=None, help="default: the config's")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = run(args.batch, args.size, args.steps, args.kernels.split(","), args.query_chunk)
    print(f"batch {args.batch}, {args.size}x{args.size} grid, {rows[0]['device']}")
    print(f"{'part':12s} {'attention':9s} {'train':5s} {'fwd s':>8s} {'fwd+bwd s':>10s} {'temp MB':>8s}")
    for r in rows:
        print(
            f"{r['part']:12s} {r['attention']:9s} {str(r['train']):5s} {r['fwd_s']:8.3f} {r['fwd_bwd_s']:10.3f} "
            f"{r['temp_mb']:8.1f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
