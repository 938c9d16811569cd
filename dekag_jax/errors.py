"""Errors and config checks shared by the model definitions."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping


class UnsupportedConfigError(ValueError):
    """A Hugging Face config asks for a feature this implementation does not have.

    The message names the config field and its value, so a user knows what to change
    (or what to implement) instead of getting silently different math.
    """


def diffusers_config_kwargs(cls, cfg: Mapping[str, Any], fixed: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Constructor kwargs of the config dataclass ``cls`` from a diffusers ``config.json`` dict.

    Private keys (``_class_name``, ``_diffusers_version``) are skipped. A key in ``fixed`` must hold
    exactly that value (``None`` meaning absent/None): the feature it selects is not implemented.
    Any other key must be a field of ``cls``. Lists become (nested) tuples so configs hash.
    Raises UnsupportedConfigError naming the field and value.
    """
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, val in cfg.items():
        if key.startswith("_"):
            continue
        if key in fixed:
            want = fixed[key]
            if not (val is None if want is None else val == want):
                raise UnsupportedConfigError(f"{what}: {key}={val!r} is not supported (only {want!r})")
            continue
        if key not in known:
            raise UnsupportedConfigError(f"{what}: unknown field {key}={val!r}")
        if isinstance(val, list):
            val = tuple(tuple(v) if isinstance(v, list) else v for v in val)
        kwargs[key] = val
    return kwargs
