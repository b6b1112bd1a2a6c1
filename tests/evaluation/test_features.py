"""Propagation features: the VEN inference path (eval.use_ven) against a NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import ytvos
from mer_jax import export, train_state
from mer_jax.data import synthetic_video
from mer_jax.evaluation import features, propagation, vos
from mer_jax.models import ven as ven_lib
from tests.models.test_ven import _np_ven


def test_ven_references_are_training_clips_clamped_at_frame_0():
    np.testing.assert_array_equal(export.ven_references(5, 2, 2), [[0, 0], [0, 0], [0, 0], [0, 1], [0, 2]])
    np.testing.assert_array_equal(export.ven_references(3, 1, 1), [[0], [0], [1]])


def tiny_model(use_ven):
    config = ytvos.get_config("debug")
    config.model.use_flow, config.model.use_ven = False, use_ven
    model = train_state.build_model(config)
    frames = jnp.zeros((1, 3, 32, 32, 3))
    variables = model.init({"params": jax.random.PRNGKey(0), "dropkey": jax.random.PRNGKey(1)}, frames)
    if use_ven:  # A VEN whose output projection is not negligible, whatever its initialisation.
        out = variables["params"]["ven"]["out"]
        out["kernel"] = jax.random.normal(jax.random.PRNGKey(2), out["kernel"].shape)
    return export.ExportedModel(model, variables, config)


def test_use_ven_refines_each_query_against_its_training_references():
    model = tiny_model(use_ven=True)
    video = synthetic_video.generate_video(3, num_frames=7, height=32, width=32, num_objects=2)
    plain = features.TrainedEncoder(model, batch=3)(video.frames)
    refined = features.TrainedEncoder(model, batch=3, use_ven=True)(video.frames)
    assert isinstance(refined, vos.RefinedFeatures)
    np.testing.assert_allclose(np.asarray(refined.keys), np.asarray(plain), atol=1e-6)
    ven = model.config.model.ven
    references = export.ven_references(7, model.config.data.num_refs, min(model.config.data.frame_gaps))
    keys = np.asarray(refined.keys)
    value_map = model.config.model.value_map
    window = ven_lib.scaled_window(value_map.window, value_map.grid_reference, *keys.shape[1:3])
    want, _ = _np_ven(
        model.variables["params"]["ven"], keys, keys[references], heads=ven.num_heads, pool=ven.kv_pool,
        radius=ven.radius, window=window, beta=value_map.beta,
    )  # fmt: skip
    np.testing.assert_allclose(np.asarray(refined.queries), want, atol=1e-4)
    assert np.abs(want - keys).max() > 0.1  # The refinement changes the features.
    # The export path: the same numbers from embed + ven_refine.
    direct = export.ven_refine(model, refined.keys[4:5], refined.keys[references[4]][None])
    np.testing.assert_allclose(np.asarray(direct[0]), want[4], atol=1e-4)


def test_use_ven_needs_a_model_with_a_ven():
    with pytest.raises(ValueError, match="needs a model trained with a VEN"):
        features.TrainedEncoder(tiny_model(use_ven=False), batch=2, use_ven=True)
    with pytest.raises(ValueError, match="no VEN"):
        export.ven_refine(tiny_model(use_ven=False), jnp.zeros((1, 8, 8, 8)), jnp.zeros((1, 2, 8, 8, 8)))
    with pytest.raises(ValueError, match="raw Lab has no VEN"):
        features.make_encoder("lab", None, feature_batch=2, lab_mean=(0, 0, 0), lab_std=(1, 1, 1), use_ven=True)


def test_propagator_matches_queries_to_the_references_keys():
    rng = np.random.default_rng(0)
    keys = jnp.asarray(rng.normal(size=(3, 6, 7, 4)).astype(np.float32))
    queries = jnp.asarray(rng.normal(size=(3, 6, 7, 4)).astype(np.float32))
    labels = rng.dirichlet(np.ones(3), size=(6, 7)).astype(np.float32)
    frames = np.zeros((3, 24, 28, 3), np.uint8)
    preset = propagation.protocol.Preset(context="crw", radius=2, crw_context=1, topk=None, tile=4)
    seeds = {0: (labels, np.ones((6, 7), bool))}
    propagator = propagation.Propagator(preset)
    with_queries = dict(propagator(keys, frames, seeds, queries=queries))
    plain = dict(propagator(keys, frames, seeds))
    valid = jnp.asarray([True, False])  # Frame 1's references: frame 0 (and the padded slot).
    want = propagation.propagate_frame(queries[1], keys[jnp.asarray([0, 0])], jnp.stack([labels] * 2), valid, preset)
    np.testing.assert_allclose(np.asarray(with_queries[1]), np.asarray(want), atol=1e-6)
    assert np.abs(np.asarray(with_queries[1]) - np.asarray(plain[1])).max() > 1e-3


def test_encoders_compile_once_per_frame_size_whatever_the_video_length():
    """Videos of 5 and 7 frames go through batches of 4 (the last one zero-padded): one compiled
    embedding, and each frame's features equal to those of the frame encoded alone."""
    rng = np.random.default_rng(0)
    lab = features.LabEncoder((50.0, 0.0, 0.0), (50.0, 127.0, 127.0), batch=4)
    for num_frames in (5, 7):
        frames = rng.integers(0, 256, size=(num_frames, 16, 20, 3), dtype=np.uint8)
        got = np.asarray(lab(frames))
        assert got.shape == (num_frames, 4, 5, 3)
        alone = np.concatenate([np.asarray(lab._embed(frames[t : t + 1])) for t in range(num_frames)])
        np.testing.assert_allclose(got, alone, atol=1e-6)
    assert lab._embed._cache_size() == 2  # Batches of 4, and the single frames of the check.
