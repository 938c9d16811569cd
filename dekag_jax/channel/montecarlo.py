"""Monte Carlo over transmission conditions phi = (tau, gamma, omega) (paper Sec. II-B, VI-A2).

* ``link``: the one pure, jittable map (key, gamma, omega, payload) -> received symbols: quantise
  the payload to M-QAM, send it over the OFDM channel, equalise. tau fixes the symbol count
  K = tau * X (a shape, hence static); gamma and omega may be traced, so one compiled function
  serves a whole (gamma, omega) grid and ``jax.vmap`` maps it over realisations and conditions.
* ``make_link``: binds tau (validated against {1..6}/64) and checks K of the payload.
* ``uncoded_row_stats``: a model-free measurement per realisation (uncoded M-QAM symbol/bit
  errors, MSE of the equaliser output, post-equalisation SNR), vmapped over rows that each carry
  their own (key, gamma, omega); used by ``python -m dekag_jax.sweep``.
* ``ser_rayleigh_theory``: numerical average of the exact AWGN SER over Rayleigh fading (the
  marginal of every sub-channel of eq. 3), for plots and tests.
"""
from __future__ import annotations

import dataclasses
import functools
import zlib
from fractions import Fraction
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import qam
from .ofdm import OFDMConfig, transmit

__all__ = [
    "RATES",
    "DEFAULT_NUM_PIXELS",
    "Condition",
    "check_rate",
    "num_symbols",
    "condition_id",
    "realization_keys",
    "link",
    "make_link",
    "uncoded_row_stats",
    "ser_rayleigh_theory",
]

#: Rates of the paper (Sec. V-B): tau in {1/64, ..., 6/64} symbols per pixel.
RATES = tuple(Fraction(i, 64) for i in range(1, 7))
#: X for the paper's 512 x 512 images.
DEFAULT_NUM_PIXELS = 512 * 512


def check_rate(tau) -> Fraction:
    """Validate tau against {1/64, ..., 6/64}; returns it as an exact Fraction.

    Accepts a Fraction, a float within 1e-9 of i/64, or a string "i/64". Raises ValueError
    naming tau otherwise.
    """
    if isinstance(tau, str):
        try:
            t = Fraction(tau.strip())
        except ValueError:
            raise ValueError(f"rate tau={tau!r} is not a number; allowed: i/64, i=1..6") from None
    elif isinstance(tau, Fraction):
        t = tau
    else:
        try:
            t = Fraction(float(tau)).limit_denominator(64)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"rate tau={tau!r} is not a number; allowed: i/64, i=1..6") from None
        if abs(float(t) - float(tau)) > 1e-9:
            t = None
    if t not in RATES:
        raise ValueError(f"rate tau={tau!r} is not in {{1/64, 2/64, ..., 6/64}} (paper Sec. V-B)")
    return t


def num_symbols(tau, num_pixels: int = DEFAULT_NUM_PIXELS) -> int:
    """K = tau * X complex symbols. Raises ValueError if tau is invalid or K is not an integer."""
    t = check_rate(tau)
    K = t * int(num_pixels)
    if K.denominator != 1 or K <= 0:
        raise ValueError(f"K = tau * X = {t} * {num_pixels} is not a positive integer")
    return int(K)


@dataclasses.dataclass(frozen=True)
class Condition:
    """One transmission condition phi = (tau, gamma [dB], omega [s])."""
    tau: Fraction
    snr_db: float
    delay_spread_s: float

    def __post_init__(self):
        object.__setattr__(self, "tau", check_rate(self.tau))
        object.__setattr__(self, "snr_db", float(self.snr_db))
        w = float(self.delay_spread_s)
        if not w > 0:
            raise ValueError(f"delay spread omega={self.delay_spread_s!r} s must be > 0")
        object.__setattr__(self, "delay_spread_s", w)

    @property
    def key(self) -> str:
        """Stable, file-name-safe identifier, e.g. ``tau3-64_snr10_omega300ns``."""
        n = self.tau * 64
        return (f"tau{n.numerator}-64_snr{self.snr_db:g}_omega"
                f"{round(self.delay_spread_s * 1e9, 6):g}ns")


def condition_id(cond: Condition) -> int:
    """Stable 31-bit id of a condition (crc32 of ``cond.key``): seeds its realisations, so the
    random numbers of a point do not depend on the rest of the grid or on the device count."""
    return zlib.crc32(cond.key.encode()) & 0x7FFFFFFF


def realization_keys(seed: int, cond: Condition, start: int, count: int):
    """Keys of realisations [start, start + count) of ``cond``: ``[count]`` typed keys.

    key_r = fold_in(fold_in(key(seed), condition_id(cond)), r).
    """
    base = jax.random.fold_in(jax.random.key(seed), condition_id(cond))
    return jax.vmap(lambda r: jax.random.fold_in(base, r))(
        jnp.arange(start, start + count, dtype=jnp.uint32))


# ----------------------------------------------------------------------------- the link
def link(key, snr_db, delay_spread_s, payload, *, M: int = 64, cfg: OFDMConfig = OFDMConfig(),
         quantize_method: str = "none"):
    """Quantise ``payload`` to M-QAM and send it over the channel (pure; jit/vmap-able).

    Args:
      key: PRNG key.
      snr_db: gamma (dB if ``cfg.snr_in_db``), scalar or broadcastable to ``[...]``; traceable.
      delay_spread_s: omega in seconds, concrete or traced (see ``ofdm.transmit``).
      payload: complex ``[..., K]`` encoder symbols (power-normalised; quantised to the nearest
        unit-energy M-QAM point, gradient per ``quantize_method`` of ``qam.quantize``).
      M, cfg, quantize_method: static.
    Returns:
      ``(received [..., K] complex, info)`` as ``ofdm.transmit``; ``info['sent']`` holds the
      quantised symbols.
    """
    sent = qam.quantize(payload, M, method=quantize_method)
    received, info = transmit(key, sent, snr_db, delay_spread_s, cfg=cfg)
    info = dict(info, sent=sent)
    return received, info


def make_link(tau, *, num_pixels: int = DEFAULT_NUM_PIXELS, M: int = 64,
              cfg: OFDMConfig = OFDMConfig(), quantize_method: str = "none") -> Callable:
    """A jitted ``f(key, snr_db, delay_spread_s, payload) -> (received, info)`` for rate tau.

    The payload's last axis must equal K = tau * num_pixels (ValueError naming both otherwise).
    vmap it over realisations/conditions, e.g. ``jax.vmap(f, in_axes=(0, 0, 0, None))``.
    """
    K = num_symbols(tau, num_pixels)
    qam.check_m(M)
    jl = jax.jit(functools.partial(link, M=M, cfg=cfg, quantize_method=quantize_method))

    def f(key, snr_db, delay_spread_s, payload):
        if payload.shape[-1] != K:
            raise ValueError(f"payload has K={payload.shape[-1]} symbols but tau={tau} with "
                             f"X={num_pixels} pixels needs K={K}")
        return jl(key, snr_db, delay_spread_s, payload)

    f.num_symbols = K
    return f


# ----------------------------------------------------------------------------- measurements
def _one_row(key, snr_db, delay_spread_s, *, K, M, cfg):
    k_data, k_chan = jax.random.split(key)
    idx = jax.random.randint(k_data, (K,), 0, M, dtype=jnp.int32)
    s = qam.constellation(M)[idx]
    y, info = transmit(k_chan, s, snr_db, delay_spread_s, cfg=cfg)
    u = y / info["bias"].astype(y.dtype)  # unbiased estimate: ML hard decision given h
    idx_hat = qam.symbols_to_indices(u, M)
    sym_err = jnp.sum(idx_hat != idx, dtype=jnp.int32)
    bit_err = jnp.sum(jax.lax.population_count(idx_hat ^ idx), dtype=jnp.int32)
    e = y - s
    sse = jnp.sum(jnp.real(e) ** 2 + jnp.imag(e) ** 2)  # what a JSCC decoder sees (MMSE output)
    snr_post_db = jnp.mean(10.0 * jnp.log10(cfg.signal_power / info["noise_var_eff"]))
    return dict(sym_err=sym_err, bit_err=bit_err, sse=sse, snr_post_db=snr_post_db)


@functools.partial(jax.jit, static_argnames=("K", "M", "cfg"))
def uncoded_row_stats(keys, snr_db, delay_spread_s, *, K: int, M: int = 64,
                      cfg: OFDMConfig = OFDMConfig()):
    """Uncoded M-QAM over the channel, one row = one transmission of K random symbols.

    Args:
      keys: ``[R]`` PRNG keys; snr_db ``[R]`` (gamma, dB if cfg.snr_in_db); delay_spread_s
        ``[R]`` seconds, each in ``cfg.delay_spread_grid_s`` (traced lookup) for channel "ofdm".
        Rows may mix conditions; shard them over a mesh's data axis to parallelise.
    Returns:
      dict of ``[R]`` arrays: ``sym_err`` int32 symbol errors (ML decision on the unbiased
      equaliser output), ``bit_err`` int32 bit errors (Gray), ``sse`` float sum |received - s|^2
      (biased MMSE output, what a JSCC decoder receives), ``snr_post_db`` float mean over the K
      symbols of 10 log10(P_s / noise_var_eff).
    """
    return jax.vmap(functools.partial(_one_row, K=K, M=M, cfg=cfg))(keys, snr_db, delay_spread_s)


def ser_rayleigh_theory(M: int, snr_linear: float, channel_power: float = 1.0) -> float:
    """Exact SER of M-QAM with perfect-CSI ML detection over Rayleigh fading (numerical).

    SER = int_0^inf ser_awgn(gamma g) exp(-g / P_h) / P_h dg, g = |h|^2, via scipy.integrate.quad
    (float64 numpy; not jittable). Equals the SER after ZF and after (unbiased) MMSE.
    """
    from scipy import integrate, special

    M = qam.check_m(M)
    c = 1.0 - 1.0 / np.sqrt(M)

    def ser_awgn(x):
        q = 0.5 * special.erfc(np.sqrt(3.0 * x / (M - 1)) / np.sqrt(2.0))
        return 4 * c * q - 4 * c * c * q * q

    f = lambda g: ser_awgn(snr_linear * g) * np.exp(-g / channel_power) / channel_power
    val, _ = integrate.quad(f, 0.0, np.inf, limit=200)
    return float(val)
