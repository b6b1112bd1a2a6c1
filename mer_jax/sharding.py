"""Device mesh and shardings for data-parallel training (one 'data' axis, params replicated)."""

from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over `devices` (default: all devices of all processes)."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over the 'data' axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """The same full copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def check_batch_size(global_batch: int, mesh: Mesh) -> None:
    """Raises a ValueError unless the global batch splits evenly over the mesh's devices (and so over
    the processes, each holding the same number of them; `ClipLoader` checks its process split)."""
    devices = mesh.devices.size
    if global_batch % devices:
        raise ValueError(
            f"batch_size={global_batch} is not divisible by the {devices} devices of the mesh; "
            f"use a multiple of {devices} (e.g. --config.batch_size={max(devices, global_batch // devices * devices)})."
        )


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles each process's part of the batch into global arrays sharded over 'data'."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}
