"""Load and save Stable-Diffusion UNet and VAE components in the diffusers directory layout.

``load_unet(dir)`` / ``load_vae(dir)`` read ``config.json`` + ``diffusion_pytorch_model[.variant]
.safetensors`` (possibly sharded) written by diffusers' ``save_pretrained``; ``save_unet`` /
``save_vae`` write the same layout, which diffusers' ``from_pretrained`` loads.

Loading streams: the parameter tree is first built abstractly (``jax.eval_shape`` of ``init``,
so no random weights are materialised; cached per config, weights/abstract.py), then tensors are
read one at a time from safetensors, converted to the Flax layout and turned into JAX arrays. Peak
host memory stays near one copy of the weights (SD2.1's UNet: 3.5 GB in fp32).
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from dekag_jax.models.unet import UNet2DConditionModel, UNetConfig
from dekag_jax.models.vae import AutoencoderKL, VAEConfig
from dekag_jax.weights.abstract import abstract_params
from dekag_jax.weights.convert import flatten, flax_to_torch, torch_to_flax, unflatten
from dekag_jax.weights.files import read_config, read_state_dict, save_state_dict

# diffusers version we write into config.json (the version the round trip is tested against).
DIFFUSERS_VERSION = "0.42.1"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"

# Legacy VAE attention keys (diffusers < 0.14 AttentionBlock, most original SD checkpoints):
# query/key/value/proj_attn -> to_q/to_k/to_v/to_out.0. 1x1-conv storage [C, C, 1, 1] is
# squeezed by convert.py.
VAE_LEGACY_RENAME = (
    (r"(attentions\.\d+)\.query\.", r"\1.to_q."),
    (r"(attentions\.\d+)\.key\.", r"\1.to_k."),
    (r"(attentions\.\d+)\.value\.", r"\1.to_v."),
    (r"(attentions\.\d+)\.proj_attn\.", r"\1.to_out.0."),
)


def _to_jax(tree: Mapping[str, Any]) -> dict[str, Any]:
    """numpy tree -> jax tree, releasing each numpy leaf as soon as it is copied."""
    flat = flatten(tree)
    del tree
    out = {}
    for k in list(flat):
        out[k] = jnp.asarray(flat.pop(k))
    return unflatten(out)


def _convert(state: Mapping[str, Any], module, rename=(), what="checkpoint"):
    abstract = abstract_params(module, *module.dummy_inputs())
    # put=jax.device_put: each tensor goes to JAX as soon as it is converted (peak ~1x the weights;
    # a full numpy tree converted afterwards peaked at ~2.2x, scripts/measure_load_memory.py).
    return torch_to_flax(state, abstract, rename=rename, dtype=module.param_dtype, what=what, put=jax.device_put)


def _load(component_dir: str, module, rename=(), variant=None, what="checkpoint"):
    return _convert(read_state_dict(component_dir, variant), module, rename=rename, what=what)


def unet_from_state(config: Mapping[str, Any], state: Mapping[str, Any], *, dtype: Any = jnp.float32,
                    what: str = "UNet", **module_kwargs) -> tuple[UNet2DConditionModel, dict[str, Any]]:
    """A diffusers UNet config dict and a ``{diffusers key: tensor}`` state (lazy values welcome;
    e.g. weights/single_file.py's renamed view of an original-layout file) -> ``(module, params)``."""
    module = UNet2DConditionModel(UNetConfig.from_hf(config), dtype=dtype, param_dtype=dtype, **module_kwargs)
    return module, _convert(state, module, what=what)


def vae_from_state(config: Mapping[str, Any], state: Mapping[str, Any], *, dtype: Any = jnp.float32,
                   what: str = "VAE") -> tuple[AutoencoderKL, dict[str, Any]]:
    """As :func:`unet_from_state`, for an ``AutoencoderKL`` (current or legacy attention key names)."""
    module = AutoencoderKL(VAEConfig.from_hf(config), dtype=dtype, param_dtype=dtype)
    return module, _convert(state, module, rename=VAE_LEGACY_RENAME, what=what)


def load_unet(component_dir: str, *, dtype: Any = jnp.float32, variant: str | None = None,
              **module_kwargs) -> tuple[UNet2DConditionModel, dict[str, Any]]:
    """Read a diffusers ``unet/`` directory.

    Args:
      component_dir: directory with config.json and diffusion_pytorch_model[.variant].safetensors.
      dtype: computation and parameter dtype (float32, bfloat16, float16).
      variant: e.g. "fp16" for diffusion_pytorch_model.fp16.safetensors.
      module_kwargs: extra UNet2DConditionModel fields (gradient_checkpointing, attention_impl).
    Returns: (module, params) with ``module.apply({'params': params}, sample, t, context)``.
    Raises: UnsupportedConfigError for configs we do not implement, ConversionError naming every
      mismatching key/shape, CheckpointError for missing or pickle-only weights.
    """
    cfg = UNetConfig.from_hf(read_config(component_dir))
    module = UNet2DConditionModel(cfg, dtype=dtype, param_dtype=dtype, **module_kwargs)
    return module, _load(component_dir, module, variant=variant, what=f"UNet ({component_dir})")


def load_vae(component_dir: str, *, dtype: Any = jnp.float32,
             variant: str | None = None) -> tuple[AutoencoderKL, dict[str, Any]]:
    """Read a diffusers ``vae/`` directory (current or legacy attention key names)."""
    cfg = VAEConfig.from_hf(read_config(component_dir))
    module = AutoencoderKL(cfg, dtype=dtype, param_dtype=dtype)
    return module, _load(component_dir, module, rename=VAE_LEGACY_RENAME, variant=variant,
                         what=f"VAE ({component_dir})")


def _save(params, out_dir: str, config: dict[str, Any], class_name: str, dtype=None) -> None:
    os.makedirs(out_dir, exist_ok=True)
    state = flax_to_torch(params)
    if dtype is not None:
        state = {k: v.astype(dtype) for k, v in state.items()}
    cfg = {"_class_name": class_name, "_diffusers_version": DIFFUSERS_VERSION, **config}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
    save_state_dict(state, os.path.join(out_dir, WEIGHTS_NAME), metadata={"format": "pt"})


def save_unet(module: UNet2DConditionModel, params, out_dir: str, *, dtype=None) -> None:
    """Write config.json + diffusion_pytorch_model.safetensors loadable by
    ``diffusers.UNet2DConditionModel.from_pretrained(out_dir)``. ``dtype``: optional numpy dtype
    to store (default: the params' own dtype)."""
    _save(params, out_dir, module.config.to_hf(), "UNet2DConditionModel", dtype)


def save_vae(module: AutoencoderKL, params, out_dir: str, *, dtype=None) -> None:
    """Write config.json + diffusion_pytorch_model.safetensors loadable by
    ``diffusers.AutoencoderKL.from_pretrained(out_dir)`` (current attention key names)."""
    _save(params, out_dir, module.config.to_hf(), "AutoencoderKL", dtype)
