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

Several processes on one machine (testing multi-host code without a cluster): :func:`launch_local`
starts N copies of a command with those variables and N x D forced host CPU devices
(``scripts/run_distributed.py`` is its command line); JAX's CPU collectives (gloo, the default of
the pinned jax) carry the cross-process reductions.
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
    "shard_local_batch",
    "replicate",
    "to_host",
    "is_main_process",
    "barrier",
    "launch_local",
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


def data_axis_size(mesh: Mesh, what: str, batch: Optional[int] = None, axis_name: str = DATA_AXIS) -> int:
    """Number of devices on the mesh's data axis; ValueError (one line, prefixed ``what``) when the
    mesh lacks the axis or ``batch`` is given and not divisible by it."""
    ndev = dict(mesh.shape).get(axis_name)
    if ndev is None:
        raise ValueError(f"{what}: the mesh has no axis {axis_name!r} (axes {tuple(mesh.shape)})")
    if batch is not None and batch % ndev:
        raise ValueError(f"{what}: batch={batch} is not divisible by the {ndev} devices of the mesh "
                         f"axis {axis_name!r}")
    return int(ndev)


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


def shard_local_batch(x, mesh: Mesh, axis_name: str = DATA_AXIS):
    """Assemble a global batch from each process's OWN rows (``x`` = this process's slice, leading
    axis ``n_local``): the global array has ``n_local * process_count`` rows, process p's rows at
    ``[p * n_local, (p + 1) * n_local)`` (``jax.make_array_from_process_local_data``), split over
    ``axis_name``. Use it when every host loads a different part of the data; :func:`shard_batch`
    when every host holds the same global value. ``n_local`` must be divisible by the process's
    devices on the axis. Pytrees of arrays are accepted."""
    sh = data_sharding(mesh, axis_name)
    n_local_dev = len([d for d in mesh.devices.reshape(-1) if d.process_index == jax.process_index()])

    def put(a):
        a = np.asarray(a)
        if a.ndim == 0 or a.shape[0] % max(n_local_dev, 1):
            raise ValueError(f"shard_local_batch: leading axis of shape {a.shape} is not divisible by "
                             f"this process's {n_local_dev} devices of mesh axis {axis_name!r}")
        return jax.make_array_from_process_local_data(sh, a)

    return jax.tree.map(put, x)


def replicate(tree, mesh: Mesh):
    """Place a pytree fully replicated on ``mesh`` (parameters, optimiser state). Leaves already so
    placed are kept as they are. With several processes, a leaf committed to one local device
    cannot move across hosts (the CPU backend has no cross-host transfers), so it goes through
    host memory; every process must hold the same value (as for :func:`shard_batch`)."""
    sh = replicated_sharding(mesh)
    multi = jax.process_count() > 1

    def put(a):
        if isinstance(a, jax.Array) and a.sharding.is_equivalent_to(sh, a.ndim):
            return a
        if multi and isinstance(a, jax.Array):
            a = np.asarray(a)
        return jax.device_put(a, sh)

    return jax.tree.map(put, tree)


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


_barriers = [0]   # per-process count of barriers passed: the same sequence on every process


def barrier(name: str, timeout_s: float = 24 * 3600) -> None:
    """Wait until every process reaches the barrier ``name`` (no-op with one process). Use it where
    process 0 wrote files that the others read next (e.g. after a stage of the main job).

    A barrier of the coordination service (``jax.distributed``'s key-value client), not a device
    collective: ``multihost_utils.sync_global_devices`` runs a psum, and on CPU the gloo
    communicator it creates gives up when the processes arrive more than 30 s apart, which a
    stage that only process 0 ends with file writes (or a loaded machine) easily exceeds."""
    if jax.process_count() == 1:
        return
    _barriers[0] += 1
    bid = f"{name}#{_barriers[0]}"   # ids are single-use in the coordination service
    from jax._src import distributed   # the client has no public accessor in the pinned jax
    client = distributed.global_state.client
    if client is None:   # initialised outside jax.distributed (e.g. by a launcher): device collective
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(bid)
        return
    client.wait_at_barrier(bid, int(timeout_s * 1000))


def launch_local(cmd: Sequence[str], num_processes: int = 2, *, devices_per_process: int = 2,
                 cpu: bool = True, env: Optional[dict] = None, cwd: Optional[str] = None,
                 timeout: Optional[float] = None, port: Optional[int] = None, stream_main: bool = False) -> list:
    """Run ``cmd`` as ``num_processes`` local processes of one ``jax.distributed`` job; returns one
    ``subprocess.CompletedProcess`` (stdout and stderr captured as text) per process, in process order.

    Each process gets ``JAX_COORDINATOR_ADDRESS=127.0.0.1:<port>`` (a free port unless given),
    ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID`` (what :func:`maybe_initialize_distributed`, hence
    ``runtime.setup()``, reads) and, with ``cpu=True``, ``JAX_PLATFORMS=cpu`` and
    ``--xla_force_host_platform_device_count=devices_per_process`` in ``XLA_FLAGS`` (other flags
    kept), so the job sees ``num_processes * devices_per_process`` global devices. If one process
    fails, the others (which would wait for it at the next collective) are killed; after
    ``timeout`` seconds all are killed (their return code is then negative). ``stream_main``:
    process 0 writes to this process's stdout/stderr as it runs (its result then holds no text)."""
    import re
    import socket
    import subprocess
    import tempfile
    import time

    if num_processes < 1 or devices_per_process < 1:
        raise ValueError(f"launch_local: num_processes={num_processes} and devices_per_process="
                         f"{devices_per_process} must be >= 1")
    if port is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    base = dict(os.environ if env is None else env)
    if cpu:
        flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", base.get("XLA_FLAGS", "")).split()
        base["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices_per_process}"])
        base["JAX_PLATFORMS"] = "cpu"
    procs, files = [], []
    try:
        for i in range(num_processes):
            e = dict(base, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(num_processes),
                     JAX_PROCESS_ID=str(i))
            if i == 0 and stream_main:
                out = err = None
            else:
                out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")  # no pipe to fill up
            files.append((out, err))
            procs.append(subprocess.Popen(list(cmd), env=e, cwd=cwd, stdout=out, stderr=err, text=True))
        t0 = time.monotonic()
        while True:
            codes = [p.poll() for p in procs]   # every process polled (no short-circuit)
            if all(c is not None for c in codes):
                break
            failed = any(c not in (None, 0) for c in codes)
            late = timeout is not None and time.monotonic() - t0 > timeout
            if failed or late:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
                break
            time.sleep(0.2)
        results = []
        for p, (out, err) in zip(procs, files):
            rc = p.wait()
            if out is None:
                results.append(subprocess.CompletedProcess(p.args, rc, None, None))
                continue
            out.seek(0)
            err.seek(0)
            results.append(subprocess.CompletedProcess(p.args, rc, out.read(), err.read()))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for out, err in files:
            if out is not None:
                out.close()
                err.close()
