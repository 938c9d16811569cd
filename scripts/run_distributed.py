"""Run a command as several local processes of one ``jax.distributed`` job (multi-host code tested
on one machine).

    python scripts/run_distributed.py --processes 2 --devices-per-process 2 -- \\
        python -m dekag_jax.train --config configs/smoke.py --workdir runs/smoke_2proc

Each process gets ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``, which
``dekag_jax.runtime.setup()`` turns into ``jax.distributed.initialize``, and (unless ``--no-cpu``)
``JAX_PLATFORMS=cpu`` with ``--devices-per-process`` forced host devices, so the job's global mesh
spans processes x devices. Process 0's output streams here; the others' is printed, prefixed, when
they end. If one process fails the others are stopped. Exit status: the first non-zero one, else 0.
(``dekag_jax.parallel.launch_local`` is the same as a function.)
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dekag_jax import parallel  # noqa: E402
from dekag_jax.errors import ArgumentParser, UsageError, cli_main  # noqa: E402


def _main(argv=None) -> int:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--processes", type=int, default=2, help="number of local processes (default 2)")
    ap.add_argument("--devices-per-process", type=int, default=2, help="forced host CPU devices each (default 2)")
    ap.add_argument("--no-cpu", action="store_true", help="keep the platform and XLA_FLAGS as they are")
    ap.add_argument("--timeout", type=float, default=None, help="seconds before every process is stopped")
    ap.add_argument("cmd", nargs="+", help="the command, after --")
    args = ap.parse_args(argv)
    if args.processes < 1 or args.devices_per_process < 1:
        raise UsageError(f"--processes {args.processes} and --devices-per-process {args.devices_per_process} "
                         f"must be >= 1")
    res = parallel.launch_local(args.cmd, args.processes, devices_per_process=args.devices_per_process,
                                cpu=not args.no_cpu, timeout=args.timeout, stream_main=True)
    for i, r in enumerate(res[1:], start=1):
        for name, text in (("out", r.stdout), ("err", r.stderr)):
            for line in (text or "").splitlines():
                print(f"[process {i} {name}] {line}", file=sys.stderr if name == "err" else sys.stdout)
    codes = [r.returncode for r in res]
    print(f"run_distributed: {args.processes} processes x {args.devices_per_process} devices, exit codes {codes}",
          file=sys.stderr)
    return next((c if c > 0 else 1 for c in codes if c != 0), 0)


if __name__ == "__main__":
    sys.exit(cli_main(_main))
