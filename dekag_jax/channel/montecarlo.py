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

import functools
import zlib
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import qam
# The condition type and the rate check live in .condition (one type for the whole package);
# re-exported here, where they were first defined.
from .condition import RATES, Condition, check_rate
from .ofdm import OFDMConfig, check_on_grid, transmit

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

#: X for the paper's 512 x 512 images.
DEFAULT_NUM_PIXELS = 512 * 512


def num_symbols(tau, num_pixels: int = DEFAULT_NUM_PIXELS) -> int:
    """K = tau * X complex symbols. Raises ValueError if tau is invalid or K is not an integer."""
    t = check_rate(tau)
    K = t * int(num_pixels)
    if K.denominator != 1 or K <= 0:
        raise ValueError(f"K = tau * X = {t} * {num_pixels} is not a positive integer")
    return int(K)


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
        _check_host_omega(delay_spread_s, cfg)
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


def _check_host_omega(delay_spread_s, cfg: OFDMConfig) -> None:
    """Host check before tracing: an omega array that will be looked up in the factor grid
    (under jit it is traced, and a traced value cannot raise) must be on ``cfg``'s grid.
    Python scalars are exempt: ``transmit`` computes their exact factor. Tracers pass through
    (their caller validated them on the host, or uses ``transmit(..., check_grid=True)``)."""
    if cfg.channel != "ofdm" or delay_spread_s is None or isinstance(delay_spread_s, jax.core.Tracer):
        return
    if isinstance(delay_spread_s, (int, float)):
        return
    check_on_grid(np.asarray(delay_spread_s), cfg)


def uncoded_row_stats(keys, snr_db, delay_spread_s, *, K: int, M: int = 64,
                      cfg: OFDMConfig = OFDMConfig()):
    """Uncoded M-QAM rows (see :func:`_uncoded_row_stats`); a concrete ``delay_spread_s`` is
    checked against ``cfg.delay_spread_grid_s`` on the host first (ValueError naming it)."""
    _check_host_omega(delay_spread_s, cfg)
    return _uncoded_row_stats(keys, snr_db, delay_spread_s, K=K, M=M, cfg=cfg)


@functools.partial(jax.jit, static_argnames=("K", "M", "cfg"))
def _uncoded_row_stats(keys, snr_db, delay_spread_s, *, K: int, M: int = 64,
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
