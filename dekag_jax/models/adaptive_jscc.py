"""Rate-adaptive JSCC codecs compared in the paper's Fig. 10: RC-JSCC [55] and VJ-MAE [56] (flax.linen, NHWC).

Both use the DeKA-g codec's variable-rate code (``models.jscc``: a real code [B, h, w, 12] whose
first 2n channels carry n = 64 tau complex channels, K = h w n = X tau symbols) and the same shared
latent decoder f_LD (the edge VAE's decoder, passed in, not copied). They differ from JSCC(MT/AT)
in *who chooses tau*: their own rate policy instead of the condition. The composition with the
link (truncation, power normalisation, QAM, OFDM, padding) lives in ``ka.adaptive`` (models import
no channel code).

Rate groups (both codecs; our mapping onto tau in {1..6}/64)
    One *group* is one complex code channel, i.e. h w symbols = X / 64 symbols (tau step 1/64).
    ``base_units`` = n_base groups are always sent (default 2: tau >= 2/64, the smallest rate of
    Phi_EU) and G = 6 - n_base groups are selectable, so a choice of k selectable groups is
    tau = (n_base + k) / 64 and bpp = 6 tau (64-QAM) is directly comparable with JSCC(MT/AT). The
    channels of group g (g = 1..G) are code channels 2(n_base+g-1) and 2(n_base+g-1)+1: the set of
    channels sent at n groups is exactly the first 2n, the same nesting as the truncation of
    Sec. V-B. Every tensor below is ``[B, ...]``; ``k`` / ``n`` are int32 ``[B]``.

RC-JSCC [55] (Yang & Kim, ICASSP 2022), reimplemented from the description only
    * SNR-conditioned feature modulation: after the encoder's blocks (down block + mid block) and
      after the reconstructor's input conv, an ``snr_modulation`` module scales every feature
      channel by 2 sigmoid(MLP([global-average-pooled features, gamma / 20 dB])): the
      attention-feature module reading of "SNR-adaptive". 2 sigmoid(.) so a zero MLP output is the
      identity. Parameter paths ``jscc_encoder/snr_modulation/...`` and
      ``latent_reconstructor/snr_modulation/...`` (the modulation belongs to each network).
    * The policy network ``policy/...``: MLP([pooled encoder features, gamma / 20 dB]) -> G + 1
      logits over k = 0..G selectable groups. Training: Gumbel-softmax with a straight-through
      hard one-hot (forward exactly k groups, backward the relaxed probabilities), temperature
      annealed by the caller; inference: argmax (deterministic, no noise). The one-hot becomes a
      *thermometer* mask over groups, m_g = sum_{k >= g} y_k (group g is sent iff k >= g).
    * Loss = eq. 4 distortion + lambda * (groups sent): ``ka.adaptive`` adds the rate term.
    * A *budget* (the condition's tau when the link offers at most tau, e.g. Phi_EU in T-KA)
      removes the choices above it before the softmax/argmax (``allowed_choices``).
    The reconstructor also takes gamma (the receiver knows its SNR, as MMSE equalisation does).

VJ-MAE [56] (Wang & Zhang, IEEE Commun. Lett. 2025; the paper is not in our references)
    Implemented from its stated principle, "the rate is chosen from the entropy of the latent to
    send"; every assumption:
    * Architecture: the JSCC(MT/AT) encoder and reconstructor unchanged (same parameter paths), so
      T-KA adapters attach to it exactly as to JSCC(MT).
    * Entropy estimate (``latent_entropy``): the empirical entropy (bits per element) of the
      latent to send, quantised with a fixed bin width (0.25 in the scaled latent's units, values
      clipped to +-4, 32 bins), over all h w C elements of that sample. A plug-in histogram
      estimate: no learned entropy model, no gradient (the rate depends on the input only).
    * Thresholds -> tau (``entropy_rate_units``): n = n_base + #{thresholds below H}. The G
      thresholds are the (1/(G+1), ..., G/(G+1)) quantiles of H over the pretraining corpus
      (``calibrate_thresholds``), so each rate is used for an equal share of generic images;
      they are stored in the codec's config (``VJMAEConfig.thresholds``).
    * "MAE" read as masked autoencoding over the code's channels: the channels beyond the chosen
      rate are masked (not sent) and the reconstructor fills them in from the sent ones. During
      pretraining, a share of samples gets a uniformly random rate instead of the entropy's
      (MAE's random masking), so the reconstructor handles every rate (``ka.adaptive``).
    * The policy ignores gamma and omega (entropy only); a budget caps it: n = min(n_H, n_budget).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn

from dekag_jax.models.jscc import JSCCCodec, JSCCConfig
from dekag_jax.models.layers import conv, dense, group_norm, silu
from dekag_jax.models.vae import DownEncoderBlock2D, UNetMidBlock2D, UpDecoderBlock2D

Dtype = Any

__all__ = ["RCJSCCConfig", "VJMAEConfig", "SNRModulation", "RCJSCCEncoder", "RCLatentReconstructor",
           "RatePolicy", "RCJSCCCodec", "VJMAECodec", "SNR_SCALE_DB", "snr_feature", "allowed_choices",
           "gumbel_choice", "greedy_choice", "thermometer", "channel_mask", "latent_entropy",
           "entropy_rate_units", "calibrate_thresholds", "codec_class", "init_adaptive_codec"]

SNR_SCALE_DB = 20.0   # gamma / 20 dB: Phi_EU's 0..20 dB -> [0, 1] (as CALA's phi_n)


def _check_base(cfg) -> None:
    if not 1 <= cfg.base_units <= cfg.max_rate_units:
        raise ValueError(f"{type(cfg).__name__}: base_units={cfg.base_units} must be in [1, {cfg.max_rate_units}]")


@dataclasses.dataclass(frozen=True)
class RCJSCCConfig(JSCCConfig):
    """JSCCConfig + RC-JSCC's fields: ``base_units`` always-sent groups, ``hidden`` width of the
    modulation and policy MLPs."""
    base_units: int = 2
    hidden: int = 64

    def __post_init__(self):
        super().__post_init__()
        _check_base(self)

    @property
    def num_choices(self) -> int:   # k = 0..G
        return self.max_rate_units - self.base_units + 1

    @classmethod
    def tiny(cls) -> "RCJSCCConfig":
        return cls(block_out_channels=(64,), layers_per_block=1, norm_num_groups=16)


@dataclasses.dataclass(frozen=True)
class VJMAEConfig(JSCCConfig):
    """JSCCConfig + VJ-MAE's entropy policy: ``base_units``, histogram ``entropy_bin`` and
    ``entropy_range`` (scaled-latent units), ``thresholds`` (G ascending entropies in bits; empty
    until calibrated, which sends every sample at n_base)."""
    base_units: int = 2
    entropy_bin: float = 0.25
    entropy_range: float = 4.0
    thresholds: tuple = ()

    def __post_init__(self):
        super().__post_init__()
        _check_base(self)
        th = tuple(float(t) for t in self.thresholds)
        object.__setattr__(self, "thresholds", th)
        g = self.max_rate_units - self.base_units
        if th and (len(th) != g or any(b < a for a, b in zip(th, th[1:]))):
            raise ValueError(f"VJMAEConfig: thresholds={th} must be {g} ascending entropies (one per selectable group)")
        if not (self.entropy_bin > 0 and self.entropy_range > self.entropy_bin):
            raise ValueError(f"VJMAEConfig: entropy_bin={self.entropy_bin}, entropy_range={self.entropy_range} "
                             "must satisfy 0 < bin < range")

    @classmethod
    def tiny(cls, thresholds=()) -> "VJMAEConfig":
        return cls(block_out_channels=(64,), layers_per_block=1, norm_num_groups=16, thresholds=tuple(thresholds))

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["thresholds"] = list(self.thresholds)
        return d


# ----------------------------------------------------------------------------- rate selection (pure)


def snr_feature(snr_db, batch: int) -> jax.Array:
    """gamma (dB, scalar or [B]) -> float32 [B] gamma / 20 dB."""
    return jnp.broadcast_to(jnp.asarray(snr_db, jnp.float32), (batch,)) / SNR_SCALE_DB


def allowed_choices(budget_units, base_units: int, num_choices: int, *, force: bool = False) -> jax.Array:
    """bool [B, G + 1]: which k = 0..G are allowed under a per-sample budget of n_budget = 64 tau
    units (int [B]): k <= n_budget - n_base, or (``force``) k == n_budget - n_base only. A budget
    below n_base allows k = 0 (the always-sent groups cannot be dropped)."""
    k = jnp.arange(num_choices)[None, :]
    top = jnp.clip(jnp.asarray(budget_units, jnp.int32) - base_units, 0, num_choices - 1)[:, None]
    return (k == top) if force else (k <= top)


def gumbel_choice(key, logits: jax.Array, temperature, *, hard: bool = True) -> jax.Array:
    """Gumbel-softmax over the last axis of ``logits`` [B, G + 1] -> y [B, G + 1] float32.

    ``hard``: straight-through, forward the one-hot of the sampled argmax, gradient of the relaxed
    softmax((logits + g) / temperature). Disallowed choices must carry a very negative logit."""
    logits = logits.astype(jnp.float32)
    g = jax.random.gumbel(key, logits.shape, jnp.float32)
    y = jax.nn.softmax((logits + g) / jnp.asarray(temperature, jnp.float32), axis=-1)
    if not hard:
        return y
    y_hard = jax.nn.one_hot(jnp.argmax(y, axis=-1), logits.shape[-1], dtype=jnp.float32)
    return y_hard + y - jax.lax.stop_gradient(y)


def greedy_choice(logits: jax.Array) -> jax.Array:
    """Deterministic inference: one-hot of argmax(logits) [B, G + 1] (no noise, no gradient)."""
    return jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=jnp.float32)


def thermometer(y: jax.Array) -> jax.Array:
    """One-hot (or relaxed) y over k = 0..G [B, G + 1] -> group mask m [B, G], m_g = sum_{k >= g} y_k."""
    return jnp.flip(jnp.cumsum(jnp.flip(y, -1), -1), -1)[..., 1:]


def channel_mask(group_mask: jax.Array, base_units: int, code_channels: int) -> jax.Array:
    """Group mask [B, G] -> code-channel mask [B, code_channels]: the first 2 n_base channels are 1,
    group g covers channels 2(n_base + g - 1) and 2(n_base + g - 1) + 1."""
    B = group_mask.shape[0]
    ones = jnp.ones((B, 2 * base_units), group_mask.dtype)
    m = jnp.concatenate([ones, jnp.repeat(group_mask, 2, axis=-1)], axis=-1)
    if m.shape[-1] != code_channels:
        raise ValueError(f"channel_mask: {m.shape[-1]} channels from the groups, code has {code_channels}")
    return m


def latent_entropy(z: jax.Array, bin_width: float = 0.25, value_range: float = 4.0) -> jax.Array:
    """Plug-in entropy (bits per element) of each sample's latent z [B, ...] quantised to bins of
    ``bin_width`` over [-range, range) (values outside are clipped into the edge bins): float32 [B]."""
    nb = int(round(2 * value_range / bin_width))
    flat = jnp.asarray(z, jnp.float32).reshape(z.shape[0], -1)
    idx = jnp.clip(jnp.floor((flat + value_range) / bin_width).astype(jnp.int32), 0, nb - 1)
    counts = jnp.sum(jax.nn.one_hot(idx, nb, dtype=jnp.float32), axis=1)             # [B, nb]
    p = counts / flat.shape[1]
    return -jnp.sum(jnp.where(p > 0, p * jnp.log2(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)


def entropy_rate_units(z: jax.Array, config: VJMAEConfig) -> jax.Array:
    """VJ-MAE's policy: n = n_base + #{thresholds < H(z)}, int32 [B] in [n_base, n_max]."""
    h = latent_entropy(z, config.entropy_bin, config.entropy_range)
    if not config.thresholds:
        return jnp.full(h.shape, config.base_units, jnp.int32)
    th = jnp.asarray(np.asarray(config.thresholds, np.float32))
    return (config.base_units + jnp.sum(h[:, None] > th[None, :], axis=-1)).astype(jnp.int32)


def calibrate_thresholds(z: np.ndarray, config: VJMAEConfig, batch: int = 256) -> tuple:
    """The G thresholds as the i/(G+1) quantiles (i = 1..G) of H over latents z [N, h, w, C]."""
    hs = np.concatenate([np.asarray(latent_entropy(jnp.asarray(z[i:i + batch]), config.entropy_bin,
                                                   config.entropy_range)) for i in range(0, len(z), batch)])
    g = config.max_rate_units - config.base_units
    return tuple(float(v) for v in np.quantile(hs, [(i + 1) / (g + 1) for i in range(g)]))


# ----------------------------------------------------------------------------- RC-JSCC modules


class SNRModulation(nn.Module):
    """x [B, h, w, C] * 2 sigmoid(fc2(relu(fc1([mean_hw(x), snr_n])))) per channel; snr_n [B] = gamma / 20 dB."""
    hidden: int = 64
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, snr_n):
        c = x.shape[-1]
        u = jnp.concatenate([jnp.mean(x.astype(jnp.float32), axis=(1, 2)), snr_n[:, None].astype(jnp.float32)], -1)
        u = nn.relu(dense(self.hidden, "fc1", self.dtype, self.param_dtype)(u.astype(self.dtype)))
        s = 2.0 * nn.sigmoid(dense(c, "fc2", self.dtype, self.param_dtype)(u).astype(jnp.float32))
        return x * s[:, None, None, :].astype(x.dtype)


class RCJSCCEncoder(nn.Module):
    """f_JE of RC-JSCC: (z [B, h, w, 4], snr_n [B]) -> (code [B, h, w, 12], pooled features [B, width])."""
    config: RCJSCCConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z, snr_n):
        cfg, d, pd = self.config, self.dtype, self.param_dtype
        c, g = cfg.block_out_channels[0], cfg.norm_num_groups
        x = conv(c, 3, "conv_in", d, pd)(z.astype(d))
        x = DownEncoderBlock2D(out_channels=c, num_layers=cfg.layers_per_block, add_downsample=False,
                               norm_num_groups=g, dtype=d, param_dtype=pd, name="down_blocks.0")(x)
        x = UNetMidBlock2D(norm_num_groups=g, add_attention=cfg.mid_block_add_attention, dtype=d, param_dtype=pd,
                           name="mid_block")(x)
        x = SNRModulation(hidden=cfg.hidden, dtype=d, param_dtype=pd, name="snr_modulation")(x, snr_n)
        pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        x = silu(group_norm(g, 1e-6, "conv_norm_out", d, pd)(x))
        return conv(cfg.code_channels, 3, "conv_out", d, pd)(x), pooled


class RCLatentReconstructor(nn.Module):
    """(padded code [B, h, w, 12], snr_n [B]) -> z_check [B, h, w, 4]."""
    config: RCJSCCConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, code, snr_n):
        cfg, d, pd = self.config, self.dtype, self.param_dtype
        c, g = cfg.block_out_channels[0], cfg.norm_num_groups
        x = conv(c, 3, "conv_in", d, pd)(code.astype(d))
        x = SNRModulation(hidden=cfg.hidden, dtype=d, param_dtype=pd, name="snr_modulation")(x, snr_n)
        x = UNetMidBlock2D(norm_num_groups=g, add_attention=cfg.mid_block_add_attention, dtype=d, param_dtype=pd,
                           name="mid_block")(x)
        x = UpDecoderBlock2D(out_channels=c, num_layers=cfg.layers_per_block + 1, add_upsample=False,
                             norm_num_groups=g, dtype=d, param_dtype=pd, name="up_blocks.0")(x)
        x = silu(group_norm(g, 1e-6, "conv_norm_out", d, pd)(x))
        return conv(cfg.latent_channels, 3, "conv_out", d, pd)(x)


class RatePolicy(nn.Module):
    """(pooled [B, width], snr_n [B]) -> logits [B, G + 1] over k = 0..G selectable groups."""
    num_choices: int
    hidden: int = 64
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, pooled, snr_n):
        u = jnp.concatenate([pooled.astype(jnp.float32), snr_n[:, None].astype(jnp.float32)], -1)
        u = nn.relu(dense(self.hidden, "fc1", self.dtype, self.param_dtype)(u.astype(self.dtype)))
        return dense(self.num_choices, "fc2", self.dtype, self.param_dtype)(u).astype(jnp.float32)


class RCJSCCCodec(nn.Module):
    """RC-JSCC: ``jscc_encoder/...``, ``latent_reconstructor/...``, ``policy/...``.

    ``encode(z, snr_db) -> (code, pooled)``; ``select(pooled, snr_db) -> logits [B, G+1]``;
    ``reconstruct(code, snr_db) -> z_check``; ``__call__(z, snr_db)`` runs all three at full rate
    without a channel (init). ``snr_db`` scalar or [B]."""
    config: RCJSCCConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        cfg = self.config
        self.jscc_encoder = RCJSCCEncoder(config=cfg, dtype=self.dtype, param_dtype=self.param_dtype)
        self.latent_reconstructor = RCLatentReconstructor(config=cfg, dtype=self.dtype, param_dtype=self.param_dtype)
        self.policy = RatePolicy(num_choices=cfg.num_choices, hidden=cfg.hidden, dtype=self.dtype,
                                 param_dtype=self.param_dtype)

    def encode(self, z, snr_db):
        c = self.config.latent_channels
        if z.ndim != 4 or z.shape[-1] != c:
            raise ValueError(f"RC-JSCC encoder expects latents [B, h, w, {c}] (NHWC), got shape {z.shape}")
        return self.jscc_encoder(z, snr_feature(snr_db, z.shape[0]))

    def select(self, pooled, snr_db):
        return self.policy(pooled, snr_feature(snr_db, pooled.shape[0]))

    def reconstruct(self, code, snr_db):
        c = self.config.code_channels
        if code.ndim != 4 or code.shape[-1] != c:
            raise ValueError(f"RC-JSCC reconstructor expects a padded code [B, h, w, {c}], got shape {code.shape}")
        return self.latent_reconstructor(code, snr_feature(snr_db, code.shape[0]))

    def __call__(self, z, snr_db=10.0):
        code, pooled = self.encode(z, snr_db)
        self.select(pooled, snr_db)
        return self.reconstruct(code, snr_db)


class VJMAECodec(JSCCCodec):
    """VJ-MAE: the JSCC(MT/AT) networks (same methods and parameter paths) with ``config`` a
    ``VJMAEConfig`` whose entropy policy (``entropy_rate_units``) picks the rate."""


def codec_class(class_name: str):
    """``config.json``'s ``_class_name`` -> (module class, config class)."""
    table = {"JSCCCodec": (JSCCCodec, JSCCConfig), "RCJSCCCodec": (RCJSCCCodec, RCJSCCConfig),
             "VJMAECodec": (VJMAECodec, VJMAEConfig)}
    if class_name not in table:
        raise ValueError(f"unknown codec class {class_name!r}; expected one of {', '.join(table)}")
    return table[class_name]


def init_adaptive_codec(config, key: jax.Array, latent_hw: tuple[int, int] = (8, 8)):
    """(module, params) for an ``RCJSCCConfig`` or ``VJMAEConfig``."""
    z = jnp.zeros((1, *latent_hw, config.latent_channels), jnp.float32)
    if isinstance(config, RCJSCCConfig):
        codec = RCJSCCCodec(config=config)
        return codec, codec.init(key, z, jnp.zeros((1,), jnp.float32))["params"]
    if isinstance(config, VJMAEConfig):
        codec = VJMAECodec(config=config)
        return codec, codec.init(key, z)["params"]
    raise TypeError(f"init_adaptive_codec: {type(config).__name__} is not an RCJSCCConfig or VJMAEConfig")

