"""Device-mesh helpers used project-wide (data parallelism with NamedSharding, no pmap).

Typical use::

    from dekag_jax import parallel
    parallel.maybe_initialize_distributed()      # first, before any other JAX call
    mesh = parallel.make_mesh()                  # 1-D mesh over all (global) devices, axis "data"
    x = parallel.shard_batch(np_batch, mesh)     # leading axis split over "data"
    y = jax.jit(f)(x)                            # XLA partitions f along the batch axis
    y_host = parallel.to_host(y)                 # numpy, gathered on every process

Multi-host: ``maybe_initialize_distributed`` calls ``jax.distributed.initialize`` when the
environment describes a multi-process job: explicit ``JAX_COORDINATOR_ADDRESS`` +
``JAX_NUM_PROCESSES`` + ``JAX_PROCESS_ID`` (optionally ``JAX_LOCAL_DEVICE_IDS``), or a SLURM /
Open MPI launch with more than one task (JAX's own cluster auto-detection then fills in the
details). Single-process runs are untouched.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

__all__ = [
    "DATA_AXIS",
    "maybe_initialize_distributed",
    "make_mesh",
    "data_sharding",
    "replicated_sharding",
    "pad_to_multiple",
    "shard_batch",
    "to_host",
    "is_main_process",
]

DATA_AXIS = "data"
_initialized = False


def maybe_initialize_distributed(force: bool = False) -> bool:
    """Initialise multi-host JAX if the environment asks for it. Returns True if initialised.

    ``force=True`` calls ``jax.distributed.initialize()`` even when no variable describes the job
    (JAX's own cluster auto-detection then fills in the details). Must run before any other JAX
    computation in the process. Idempotent. Command-line tools reach this through
    :func:`dekag_jax.runtime.setup`.
    """
    global _initialized
    if _initialized:
        return True
    env = os.environ
    if "JAX_COORDINATOR_ADDRESS" in env:
        kwargs = dict(coordinator_address=env["JAX_COORDINATOR_ADDRESS"])
        if "JAX_NUM_PROCESSES" in env:
            kwargs["num_processes"] = int(env["JAX_NUM_PROCESSES"])
        if "JAX_PROCESS_ID" in env:
            kwargs["process_id"] = int(env["JAX_PROCESS_ID"])
        if "JAX_LOCAL_DEVICE_IDS" in env:
            kwargs["local_device_ids"] = [int(i) for i in env["JAX_LOCAL_DEVICE_IDS"].split(",")]
        jax.distributed.initialize(**kwargs)
    elif int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_STEP_NODELIST" in env:
        jax.distributed.initialize()
    elif int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        jax.distributed.initialize()
    elif force:
        jax.distributed.initialize()
    else:
        return False
    _initialized = True
    return True


def make_mesh(axis_name: str = DATA_AXIS, devices: Optional[Sequence] = None) -> Mesh:
    """1-D ``Mesh`` over ``devices`` (default: all global devices ``jax.devices()``)."""
    devs = np.asarray(list(jax.devices() if devices is None else devices))
    if devs.size == 0:
        raise ValueError("make_mesh: no devices")
    return Mesh(devs.reshape(-1), (axis_name,))


def data_sharding(mesh: Mesh, axis_name: str = DATA_AXIS) -> NamedSharding:
    """Leading array axis split over ``axis_name``; other axes replicated."""
    return NamedSharding(mesh, P(axis_name))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """Fully replicated over the mesh."""
    return NamedSharding(mesh, P())


def pad_to_multiple(n: int, m: int) -> int:
    """Smallest multiple of m that is >= n."""
    return -(-int(n) // int(m)) * int(m)


def shard_batch(x, mesh: Mesh, axis_name: str = DATA_AXIS):
    """Place a host array (the same GLOBAL value on every process) on ``mesh``, leading axis
    split over ``axis_name``. Works single- and multi-process (``make_array_from_callback``).

    Raises ValueError if the leading axis is not divisible by the axis size (pad first with
    ``pad_to_multiple``). Pytrees of arrays are accepted.
    """
    n = mesh.shape[axis_name]
    sh = data_sharding(mesh, axis_name)

    def put(a):
        a = np.asarray(a) if not isinstance(a, jax.Array) else a
        if a.ndim == 0 or a.shape[0] % n:
            raise ValueError(f"shard_batch: leading axis of shape {a.shape} is not divisible by "
                             f"the {n} devices of mesh axis {axis_name!r}")
        if isinstance(a, jax.Array) and jax.process_count() == 1:
            return jax.device_put(a, sh)
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, sh, lambda idx: a[idx])

    return jax.tree.map(put, x)


def to_host(x):
    """Fetch a (possibly sharded, possibly multi-process) pytree of arrays to numpy on every
    process."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        return jax.tree.map(np.asarray, multihost_utils.process_allgather(x, tiled=True))
    return jax.tree.map(np.asarray, x)


def is_main_process() -> bool:
    """True on process 0 (the one that should write files and print progress)."""
    return jax.process_index() == 0
