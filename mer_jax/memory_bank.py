"""The negatives memory bank of the positive/negative reconstruction loss (docs/method.md, 'Reconstruction and losses').

This file owns the FIFO of (key, value, video id) triples taken from earlier batches: its pytree
(`MemoryBank`, part of the train state, so Orbax saves and restores it), the write of a batch
(`enqueue`), the draw of negatives for each target frame (`sample_negatives`), and its memory
footprint (`bank_bytes`). It holds no Python state: every field is an array, and the static sizes
(`bank_pixels`, `num_negatives`) are passed explicitly by the caller.

Multi-device use: the bank is replicated (every device holds the same copy). The train step
enqueues the entries of the GLOBAL batch (the batch-sharded keys are gathered), with the same rng
on every device, so all copies stay identical. Under `jax.jit` with `NamedSharding`s this is
automatic when the bank's sharding is replicated (`P()`): XLA inserts the all-gather. The paper's
bank (3250 frames x 256 pixels x (64 + 3) float32) holds 223 MB of keys and values, plus 4 MB of
video ids and flags, on every device; see `bank_bytes`.
"""

from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp


class MemoryBank(flax.struct.PyTreeNode):
    """A FIFO of S = bank_frames * bank_pixels entries; slot s is overwritten every S entries.

    Attributes:
      keys: [S, D] float32 stop-gradient key features.
      values: [S, V] float32 values reconstructed through the keys.
      video_ids: [S] int32 id of the video each entry came from.
      filled: [S] bool, False for slots never written (their other fields are zeros).
      pointer: [] int32 slot the next entry is written to.
    """

    keys: jax.Array
    values: jax.Array
    video_ids: jax.Array
    filled: jax.Array
    pointer: jax.Array


class Negatives(NamedTuple):
    """Bank entries drawn as negatives for each target frame.

    Attributes:
      keys: [B, M, D] float32.
      values: [B, M, V] float32.
      valid: [B, M] bool; invalid entries must not contribute (the caller masks their logits to -inf).
    """

    keys: jax.Array
    values: jax.Array
    valid: jax.Array


def create(bank_frames: int, bank_pixels: int, key_dim: int, value_dim: int) -> MemoryBank:
    """An empty bank of bank_frames * bank_pixels slots, all zeros, nothing filled."""
    size = bank_frames * bank_pixels
    return MemoryBank(
        keys=jnp.zeros((size, key_dim), jnp.float32),
        values=jnp.zeros((size, value_dim), jnp.float32),
        video_ids=jnp.zeros((size,), jnp.int32),
        filled=jnp.zeros((size,), bool),
        pointer=jnp.zeros((), jnp.int32),
    )


def bank_bytes(bank_frames: int, bank_pixels: int, key_dim: int, value_dim: int) -> int:
    """Bytes the bank's arrays occupy on each device (it is replicated).

    The paper's bank, bank_bytes(3250, 256, 64, 3), is 227,136,004 bytes: 223.0 MB of float32 keys
    and values plus 4.2 MB of int32 video ids and bool flags.
    """
    size = bank_frames * bank_pixels
    per_entry = 4 * (key_dim + value_dim) + 4 + 1  # float32 key and value, int32 video id, bool filled
    return size * per_entry + 4  # + the int32 pointer


def enqueue(
    bank: MemoryBank,
    rng: jax.Array,
    keys: jax.Array,
    values: jax.Array,
    video_ids: jax.Array,
    bank_pixels: int,
) -> MemoryBank:
    """Writes bank_pixels random pixels of every frame of a batch to the bank, oldest slots first.

    For each frame b, bank_pixels distinct pixel indices are drawn uniformly (every subset of that
    size equally likely) as the top-k of i.i.d. uniform noise. The B * bank_pixels entries are
    ordered frame-major (entry b * bank_pixels + j is frame b's j-th drawn pixel) and written from
    `pointer` on, wrapping around the end of the bank; the pointer advances by B * bank_pixels mod S.
    If B * bank_pixels > S, the result is that of writing the entries one by one: only the last S
    survive.

    Args:
      bank: the bank to write to, S slots.
      rng: PRNG key for the pixel draw.
      keys: [B, N, D] key features of N pixels per frame; gradients are stopped.
      values: [B, N, V] values of the same pixels; gradients are stopped.
      video_ids: [B] int video id of each frame.
      bank_pixels: pixels kept per frame (static), at most N.

    Returns:
      The updated bank.
    """
    batch, num_pixels, key_dim = keys.shape
    size = bank.keys.shape[0]
    if bank_pixels > num_pixels:
        raise ValueError(f"bank_pixels={bank_pixels} exceeds the {num_pixels} pixels per frame")
    if values.shape[:2] != (batch, num_pixels) or video_ids.shape != (batch,):
        raise ValueError(f"keys {keys.shape}, values {values.shape} and video_ids {video_ids.shape} disagree")
    if key_dim != bank.keys.shape[1] or values.shape[2] != bank.values.shape[1]:
        raise ValueError(f"keys {keys.shape} / values {values.shape} do not fit the bank {bank.keys.shape}")

    _, pixel_index = jax.lax.top_k(jax.random.uniform(rng, (batch, num_pixels)), bank_pixels)  # [B, P]
    new_keys = jnp.take_along_axis(keys, pixel_index[..., None], axis=1).reshape(-1, key_dim)
    new_values = jnp.take_along_axis(values, pixel_index[..., None], axis=1).reshape(-1, values.shape[2])
    new_ids = jnp.repeat(video_ids.astype(jnp.int32), bank_pixels)

    num_new = batch * bank_pixels
    # Entries that a one-by-one write would overwrite within this batch are dropped, so that every
    # slot is written at most once (scatter order among duplicate indices is unspecified).
    skip = max(num_new - size, 0)
    slots = (bank.pointer + skip + jnp.arange(num_new - skip)) % size
    return bank.replace(
        keys=bank.keys.at[slots].set(jax.lax.stop_gradient(new_keys[skip:]).astype(bank.keys.dtype)),
        values=bank.values.at[slots].set(jax.lax.stop_gradient(new_values[skip:]).astype(bank.values.dtype)),
        video_ids=bank.video_ids.at[slots].set(new_ids[skip:]),
        filled=bank.filled.at[slots].set(True),
        pointer=((bank.pointer + num_new) % size).astype(jnp.int32),
    )


def sample_negatives(
    bank: MemoryBank,
    rng: jax.Array,
    target_video_ids: jax.Array,
    num_negatives: int,
) -> Negatives:
    """Draws num_negatives bank entries per target frame, uniformly among its eligible slots.

    A slot is eligible for target frame b if it is filled and its video id differs from
    target_video_ids[b]. The M = num_negatives draws are independent and each is uniform over the
    eligible slots of b (with replacement): an integer r is drawn uniformly in [0, count_b) and
    mapped to the r-th eligible slot by a binary search in the running count of eligible slots.
    This costs O(B * S) for the counts plus O(B * M log S) for the searches. Every draw is valid
    whenever frame b has an eligible slot; if it has none (an empty bank at step 0, or a bank
    holding only its own video) all its draws are invalid, and the caller's masking leaves only the
    positives in the softmax, so the loss stays defined.

    Args:
      bank: the bank, S slots.
      rng: PRNG key for the draw.
      target_video_ids: [B] int video id of each target frame.
      num_negatives: M, entries drawn per target frame (static).

    Returns:
      Negatives with keys [B, M, D], values [B, M, V] and valid [B, M].
    """
    eligible = bank.filled[None, :] & (bank.video_ids[None, :] != target_video_ids[:, None])  # [B, S]
    running_count = jnp.cumsum(eligible, axis=1, dtype=jnp.int32)  # [B, S]
    count = running_count[:, -1]  # [B]
    rank = jax.random.randint(
        rng, (target_video_ids.shape[0], num_negatives), 0, jnp.maximum(count, 1)[:, None]
    )  # [B, M]
    # The rank-th eligible slot (0-based) is the first slot whose running count exceeds rank.
    slot = jax.vmap(lambda c, r: jnp.searchsorted(c, r, side="right"))(running_count, rank)
    slot = jnp.minimum(slot, bank.keys.shape[0] - 1)  # only reached when count is 0
    return Negatives(
        keys=bank.keys[slot],
        values=bank.values[slot],
        valid=jnp.take_along_axis(eligible, slot, axis=1),
    )
