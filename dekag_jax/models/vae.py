"""Stable-Diffusion VAE (diffusers ``AutoencoderKL``) in flax.linen, NHWC.

Parameter paths equal diffusers module paths (``encoder/down_blocks.0/resnets.1/conv1/kernel``,
``decoder/mid_block/attentions.0/to_q/kernel``). Legacy checkpoints name the mid-block attention
``query/key/value/proj_attn``; ``dekag_jax.weights.sd`` renames those on load.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn

from dekag_jax.errors import UnsupportedConfigError, diffusers_config_kwargs
from dekag_jax.models.layers import (Downsample2D, ResnetBlock2D, Upsample2D, VAEAttention, conv, group_norm,
                                     silu)

Dtype = Any

_VAE_FIXED = {"act_fn": "silu", "norm_type": "group"}


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """diffusers ``AutoencoderKL`` config (field names as in its config.json)."""

    in_channels: int = 3
    out_channels: int = 3
    down_block_types: tuple[str, ...] = ("DownEncoderBlock2D",)
    up_block_types: tuple[str, ...] = ("UpDecoderBlock2D",)
    block_out_channels: tuple[int, ...] = (64,)
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 32
    scaling_factor: float = 0.18215
    shift_factor: float | None = None
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True
    sample_size: Any = 32
    force_upcast: bool = True
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None

    @classmethod
    def from_hf(cls, cfg: Mapping[str, Any]) -> "VAEConfig":
        """Build from a diffusers config dict; raise UnsupportedConfigError naming any field we
        do not implement."""
        kwargs = diffusers_config_kwargs(cls, cfg, _VAE_FIXED, "VAE config")
        c = cls(**kwargs)
        c.validate()
        return c

    def validate(self) -> None:
        n = len(self.block_out_channels)
        for field, want in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
            types = getattr(self, field)
            if len(types) != n:
                raise UnsupportedConfigError(f"VAE config: {field} has {len(types)} entries, block_out_channels {n}")
            for t in types:
                if t != want:
                    raise UnsupportedConfigError(f"VAE config: {field} entry {t!r} is not supported (only {want!r})")
        if not isinstance(self.layers_per_block, int):
            raise UnsupportedConfigError(f"VAE config: layers_per_block={self.layers_per_block!r} must be an int")
        for i, c in enumerate(self.block_out_channels):
            if c % self.norm_num_groups:
                raise UnsupportedConfigError(f"VAE config: block_out_channels[{i}]={c} is not divisible by "
                                             f"norm_num_groups={self.norm_num_groups}")

    def to_hf(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        d["act_fn"] = "silu"
        return d


class UNetMidBlock2D(nn.Module):
    """diffusers ``UNetMidBlock2D`` as used in the VAE: resnets.0 -> attentions.0 -> resnets.1 (no temb)."""

    norm_num_groups: int
    add_attention: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        d, pd = self.dtype, self.param_dtype
        c = x.shape[-1]
        x = ResnetBlock2D(out_channels=c, groups=self.norm_num_groups, eps=1e-6, has_temb=False,
                          output_scale_factor=1.0, dtype=d, param_dtype=pd, name="resnets.0")(x)
        if self.add_attention:
            x = VAEAttention(attention_head_dim=c, norm_num_groups=self.norm_num_groups, eps=1e-6, dtype=d,
                             param_dtype=pd, name="attentions.0")(x)
        return ResnetBlock2D(out_channels=c, groups=self.norm_num_groups, eps=1e-6, has_temb=False,
                             output_scale_factor=1.0, dtype=d, param_dtype=pd, name="resnets.1")(x)


class DownEncoderBlock2D(nn.Module):
    out_channels: int
    num_layers: int
    add_downsample: bool
    norm_num_groups: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        for i in range(self.num_layers):
            x = ResnetBlock2D(out_channels=self.out_channels, groups=self.norm_num_groups, eps=1e-6, has_temb=False,
                              output_scale_factor=1.0, dtype=self.dtype, param_dtype=self.param_dtype,
                              name=f"resnets.{i}")(x)
        if self.add_downsample:
            x = Downsample2D(out_channels=self.out_channels, padding=0, dtype=self.dtype, param_dtype=self.param_dtype,
                             name="downsamplers.0")(x)
        return x


class UpDecoderBlock2D(nn.Module):
    out_channels: int
    num_layers: int
    add_upsample: bool
    norm_num_groups: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        for i in range(self.num_layers):
            x = ResnetBlock2D(out_channels=self.out_channels, groups=self.norm_num_groups, eps=1e-6, has_temb=False,
                              output_scale_factor=1.0, dtype=self.dtype, param_dtype=self.param_dtype,
                              name=f"resnets.{i}")(x)
        if self.add_upsample:
            x = Upsample2D(out_channels=self.out_channels, dtype=self.dtype, param_dtype=self.param_dtype,
                           name="upsamplers.0")(x)
        return x


class Encoder(nn.Module):
    """[B, H, W, in_channels] -> [B, H/f, W/f, 2*latent_channels] (mean and logvar moments)."""

    config: VAEConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        cfg, d, pd = self.config, self.dtype, self.param_dtype
        ch = cfg.block_out_channels
        x = conv(ch[0], 3, "conv_in", d, pd)(x)
        for i, c in enumerate(ch):
            x = DownEncoderBlock2D(out_channels=c, num_layers=cfg.layers_per_block, add_downsample=i < len(ch) - 1,
                                   norm_num_groups=cfg.norm_num_groups, dtype=d, param_dtype=pd,
                                   name=f"down_blocks.{i}")(x)
        x = UNetMidBlock2D(norm_num_groups=cfg.norm_num_groups, add_attention=cfg.mid_block_add_attention, dtype=d,
                           param_dtype=pd, name="mid_block")(x)
        x = silu(group_norm(cfg.norm_num_groups, 1e-6, "conv_norm_out", d, pd)(x))
        return conv(2 * cfg.latent_channels, 3, "conv_out", d, pd)(x)


class Decoder(nn.Module):
    """[B, h, w, latent_channels] -> [B, h*f, w*f, out_channels]."""

    config: VAEConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z):
        cfg, d, pd = self.config, self.dtype, self.param_dtype
        rev = cfg.block_out_channels[::-1]
        x = conv(rev[0], 3, "conv_in", d, pd)(z)
        x = UNetMidBlock2D(norm_num_groups=cfg.norm_num_groups, add_attention=cfg.mid_block_add_attention, dtype=d,
                           param_dtype=pd, name="mid_block")(x)
        for i, c in enumerate(rev):
            x = UpDecoderBlock2D(out_channels=c, num_layers=cfg.layers_per_block + 1, add_upsample=i < len(rev) - 1,
                                 norm_num_groups=cfg.norm_num_groups, dtype=d, param_dtype=pd, name=f"up_blocks.{i}")(x)
        x = silu(group_norm(cfg.norm_num_groups, 1e-6, "conv_norm_out", d, pd)(x))
        return conv(cfg.out_channels, 3, "conv_out", d, pd)(x)


class AutoencoderKL(nn.Module):
    """Stable-Diffusion KL autoencoder.

    ``encode(x [B, H, W, 3] in [-1, 1]) -> (mean, logvar)``, each [B, H/f, W/f, latent_channels]
    float32-or-dtype, logvar clipped to [-30, 20] (diffusers DiagonalGaussianDistribution).
    ``decode(z [B, h, w, latent_channels]) -> [B, h*f, w*f, 3]`` (unscaled latents: divide by
    ``scaling_factor`` (and add ``shift_factor``) before decoding, as pipelines do).
    ``__call__(x, rng)`` = encode, sample, decode (used for init).
    """

    config: VAEConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def scaling_factor(self) -> float:
        return self.config.scaling_factor

    @property
    def shift_factor(self) -> float | None:
        return self.config.shift_factor

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.config.block_out_channels) - 1)

    def setup(self):
        cfg, d, pd = self.config, self.dtype, self.param_dtype
        self.encoder = Encoder(config=cfg, dtype=d, param_dtype=pd)
        self.decoder = Decoder(config=cfg, dtype=d, param_dtype=pd)
        lc = cfg.latent_channels
        if cfg.use_quant_conv:
            self.quant_conv = conv(2 * lc, 1, None, d, pd)
        if cfg.use_post_quant_conv:
            self.post_quant_conv = conv(lc, 1, None, d, pd)

    def encode(self, x):
        cfg = self.config
        if x.ndim != 4 or x.shape[-1] != cfg.in_channels:
            raise ValueError(f"VAE.encode expects [B, H, W, {cfg.in_channels}] (NHWC), got shape {x.shape}")
        f = self.downsample_factor
        if x.shape[1] % f or x.shape[2] % f:
            raise ValueError(f"VAE.encode: image size {x.shape[1]}x{x.shape[2]} must be a multiple of {f}")
        h = self.encoder(x.astype(self.dtype))
        if cfg.use_quant_conv:
            h = self.quant_conv(h)
        mean, logvar = jnp.split(h, 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def decode(self, z):
        cfg = self.config
        if z.ndim != 4 or z.shape[-1] != cfg.latent_channels:
            raise ValueError(f"VAE.decode expects [B, h, w, {cfg.latent_channels}] (NHWC), got shape {z.shape}")
        z = z.astype(self.dtype)
        if cfg.use_post_quant_conv:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def __call__(self, x, rng):
        mean, logvar = self.encode(x)
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)
        return self.decode(z)

    def dummy_inputs(self, batch: int = 1):
        """Smallest valid inputs (NumPy, see UNet2DConditionModel.dummy_inputs); the second is raw
        uint32[2] key data for the posterior sample."""
        f = self.downsample_factor
        return (np.zeros((batch, f, f, self.config.in_channels), np.dtype(jnp.dtype(self.dtype))),
                np.zeros((2,), np.uint32))
