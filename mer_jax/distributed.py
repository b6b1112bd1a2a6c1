"""Joining a multi-process (multi-host) JAX job before anything touches the devices.

Every process runs the same command with its own process id; together they see all devices of
all hosts, and `sharding.make_mesh()` spans them. The job is described by flags or by the
environment variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID, or detected
from a cluster manager (SLURM, Open MPI, Kubernetes, Cloud TPU) with `auto`.
"""

import os

import jax
from absl import flags, logging

ENV_ADDRESS, ENV_COUNT, ENV_ID = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} must be an integer") from None


def define_flags() -> None:
    """Defines the absl flags `initialize` takes: --coordinator_address, --num_processes,
    --process_id and --distributed_auto (call it in a command's `__main__`, before `app.run`)."""
    flags.DEFINE_string(
        "coordinator_address", None, "Multi-process runs: HOST:PORT of process 0 (or $JAX_COORDINATOR_ADDRESS)."
    )
    flags.DEFINE_integer("num_processes", None, "Multi-process runs: number of processes (or $JAX_NUM_PROCESSES).")
    flags.DEFINE_integer(
        "process_id", None, "Multi-process runs: this process, 0..num_processes-1 (or $JAX_PROCESS_ID)."
    )
    flags.DEFINE_bool("distributed_auto", False, "Detect the multi-process job from SLURM, Open MPI, K8s or Cloud TPU.")


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    auto: bool = False,
) -> bool:
    """Calls `jax.distributed.initialize` when a multi-process job is described; returns whether.

    Arguments left None are read from the environment variables. With none of them set (and not
    `auto`) this is a single-process run and nothing happens.

    Raises:
      ValueError: the description is incomplete or inconsistent.
    """
    coordinator_address = coordinator_address or os.environ.get(ENV_ADDRESS) or None
    num_processes = num_processes if num_processes is not None else _env_int(ENV_COUNT)
    process_id = process_id if process_id is not None else _env_int(ENV_ID)
    given = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
    if auto:
        jax.distributed.initialize(**given)
    elif all(value is None for value in given.values()):
        return False
    else:
        missing = [name for name, value in given.items() if value is None]
        if missing:
            raise ValueError(
                f"a multi-process run needs --coordinator_address, --num_processes and --process_id (or {ENV_ADDRESS}, "
                f"{ENV_COUNT}, {ENV_ID}); missing {missing}. On SLURM, Open MPI or Cloud TPU use --distributed_auto."
            )
        if not 0 <= process_id < num_processes:
            raise ValueError(f"process_id must be in [0, {num_processes}), got {process_id}")
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    logging.info(
        "Process %d of %d: %d local of %d devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return True
