"""Load/save transformers checkpoints (CLIP text/vision/full, DINO v1, DINOv2) as Flax modules + params.

Every loader builds the abstract Flax tree under ``jax.eval_shape`` (no weights allocated; cached
per config, weights/abstract.py), then fills it strictly with
:func:`dekag_jax.weights.convert.torch_to_flax`: any unmapped checkpoint key, missing parameter or
shape mismatch raises ``ConversionError`` listing all of them. Flax
paths equal the checkpoint keys (``text_model/encoder/layers.0/...`` <-> ``text_model.encoder.
layers.0...``), so the only key rules are:

* buffers that are not parameters (``position_ids``) and DINO's unused tanh ``pooler`` are
  ignored by explicit regex;
* transformers >= 5 saves a bare ``CLIPTextModel``/``CLIPVisionModel`` without the
  ``text_model.``/``vision_model.`` prefix that published checkpoints (and transformers 4.x)
  use; such files get the prefix added. Our savers always write the prefixed, published form,
  which every transformers version loads.

Raw ``nn.Parameter`` tensors (``cls_token``, ``position_embeddings``, ``class_embedding``,
``lambda1``, ``mask_token``, ``logit_scale``) keep their name and layout on both sides.

Savers write ``config.json`` + ``model.safetensors`` that ``from_pretrained`` of the matching
transformers class loads.
"""
from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import jax
import jax.numpy as jnp

from dekag_jax.weights import convert
from dekag_jax.weights.abstract import abstract_params
from dekag_jax.weights.files import read_config, read_state_dict, save_state_dict

_BUFFERS = (r"(^|\.)position_ids$",)

# ----------------------------------------------------------------------------- conversion helpers
# Raw parameters (cls_token, logit_scale, ...) and key renames are handled by convert itself.
# Each converted leaf goes to JAX at once (put=), so loading never holds a second full copy.
state_to_params = functools.partial(convert.torch_to_flax, put=jax.device_put)
params_to_state = convert.flax_to_torch


def _save(directory: str, config: dict[str, Any], params, dtype=None) -> None:
    os.makedirs(directory, exist_ok=True)
    # transformers 5 loads with dtype="auto", which takes the config's dtype first and otherwise
    # keeps the stored one: float16 storage (the tiny world ships that) would then compute in
    # float16 and crash beside float32 modules. The params' own dtype is what they compute in.
    leaves = jax.tree.leaves(params)
    config = dict(config, dtype=str(np.dtype(leaves[0].dtype)) if leaves else "float32")
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    state = params_to_state(jax.tree.map(np.asarray, params), dtype=dtype)
    save_state_dict(state, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})


def _image(config) -> np.ndarray:
    """A one-image NHWC example input for ``abstract_params`` (NumPy: creating it compiles nothing)."""
    return np.zeros((1, config.image_size, config.image_size, config.num_channels), np.float32)


def _np_dtype(dtype):
    return None if dtype is None else np.dtype(jnp.dtype(dtype))


def _prefix_rule(state: Mapping[str, Any], prefix: str, keep: tuple[str, ...]):
    """Rules adding ``prefix`` when the file is a transformers-5 bare tower (no key carries it)."""
    if any(k.startswith(prefix + ".") for k in state):
        return ()
    if not keep:  # (an empty negative lookahead "(?!)" would never match)
        return ((r"^", prefix + "."),)
    skip = "|".join(k.replace(".", r"\.") + r"(\.|$)" for k in keep)
    return ((rf"^(?!{skip})", prefix + "."),)


# ----------------------------------------------------------------------------- CLIP text


def load_text_encoder(directory: str, dtype: Any = jnp.float32, variant: str | None = None):
    """A diffusers ``text_encoder/`` (or any transformers CLIP text checkpoint) -> ``(module, params)``.

    ``config.json``'s ``architectures`` picks :class:`CLIPTextModel` or
    :class:`CLIPTextModelWithProjection`. Params are cast to ``dtype`` and the module computes
    in ``dtype``. ``variant`` selects e.g. ``model.fp16.safetensors``.
    """
    from dekag_jax.models.clip_text import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    from dekag_jax.errors import UnsupportedConfigError

    cfg = read_config(directory)
    arch = (cfg.get("architectures") or ["CLIPTextModel"])[0]
    classes = {"CLIPTextModel": CLIPTextModel, "CLIPTextModelWithProjection": CLIPTextModelWithProjection}
    if arch not in classes:
        raise UnsupportedConfigError(f"{directory}: architectures={cfg.get('architectures')!r}; expected one of "
                                     f"{sorted(classes)}")
    config = CLIPTextConfig.from_hf(cfg)
    module = classes[arch](config, dtype=dtype, param_dtype=dtype)
    abstract = abstract_params(module, np.zeros((1, 1), np.int32))
    state = read_state_dict(directory, variant)
    params = state_to_params(state, abstract, rename=_prefix_rule(state, "text_model", ("text_projection",)),
                             ignore=_BUFFERS, dtype=_np_dtype(dtype), what=f"{arch} ({directory})")
    return module, params


def text_encoder_from_state(cfg: Mapping[str, Any], state: Mapping[str, Any], dtype: Any = jnp.float32,
                            what: str = "CLIPTextModel"):
    """A transformers ``CLIPTextModel`` config dict and a ``{transformers key: tensor}`` state (lazy
    values welcome; ``text_model.`` prefix optional) -> ``(module, params)``. Used for single-file
    checkpoints (weights/single_file.py), whose text tower has no projection."""
    from dekag_jax.errors import UnsupportedConfigError
    from dekag_jax.models.clip_text import CLIPTextConfig, CLIPTextModel

    arch = (cfg.get("architectures") or ["CLIPTextModel"])[0]
    if arch != "CLIPTextModel":
        raise UnsupportedConfigError(f"{what}: architectures={cfg.get('architectures')!r}; expected CLIPTextModel")
    module = CLIPTextModel(CLIPTextConfig.from_hf(cfg), dtype=dtype, param_dtype=dtype)
    abstract = abstract_params(module, np.zeros((1, 1), np.int32))
    params = state_to_params(state, abstract, rename=_prefix_rule(state, "text_model", ()), ignore=_BUFFERS,
                             dtype=_np_dtype(dtype), what=what)
    return module, params


def save_text_encoder(directory: str, module, params, dtype: Any = None) -> None:
    """Write ``config.json`` + ``model.safetensors`` (keys ``text_model.*``[, ``text_projection.weight``])."""
    from dekag_jax.models.clip_text import CLIPTextModelWithProjection

    arch = "CLIPTextModelWithProjection" if isinstance(module, CLIPTextModelWithProjection) else "CLIPTextModel"
    _save(directory, module.config.to_hf(arch), params, _np_dtype(dtype))


# ----------------------------------------------------------------------------- CLIP vision / CLIP


def load_clip_vision(directory: str, dtype: Any = jnp.float32, variant: str | None = None):
    """``CLIPVisionModel`` or ``CLIPVisionModelWithProjection`` checkpoint -> ``(CLIPVisionModel, params)``
    (``module.with_projection`` tells which)."""
    from dekag_jax.errors import UnsupportedConfigError
    from dekag_jax.models.vit import CLIPVisionConfig, CLIPVisionModel

    cfg = read_config(directory)
    arch = (cfg.get("architectures") or ["CLIPVisionModel"])[0]
    if arch not in ("CLIPVisionModel", "CLIPVisionModelWithProjection"):
        raise UnsupportedConfigError(f"{directory}: architectures={cfg.get('architectures')!r}; expected "
                                     "CLIPVisionModel or CLIPVisionModelWithProjection (use load_clip_model for CLIPModel)")
    config = CLIPVisionConfig.from_hf(cfg)
    module = CLIPVisionModel(config, with_projection=arch.endswith("WithProjection"), dtype=dtype, param_dtype=dtype)
    abstract = abstract_params(module, _image(config))
    state = read_state_dict(directory, variant)
    params = state_to_params(state, abstract, rename=_prefix_rule(state, "vision_model", ("visual_projection",)),
                             ignore=_BUFFERS, dtype=_np_dtype(dtype), what=f"{arch} ({directory})")
    return module, params


def save_clip_vision(directory: str, module, params, dtype: Any = None) -> None:
    arch = "CLIPVisionModelWithProjection" if module.with_projection else "CLIPVisionModel"
    _save(directory, module.config.to_hf(arch), params, _np_dtype(dtype))


def load_clip_model(directory: str, dtype: Any = jnp.float32, variant: str | None = None):
    """Full ``CLIPModel`` checkpoint (keys ``text_model.*``, ``vision_model.*``, ``text_projection``,
    ``visual_projection``, ``logit_scale``) -> ``(CLIPModel, params)``. Use ``module.apply(...,
    method=CLIPModel.get_text_features / get_image_features)`` for one tower."""
    from dekag_jax.errors import UnsupportedConfigError
    from dekag_jax.models.vit import CLIPConfig, CLIPModel

    cfg = read_config(directory)
    arch = (cfg.get("architectures") or ["CLIPModel"])[0]
    if arch != "CLIPModel":
        raise UnsupportedConfigError(f"{directory}: architectures={cfg.get('architectures')!r}; expected CLIPModel")
    config = CLIPConfig.from_hf(cfg)
    module = CLIPModel(config, dtype=dtype, param_dtype=dtype)
    v = config.vision_config
    abstract = abstract_params(module, np.zeros((1, 1), np.int32), _image(v))
    params = state_to_params(read_state_dict(directory, variant), abstract, ignore=_BUFFERS,
                             dtype=_np_dtype(dtype), what=f"CLIPModel ({directory})")
    return module, params


def save_clip_model(directory: str, module, params, dtype: Any = None) -> None:
    _save(directory, module.config.to_hf(), params, _np_dtype(dtype))


# ----------------------------------------------------------------------------- DINO


def load_dino(directory: str, dtype: Any = jnp.float32, variant: str | None = None):
    """DINO v1 (``model_type: vit``, transformers ``ViTModel``) or DINOv2 (``model_type: dinov2``,
    ``Dinov2Model``) -> ``(ViTModel, params)``. A ViT ``pooler.*`` in the file is ignored (the
    DINO feature is the CLS token after the final layernorm, not the tanh pooler)."""
    from dekag_jax.models.vit import ViTConfig, ViTModel

    config = ViTConfig.from_hf(read_config(directory))
    module = ViTModel(config, dtype=dtype, param_dtype=dtype)
    abstract = abstract_params(module, _image(config))
    ignore = _BUFFERS + ((r"^pooler\.",) if not config.dinov2 else ())
    params = state_to_params(read_state_dict(directory, variant), abstract, ignore=ignore,
                             dtype=_np_dtype(dtype), what=f"{'Dinov2Model' if config.dinov2 else 'ViTModel'} ({directory})")
    return module, params


def save_dino(directory: str, module, params, dtype: Any = None) -> None:
    _save(directory, module.config.to_hf(), params, _np_dtype(dtype))
