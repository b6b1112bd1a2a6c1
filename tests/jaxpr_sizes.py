"""Test helper: the size of the largest array a traced function builds (memory-bound checks)."""

import numpy as np


def largest_intermediate(jaxpr) -> int:
    """Elements of the largest array produced anywhere in the jaxpr, nested jaxprs (jit, custom_jvp,
    the body of lax.map) included."""
    sizes = [0]
    for eqn in jaxpr.eqns:
        sizes += [int(np.prod(v.aval.shape)) for v in eqn.outvars]
        for param in eqn.params.values():
            inner = getattr(param, "jaxpr", param)
            if hasattr(inner, "eqns"):
                sizes.append(largest_intermediate(inner))
    return max(sizes)
