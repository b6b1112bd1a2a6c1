"""The environment of the processes that tests start: the session's own (its compilation cache
and XLA compile settings, tests/conftest.py) with the device count the test asks for."""

import os


def subprocess_env(device_count: int | None = None) -> dict[str, str]:
    """os.environ on CPU with XLA_FLAGS less the session's simulated device count, plus
    `device_count` simulated devices when given (None: XLA's default, one)."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    if device_count is not None:
        flags.append(f"--xla_force_host_platform_device_count={device_count}")
    return dict(os.environ, XLA_FLAGS=" ".join(flags), JAX_PLATFORMS="cpu")
