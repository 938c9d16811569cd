"""The variable-rate JSCC codec of DeKA-g (paper Sec. II-B, V-B), flax.linen, NHWC.

What is here and what is not
    ``JSCCCodec`` holds the two trainable parts of the codec Theta_J that are not shared with
    the generation module: the JSCC encoder f_JE and the latent reconstructor of the JSCC decoder
    f_JD. The latent decoder f_LD (the rest of f_JD) *is* the edge VAE's decoder, which the paper
    reuses "for implementation efficiency" (Sec. V-B); it is not a submodule here. The
    composition encoder -> truncation -> power normalisation -> QAM -> OFDM -> equalisation ->
    padding -> reconstructor -> VAE decoder lives in :mod:`dekag_jax.ka.transmission`, because a
    model does not import the channel.

Architecture (Sec. V-B: "the same hierarchical architecture as the latent encoder and decoder
in [2] except that only one downsampling layer is used")
    f_JE ("jscc_encoder"):  z [B, h, w, 4] -> conv_in -> down_blocks.0 (ResnetBlock2D x
    layers_per_block) -> mid_block (resnet, single-head attention, resnet) -> GroupNorm, SiLU ->
    conv_out -> code [B, h, w, 12]: the SD-VAE encoder's modules, names and layout.
    Latent reconstructor ("latent_reconstructor"): code [B, h, w, 12] -> conv_in -> mid_block ->
    up_blocks.0 (ResnetBlock2D x (layers_per_block + 1)) -> GroupNorm, SiLU -> conv_out ->
    z_check [B, h, w, 4]: the SD-VAE decoder's modules.

    Our reading of "only one downsampling layer": the paper also states that the intermediate is
    64 x 64 x 12 for a 64 x 64 x 4 latent and that truncation to 128 tau channels gives
    K = 512 * 512 * tau symbols; these three statements agree with each other only if the code
    keeps the latent's spatial size. A stride-2 layer would give 32 x 32 and K = X tau / 4. So we
    read it as one level of the hierarchy (one "down block"; in diffusers' Encoder the last down
    block has no stride-2 downsampler), which keeps h x w; ``block_out_channels`` with more
    entries (diffusers semantics: len - 1 stride-2 layers) is refused, because it would break
    K = X tau.

Variable rate by truncation and padding (Sec. V-B)
    tau = n / 64 symbols per pixel, n in {1..6}. The code's 12 = 2 * 6 channels are truncated to
    the first 128 tau = 2n; of those, the first n channels are real parts and the last n are
    imaginary parts (the paper's "first and last 64 tau channels"), so the code gives
    K = h * w * n complex symbols. With the SD-VAE's f = 8 (X = 64 h w pixels) that is
    K = X tau: 512 x 512 images, K = 512^2 tau (paper); the tiny world's 64 x 64 images (8 x 8 x 4
    latents), K = 64 n = 64, 128, ..., 384 symbols, i.e. 1, 2, 2, 3, 3, 4 OFDM slots of J = 120
    sub-channels. Symbol k of a sample is (row, column, channel) in C order: all n symbols of a
    latent cell are adjacent. The receiver concatenates real and imaginary parts and zero-pads
    back to 12 channels.

Parameter counts (``scripts/jscc_counts.py`` prints them; tests check the paper-size figure)
    Paper size (``JSCCConfig.paper()``, latents 64 x 64 x 4, width 84): f_JE 0.424 M + latent
    reconstructor 0.551 M = 0.975 M; SD's VAE decoder (with post_quant_conv) 49.490 M; in all
    50.465 M. The paper says the codec has "approximately 50.5 million parameters": we read that
    as the shared latent decoder plus about 1 M for f_JE and the reconstructor, and chose the
    width (84, GroupNorm 12 groups) to match; the paper gives no width (its VAE, encoder included,
    is 83.654 M). Tiny (``JSCCConfig.tiny()``, 8 x 8 x 4 latents, width 64): f_JE 0.249 M +
    reconstructor 0.323 M, beside the shipped tiny VAE decoder's 0.608 M (1.179 M in all).

Dtypes: parameters ``param_dtype`` (float32 default), computation ``dtype``; normalisation and
attention softmax in float32 (as ``layers``). Inputs may be any float dtype.
"""
from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from dekag_jax.models.layers import conv, group_norm, silu
from dekag_jax.models.vae import DownEncoderBlock2D, UNetMidBlock2D, UpDecoderBlock2D

Dtype = Any

__all__ = ["JSCCConfig", "JSCCEncoder", "LatentReconstructor", "JSCCCodec", "RATE_DENOMINATOR", "MAX_RATE_UNITS",
           "rate_units", "num_symbols", "truncate_to_symbols", "pad_from_symbols", "init_codec"]

RATE_DENOMINATOR = 64   # tau = n / 64 symbols per pixel (Sec. V-B)
MAX_RATE_UNITS = 6      # n <= 6: the 12-channel code holds at most 6 complex channels


@dataclasses.dataclass(frozen=True)
class JSCCConfig:
    """Static codec configuration (hashable).

    Attributes:
      latent_channels: C of the diffusion latents z [B, h, w, C] (4 for SD).
      code_channels: channels of the intermediate code, 2 * max rate units (12: tau <= 6/64).
      block_out_channels: width of the single hierarchy level (one entry; see module doc).
      layers_per_block: ResnetBlock2D count in the encoder's down block (the reconstructor's up
        block has one more, as in the SD-VAE decoder).
      norm_num_groups: GroupNorm groups.
      mid_block_add_attention: single-head self-attention over the h * w cells in both mid blocks.
    """
    latent_channels: int = 4
    code_channels: int = 2 * MAX_RATE_UNITS
    block_out_channels: tuple = (64,)
    layers_per_block: int = 1
    norm_num_groups: int = 16
    mid_block_add_attention: bool = True

    def __post_init__(self):
        object.__setattr__(self, "block_out_channels", tuple(int(c) for c in self.block_out_channels))
        if len(self.block_out_channels) != 1:
            raise ValueError(f"JSCCConfig: block_out_channels={self.block_out_channels} must have exactly one entry "
                             "(one hierarchy level keeps the latent's h x w, so that K = X * tau; see module doc)")
        c = self.block_out_channels[0]
        if c % self.norm_num_groups:
            raise ValueError(f"JSCCConfig: width {c} is not divisible by norm_num_groups={self.norm_num_groups}")
        if self.code_channels < 2 or self.code_channels % 2:
            raise ValueError(f"JSCCConfig: code_channels={self.code_channels} must be even and >= 2 "
                             "(first half real, second half imaginary)")
        if self.layers_per_block < 1:
            raise ValueError(f"JSCCConfig: layers_per_block={self.layers_per_block} must be >= 1")

    @property
    def max_rate_units(self) -> int:
        return self.code_channels // 2

    @classmethod
    def paper(cls) -> "JSCCConfig":
        """Sized so that f_JE + reconstructor is about 1 M parameters (50.5 M with SD's decoder)."""
        return cls(block_out_channels=(84,), layers_per_block=1, norm_num_groups=12)

    @classmethod
    def tiny(cls) -> "JSCCConfig":
        """For the tiny world's 8 x 8 x 4 latents (GroupNorm groups as its VAE: 16)."""
        return cls(block_out_channels=(64,), layers_per_block=1, norm_num_groups=16)

    @classmethod
    def named(cls, name: str) -> "JSCCConfig":
        if name == "paper":
            return cls.paper()
        if name == "tiny":
            return cls.tiny()
        raise ValueError(f"unknown JSCC codec size {name!r}; expected 'paper' or 'tiny'")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["block_out_channels"] = list(self.block_out_channels)
        return d


# ----------------------------------------------------------------------------- rate helpers


def rate_units(rate, max_units: int = MAX_RATE_UNITS) -> int:
    """tau -> n = 64 tau in {1..max_units}. Accepts a Fraction, float, "2/64"-style string, or an
    object with a ``rate`` attribute (a channel ``Condition``). Raises ValueError with one line
    naming the value otherwise (an int such as 2 means 2 symbols per pixel and is refused)."""
    r = getattr(rate, "rate", rate)
    try:
        f = Fraction(r) if isinstance(r, (str, Fraction, int)) else Fraction(float(r)).limit_denominator(1 << 20)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        raise ValueError(f"rate {rate!r} is not a number of symbols per pixel such as 2/64") from None
    n = f * RATE_DENOMINATOR
    if n.denominator != 1 or not 1 <= n.numerator <= max_units:
        allowed = ", ".join(f"{i}/{RATE_DENOMINATOR}" for i in range(1, max_units + 1))
        hint = f"; did you mean {r}/{RATE_DENOMINATOR}?" if isinstance(r, int) and 1 <= r <= max_units else ""
        raise ValueError(f"rate {r} symbols per pixel is not one of {{{allowed}}}{hint}")
    return int(n.numerator)


def num_symbols(latent_hw: tuple[int, int], rate, max_units: int = MAX_RATE_UNITS) -> int:
    """K = h * w * 64 tau complex symbols per latent (= X tau for an f = 8 VAE)."""
    h, w = latent_hw
    return int(h) * int(w) * rate_units(rate, max_units)


def truncate_to_symbols(code: jax.Array, rate) -> jax.Array:
    """Sec. V-B truncation: real code [..., h, w, 2 n_max] -> complex symbols [..., K].

    Keeps the first 2n channels (n = 64 tau); channels [0, n) are real parts, [n, 2n) imaginary
    parts; K = h * w * n in (row, column, channel) order. float32 -> complex64 (float64 ->
    complex128). ``rate`` is static (one compile per rate).
    """
    code = jnp.asarray(code)
    if code.ndim < 3 or code.shape[-1] < 2 or code.shape[-1] % 2:
        raise ValueError(f"truncate_to_symbols: code must be [..., h, w, 2*n_max] real, got {code.shape}")
    n = rate_units(rate, code.shape[-1] // 2)
    if not jnp.issubdtype(code.dtype, jnp.floating):
        raise TypeError(f"truncate_to_symbols: code must be real floating, got {code.dtype}")
    if code.dtype not in (jnp.float32, jnp.float64):
        code = code.astype(jnp.float32)
    re, im = code[..., :n], code[..., n:2 * n]
    lead = code.shape[:-3]
    return jax.lax.complex(re, im).reshape(lead + (-1,))


def pad_from_symbols(symbols: jax.Array, latent_hw: tuple[int, int], code_channels: int) -> jax.Array:
    """Receiver side of Sec. V-B: complex [..., K] -> real [..., h, w, code_channels].

    K must be h * w * n; the result is concat(real, imag) over n channels each, zero-padded to
    ``code_channels``. complex64 -> float32.
    """
    symbols = jnp.asarray(symbols)
    if not jnp.issubdtype(symbols.dtype, jnp.complexfloating):
        raise TypeError(f"pad_from_symbols: symbols must be complex, got {symbols.dtype}")
    h, w = (int(v) for v in latent_hw)
    K = symbols.shape[-1]
    if K % (h * w):
        raise ValueError(f"pad_from_symbols: K={K} is not a multiple of h*w={h * w}")
    n = K // (h * w)
    if 2 * n > code_channels:
        raise ValueError(f"pad_from_symbols: {n} complex channels do not fit in {code_channels} code channels")
    s = symbols.reshape(symbols.shape[:-1] + (h, w, n))
    x = jnp.concatenate([jnp.real(s), jnp.imag(s)], axis=-1)
    pad = [(0, 0)] * (x.ndim - 1) + [(0, code_channels - 2 * n)]
    return jnp.pad(x, pad)


# ----------------------------------------------------------------------------- modules


class JSCCEncoder(nn.Module):
    """f_JE: latents z [B, h, w, latent_channels] -> real code [B, h, w, code_channels]."""

    config: JSCCConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z):
        cfg, d, pd = self.config, self.dtype, self.param_dtype
        c, g = cfg.block_out_channels[0], cfg.norm_num_groups
        x = conv(c, 3, "conv_in", d, pd)(z.astype(d))
        # The single level of the SD-VAE hierarchy, without its stride-2 layer (see module docstring).
        x = DownEncoderBlock2D(out_channels=c, num_layers=cfg.layers_per_block, add_downsample=False,
                               norm_num_groups=g, dtype=d, param_dtype=pd, name="down_blocks.0")(x)
        x = UNetMidBlock2D(norm_num_groups=g, add_attention=cfg.mid_block_add_attention, dtype=d, param_dtype=pd,
                           name="mid_block")(x)
        x = silu(group_norm(g, 1e-6, "conv_norm_out", d, pd)(x))
        return conv(cfg.code_channels, 3, "conv_out", d, pd)(x)


class LatentReconstructor(nn.Module):
    """Latent reconstructor of f_JD: padded code [B, h, w, code_channels] -> z_check [B, h, w, latent_channels]."""

    config: JSCCConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, code):
        cfg, d, pd = self.config, self.dtype, self.param_dtype
        c, g = cfg.block_out_channels[0], cfg.norm_num_groups
        x = conv(c, 3, "conv_in", d, pd)(code.astype(d))
        x = UNetMidBlock2D(norm_num_groups=g, add_attention=cfg.mid_block_add_attention, dtype=d, param_dtype=pd,
                           name="mid_block")(x)
        x = UpDecoderBlock2D(out_channels=c, num_layers=cfg.layers_per_block + 1, add_upsample=False,
                             norm_num_groups=g, dtype=d, param_dtype=pd, name="up_blocks.0")(x)
        x = silu(group_norm(g, 1e-6, "conv_norm_out", d, pd)(x))
        return conv(cfg.latent_channels, 3, "conv_out", d, pd)(x)


class JSCCCodec(nn.Module):
    """f_JE and the latent reconstructor; parameters under ``jscc_encoder/...`` and
    ``latent_reconstructor/...`` (e.g. ``jscc_encoder/mid_block/attentions.0/to_q/kernel``).

    ``encode(z [B, h, w, C]) -> code [B, h, w, code_channels]`` (real, before truncation and power
    normalisation); ``reconstruct(code [B, h, w, code_channels]) -> z_check [B, h, w, C]``;
    ``__call__(z)`` = reconstruct(encode(z)) at full rate without a channel (used for init).
    """

    config: JSCCConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        self.jscc_encoder = JSCCEncoder(config=self.config, dtype=self.dtype, param_dtype=self.param_dtype)
        self.latent_reconstructor = LatentReconstructor(config=self.config, dtype=self.dtype,
                                                        param_dtype=self.param_dtype)

    def encode(self, z):
        c = self.config.latent_channels
        if z.ndim != 4 or z.shape[-1] != c:
            raise ValueError(f"JSCC encoder expects latents [B, h, w, {c}] (NHWC), got shape {z.shape}")
        return self.jscc_encoder(z)

    def reconstruct(self, code):
        c = self.config.code_channels
        if code.ndim != 4 or code.shape[-1] != c:
            raise ValueError(f"latent reconstructor expects a padded code [B, h, w, {c}], got shape {code.shape}")
        return self.latent_reconstructor(code)

    def __call__(self, z):
        return self.reconstruct(self.encode(z))


def init_codec(config: JSCCConfig, key: jax.Array, latent_hw: tuple[int, int] = (8, 8)) -> tuple[JSCCCodec, Any]:
    """(module, params) with params the inner ``{"jscc_encoder": ..., "latent_reconstructor": ...}`` dict."""
    codec = JSCCCodec(config=config)
    z = jnp.zeros((1, *latent_hw, config.latent_channels), jnp.float32)
    return codec, codec.init(key, z)["params"]

