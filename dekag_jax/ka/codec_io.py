"""Save and load a JSCC codec (f_JE + latent reconstructor): ``config.json`` (``JSCCConfig`` fields
and how it was trained) and ``codec.safetensors`` with Flax parameter paths
(``jscc_encoder/mid_block/attentions.0/to_q/kernel``). Loading is strict: every missing, unexpected
or mis-shaped tensor is listed in one error. Safetensors only. ``config.json``'s ``_class_name``
says which codec it is: ``JSCCCodec`` (JSCC(MT/AT)), ``RCJSCCCodec`` (RC-JSCC) or ``VJMAECodec``
(VJ-MAE, its entropy thresholds in the config); ``load_codec`` builds that class.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dekag_jax.models.adaptive_jscc import RCJSCCCodec, RCJSCCConfig, VJMAEConfig, codec_class
from dekag_jax.models.jscc import JSCCConfig
from dekag_jax.weights.convert import ConversionError, flatten, unflatten
from dekag_jax.weights.files import save_state_dict

__all__ = ["save_codec", "load_codec", "WEIGHTS_NAME", "CONFIG_NAME"]

_CLASS_NAMES = {JSCCConfig: "JSCCCodec", RCJSCCConfig: "RCJSCCCodec", VJMAEConfig: "VJMAECodec"}

WEIGHTS_NAME = "codec.safetensors"
CONFIG_NAME = "config.json"


def save_codec(path: str, config: JSCCConfig, params: Any, *, dtype=np.float16, extra: dict | None = None) -> None:
    """Write ``params`` (the inner dict of ``JSCCCodec.init``) as ``dtype`` with the config."""
    os.makedirs(path, exist_ok=True)
    flat = {k: np.asarray(v, dtype) for k, v in flatten(jax.device_get(params)).items()}
    save_state_dict(flat, os.path.join(path, WEIGHTS_NAME), metadata={"format": "flax-jscc"})
    with open(os.path.join(path, CONFIG_NAME), "w") as f:
        json.dump({"_class_name": _CLASS_NAMES.get(type(config), "JSCCCodec"), **config.to_dict(),
                   **({"training": extra} if extra else {})}, f,
                  indent=1)


def load_codec(path: str, *, dtype=jnp.float32, latent_hw: tuple[int, int] = (8, 8)) -> tuple[Any, Any, dict]:
    """``(codec, params, config_json)`` from a directory written by :func:`save_codec`."""
    from safetensors.numpy import load_file

    cfg_path, w_path = os.path.join(path, CONFIG_NAME), os.path.join(path, WEIGHTS_NAME)
    for p in (cfg_path, w_path):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"{p}: no JSCC codec there (expected {CONFIG_NAME} and {WEIGHTS_NAME})")
    with open(cfg_path) as f:
        meta = json.load(f)
    # The class decides the config fields and the init signature (JSCC(MT/AT), RC-JSCC, VJ-MAE).
    module_cls, config_cls = codec_class(meta.get("_class_name", "JSCCCodec"))
    names = [f.name for f in dataclasses.fields(config_cls)]
    fields = {k: (tuple(meta[k]) if isinstance(meta[k], list) else meta[k]) for k in names if k in meta}
    config = config_cls(**fields)
    codec = module_cls(config=config)
    z_abs = jax.ShapeDtypeStruct((1, *latent_hw, config.latent_channels), jnp.float32)
    if module_cls is RCJSCCCodec:
        init = lambda z: codec.init(jax.random.key(0), z, jnp.zeros((1,), jnp.float32))  # noqa: E731
    else:
        init = lambda z: codec.init(jax.random.key(0), z)  # noqa: E731
    want = flatten(jax.eval_shape(init, z_abs)["params"])
    got = load_file(w_path)
    problems = [f"missing {k}" for k in sorted(set(want) - set(got))]
    problems += [f"unexpected {k}" for k in sorted(set(got) - set(want))]
    problems += [f"{k}: shape {got[k].shape} != {tuple(want[k].shape)}" for k in sorted(set(got) & set(want))
                 if tuple(got[k].shape) != tuple(want[k].shape)]
    if problems:
        raise ConversionError(f"{w_path}: {len(problems)} problem(s): " + "; ".join(problems))
    params = unflatten({k: jnp.asarray(v, dtype) for k, v in got.items()})
    return codec, params, meta
