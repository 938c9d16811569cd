"""ViT "judges" for the consistency scores of eq. (5): CLIP vision, DINO v1, DINOv2 (flax.linen).

One family, three checkpoint layouts (Flax paths = the safetensors keys transformers reads/writes):

* CLIP vision (``CLIPVisionModel[WithProjection]``, ``CLIPModel``): ``vision_model.embeddings.
  {class_embedding, patch_embedding, position_embedding}``, ``pre_layrnorm``, ``encoder.layers.N``
  (the same :class:`~dekag_jax.models.clip_text.CLIPEncoder` as the text tower, non-causal),
  ``post_layernorm`` on the CLS token, ``visual_projection``.
* DINO v1 (``ViTModel``, e.g. facebook/dino-vits16): ``embeddings.{cls_token, position_embeddings,
  patch_embeddings.projection}``, ``encoder.layer.N.{layernorm_before, attention.attention.
  {query,key,value}, attention.output.dense, layernorm_after, intermediate.dense, output.dense}``,
  ``layernorm``. The tanh ``pooler`` is not built (DINO checkpoints have none; if present it is
  ignored by the loader).
* DINOv2 (``Dinov2Model``): like DINO v1 with ``norm1/norm2``, ``layer_scale{1,2}.lambda1``,
  ``mlp.fc1/fc2`` and a (unused at inference) ``embeddings.mask_token``. The SwiGLU FFN variant
  (giant models) is refused by name (``use_swiglu_ffn``).

Images are NHWC ``[B, H, W, 3] float32`` already normalised with the family's mean/std (see
:data:`NORMALIZATION` and :func:`preprocess`).

Position embeddings at other resolutions: DINOv2 always interpolates its grid to the input
(transformers does, and DINOv2 checkpoints store a 37x37 grid for 518 px while being used at
224 px); CLIP vision and DINO v1 do so only with ``interpolate_pos_encoding=True`` and otherwise
refuse a size other than ``image_size``. The interpolation reproduces PyTorch's
``F.interpolate(mode="bicubic", align_corners=False)`` exactly (Keys cubic, a = -0.75, clamped
border, no antialias) through two small resampling matrices; ``jax.image.resize`` is not used
there because its cubic kernel (a = -0.5) and antialiasing differ.
"""
from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, Mapping

import numpy as np
import jax
import jax.numpy as jnp
import flax.linen as nn

from dekag_jax.models.clip_text import (
    ACTIVATIONS, CLIPEncoder, CLIPMLP, CLIPTextConfig, CLIPTextTransformer, attention, check_act,
    check_fields, layer_norm,
)
from dekag_jax.errors import UnsupportedConfigError

Dtype = Any

# ----------------------------------------------------------------------------- preprocessing

# Per-family input normalisation (what the HF image processors of these checkpoints apply).
NORMALIZATION: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    # openai/clip-*, laion CLIP (CLIPImageProcessor)
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    # facebook/dino-* (ViTImageProcessor) and facebook/dinov2-* (BitImageProcessor): ImageNet stats
    "dino": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "dinov2": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def preprocess(images: jax.Array | np.ndarray, family: str, size: int = 224) -> jax.Array:
    """uint8 ``[B, H, W, 3]`` (0..255) or float ``[B, H, W, 3]`` in [0, 1] -> normalised float32
    ``[B, size, size, 3]`` for ``family`` in {"clip", "dino", "dinov2"}.

    Resizes the shorter side to ``size`` (bicubic, antialiased, ``jax.image.resize``), centre-crops
    to ``size x size``, then applies the family's mean/std. This follows the HF image processors
    (which resize with PIL, so values differ slightly from theirs; it is differentiable and jittable).
    """
    if family not in NORMALIZATION:
        raise ValueError(f"unknown family {family!r}; expected one of {sorted(NORMALIZATION)}")
    x = jnp.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images must be [B, H, W, 3], got shape {x.shape}")
    if x.dtype == jnp.uint8:
        x = x.astype(jnp.float32) / 255.0
    elif jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    else:
        raise ValueError(f"images must be uint8 (0..255) or float (0..1), got {x.dtype}")
    b, h, w, _ = x.shape
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    if (nh, nw) != (h, w):
        x = jax.image.resize(x, (b, nh, nw, 3), method="bicubic", antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[:, top:top + size, left:left + size]
    mean, std = (jnp.asarray(v, jnp.float32) for v in NORMALIZATION[family])
    return (x - mean) / std


# ----------------------------------------------------------------------------- position interpolation


def _cubic_weights(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    """PyTorch's ``get_cubic_upsample_coefficients``: weights of taps -1, 0, 1, 2 for fraction t."""
    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` matrix M with ``M @ x`` = torch bicubic resize of x (align_corners=False)."""
    scale = np.float64(n_in) / np.float64(n_out)
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5  # cubic: not clamped at 0
    base = np.floor(src)
    w = _cubic_weights(src - base)
    m = np.zeros((n_out, n_in), np.float64)
    for k in range(4):
        idx = np.clip(base.astype(np.int64) - 1 + k, 0, n_in - 1)
        np.add.at(m, (np.arange(n_out), idx), w[:, k])
    return m.astype(np.float32)


def interpolate_pos_embed(pos: jax.Array, grid: tuple[int, int]) -> jax.Array:
    """``[1 + n*n, D]`` (CLS first, square n x n grid) -> ``[1 + gh*gw, D]`` for a ``grid = (gh, gw)``
    patch grid; float32 bicubic as transformers' ``interpolate_pos_encoding``. Identity if unchanged."""
    n2 = pos.shape[0] - 1
    n = int(round(n2 ** 0.5))
    if n * n != n2:
        raise ValueError(f"position embeddings hold {n2} patches, not a square grid")
    if tuple(grid) == (n, n):
        return pos
    dtype = pos.dtype
    patch = pos[1:].astype(jnp.float32).reshape(n, n, -1)
    mh, mw = jnp.asarray(bicubic_matrix(n, grid[0])), jnp.asarray(bicubic_matrix(n, grid[1]))
    patch = jnp.einsum("hi,wj,ijd->hwd", mh, mw, patch, precision=jax.lax.Precision.HIGHEST)
    return jnp.concatenate([pos[:1], patch.reshape(grid[0] * grid[1], -1).astype(dtype)], axis=0)


def _patch_grid(images: jax.Array, patch: int, image_size: int, interpolate: bool, what: str) -> tuple[int, int]:
    if images.ndim != 4:
        raise ValueError(f"{what}: images must be NHWC [B, H, W, C], got shape {images.shape}")
    _, h, w, _ = images.shape
    if not interpolate and (h, w) != (image_size, image_size):
        raise ValueError(f"{what}: input image size ({h}x{w}) does not match the model ({image_size}x{image_size}); "
                         "pass interpolate_pos_encoding=True to interpolate the position embeddings")
    if h < patch or w < patch:
        raise ValueError(f"{what}: image {h}x{w} is smaller than one {patch}x{patch} patch")
    return h // patch, w // patch


# ----------------------------------------------------------------------------- configs


def _square(value: Any, field: str, what: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise UnsupportedConfigError(f"{what}: {field}={value!r} (only square sizes are supported)")
        value = value[0]
    return int(value)


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
    """transformers ``CLIPVisionConfig`` fields that define the math."""

    hidden_size: int = 768
    intermediate_size: int = 3072
    projection_dim: int = 512
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 32
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    @classmethod
    def from_hf(cls, cfg: Mapping[str, Any]) -> "CLIPVisionConfig":
        what = "CLIPVisionConfig"
        mt = cfg.get("model_type", "clip_vision_model")
        if mt != "clip_vision_model":
            raise UnsupportedConfigError(f"{what}: model_type={mt!r} is not a CLIP vision model")
        fields = {f.name for f in dataclasses.fields(cls)}
        check_fields(cfg, fields, what)
        kw = {k: cfg[k] for k in fields if k in cfg and cfg[k] is not None}
        for f in ("image_size", "patch_size"):
            if f in kw:
                kw[f] = _square(kw[f], f, what)
        check_act(kw.get("hidden_act", cls.hidden_act), what)
        return cls(**kw)

    def to_hf(self, architecture: str = "CLIPVisionModel") -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(model_type="clip_vision_model", architectures=[architecture], attention_dropout=0.0)
        return d


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """DINO v1 (transformers ``ViTConfig``, ``model_type="vit"``) or DINOv2 (``Dinov2Config``,
    ``model_type="dinov2"``). For DINOv2 ``intermediate_size = int(hidden_size * mlp_ratio)``."""

    model_type: str = "vit"
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    qkv_bias: bool = True
    mlp_ratio: float | None = None  # dinov2 only
    use_mask_token: bool = False  # dinov2: the checkpoint holds embeddings.mask_token

    @classmethod
    def from_hf(cls, cfg: Mapping[str, Any]) -> "ViTConfig":
        mt = cfg.get("model_type")
        if mt == "vit":
            what = "ViTConfig"
            used = {"hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
                    "layer_norm_eps", "image_size", "patch_size", "num_channels", "qkv_bias"}
            # encoder_stride: masked-image-modelling head only; pooler_*: the pooler we do not build
            check_fields(cfg, used, what, frozenset({"encoder_stride", "pooler_output_size", "pooler_act"}))
            kw = {k: cfg[k] for k in used if k in cfg}
            kw.setdefault("layer_norm_eps", 1e-12)
        elif mt == "dinov2":
            what = "Dinov2Config"
            if cfg.get("use_swiglu_ffn", False):
                raise UnsupportedConfigError(f"{what}: use_swiglu_ffn=True (SwiGLU FFN of DINOv2-giant) is not implemented")
            used = {"hidden_size", "num_hidden_layers", "num_attention_heads", "mlp_ratio", "hidden_act",
                    "layer_norm_eps", "image_size", "patch_size", "num_channels", "qkv_bias", "use_mask_token",
                    "use_swiglu_ffn"}
            # backbone-only fields (Dinov2Backbone output selection) do not affect Dinov2Model
            benign = frozenset({"apply_layernorm", "reshape_hidden_states", "out_features", "out_indices",
                                "stage_names", "_out_features", "_out_indices"})
            check_fields(cfg, used, what, benign)
            kw = {k: cfg[k] for k in used - {"use_swiglu_ffn"} if k in cfg}
            kw.setdefault("mlp_ratio", 4)
            kw.setdefault("layer_norm_eps", 1e-6)
            kw.setdefault("patch_size", 14)
            kw.setdefault("use_mask_token", True)
            kw["intermediate_size"] = int(kw.get("hidden_size", cls.hidden_size) * kw["mlp_ratio"])
        else:
            raise UnsupportedConfigError(f"model_type={mt!r} is not a DINO model (expected 'vit' or 'dinov2')")
        for f in ("image_size", "patch_size"):
            if f in kw:
                kw[f] = _square(kw[f], f, what)
        check_act(kw.get("hidden_act", cls.hidden_act), what)
        c = cls(model_type=mt, **kw)
        if c.hidden_size % c.num_attention_heads:
            raise UnsupportedConfigError(
                f"{what}: hidden_size={c.hidden_size} is not divisible by num_attention_heads={c.num_attention_heads}")
        return c

    @property
    def dinov2(self) -> bool:
        return self.model_type == "dinov2"

    def to_hf(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if self.dinov2:
            del d["intermediate_size"]
            d.update(architectures=["Dinov2Model"], use_swiglu_ffn=False)
        else:
            del d["mlp_ratio"], d["use_mask_token"]
            d.update(architectures=["ViTModel"])
        d.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        return d


# ----------------------------------------------------------------------------- CLIP vision


class CLIPVisionEmbeddings(nn.Module):
    config: CLIPVisionConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array, interpolate_pos_encoding: bool = False) -> jax.Array:
        c = self.config
        grid = _patch_grid(images, c.patch_size, c.image_size, interpolate_pos_encoding, "CLIPVisionModel")
        cls = self.param("class_embedding", nn.initializers.normal(c.hidden_size ** -0.5), (c.hidden_size,),
                         self.param_dtype)
        patches = nn.Conv(c.hidden_size, (c.patch_size, c.patch_size), strides=c.patch_size, padding="VALID",
                          use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                          name="patch_embedding")(images.astype(self.dtype))
        b = patches.shape[0]
        patches = patches.reshape(b, grid[0] * grid[1], c.hidden_size)
        n_pos = (c.image_size // c.patch_size) ** 2 + 1
        pos = nn.Embed(n_pos, c.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype,
                       name="position_embedding")(jnp.arange(n_pos))  # the whole table [n_pos, D]
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(self.dtype), (b, 1, c.hidden_size)), patches], axis=1)
        return x + interpolate_pos_embed(pos, grid).astype(self.dtype)[None]


class CLIPVisionTransformer(nn.Module):
    """transformers' ``CLIPVisionModel.vision_model``."""

    config: CLIPVisionConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images, interpolate_pos_encoding=False, output_hidden_states=False):
        c = self.config
        ln = partial(layer_norm, c.layer_norm_eps, self.dtype, self.param_dtype)
        x = CLIPVisionEmbeddings(config=c, dtype=self.dtype, param_dtype=self.param_dtype,
                                 name="embeddings")(images, interpolate_pos_encoding)
        x = ln("pre_layrnorm")(x)  # sic: transformers' spelling
        x, states = CLIPEncoder(hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                                num_heads=c.num_attention_heads, num_layers=c.num_hidden_layers,
                                hidden_act=c.hidden_act, layer_norm_eps=c.layer_norm_eps, causal=False,
                                dtype=self.dtype, param_dtype=self.param_dtype, name="encoder")(x)
        out = {"last_hidden_state": x, "pooler_output": ln("post_layernorm")(x[:, 0])}
        if output_hidden_states:
            out["hidden_states"] = states
        return out


class CLIPVisionModel(nn.Module):
    """``__call__(images [B, H, W, 3] normalised (NORMALIZATION["clip"]), *, interpolate_pos_encoding=False,
    output_hidden_states=False)`` -> ``{"last_hidden_state": [B, 1+N, D] (no final LN, as transformers),
    "pooler_output": [B, D] (post_layernorm(CLS)), "image_embeds": [B, P] if with_projection}``."""

    config: CLIPVisionConfig
    with_projection: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images, *, interpolate_pos_encoding=False, output_hidden_states=False):
        out = CLIPVisionTransformer(config=self.config, dtype=self.dtype, param_dtype=self.param_dtype,
                                    name="vision_model")(
            jnp.asarray(images), interpolate_pos_encoding, output_hidden_states)
        if self.with_projection:
            out["image_embeds"] = nn.Dense(self.config.projection_dim, use_bias=False, dtype=self.dtype,
                                           param_dtype=self.param_dtype, name="visual_projection")(out["pooler_output"])
        return out


# ----------------------------------------------------------------------------- CLIPModel (both towers)


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
    """transformers ``CLIPConfig``: a text and a vision config plus the shared ``projection_dim``."""

    text_config: CLIPTextConfig
    vision_config: CLIPVisionConfig
    projection_dim: int = 512

    @classmethod
    def from_hf(cls, cfg: Mapping[str, Any]) -> "CLIPConfig":
        what = "CLIPConfig"
        if cfg.get("model_type", "clip") != "clip":
            raise UnsupportedConfigError(f"{what}: model_type={cfg.get('model_type')!r} is not 'clip'")
        check_fields(cfg, {"text_config", "vision_config", "text_config_dict", "vision_config_dict",
                           "projection_dim"}, what)
        # legacy checkpoints (e.g. openai/clip-vit-large-patch14) keep *_config_dict, which
        # transformers lets override *_config
        t = {**(cfg.get("text_config") or {}), **(cfg.get("text_config_dict") or {})}
        v = {**(cfg.get("vision_config") or {}), **(cfg.get("vision_config_dict") or {})}
        t.setdefault("model_type", "clip_text_model")
        v.setdefault("model_type", "clip_vision_model")
        return cls(CLIPTextConfig.from_hf(t), CLIPVisionConfig.from_hf(v), int(cfg.get("projection_dim", 512)))

    def to_hf(self) -> dict[str, Any]:
        t, v = self.text_config.to_hf(), self.vision_config.to_hf()
        for d in (t, v):
            d.pop("architectures")
        return {"model_type": "clip", "architectures": ["CLIPModel"], "projection_dim": self.projection_dim,
                "text_config": t, "vision_config": v}


class CLIPModel(nn.Module):
    """transformers ``CLIPModel``: ``text_model``, ``vision_model``, ``text_projection``,
    ``visual_projection`` (no bias) and the scalar ``logit_scale`` (log of the temperature).

    ``__call__(input_ids [B, L], images [B', H, W, 3])`` -> ``{"text_embeds" [B, P], "image_embeds"
    [B', P] (both L2-normalised), "logits_per_text" [B, B'], "logits_per_image" [B', B]}``;
    ``get_text_features`` / ``get_image_features`` give the projected, unnormalised embeddings.
    """

    config: CLIPConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        c = self.config
        self.text_model = CLIPTextTransformer(config=c.text_config, dtype=self.dtype, param_dtype=self.param_dtype)
        self.vision_model = CLIPVisionTransformer(config=c.vision_config, dtype=self.dtype,
                                                  param_dtype=self.param_dtype)
        dense = partial(nn.Dense, c.projection_dim, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype)
        self.text_projection = dense()
        self.visual_projection = dense()
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(2.6592), (), self.param_dtype)

    def get_text_features(self, input_ids, inputs_embeds=None):
        """``[B, L] int`` -> ``[B, P]`` projected pooled text features."""
        return self.text_projection(self.text_model(jnp.asarray(input_ids), inputs_embeds)["pooler_output"])

    def get_image_features(self, images, interpolate_pos_encoding=False):
        """``[B, H, W, 3]`` normalised -> ``[B, P]`` projected pooled image features."""
        return self.visual_projection(self.vision_model(jnp.asarray(images), interpolate_pos_encoding)["pooler_output"])

    def __call__(self, input_ids, images, interpolate_pos_encoding=False):
        t = l2_normalize(self.get_text_features(input_ids))
        i = l2_normalize(self.get_image_features(images, interpolate_pos_encoding))
        logits_per_text = jnp.exp(self.logit_scale.astype(jnp.float32)) * (t @ i.T).astype(jnp.float32)
        return {"text_embeds": t, "image_embeds": i, "logits_per_text": logits_per_text,
                "logits_per_image": logits_per_text.T}


# ----------------------------------------------------------------------------- DINO v1 / DINOv2


class _Dense(nn.Module):
    """A container holding one Linear named ``dense`` (transformers' ``ViTIntermediate``/``ViTOutput``
    /``ViTSelfOutput`` wrappers), so paths read ``.../intermediate/dense/kernel``."""

    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.features, dtype=self.dtype, param_dtype=self.param_dtype, name="dense")(x)


class _QKV(nn.Module):
    features: int
    use_bias: bool
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        dense = partial(nn.Dense, self.features, use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype)
        return dense(name="query")(x), dense(name="key")(x), dense(name="value")(x)


class ViTAttention(nn.Module):
    """``attention.attention.{query,key,value}`` + ``attention.output.dense``."""

    config: ViTConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = self.config
        q, k, v = _QKV(features=c.hidden_size, use_bias=c.qkv_bias, dtype=self.dtype, param_dtype=self.param_dtype,
                       name="attention")(x)
        return _Dense(features=c.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype, name="output")(
            attention(q, k, v, c.num_attention_heads))


class LayerScale(nn.Module):
    """DINOv2 ``layer_scale{1,2}``: per-channel gain ``lambda1`` [D]."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        lam = self.param("lambda1", nn.initializers.ones, (x.shape[-1],), self.param_dtype)
        return x * lam.astype(self.dtype)


class ViTLayer(nn.Module):
    """Pre-norm ViT block in the DINO v1 (``ViTLayer``) or DINOv2 (``Dinov2Layer``) layout."""

    config: ViTConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = self.config
        ln = partial(layer_norm, c.layer_norm_eps, self.dtype, self.param_dtype)
        v2 = c.dinov2
        h = ViTAttention(config=c, dtype=self.dtype, param_dtype=self.param_dtype,
                         name="attention")(ln("norm1" if v2 else "layernorm_before")(x))
        if v2:
            h = LayerScale(dtype=self.dtype, param_dtype=self.param_dtype, name="layer_scale1")(h)
        x = x + h
        h = ln("norm2" if v2 else "layernorm_after")(x)
        if v2:
            h = CLIPMLP(hidden_size=c.hidden_size, intermediate_size=c.intermediate_size, hidden_act=c.hidden_act,
                        dtype=self.dtype, param_dtype=self.param_dtype, name="mlp")(h)
            h = LayerScale(dtype=self.dtype, param_dtype=self.param_dtype, name="layer_scale2")(h)
        else:
            h = ACTIVATIONS[c.hidden_act](_Dense(features=c.intermediate_size, dtype=self.dtype,
                                                 param_dtype=self.param_dtype, name="intermediate")(h))
            h = _Dense(features=c.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype, name="output")(h)
        return x + h


class _PatchEmbeddings(nn.Module):
    """transformers' ``patch_embeddings.projection``: a stride-p p x p conv (with bias)."""

    features: int
    patch_size: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        p = self.patch_size
        return nn.Conv(self.features, (p, p), strides=p, padding="VALID", dtype=self.dtype,
                       param_dtype=self.param_dtype, name="projection")(x)


class ViTEncoder(nn.Module):
    """``encoder.layer.N``; returns (output, (input, layer 1..N outputs))."""

    config: ViTConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        states = [x]
        for i in range(self.config.num_hidden_layers):
            x = ViTLayer(config=self.config, dtype=self.dtype, param_dtype=self.param_dtype, name=f"layer.{i}")(x)
            states.append(x)
        return x, tuple(states)


class ViTEmbeddings(nn.Module):
    config: ViTConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images, interpolate_pos_encoding):
        c = self.config
        what = "Dinov2Model" if c.dinov2 else "ViTModel"
        grid = _patch_grid(images, c.patch_size, c.image_size, interpolate_pos_encoding or c.dinov2, what)
        init = nn.initializers.truncated_normal(0.02)
        cls = self.param("cls_token", init, (1, 1, c.hidden_size), self.param_dtype)
        if c.use_mask_token:
            # pre-training only (bool_masked_pos); held so checkpoints round-trip strictly
            self.param("mask_token", nn.initializers.zeros, (1, c.hidden_size), self.param_dtype)
        n_pos = (c.image_size // c.patch_size) ** 2 + 1
        pos = self.param("position_embeddings", init, (1, n_pos, c.hidden_size), self.param_dtype)
        patches = _PatchEmbeddings(features=c.hidden_size, patch_size=c.patch_size, dtype=self.dtype,
                                   param_dtype=self.param_dtype, name="patch_embeddings")(images.astype(self.dtype))
        b = patches.shape[0]
        patches = patches.reshape(b, grid[0] * grid[1], c.hidden_size)
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(self.dtype), (b, 1, c.hidden_size)), patches], axis=1)
        return x + interpolate_pos_embed(pos[0], grid).astype(self.dtype)[None]


class ViTModel(nn.Module):
    """DINO v1 (``ViTModel``, add_pooling_layer=False) or DINOv2 (``Dinov2Model``) by ``config.model_type``.

    ``__call__(images [B, H, W, 3] normalised (NORMALIZATION["dino"]), *, interpolate_pos_encoding=False,
    output_hidden_states=False)`` -> ``{"last_hidden_state": [B, 1+N, D] after the final layernorm,
    "pooler_output": [B, D] = its CLS token (DINOv2's pooler_output; for DINO v1 the DreamBooth DINO
    feature), "hidden_states": (embeddings, layer 1..N) if asked}``. DINOv2 always interpolates.
    """

    config: ViTConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images, *, interpolate_pos_encoding=False, output_hidden_states=False):
        c = self.config
        x = ViTEmbeddings(config=c, dtype=self.dtype, param_dtype=self.param_dtype,
                          name="embeddings")(jnp.asarray(images),
                                                                              interpolate_pos_encoding)
        x, states = ViTEncoder(config=c, dtype=self.dtype, param_dtype=self.param_dtype, name="encoder")(x)
        last = layer_norm(c.layer_norm_eps, self.dtype, self.param_dtype, "layernorm")(x)
        out = {"last_hidden_state": last, "pooler_output": last[:, 0]}
        if output_hidden_states:
            out["hidden_states"] = states
        return out


# ----------------------------------------------------------------------------- features for eq. (5)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Rows scaled to unit L2 norm (float32)."""
    x = x.astype(jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def dino_features(module: ViTModel, params: Mapping[str, Any], images: jax.Array, *,
                  normalize: bool = False, interpolate_pos_encoding: bool = False) -> jax.Array:
    """DINO feature ``[B, D]``: CLS token of the last layer after the final layernorm (DreamBooth's
    DINO score). ``images``: ``[B, H, W, 3]`` normalised with NORMALIZATION["dino"]. Cosine
    similarity of two feature sets is the DINO-score of eq. (5). Wrap in ``jax.jit`` for speed."""
    if not isinstance(module, ViTModel):
        raise TypeError(f"dino_features needs a ViTModel (DINO v1/v2), got {type(module).__name__}")
    f = module.apply({"params": params}, images, interpolate_pos_encoding=interpolate_pos_encoding)["pooler_output"]
    return l2_normalize(f) if normalize else f


def clip_image_features(module: CLIPVisionModel | CLIPModel, params: Mapping[str, Any], images: jax.Array, *,
                        normalize: bool = False, interpolate_pos_encoding: bool = False) -> jax.Array:
    """CLIP image embedding ``[B, P]`` (visual_projection of post-layernormed CLS), from a
    ``CLIPVisionModel(with_projection=True)`` or a ``CLIPModel``. ``images`` normalised with
    NORMALIZATION["clip"]. Cosine similarity of these is the CLIP-score of eq. (5). Wrap in
    ``jax.jit`` for speed."""
    kw = {"interpolate_pos_encoding": interpolate_pos_encoding}
    if isinstance(module, CLIPModel):
        f = module.apply({"params": params}, images, method=CLIPModel.get_image_features, **kw)
    elif isinstance(module, CLIPVisionModel):
        if not module.with_projection:
            raise ValueError("clip_image_features needs projected embeddings: load a CLIPVisionModelWithProjection "
                             "or a CLIPModel checkpoint")
        f = module.apply({"params": params}, images, **kw)["image_embeds"]
    else:
        raise TypeError(f"clip_image_features needs a CLIPVisionModel or CLIPModel, got {type(module).__name__}")
    return l2_normalize(f) if normalize else f


def cosine_similarity(a: jax.Array, b: jax.Array) -> jax.Array:
    """Row-wise cosine similarity of ``[B, D]`` feature sets -> ``[B]``."""
    return jnp.sum(l2_normalize(a) * l2_normalize(b), axis=-1)


def image_feature_fn(module: ViTModel | CLIPVisionModel | CLIPModel, params: Mapping[str, Any], *,
                     normalize: bool = True, interpolate_pos_encoding: bool = False):
    """A jitted ``images -> features`` function for a judge, for the metrics of ``dekag_jax.metrics``
    (which take feature functions, never model classes).

    ``images``: uint8 ``[B, H, W, 3]`` (0..255) or float in [0, 1]; resized and normalised by
    :func:`preprocess` with the module's own family and ``image_size``. Returns ``[B, D]`` float32:
    :func:`dino_features` for a ``ViTModel``, :func:`clip_image_features` for a CLIP module,
    L2-normalised unless ``normalize=False``. Pure model code (the model's preprocessing and
    forward), so it lives with the models.
    """
    if isinstance(module, ViTModel):
        family = "dinov2" if module.config.dinov2 else "dino"
        size = module.config.image_size
        feats = dino_features
    elif isinstance(module, (CLIPVisionModel, CLIPModel)):
        family = "clip"
        size = (module.config.vision_config if isinstance(module, CLIPModel) else module.config).image_size
        feats = clip_image_features
    else:
        raise TypeError(f"image_feature_fn needs a ViTModel, CLIPVisionModel or CLIPModel, got {type(module).__name__}")

    @jax.jit
    def fn(p, images):
        return feats(module, p, preprocess(images, family, size), normalize=normalize,
                     interpolate_pos_encoding=interpolate_pos_encoding)

    return lambda images: fn(params, images)
