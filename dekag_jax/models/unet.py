"""Stable-Diffusion UNet (diffusers ``UNet2DConditionModel``) in flax.linen, NHWC.

Supports the SD1.x and SD2.x family: CrossAttnDownBlock2D / DownBlock2D, UNetMidBlock2DCrossAttn,
CrossAttnUpBlock2D / UpBlock2D, sinusoidal time embedding, Transformer2DModel with conv or linear
projections, upcast attention, per-block head counts. Parameter paths equal diffusers module paths
(``down_blocks.0/attentions.1/transformer_blocks.0/attn1/to_q/kernel``).

Head-count quirk (diffusers issue #2011): in UNet configs ``attention_head_dim`` is really the
number of heads per block when ``num_attention_heads`` is absent (SD2.x ``[5, 10, 20, 20]`` means
5..20 heads of width 64; SD1.x ``8`` means 8 heads). diffusers computes
``num_attention_heads = num_attention_heads or attention_head_dim``; so do we.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np
import flax.linen as nn

from dekag_jax.errors import UnsupportedConfigError, diffusers_config_kwargs
from dekag_jax.models.layers import (DEFAULT_ATTENTION, Downsample2D, ResnetBlock2D, TimestepEmbedding,
                                     Transformer2DModel, Upsample2D, conv, get_timestep_embedding, group_norm,
                                     silu)

Dtype = Any

DOWN_BLOCKS = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_BLOCKS = ("CrossAttnUpBlock2D", "UpBlock2D")
MID_BLOCKS = ("UNetMidBlock2DCrossAttn", None)

# Fields whose value must be exactly this (anything else changes the math and is not implemented).
_UNET_FIXED = {
    "dual_cross_attention": False,
    "class_embed_type": None,
    "addition_embed_type": None,
    "addition_time_embed_dim": None,
    "num_class_embeds": None,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "reverse_transformer_layers_per_block": None,
    "resnet_time_scale_shift": "default",
    "resnet_skip_time_act": False,
    "time_embedding_type": "positional",
    "time_embedding_dim": None,
    "time_embedding_act_fn": None,
    "timestep_post_act": None,
    "time_cond_proj_dim": None,
    "projection_class_embeddings_input_dim": None,
    "attention_type": "default",
    "class_embeddings_concat": False,
    "cross_attention_norm": None,
    "act_fn": "silu",
    "dropout": 0.0,
}


def _tup(x, n: int, field: str, kind=int) -> tuple:
    if isinstance(x, (list, tuple)):
        if len(x) != n:
            raise UnsupportedConfigError(f"UNet config: {field}={list(x)} must have one entry per block ({n})")
        return tuple(kind(v) for v in x)
    return (kind(x),) * n


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """diffusers ``UNet2DConditionModel`` config (field names as in its config.json)."""

    in_channels: int = 4
    out_channels: int = 4
    center_input_sample: bool = False
    flip_sin_to_cos: bool = True
    freq_shift: float = 0
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                         "CrossAttnDownBlock2D", "DownBlock2D")
    mid_block_type: str | None = "UNetMidBlock2DCrossAttn"
    up_block_types: tuple[str, ...] = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                       "CrossAttnUpBlock2D")
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int | tuple[int, ...] = 2
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    cross_attention_dim: int | tuple[int, ...] = 1280
    transformer_layers_per_block: int | tuple[int, ...] = 1
    attention_head_dim: int | tuple[int, ...] = 8
    num_attention_heads: int | tuple[int, ...] | None = None
    use_linear_projection: bool = False
    upcast_attention: bool = False
    resnet_out_scale_factor: float = 1.0
    conv_in_kernel: int = 3
    conv_out_kernel: int = 3
    only_cross_attention: bool = False
    mid_block_only_cross_attention: bool | None = None
    sample_size: Any = None
    addition_embed_type_num_heads: int = 64

    # --------------------------------------------------------------- derived per-block values
    @property
    def num_blocks(self) -> int:
        return len(self.block_out_channels)

    @property
    def heads(self) -> tuple[int, ...]:
        """Attention heads per down block (the #2011 quirk, see module docstring)."""
        h = self.num_attention_heads if self.num_attention_heads is not None else self.attention_head_dim
        return _tup(h, self.num_blocks, "num_attention_heads/attention_head_dim")

    @property
    def layers(self) -> tuple[int, ...]:
        return _tup(self.layers_per_block, self.num_blocks, "layers_per_block")

    @property
    def cross_dims(self) -> tuple[int, ...]:
        return _tup(self.cross_attention_dim, self.num_blocks, "cross_attention_dim")

    @property
    def transformer_layers(self) -> tuple[int, ...]:
        return _tup(self.transformer_layers_per_block, self.num_blocks, "transformer_layers_per_block")

    @property
    def time_embed_dim(self) -> int:
        return self.block_out_channels[0] * 4

    @property
    def num_upsamplers(self) -> int:
        return self.num_blocks - 1

    # --------------------------------------------------------------- HF conversion
    @classmethod
    def from_hf(cls, cfg: Mapping[str, Any]) -> "UNetConfig":
        """Build from a diffusers config dict; raise UnsupportedConfigError naming any field we
        do not implement."""
        kwargs = diffusers_config_kwargs(cls, cfg, _UNET_FIXED, "UNet config")
        c = cls(**kwargs)
        c.validate()
        return c

    def validate(self) -> None:
        n = self.num_blocks
        if len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise UnsupportedConfigError(
                f"UNet config: down_block_types ({len(self.down_block_types)}), up_block_types "
                f"({len(self.up_block_types)}) and block_out_channels ({n}) must have equal length")
        for t in self.down_block_types:
            if t not in DOWN_BLOCKS:
                raise UnsupportedConfigError(f"UNet config: down_block_types entry {t!r} is not supported "
                                             f"(supported: {DOWN_BLOCKS})")
        for t in self.up_block_types:
            if t not in UP_BLOCKS:
                raise UnsupportedConfigError(f"UNet config: up_block_types entry {t!r} is not supported "
                                             f"(supported: {UP_BLOCKS})")
        if self.mid_block_type not in MID_BLOCKS:
            raise UnsupportedConfigError(f"UNet config: mid_block_type={self.mid_block_type!r} is not supported")
        oca = self.only_cross_attention
        if (oca if isinstance(oca, bool) else any(oca)):
            raise UnsupportedConfigError(f"UNet config: only_cross_attention={oca!r} is not supported (only False)")
        if self.mid_block_only_cross_attention:
            raise UnsupportedConfigError(
                f"UNet config: mid_block_only_cross_attention={self.mid_block_only_cross_attention!r} "
                "is not supported")
        if self.norm_num_groups is None:
            raise UnsupportedConfigError("UNet config: norm_num_groups=None is not supported")
        for k in ("conv_in_kernel", "conv_out_kernel"):
            if getattr(self, k) % 2 != 1:
                raise UnsupportedConfigError(f"UNet config: {k}={getattr(self, k)} must be odd")
        if any(isinstance(t, tuple) for t in
               (self.transformer_layers_per_block if isinstance(self.transformer_layers_per_block, tuple) else ())):
            raise UnsupportedConfigError(
                f"UNet config: nested transformer_layers_per_block={self.transformer_layers_per_block!r} "
                "is not supported")
        heads, cross = self.heads, self.cross_dims
        _ = (self.layers, self.transformer_layers)  # length checks
        if len(set(cross)) != 1:
            raise UnsupportedConfigError(
                f"UNet config: cross_attention_dim={self.cross_attention_dim!r} with different values per block "
                "is not supported (one text encoder width for all blocks)")
        for i, (c, h) in enumerate(zip(self.block_out_channels, heads)):
            if c % h:
                raise UnsupportedConfigError(
                    f"UNet config: block_out_channels[{i}]={c} is not divisible by {h} attention heads")
            if c % self.norm_num_groups:
                raise UnsupportedConfigError(
                    f"UNet config: block_out_channels[{i}]={c} is not divisible by norm_num_groups="
                    f"{self.norm_num_groups}")

    def to_hf(self) -> dict[str, Any]:
        """diffusers config dict (without ``_class_name``/``_diffusers_version``).

        Heads are written as ``attention_head_dim`` with ``num_attention_heads=None``, the only
        spelling diffusers' UNet2DConditionModel accepts.
        """
        d = dataclasses.asdict(self)
        d["attention_head_dim"] = list(self.heads)
        d["num_attention_heads"] = None
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        d.update({k: v for k, v in _UNET_FIXED.items()})
        return d


# ----------------------------------------------------------------------------- blocks


class CrossAttnDownBlock2D(nn.Module):
    """resnets.i + attentions.i (Transformer2DModel) pairs, optional downsamplers.0.

    Returns (hidden [B, H', W', C], skip states tuple)."""

    out_channels: int
    num_layers: int
    heads: int
    transformer_layers: int
    add_downsample: bool
    has_attention: bool
    norm_num_groups: int
    norm_eps: float
    downsample_padding: int = 1
    use_linear_projection: bool = False
    upcast_attention: bool = False
    output_scale_factor: float = 1.0
    attention_impl: str = DEFAULT_ATTENTION
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, temb, context):
        d, pd = self.dtype, self.param_dtype
        skips = []
        for i in range(self.num_layers):
            x = ResnetBlock2D(out_channels=self.out_channels, groups=self.norm_num_groups, eps=self.norm_eps,
                              has_temb=True, output_scale_factor=self.output_scale_factor, dtype=d, param_dtype=pd,
                              name=f"resnets.{i}")(x, temb)
            if self.has_attention:
                x = Transformer2DModel(heads=self.heads, dim_head=self.out_channels // self.heads,
                                       num_layers=self.transformer_layers, norm_num_groups=self.norm_num_groups,
                                       use_linear_projection=self.use_linear_projection,
                                       upcast_attention=self.upcast_attention, attention_impl=self.attention_impl,
                                       dtype=d, param_dtype=pd, name=f"attentions.{i}")(x, context)
            skips.append(x)
        if self.add_downsample:
            x = Downsample2D(out_channels=self.out_channels, padding=self.downsample_padding, dtype=d, param_dtype=pd,
                             name="downsamplers.0")(x)
            skips.append(x)
        return x, tuple(skips)


class CrossAttnUpBlock2D(nn.Module):
    """Consumes one skip state per resnet (concatenated on channels), optional upsamplers.0."""

    out_channels: int
    num_layers: int
    heads: int
    transformer_layers: int
    add_upsample: bool
    has_attention: bool
    norm_num_groups: int
    norm_eps: float
    use_linear_projection: bool = False
    upcast_attention: bool = False
    output_scale_factor: float = 1.0
    attention_impl: str = DEFAULT_ATTENTION
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, skips, temb, context):
        d, pd = self.dtype, self.param_dtype
        skips = list(skips)
        for i in range(self.num_layers):
            x = jnp.concatenate([x, skips.pop()], axis=-1)
            x = ResnetBlock2D(out_channels=self.out_channels, groups=self.norm_num_groups, eps=self.norm_eps,
                              has_temb=True, output_scale_factor=self.output_scale_factor, dtype=d, param_dtype=pd,
                              name=f"resnets.{i}")(x, temb)
            if self.has_attention:
                x = Transformer2DModel(heads=self.heads, dim_head=self.out_channels // self.heads,
                                       num_layers=self.transformer_layers, norm_num_groups=self.norm_num_groups,
                                       use_linear_projection=self.use_linear_projection,
                                       upcast_attention=self.upcast_attention, attention_impl=self.attention_impl,
                                       dtype=d, param_dtype=pd, name=f"attentions.{i}")(x, context)
        if self.add_upsample:
            x = Upsample2D(out_channels=self.out_channels, dtype=d, param_dtype=pd, name="upsamplers.0")(x)
        return x


class UNetMidBlock2DCrossAttn(nn.Module):
    """resnets.0 -> (attentions.i -> resnets.i+1) for i < num_layers (1 in SD)."""

    heads: int
    transformer_layers: int
    norm_num_groups: int
    norm_eps: float
    num_layers: int = 1
    use_linear_projection: bool = False
    upcast_attention: bool = False
    output_scale_factor: float = 1.0
    attention_impl: str = DEFAULT_ATTENTION
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, temb, context):
        d, pd = self.dtype, self.param_dtype
        c = x.shape[-1]
        x = ResnetBlock2D(out_channels=c, groups=self.norm_num_groups, eps=self.norm_eps, has_temb=True,
                          output_scale_factor=self.output_scale_factor, dtype=d, param_dtype=pd,
                          name="resnets.0")(x, temb)
        for i in range(self.num_layers):
            x = Transformer2DModel(heads=self.heads, dim_head=c // self.heads, num_layers=self.transformer_layers,
                                   norm_num_groups=self.norm_num_groups,
                                   use_linear_projection=self.use_linear_projection,
                                   upcast_attention=self.upcast_attention, attention_impl=self.attention_impl, dtype=d,
                                   param_dtype=pd, name=f"attentions.{i}")(x, context)
            x = ResnetBlock2D(out_channels=c, groups=self.norm_num_groups, eps=self.norm_eps, has_temb=True,
                              output_scale_factor=self.output_scale_factor, dtype=d, param_dtype=pd,
                              name=f"resnets.{i + 1}")(x, temb)
        return x


# ----------------------------------------------------------------------------- model


class UNet2DConditionModel(nn.Module):
    """Noise/velocity predictor eps_theta(z_t, t, c) of Stable Diffusion.

    Call: ``(sample [B, H, W, in_channels], timesteps [B] or scalar (int or float),
    encoder_hidden_states [B, L, cross_attention_dim]) -> [B, H, W, out_channels]`` in ``dtype``.
    H and W must be multiples of 2**(number of down blocks - 1).

    ``gradient_checkpointing`` rematerialises each down/mid/up block in the backward pass
    (memory for full-size LoRA training). ``attention_impl``: "auto" (default:
    "chunked" on CPU, "jax" on GPU/TPU), "chunked", "einsum" or "jax"
    (jax.nn.dot_product_attention); see layers.attention and layers.resolve_attention_impl.
    """

    config: UNetConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    gradient_checkpointing: bool = False
    attention_impl: str = DEFAULT_ATTENTION

    @nn.compact
    def __call__(self, sample, timesteps, encoder_hidden_states):
        cfg, d, pd = self.config, self.dtype, self.param_dtype
        if sample.ndim != 4 or sample.shape[-1] != cfg.in_channels:
            raise ValueError(f"sample must be [B, H, W, {cfg.in_channels}] (NHWC), got shape {sample.shape}")
        b, hh, ww, _ = sample.shape
        f = 2 ** cfg.num_upsamplers
        if hh % f or ww % f:
            raise ValueError(f"sample spatial size {hh}x{ww} must be a multiple of {f} for this UNet")
        if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[0] != b:
            raise ValueError(f"encoder_hidden_states must be [B={b}, L, D], got {encoder_hidden_states.shape}")
        timesteps = jnp.asarray(timesteps)
        if timesteps.ndim == 0:
            timesteps = jnp.broadcast_to(timesteps, (b,))
        elif timesteps.shape != (b,):
            raise ValueError(f"timesteps must be a scalar or [B={b}], got shape {timesteps.shape}")

        def block(cls):
            return nn.remat(cls) if self.gradient_checkpointing else cls

        t_emb = get_timestep_embedding(timesteps, cfg.block_out_channels[0], flip_sin_to_cos=cfg.flip_sin_to_cos,
                                       downscale_freq_shift=cfg.freq_shift).astype(d)
        emb = TimestepEmbedding(time_embed_dim=cfg.time_embed_dim, dtype=d, param_dtype=pd,
                                name="time_embedding")(t_emb)
        context = encoder_hidden_states.astype(d)

        x = sample.astype(d)
        if cfg.center_input_sample:
            x = 2 * x - 1.0
        x = conv(cfg.block_out_channels[0], cfg.conv_in_kernel, "conv_in", d, pd)(x)

        heads, layers, tl = cfg.heads, cfg.layers, cfg.transformer_layers
        common = dict(norm_num_groups=cfg.norm_num_groups, norm_eps=cfg.norm_eps,
                      use_linear_projection=cfg.use_linear_projection, upcast_attention=cfg.upcast_attention,
                      attention_impl=self.attention_impl, dtype=d, param_dtype=pd)
        skips = [x]
        n = cfg.num_blocks
        for i, btype in enumerate(cfg.down_block_types):
            x, s = block(CrossAttnDownBlock2D)(
                out_channels=cfg.block_out_channels[i], num_layers=layers[i], heads=heads[i],
                transformer_layers=tl[i], add_downsample=i < n - 1, has_attention=btype == "CrossAttnDownBlock2D",
                downsample_padding=cfg.downsample_padding, output_scale_factor=cfg.resnet_out_scale_factor,
                name=f"down_blocks.{i}", **common)(x, emb, context)
            skips.extend(s)

        if cfg.mid_block_type == "UNetMidBlock2DCrossAttn":
            x = block(UNetMidBlock2DCrossAttn)(
                heads=heads[-1], transformer_layers=tl[-1], output_scale_factor=cfg.mid_block_scale_factor,
                name="mid_block", **common)(x, emb, context)

        rev_ch = cfg.block_out_channels[::-1]
        rev_heads, rev_layers, rev_tl = heads[::-1], layers[::-1], tl[::-1]
        for i, btype in enumerate(cfg.up_block_types):
            nl = rev_layers[i] + 1
            s, skips = skips[-nl:], skips[:-nl]
            x = block(CrossAttnUpBlock2D)(
                out_channels=rev_ch[i], num_layers=nl, heads=rev_heads[i], transformer_layers=rev_tl[i],
                add_upsample=i < n - 1, has_attention=btype == "CrossAttnUpBlock2D",
                output_scale_factor=cfg.resnet_out_scale_factor, name=f"up_blocks.{i}", **common)(
                    x, tuple(s), emb, context)

        x = group_norm(cfg.norm_num_groups, cfg.norm_eps, "conv_norm_out", d, pd)(x)
        x = silu(x)
        return conv(cfg.out_channels, cfg.conv_out_kernel, "conv_out", d, pd)(x)

    def dummy_inputs(self, batch: int = 1):
        """Smallest valid inputs, for ``jax.eval_shape(module.init, ...)``. NumPy, not jnp: creating
        jnp arrays compiles small XLA programs, which cost more than loading a tiny checkpoint."""
        cfg = self.config
        s = 2 ** cfg.num_upsamplers
        dt = np.dtype(jnp.dtype(self.dtype))
        return (np.zeros((batch, s, s, cfg.in_channels), dt), np.zeros((batch,), np.int32),
                np.zeros((batch, 1, cfg.cross_dims[0]), dt))
