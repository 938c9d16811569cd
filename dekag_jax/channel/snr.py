"""SNR bookkeeping: the ONE Eb/N0 <-> N0 helper of the project, plus dB conversions.

Definitions (per complex channel use, unit-energy constellations):
    Es       average energy per transmitted data symbol (``es``, 1 for ``qam.constellation``)
    k        coded bits per symbol (log2 M)
    r        code rate (information bits / coded bits; 1 for uncoded)
    eta      OFDM overhead = (energy-carrying resource elements incl. cyclic prefix, pilots)
             / (data-carrying resource elements), >= 1 (1: no overhead, the paper's model)

    Eb = Es * eta / (k * r)           (energy spent per information bit)
    N0 = Es * eta / ((Eb/N0) * k * r) (what ``ebno_db_to_n0`` returns)

This is the same formula as Sionna's ``ebnodb2no`` (its resource-grid overhead is our eta).
Link to the paper's SNR (eq. 2-3): gamma = P_h / P_delta with unit-power symbols, so with
P_h = 1 the average Es/N0 equals gamma, and ``ofdm.transmit`` uses N0 = P_delta = P_h / gamma.

All functions accept Python floats or arrays (numpy or jax, any shape; broadcasting) and are
jittable when given jax arrays; they return jnp arrays (float32 unless x64 and float64 input).
"""
from __future__ import annotations

import jax.numpy as jnp

__all__ = [
    "db_to_linear",
    "linear_to_db",
    "ebno_db_to_n0",
    "n0_to_ebno_db",
    "esno_db_to_n0",
    "n0_to_esno_db",
    "ebno_db_to_esno_db",
    "esno_db_to_ebno_db",
]


def _f(x):
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def db_to_linear(x_db):
    """10 ** (x_db / 10). Any shape."""
    return 10.0 ** (_f(x_db) / 10.0)


def linear_to_db(x):
    """10 log10(x). Any shape; x must be > 0."""
    return 10.0 * jnp.log10(_f(x))


def ebno_db_to_n0(ebno_db, bits_per_symbol, coderate, ofdm_overhead=1.0, es=1.0):
    """Noise power spectral density N0 (= complex noise variance per symbol) for a target Eb/N0.

        N0 = es * ofdm_overhead / (10**(ebno_db/10) * bits_per_symbol * coderate)

    Args:
      ebno_db: Eb/N0 in dB, any shape.
      bits_per_symbol: k = log2(M) (e.g. 6 for 64-QAM).
      coderate: r in (0, 1], information bits per coded bit.
      ofdm_overhead: eta >= 1, energy-carrying / data-carrying resource elements (CP, pilots).
      es: average energy per data symbol (1 for our unit-energy constellations).
    Returns:
      N0, same shape as the broadcast inputs. Use it as ``noise_var`` for ``qam.llr_maxlog``
      over AWGN, or convert to the paper's SNR with gamma_dB = ``n0_to_esno_db(N0)``.
    """
    return _f(es) * ofdm_overhead / (db_to_linear(ebno_db) * bits_per_symbol * coderate)


def n0_to_ebno_db(n0, bits_per_symbol, coderate, ofdm_overhead=1.0, es=1.0):
    """Inverse of ``ebno_db_to_n0``: Eb/N0 [dB] = 10 log10(es * eta / (N0 * k * r))."""
    return linear_to_db(_f(es) * ofdm_overhead / (_f(n0) * bits_per_symbol * coderate))


def esno_db_to_n0(esno_db, es=1.0):
    """N0 = es / 10**(esno_db/10) (symbol-level SNR; the paper's gamma with P_h = es = 1)."""
    return _f(es) / db_to_linear(esno_db)


def n0_to_esno_db(n0, es=1.0):
    """Es/N0 [dB] = 10 log10(es / N0)."""
    return linear_to_db(_f(es) / _f(n0))


def ebno_db_to_esno_db(ebno_db, bits_per_symbol, coderate, ofdm_overhead=1.0):
    """Es/N0 [dB] = Eb/N0 [dB] + 10 log10(k r / eta)."""
    return _f(ebno_db) + linear_to_db(jnp.asarray(bits_per_symbol * coderate / ofdm_overhead,
                                                  jnp.float32))


def esno_db_to_ebno_db(esno_db, bits_per_symbol, coderate, ofdm_overhead=1.0):
    """Eb/N0 [dB] = Es/N0 [dB] - 10 log10(k r / eta)."""
    return _f(esno_db) - linear_to_db(jnp.asarray(bits_per_symbol * coderate / ofdm_overhead,
                                                  jnp.float32))
