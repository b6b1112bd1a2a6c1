"""Test set-up: two host devices so that sharded code paths run on a CPU, and compilation made
cheap, because compiling is ~90% of this suite's time (the shapes are tiny):

- a compilation cache shared by the session's tests, the pytest-xdist workers (`-n auto` in
  pyproject.toml) and the processes they start, so that the many tiny training runs of the same
  debug config compile once; it keeps every compilation, not only those over JAX's default 1 s
  (the fast tier took 3 min 29 s and 3 min 34 s so, against 3 min 57 s and 4 min 0 s);
- XLA's CPU backend at LLVM optimisation level 0 (about half the compile time of the default;
  XLA's graph-level optimisations and fusions are unchanged, so the tests run the same programs,
  with float rounding that may differ from the default level's as two orders of summation do).
  Benchmarks and users run at the default level. A level set in XLA_FLAGS is kept.
"""

import atexit
import os
import shutil
import tempfile

_flags = os.environ.get("XLA_FLAGS", "")
_flags += " --xla_force_host_platform_device_count=2"
if "--xla_backend_optimization_level" not in _flags:
    _flags += " --xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = _flags.strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="mer_jax_test_jit_cache_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
