"""The abstract parameter tree of a Flax module (shapes and dtypes, nothing allocated), cached.

Every loader checks a checkpoint against the tree that ``module.init`` would build, obtained
with ``jax.eval_shape`` (strict conversion, weights/convert.py). Tracing ``init`` costs a fixed
0.5-2 s per model on a CPU whatever the weight size (the UNet's ~7,500 traced operations), which
dominated loading small checkpoints such as the tiny world's. So the tree is cached:

* in memory, per process, keyed by the module's full ``repr`` (every config field and dtype) and
  the example inputs' shapes and dtypes;
* on disk, as one small JSON of ``{path: [shape, dtype]}`` per key, under
  ``$DEKAG_JAX_CACHE_DIR/param_shapes`` (default ``~/.cache/dekag_jax/param_shapes``). The disk
  key also hashes the source of ``dekag_jax/models`` and the jax and flax versions, so any edit of
  a model class invalidates it. ``DEKAG_JAX_CACHE_DIR=off`` disables the disk cache. A cache that
  cannot be written (read-only home) or an unreadable entry only costs the trace.

The cache stores shapes only; the strictness of conversion is unchanged.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import jax

from dekag_jax.weights.convert import flatten, unflatten

__all__ = ["abstract_params", "cache_dir", "clear_memory_cache"]

_MEMORY: dict[str, dict[str, Any]] = {}
_SOURCE_HASH: list[str] = []


def cache_dir() -> Path | None:
    """Directory of the on-disk shape cache (``<runtime cache root>/param_shapes``), or None when
    ``DEKAG_JAX_CACHE_DIR=off``."""
    from dekag_jax.runtime import cache_dir as _runtime_cache_dir

    return _runtime_cache_dir("param_shapes")


def clear_memory_cache() -> None:
    _MEMORY.clear()


def _models_source_hash() -> str:
    """sha256 over dekag_jax/models/*.py (computed once per process)."""
    if not _SOURCE_HASH:
        import flax

        h = hashlib.sha256(f"jax={jax.__version__} flax={flax.__version__}".encode())
        models = Path(__file__).resolve().parent.parent / "models"
        for f in sorted(models.glob("*.py")):
            h.update(f.name.encode())
            h.update(f.read_bytes())
        _SOURCE_HASH.append(h.hexdigest())
    return _SOURCE_HASH[0]


def _spec(x) -> str:
    return f"{tuple(x.shape)}:{jax.numpy.dtype(x.dtype).name}" if hasattr(x, "shape") else repr(x)


def _tree_from_json(d: dict[str, Any]) -> dict[str, Any]:
    return unflatten({k: jax.ShapeDtypeStruct(tuple(s), jax.numpy.dtype(t)) for k, (s, t) in d.items()})


def abstract_params(module, *args, method: Callable | None = None, **kwargs) -> dict[str, Any]:
    """``module.init(key, *args, **kwargs)["params"]`` as a tree of ``jax.ShapeDtypeStruct``.

    Args:
      module: a flax.linen Module (its repr must name every field that shapes its parameters,
        which holds for dataclass fields, including nested config dataclasses).
      args, kwargs: example inputs (arrays or ShapeDtypeStructs; only shapes and dtypes matter).
      method: optional module method for ``init`` (default ``__call__``).
    """
    sig = repr(module) + "|" + repr(method) + "|" + ",".join(_spec(a) for a in args) + "|" + ",".join(
        f"{k}={_spec(v)}" for k, v in sorted(kwargs.items()))
    mem_key = hashlib.sha256(sig.encode()).hexdigest()
    if mem_key in _MEMORY:
        return _tree_from_json(_MEMORY[mem_key])
    d = cache_dir()
    path = None
    if d is not None:
        disk_key = hashlib.sha256((_models_source_hash() + "|" + sig).encode()).hexdigest()
        path = d / f"{type(module).__name__}-{disk_key[:32]}.json"
        try:
            entry = json.loads(path.read_text())
            _MEMORY[mem_key] = entry
            return _tree_from_json(entry)
        except (OSError, ValueError, TypeError):
            pass  # absent or unreadable: trace below
    tree = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *args, method=method, **kwargs))["params"]
    entry = {k: [list(v.shape), jax.numpy.dtype(v.dtype).name] for k, v in flatten(tree).items()}
    _MEMORY[mem_key] = entry
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(entry))
            os.replace(tmp, path)  # atomic: concurrent loaders never read half a file
        except OSError:
            pass
    return tree
