"""The shared command line of the alignment stages (``python -m dekag_jax.ka.gka`` / ``.tka``):
``--config FILE[:variant] --workdir DIR`` with ``--config.FIELD=VALUE`` overrides, validated
before any work; the stage runs in the work folder and prints its table."""
from __future__ import annotations

import os
from typing import Callable, Sequence

from dekag_jax.errors import UsageError, parse_config_flags, prepare_output_dir, remove_if_empty


def parse_stage_args(argv: Sequence[str], *, prog: str, what: str, example: str, methods: Sequence[str]):
    """``(flag_values, config)``; UsageError (one line) for a missing ``--workdir`` or an unknown
    entry of ``config.methods``."""

    def define(flags, fv):
        flags.DEFINE_string("workdir", None, "output folder (metrics.json, adapters, checkpoints)", flag_values=fv)

    fv, config, _ = parse_config_flags(list(argv), prog=prog, what=what, example=example, define=define)
    if fv.workdir is None:
        raise UsageError("--workdir is required (the output folder)")
    bad = [m for m in str(config.methods).split(",") if m and m not in methods]
    if bad:
        raise UsageError(f"config.methods: unknown {bad}; known {list(methods)}")
    return fv, config


def run_stage(fv, config, run: Callable, format_table: Callable, wrote: Callable | None = None) -> int:
    """Run ``run(config, workdir, log=...)`` after the runtime setup; a failed run leaves no empty
    work folder behind (what it already wrote stays). Prints ``format_table(res)``, then
    ``wrote(res, workdir)`` (default: the metrics.json line)."""
    created = prepare_output_dir(fv.workdir)
    from dekag_jax import runtime

    try:
        runtime.setup()
        res = run(config, fv.workdir, log=lambda m: print(m, flush=True))
    except BaseException:
        remove_if_empty(created)
        raise
    print(format_table(res))
    print(wrote(res, fv.workdir) if wrote is not None else
          f"wrote {os.path.join(fv.workdir, 'metrics.json')} ({res['seconds']} s)")
    return 0
