"""The networks (flax.linen, NHWC): Stable Diffusion's UNet and VAE, the CLIP text encoder and its
tokenizer wrapper, and the ViT judges of eq. 5 (CLIP vision, DINO v1, DINOv2).

``from dekag_jax.models import UNet2DConditionModel`` works for every name in ``__all__``. The
exports are lazy (PEP 562): a name's submodule is imported on first access, so
``import dekag_jax.models.tokenizer`` or ``import dekag_jax.models`` alone loads no flax, and
importing one network does not build the others.
"""
from __future__ import annotations

import importlib

# name -> submodule that defines it
_EXPORTS = {
    "unet": ("UNet2DConditionModel", "UNetConfig"),
    "vae": ("AutoencoderKL", "VAEConfig"),
    "clip_text": ("CLIPTextModel", "CLIPTextModelWithProjection", "CLIPTextConfig"),
    "vit": ("CLIPVisionModel", "CLIPVisionConfig", "CLIPModel", "CLIPConfig", "ViTModel", "ViTConfig",
            "NORMALIZATION", "preprocess", "dino_features", "clip_image_features", "image_feature_fn"),
    "tokenizer": ("load_tokenizer", "tokenize", "add_token"),
    "layers": ("ATTENTION_IMPLS", "DEFAULT_ATTENTION", "resolve_attention_impl"),
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
