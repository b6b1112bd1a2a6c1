"""bench/value_map_variants.py's scores on a hand-made moving object: random per-cell features, an
object block that moved, flow only on the object."""

import importlib.util
import os

import numpy as np

from mer_jax import diagnostics
from mer_jax.models import ven

_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "value_map_variants.py")
_SPEC = importlib.util.spec_from_file_location("value_map_variants", _PATH)
value_map_variants = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(value_map_variants)


def test_a_moved_object_is_found_by_fine_windows_and_flow():
    rng = np.random.default_rng(0)
    background = rng.normal(size=(16, 16, 64)).astype(np.float32)
    texture = rng.normal(size=(4, 4, 64)).astype(np.float32)
    target, ref = background.copy(), background.copy()
    target[8:12, 8:12], ref[2:6, 2:6] = texture, texture  # The object moved by 6 cells.
    cells = np.zeros((1, 16, 16), bool)
    cells[0, 8:12, 8:12] = True
    flow = np.zeros((1, 64, 64, 2), np.float32)
    flow[0, 32:48, 32:48] = 6.0
    found = value_map_variants.variant_aucs(target[None], ref[None, None], flow, cells, windows=[1, 8], betas=[1.0])
    # Window 1, beta 1: a static cell scores 0, the object's cells are found elsewhere (S = 1, Z ~ 0).
    assert found["window 1, beta 1.0"] == 1.0
    assert found["flow speed per cell (bound)"] == 1.0
    assert found["1 - cos(t, r) per cell"] > 0.9
    # Each entry is the AUC of the value map as the diagnostics score it.
    coarse = ven.window_value_map(target[None], ref[None, None], 8, 1.0)
    assert found["window 8, beta 1.0"] == float(diagnostics.roc_auc(coarse, cells))
    assert found["window 8, beta 1.0"] < 0.9  # 8x8 windows: the object is a quarter of one.
