"""Report helpers shared by the evaluators and the sweep: JSON-safe trees, JSON files and side-by-side tables."""

import json
import math
import os
from typing import Mapping, Sequence

import numpy as np


def jsonable(tree):
    """Nested dicts/lists of numbers, booleans and strings, with arrays as lists, integers kept
    integers and NaN as None (valid JSON)."""
    if isinstance(tree, dict):
        return {key: jsonable(value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple, np.ndarray)):
        return [jsonable(value) for value in np.asarray(tree, dtype=object).tolist()]
    if tree is None or isinstance(tree, (str, bool, np.bool_)):
        return tree if not isinstance(tree, np.bool_) else bool(tree)
    if isinstance(tree, (int, np.integer)):
        return int(tree)
    value = float(tree)
    return None if math.isnan(value) else value


def write_json(path: str, tree) -> None:
    """Writes `jsonable(tree)` to path (indent 2), creating its folder."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(jsonable(tree), f, indent=2)


def comparison_table(rows: Mapping[str, Mapping[str, float]], keys: Sequence[str]) -> str:
    """A text table, one line per row name (model first, then the floors) and one column per key.

    Args:
      rows: {row name: {key: number}}; missing or NaN numbers print as '-'.
      keys: the columns.
    """

    def cell(value) -> str:
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"

    width = max(len(name) for name in rows)
    lines = [" ".join([" " * width, *(f"{key:>10s}" for key in keys)])]
    for name, scores in rows.items():
        lines.append(" ".join([f"{name:{width}s}", *(f"{cell(scores.get(key)):>10s}" for key in keys)]))
    return "\n".join(lines)
