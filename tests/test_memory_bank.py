"""Memory bank: FIFO order and wrap-around, pixel draw, negatives' exclusion and spread, jit, size."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from mer_jax import memory_bank

# A correct sampler fails a chi-square test at this level once in a thousand seeds.
CHI2_LEVEL = 0.999


def encoded_batch(batch_number, num_frames, num_pixels):
    """keys [B, N, 3] = (batch number, frame, pixel); values [B, N, 2] and video ids [B] derived from them."""
    frame, pixel = np.meshgrid(np.arange(num_frames), np.arange(num_pixels), indexing="ij")
    keys = np.stack([np.full_like(frame, batch_number), frame, pixel], axis=-1).astype(np.float32)
    values = np.stack([100 * keys[..., 0] + 10 * keys[..., 1] + keys[..., 2], -keys[..., 2]], axis=-1)
    video_ids = (10 * batch_number + np.arange(num_frames)).astype(np.int32)
    return keys, values.astype(np.float32), video_ids


def check_entries_follow_keys(bank):
    """Values and video ids of every filled slot are those of the (batch, frame, pixel) in its key."""
    keys, filled = np.asarray(bank.keys)[np.asarray(bank.filled)], np.asarray(bank.filled)
    np.testing.assert_array_equal(np.asarray(bank.values)[filled, 0], keys @ np.array([100, 10, 1]))
    np.testing.assert_array_equal(np.asarray(bank.values)[filled, 1], -keys[:, 2])
    np.testing.assert_array_equal(np.asarray(bank.video_ids)[filled], 10 * keys[:, 0] + keys[:, 1])


@pytest.mark.parametrize(
    "bank_frames, bank_pixels, num_frames, num_pixels",
    [(3, 2, 2, 5), (3, 1, 4, 2)],  # 4 entries per call into 6 slots; 4 entries into 3 slots (overflow)
)
def test_fifo_order_and_wrap_around(bank_frames, bank_pixels, num_frames, num_pixels):
    size = bank_frames * bank_pixels
    bank = memory_bank.create(bank_frames, bank_pixels, key_dim=3, value_dim=2)
    slot_owner = [None] * size  # (batch number, frame) a one-by-one FIFO write puts in each slot
    pointer = 0
    for batch_number in range(4):
        keys, values, video_ids = encoded_batch(batch_number, num_frames, num_pixels)
        bank = memory_bank.enqueue(bank, jax.random.key(batch_number), keys, values, video_ids, bank_pixels)
        for frame in range(num_frames):
            for _ in range(bank_pixels):
                slot_owner[pointer] = (batch_number, frame)
                pointer = (pointer + 1) % size

        assert int(bank.pointer) == pointer
        np.testing.assert_array_equal(np.asarray(bank.filled), [owner is not None for owner in slot_owner])
        filled = np.asarray(bank.filled)
        np.testing.assert_array_equal(np.asarray(bank.keys)[~filled], 0)
        got_owner = np.asarray(bank.keys)[filled, :2].astype(int)
        np.testing.assert_array_equal(got_owner, [owner for owner in slot_owner if owner is not None])
        check_entries_follow_keys(bank)
        for owner in set(slot_owner) - {None}:  # a frame's entries are distinct pixels of that frame
            pixels = np.asarray(bank.keys)[filled & np.all(np.asarray(bank.keys)[:, :2] == owner, axis=1), 2]
            assert len(set(pixels)) == len(pixels) and np.all((0 <= pixels) & (pixels < num_pixels))


def test_fifo_overwrites_oldest_first_by_hand():
    bank = memory_bank.create(bank_frames=3, bank_pixels=2, key_dim=3, value_dim=2)
    owners = []
    for batch_number in range(3):
        bank = memory_bank.enqueue(bank, jax.random.key(0), *encoded_batch(batch_number, 2, 2), bank_pixels=2)
        owners.append((np.asarray(bank.keys)[:, :2].astype(int).tolist(), int(bank.pointer)))
    b0, b1, b2 = ([[n, f] for f in (0, 0, 1, 1)] for n in range(3))  # (batch, frame) of each batch's 4 entries
    assert owners[0] == (b0[:4] + [[0, 0], [0, 0]], 4)  # slots 4, 5 empty (zero keys)
    assert owners[1] == (b1[2:] + b0[2:] + b1[:2], 2)  # batch 1 wraps: its frame 1 overwrites batch 0 frame 0
    assert owners[2] == (b1[2:] + b2, 0)


def test_pixel_draw_distinct_and_uniform():
    num_frames, num_pixels, bank_pixels = 2000, 6, 3
    bank = memory_bank.create(num_frames, bank_pixels, key_dim=3, value_dim=2)
    bank = memory_bank.enqueue(bank, jax.random.key(7), *encoded_batch(0, num_frames, num_pixels), bank_pixels)
    keys = np.asarray(bank.keys).reshape(num_frames, bank_pixels, 3)
    np.testing.assert_array_equal(keys[:, :, 1], np.arange(num_frames)[:, None].repeat(bank_pixels, 1))
    subsets = [tuple(sorted(frame_pixels)) for frame_pixels in keys[:, :, 2].astype(int)]
    assert all(len(set(subset)) == bank_pixels for subset in subsets)

    all_subsets = list(itertools.combinations(range(num_pixels), bank_pixels))  # each equally likely
    counts = np.array([subsets.count(subset) for subset in all_subsets])
    expected = num_frames / len(all_subsets)
    chi2 = np.sum((counts - expected) ** 2 / expected)
    assert chi2 < stats.chi2.ppf(CHI2_LEVEL, len(all_subsets) - 1), counts


def filled_bank(bank_frames, bank_pixels, video_ids):
    """A bank whose first len(video_ids) * bank_pixels slots hold entries with keys = (slot + 1, video id)."""
    bank = memory_bank.create(bank_frames, bank_pixels, key_dim=2, value_dim=1)
    num_new = len(video_ids) * bank_pixels
    slot = np.arange(num_new).reshape(len(video_ids), bank_pixels)
    keys = np.stack([slot + 1, np.broadcast_to(np.asarray(video_ids)[:, None], slot.shape)], -1).astype(np.float32)
    values = -keys[..., :1]
    # bank_pixels == N keeps every pixel; only their order inside a frame is random.
    return memory_bank.enqueue(bank, jax.random.key(0), keys, values, np.asarray(video_ids), bank_pixels)


def test_negatives_exclude_own_video_and_unfilled_slots_uniformly():
    bank = filled_bank(bank_frames=6, bank_pixels=2, video_ids=[0, 0, 1, 2])  # 8 of 12 slots filled
    target_video_ids = np.array([0, 1, 2, 3], np.int32)
    num_negatives = 6000
    negatives = memory_bank.sample_negatives(bank, jax.random.key(3), target_video_ids, num_negatives)
    chex.assert_shape(negatives.keys, (4, num_negatives, 2))
    chex.assert_shape(negatives.values, (4, num_negatives, 1))
    chex.assert_shape(negatives.valid, (4, num_negatives))
    keys, values, valid = (np.asarray(x) for x in negatives)
    assert valid.all()  # every target has eligible slots
    np.testing.assert_array_equal(values[..., 0], -keys[..., 0])
    for b, target in enumerate(target_video_ids):
        assert np.all(keys[b, :, 0] >= 1)  # never an unfilled slot
        assert np.all(keys[b, :, 1] != target)
        eligible = np.asarray(bank.keys)[np.asarray(bank.filled) & (np.asarray(bank.video_ids) != target), 0]
        counts = np.array([np.sum(keys[b, :, 0] == slot_key) for slot_key in eligible])
        assert counts.sum() == num_negatives
        expected = num_negatives / len(eligible)
        chi2 = np.sum((counts - expected) ** 2 / expected)
        assert chi2 < stats.chi2.ppf(CHI2_LEVEL, len(eligible) - 1), (target, counts)


def test_negatives_invalid_when_nothing_eligible():
    empty = memory_bank.create(bank_frames=4, bank_pixels=2, key_dim=2, value_dim=1)
    assert not np.asarray(memory_bank.sample_negatives(empty, jax.random.key(0), np.array([0, 5]), 16).valid).any()

    one_video = filled_bank(bank_frames=4, bank_pixels=2, video_ids=[5, 5])
    valid = np.asarray(memory_bank.sample_negatives(one_video, jax.random.key(1), np.array([5, 6]), 64).valid)
    assert not valid[0].any() and valid[1].all()


def test_jit_round_trip_and_stopped_gradients():
    bank = memory_bank.create(bank_frames=3, bank_pixels=2, key_dim=3, value_dim=2)
    keys, values, video_ids = encoded_batch(0, num_frames=2, num_pixels=5)
    enqueue = jax.jit(memory_bank.enqueue, static_argnames="bank_pixels")
    sample = jax.jit(memory_bank.sample_negatives, static_argnames="num_negatives")

    jitted = enqueue(bank, jax.random.key(1), keys, values, video_ids, bank_pixels=2)
    eager = memory_bank.enqueue(bank, jax.random.key(1), keys, values, video_ids, bank_pixels=2)
    assert isinstance(jitted, memory_bank.MemoryBank)
    chex.assert_trees_all_equal(jitted, eager)
    chex.assert_trees_all_equal_dtypes(jitted, bank)
    chex.assert_trees_all_equal(
        sample(jitted, jax.random.key(2), np.array([0, 1]), num_negatives=4),
        memory_bank.sample_negatives(eager, jax.random.key(2), np.array([0, 1]), 4),
    )

    host = jax.tree.map(np.asarray, jitted)  # what a checkpoint restore hands back
    assert isinstance(host, memory_bank.MemoryBank) and len(jax.tree.leaves(host)) == 5
    chex.assert_trees_all_equal(host, jitted)
    chex.assert_trees_all_equal(
        enqueue(host, jax.random.key(3), keys, values, video_ids, bank_pixels=2),
        enqueue(jitted, jax.random.key(3), keys, values, video_ids, bank_pixels=2),
    )

    def bank_sum(keys):
        return jnp.sum(memory_bank.enqueue(bank, jax.random.key(1), keys, values, video_ids, 2).keys)

    np.testing.assert_array_equal(jax.grad(bank_sum)(jnp.asarray(keys)), 0)


def test_enqueue_rejects_bad_shapes():
    bank = memory_bank.create(bank_frames=3, bank_pixels=2, key_dim=3, value_dim=2)
    keys, values, video_ids = encoded_batch(0, num_frames=2, num_pixels=5)
    with pytest.raises(ValueError, match="exceeds"):
        memory_bank.enqueue(bank, jax.random.key(0), keys, values, video_ids, bank_pixels=6)
    with pytest.raises(ValueError, match="disagree"):
        memory_bank.enqueue(bank, jax.random.key(0), keys, values, video_ids[:1], bank_pixels=2)
    with pytest.raises(ValueError, match="do not fit"):
        memory_bank.enqueue(bank, jax.random.key(0), keys[..., :2], values, video_ids, bank_pixels=2)


def test_bank_bytes():
    small = memory_bank.create(bank_frames=3, bank_pixels=2, key_dim=3, value_dim=2)
    assert memory_bank.bank_bytes(3, 2, 3, 2) == sum(leaf.nbytes for leaf in jax.tree.leaves(small))
    paper = memory_bank.bank_bytes(3250, 256, 64, 3)
    assert paper == 3250 * 256 * ((64 + 3) * 4 + 4 + 1) + 4
    assert round(3250 * 256 * (64 + 3) * 4 / 1e6) == 223  # the keys and values alone
    assert round(paper / 1e6) == 227
