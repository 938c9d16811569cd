"""One runtime setup for every command-line tool and script.

A process that runs JAX work from the command line calls :func:`setup` once, first thing after
parsing its arguments::

    from dekag_jax import runtime
    runtime.setup()                 # compilation cache on, jax.distributed when the env asks

One environment variable controls every on-disk cache of the package:

* ``DEKAG_JAX_CACHE_DIR`` (default ``~/.cache/dekag_jax``): the root. XLA's persistent
  compilation cache lives in ``<root>/xla``, the abstract-parameter-shape cache of
  :mod:`dekag_jax.weights.abstract` in ``<root>/param_shapes``.
* ``DEKAG_JAX_CACHE_DIR=off`` (or ``0``/``none``) disables both.

Nothing here runs on import: library code never changes global JAX state by itself.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional

__all__ = ["CACHE_ENV", "cache_root", "cache_dir", "setup", "RuntimeInfo"]

CACHE_ENV = "DEKAG_JAX_CACHE_DIR"
_OFF = ("off", "0", "none", "false")


def cache_root() -> Optional[Path]:
    """Root of the package's on-disk caches, or None when ``$DEKAG_JAX_CACHE_DIR`` is ``off``."""
    root = os.environ.get(CACHE_ENV, "")
    if root.strip().lower() in _OFF:
        return None
    return Path(root).expanduser() if root else Path.home() / ".cache" / "dekag_jax"


def cache_dir(name: str) -> Optional[Path]:
    """``<cache root>/<name>`` (not created), or None when caching is off."""
    root = cache_root()
    return None if root is None else root / name


@dataclasses.dataclass(frozen=True)
class RuntimeInfo:
    compilation_cache: Optional[str]  # directory in use, None when disabled
    distributed: bool                 # jax.distributed.initialize was called


_STATE: dict = {}


def setup(*, compilation_cache: bool = True, distributed: Optional[bool] = None,
          min_compile_time_s: float = 0.5) -> RuntimeInfo:
    """Prepare JAX for a command-line run. Idempotent; call before any other JAX computation.

    Args:
      compilation_cache: enable XLA's persistent compilation cache in ``<cache root>/xla``, so
        a second run of the same command does not pay compilation again (programs that compile
        faster than ``min_compile_time_s`` are not stored). Not in multi-process CPU runs (see
        the comment in the code: the processes must compile alike).
      distributed: ``None`` initialises ``jax.distributed`` only when the environment describes
        a multi-process job (see :func:`dekag_jax.parallel.maybe_initialize_distributed`);
        ``True`` requires it (JAX's cluster auto-detection fills in the rest); ``False`` never.
    """
    if "info" in _STATE:
        return _STATE["info"]
    from dekag_jax import parallel  # imports jax; kept out of module import time

    if distributed is None:
        dist = parallel.maybe_initialize_distributed()
    elif distributed:
        dist = parallel.maybe_initialize_distributed(force=True)
    else:
        dist = False

    cache = None
    d = cache_dir("xla") if compilation_cache else None
    if d is not None and dist:
        import jax

        # Several processes on CPU: only process 0 reads the persistent cache (measured with jax's
        # cache events: process 1 neither hits nor misses). With a warm cache process 0 starts
        # running while the others still compile, and gloo, the CPU collectives, abandons a
        # communicator whose members arrive more than 30 s apart. So every process compiles.
        if jax.default_backend() == "cpu":
            d = None
    if d is not None:
        import jax

        d.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(d))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s))
        cache = str(d)
    info = RuntimeInfo(compilation_cache=cache, distributed=dist)
    _STATE["info"] = info
    return info
