"""Square M-QAM: Gray mapping, hard/soft demapping, and the JSCC quantiser (paper Sec. II-B).

Constellation
    Square M-QAM, M = L**2 in {4, 16, 64, 256, 1024} (L = 2**m, k = log2 M = 2m bits/symbol),
    unit average energy E|c|^2 = 1. The bit labelling is the 3GPP TS 38.211 Sec. 5.1 one
    (also Sionna's ``mapping.qam``): bits b_0 b_1 ... b_{k-1} of a symbol (b_0 first = MSB of the
    constellation index) are split into the in-phase bits b_0, b_2, b_4, ... and the quadrature bits
    b_1, b_3, b_5, ...; each group picks a Gray-coded PAM level, b = 0 meaning the positive half
    for the first bit of each group. Neighbouring points (horizontally or vertically) differ in
    exactly one bit. ``constellation(M)[i]`` is the point whose bits are the k-bit binary of i.

LLR sign convention (ours)
    LLR(b) = ln P(b = 0 | y) / P(b = 1 | y): positive means "bit is 0" (textbook convention).
    Sionna uses ln P(b = 1 | y) / P(b = 0 | y), the opposite sign: convert with
    ``to_sionna_llr`` / ``from_sionna_llr`` at the boundary.

Noise convention
    ``noise_var`` is the variance N0 of complex circular noise n ~ CN(0, N0) on y = s + n
    (N0/2 per real dimension), i.e. the same quantity as ``info['noise_var_eff']`` returned by
    ``dekag_jax.channel.ofdm.transmit``.

Complexity
    Everything is computed per axis (I and Q separately), which is exact for square QAM because
    |y - c|^2 = (y_I - c_I)^2 + (y_Q - c_Q)^2 and every bit belongs to one axis: no [..., M]
    distance matrices are formed.

Dtypes
    Complex inputs may be complex64 (default everywhere) or complex128 (when jax x64 is
    enabled); real intermediates follow (float32 / float64). All functions are pure, jittable,
    vmappable; ``M`` (and other mode arguments) must be static Python ints/strings.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "SUPPORTED_M",
    "bits_per_symbol",
    "check_m",
    "constellation",
    "bits_to_symbols",
    "symbols_to_indices",
    "indices_to_bits",
    "hard_demap",
    "nearest_point",
    "llr_maxlog",
    "llr_exact",
    "demap_llr",
    "to_sionna_llr",
    "from_sionna_llr",
    "normalize_power",
    "real_to_complex",
    "complex_to_real",
    "quantize",
    "constellation_loss",
    "ser_awgn_theory",
]

SUPPORTED_M = (4, 16, 64, 256, 1024)


# ----------------------------------------------------------------------------- tables
def check_m(M) -> int:
    """Validate the modulation order. Returns M as int; raises ValueError naming M otherwise.

    Only square QAM with M = 4**m, 4 <= M <= 1024 is supported (non-square orders such as
    8, 32, 128 need cross constellations, which this module does not implement).
    """
    try:
        Mi = int(M)
    except (TypeError, ValueError):
        raise ValueError(f"QAM order M={M!r} is not an integer; supported: {SUPPORTED_M}") from None
    if Mi != M or Mi not in SUPPORTED_M:
        raise ValueError(
            f"QAM order M={M!r} is not supported: only square M-QAM with M in {SUPPORTED_M}")
    return Mi


def bits_per_symbol(M) -> int:
    """k = log2(M) bits per symbol for a supported square QAM order M."""
    return int(math.log2(check_m(M)))


def _pam_gray(bits) -> int:
    # 3GPP TS 38.211 recursive Gray PAM (same as Sionna's pam_gray): odd integer level.
    if len(bits) > 1:
        return (1 - 2 * bits[0]) * (2 ** len(bits[1:]) - _pam_gray(bits[1:]))
    return 1 - 2 * bits[0]


class _Tables(NamedTuple):
    L: int                    # levels per axis
    m: int                    # bits per axis
    norm: float               # sqrt(2 (M - 1) / 3): PAM units -> unit energy (divide by it)
    level_bits: np.ndarray    # [L, m] int: Gray bits of level l (amplitude 2l - (L-1))
    int_to_level: np.ndarray  # [L] int: axis bit-integer (MSB first) -> level index
    level_sym_index: np.ndarray  # [L, L] int: (I level, Q level) -> constellation index
    points: np.ndarray        # [M] complex128 unit-energy constellation


@functools.lru_cache(maxsize=None)
def _tables(M: int) -> _Tables:
    M = check_m(M)
    k = int(math.log2(M))
    m = k // 2
    L = 2 ** m
    norm = math.sqrt(2.0 * (M - 1) / 3.0)
    level_bits = np.zeros((L, m), np.int32)
    int_to_level = np.zeros((L,), np.int32)
    for v in range(L):
        b = [int(c) for c in np.binary_repr(v, m)]
        lvl = (_pam_gray(b) + (L - 1)) // 2
        level_bits[lvl] = b
        int_to_level[v] = lvl
    points = np.zeros((M,), np.complex128)
    level_sym_index = np.zeros((L, L), np.int32)
    for i in range(M):
        b = [int(c) for c in np.binary_repr(i, k)]
        re, im = _pam_gray(b[0::2]), _pam_gray(b[1::2])
        points[i] = (re + 1j * im) / norm
        level_sym_index[(re + L - 1) // 2, (im + L - 1) // 2] = i
    for t in (level_bits, int_to_level, level_sym_index, points):
        t.setflags(write=False)
    return _Tables(L, m, norm, level_bits, int_to_level, level_sym_index, points)


def _real_dtype(x):
    return jnp.finfo(jnp.result_type(x)).dtype


def _as_complex(y, name="y"):
    y = jnp.asarray(y)
    if not jnp.issubdtype(y.dtype, jnp.complexfloating):
        raise TypeError(f"{name} must be complex (complex64/complex128), got dtype {y.dtype}")
    return y


def constellation(M, dtype=jnp.complex64) -> jax.Array:
    """The unit-energy Gray-labelled square M-QAM constellation.

    Returns complex ``[M]`` (``dtype``, default complex64); entry i carries the k-bit binary
    of i (MSB = bit 0). Raises ValueError for an unsupported M.
    """
    return jnp.asarray(_tables(check_m(M)).points, dtype=dtype)


# ----------------------------------------------------------------------------- mapping
def bits_to_symbols(bits, M, dtype=jnp.complex64) -> jax.Array:
    """Map bits to unit-energy QAM symbols.

    Args:
      bits: ``[..., n * k]`` with k = log2 M; any int/bool/float dtype holding 0/1. Consecutive
        groups of k bits form one symbol (first bit of each group = MSB of the index).
      M: static QAM order.
      dtype: complex output dtype (complex64 default, complex128 with x64).
    Returns:
      ``[..., n]`` complex symbols.
    Raises:
      ValueError if the last axis is not a multiple of k.
    """
    t = _tables(check_m(M))
    k = 2 * t.m
    bits = jnp.asarray(bits)
    if bits.ndim == 0 or bits.shape[-1] % k:
        raise ValueError(
            f"bits last axis ({bits.shape[-1] if bits.ndim else 'scalar'}) must be a multiple of "
            f"log2(M)={k} for M={M}")
    b = bits.reshape(bits.shape[:-1] + (bits.shape[-1] // k, k)).astype(jnp.int32)
    weights = jnp.asarray(2 ** np.arange(t.m - 1, -1, -1), jnp.int32)
    iv = jnp.sum(b[..., 0::2] * weights, axis=-1)
    qv = jnp.sum(b[..., 1::2] * weights, axis=-1)
    lvl = jnp.asarray(t.int_to_level)
    rdt = jnp.finfo(dtype).dtype
    scale = 1.0 / t.norm
    re = (2 * lvl[iv] - (t.L - 1)).astype(rdt) * scale
    im = (2 * lvl[qv] - (t.L - 1)).astype(rdt) * scale
    return jax.lax.complex(re, im).astype(dtype)


def _levels(y, t: _Tables):
    """Nearest per-axis level indices (int32) of complex y [..., n]."""
    hi = t.L - 1
    li = jnp.clip(jnp.round((jnp.real(y) * t.norm + hi) * 0.5), 0, hi).astype(jnp.int32)
    lq = jnp.clip(jnp.round((jnp.imag(y) * t.norm + hi) * 0.5), 0, hi).astype(jnp.int32)
    return li, lq


def symbols_to_indices(y, M) -> jax.Array:
    """Index (into ``constellation(M)``) of the nearest point to each complex y ``[..., n]``.

    Returns int32 ``[..., n]``. Nearest = minimum Euclidean distance (ML detection in AWGN);
    ties are broken by round-half-to-even per axis.
    """
    t = _tables(check_m(M))
    y = _as_complex(y)
    li, lq = _levels(y, t)
    return jnp.asarray(t.level_sym_index)[li, lq]


def indices_to_bits(idx, M, dtype=jnp.int32) -> jax.Array:
    """Constellation indices int ``[..., n]`` -> bits ``[..., n, log2 M]`` (MSB first)."""
    k = bits_per_symbol(M)
    shifts = jnp.arange(k - 1, -1, -1, dtype=jnp.int32)
    return ((jnp.asarray(idx, jnp.int32)[..., None] >> shifts) & 1).astype(dtype)


def hard_demap(y, M, dtype=jnp.int32) -> jax.Array:
    """Hard (minimum-distance) demapping: complex ``[..., n]`` -> bits ``[..., n, log2 M]``.

    Bit order matches ``bits_to_symbols`` (reshape to ``[..., n * k]`` to invert it).
    """
    t = _tables(check_m(M))
    y = _as_complex(y)
    li, lq = _levels(y, t)
    lb = jnp.asarray(t.level_bits)
    bi, bq = lb[li], lb[lq]  # [..., n, m] each
    return jnp.stack([bi, bq], axis=-1).reshape(bi.shape[:-1] + (2 * t.m,)).astype(dtype)


def nearest_point(y, M) -> jax.Array:
    """Nearest constellation point to each complex y ``[..., n]`` (same dtype as y).

    O(1) per symbol (per-axis rounding + clipping); no gradient (use ``quantize`` for that).
    """
    t = _tables(check_m(M))
    y = _as_complex(y)
    li, lq = _levels(y, t)
    rdt = _real_dtype(y)
    s = 1.0 / t.norm
    re = (2 * li - (t.L - 1)).astype(rdt) * s
    im = (2 * lq - (t.L - 1)).astype(rdt) * s
    return jax.lax.complex(re, im)


# ----------------------------------------------------------------------------- LLRs
def _axis_llr(x, nv, t: _Tables, exact: bool):
    """LLRs of the m bits of one axis. x [..., n] real (unit-energy units), nv [..., n] or scalar."""
    rdt = x.dtype
    amps = jnp.asarray((2 * np.arange(t.L) - (t.L - 1)) / t.norm, rdt)  # [L]
    d = (x[..., None] - amps) ** 2  # [..., n, L]
    mask0 = jnp.asarray(t.level_bits.T == 0)  # [m, L]
    d = d[..., None, :]  # [..., n, 1, L]
    if not exact:
        inf = jnp.asarray(jnp.inf, rdt)
        d0 = jnp.min(jnp.where(mask0, d, inf), axis=-1)
        d1 = jnp.min(jnp.where(mask0, inf, d), axis=-1)
        return (d1 - d0) / nv[..., None]
    z = -d / nv[..., None, None]
    ninf = jnp.asarray(-jnp.inf, rdt)
    l0 = jax.nn.logsumexp(jnp.where(mask0, z, ninf), axis=-1)
    l1 = jax.nn.logsumexp(jnp.where(mask0, ninf, z), axis=-1)
    return l0 - l1


def demap_llr(y, M, noise_var, *, method: str = "maxlog") -> jax.Array:
    """Bit LLRs for complex observations y = c + n, n ~ CN(0, noise_var), uniform priors.

    Sign (ours): LLR = ln P(b=0|y) / P(b=1|y) (positive -> 0). Sionna: ``to_sionna_llr``.

    Args:
      y: complex ``[..., n]`` equalised (unbiased) symbols, complex64 or complex128.
      M: static QAM order.
      noise_var: complex noise variance N0, real, broadcastable to ``[..., n]`` (e.g. a scalar
        or the per-symbol ``info['noise_var_eff']`` of ``ofdm.transmit``). Must be > 0.
      method: ``"maxlog"`` (min-distance approximation) or ``"exact"`` (log-sum-exp over points).
    Returns:
      real ``[..., n, log2 M]`` LLRs, bit order as ``bits_to_symbols`` / ``hard_demap``.
    """
    if method not in ("maxlog", "exact"):
        raise ValueError(f"method={method!r}: expected 'maxlog' or 'exact'")
    t = _tables(check_m(M))
    y = _as_complex(y)
    rdt = _real_dtype(y)
    nv = jnp.broadcast_to(jnp.asarray(noise_var, rdt), y.shape)
    exact = method == "exact"
    li = _axis_llr(jnp.real(y), nv, t, exact)
    lq = _axis_llr(jnp.imag(y), nv, t, exact)
    return jnp.stack([li, lq], axis=-1).reshape(li.shape[:-1] + (2 * t.m,))


def llr_maxlog(y, M, noise_var) -> jax.Array:
    """Max-log LLRs ``[..., n, log2 M]``; see ``demap_llr`` (sign: ln P(b=0|y)/P(b=1|y)).

    LLR_b = (min_{c: b=1} |y-c|^2 - min_{c: b=0} |y-c|^2) / noise_var.
    """
    return demap_llr(y, M, noise_var, method="maxlog")


def llr_exact(y, M, noise_var) -> jax.Array:
    """Exact LLRs ``[..., n, log2 M]``; see ``demap_llr`` (sign: ln P(b=0|y)/P(b=1|y)).

    LLR_b = logsumexp_{c: b=0}(-|y-c|^2/N0) - logsumexp_{c: b=1}(-|y-c|^2/N0).
    """
    return demap_llr(y, M, noise_var, method="exact")


def to_sionna_llr(llr):
    """Our LLRs (ln P0/P1) -> Sionna's (ln P1/P0): a sign flip. Any shape/dtype."""
    return -llr


def from_sionna_llr(llr):
    """Sionna LLRs (ln P1/P0) -> ours (ln P0/P1): a sign flip. Any shape/dtype."""
    return -llr


# ----------------------------------------------------------------------------- encoder side
def normalize_power(s, axis=-1, *, power: float = 1.0, eps: float = 1e-12):
    """Scale s so that mean |s|^2 over ``axis`` equals ``power`` (average power constraint).

    Works for real encoder outputs (then mean s^2 = power per real entry) and complex symbols
    (mean |s|^2 = power per complex symbol). ``axis`` may be an int or tuple; the other axes are
    batch axes normalised independently. Shape and dtype are preserved; differentiable.
    """
    s = jnp.asarray(s)
    p = jnp.mean(jnp.abs(s) ** 2 if jnp.iscomplexobj(s) else s * s, axis=axis, keepdims=True)
    return s * jnp.sqrt(power / jnp.maximum(p, eps)).astype(s.dtype)


def real_to_complex(x, axis: int = -1):
    """Paper Sec. V-B: first half of ``axis`` = real parts, second half = imaginary parts.

    ``[..., 2K, ...]`` real -> ``[..., K, ...]`` complex (float32 -> complex64,
    float64 -> complex128). Raises ValueError for an odd length.
    """
    x = jnp.asarray(x)
    n = x.shape[axis]
    if n % 2:
        raise ValueError(f"real_to_complex: axis {axis} has odd length {n}")
    re, im = jnp.split(x, 2, axis=axis)
    return jax.lax.complex(re, im)


def complex_to_real(s, axis: int = -1):
    """Inverse of ``real_to_complex``: ``[..., K]`` complex -> ``[..., 2K]`` real (re then im)."""
    s = jnp.asarray(s)
    return jnp.concatenate([jnp.real(s), jnp.imag(s)], axis=axis)


def _soft_axis(x, t: _Tables, temperature):
    amps = jnp.asarray((2 * np.arange(t.L) - (t.L - 1)) / t.norm, x.dtype)
    dmin2 = (2.0 / t.norm) ** 2
    logits = -((x[..., None] - amps) ** 2) / (temperature * dmin2)
    return jnp.sum(jax.nn.softmax(logits, axis=-1) * amps, axis=-1)


def quantize(s, M, *, method: str = "soft", temperature: float = 0.5):
    """Quantise JSCC symbols to their nearest M-QAM point, with a training gradient (Sec. II-B).

    Forward value: always the nearest unit-energy constellation point (hard decision), so the
    transmitted symbols are valid QAM symbols. Backward (gradient) depends on ``method``:

    * ``"soft"`` (default; soft-to-hard quantiser of DeepJSCC-Q [27], which the paper follows):
      gradient of the soft assignment  sum_c c * softmax_c(-|s - c|^2 / (temperature * d_min^2)),
      d_min = minimum distance of the unit-energy constellation (so ``temperature`` is
      M-independent; smaller = closer to hard, smaller gradients away from decision boundaries).
      Computed per axis, which equals the softmax over all M points exactly for square QAM.
    * ``"ste"``: straight-through estimator, gradient = identity.
    * ``"none"``: hard value, zero gradient.

    Args:
      s: complex ``[..., n]`` (complex64/complex128), normally power-normalised first
        (``normalize_power``); points outside the grid are clipped to the outer points.
      M: static QAM order.
    Returns:
      complex ``[..., n]``, same dtype as s.
    """
    t = _tables(check_m(M))
    s = _as_complex(s, "s")
    hard = nearest_point(s, M)
    if method == "ste":
        return s + jax.lax.stop_gradient(hard - s)
    if method == "none":
        return jax.lax.stop_gradient(hard)
    if method != "soft":
        raise ValueError(f"quantize: method={method!r}, expected 'soft', 'ste' or 'none'")
    if not temperature > 0:
        raise ValueError(f"quantize: temperature must be > 0, got {temperature}")
    soft = jax.lax.complex(_soft_axis(jnp.real(s), t, temperature),
                           _soft_axis(jnp.imag(s), t, temperature))
    return soft + jax.lax.stop_gradient(hard - soft)


def constellation_loss(s, M, axis=None):
    """Eq. (4) term (iv): mean squared distance of symbols to their nearest constellation point.

    mean |s - Q(s)|^2 over ``axis`` (all axes by default), real scalar (or reduced array), same
    real precision as s. Q(s) is held constant, so d/ds = 2 (s - Q(s)) (pulls s onto the grid).
    """
    s = _as_complex(s, "s")
    q = jax.lax.stop_gradient(nearest_point(s, M))
    return jnp.mean(jnp.abs(s - q) ** 2, axis=axis)


# ----------------------------------------------------------------------------- theory
def ser_awgn_theory(M, es_n0):
    """Exact symbol error rate of square M-QAM with ML detection over AWGN.

    P_s = 4(1 - 1/sqrt(M)) Q(a) - 4(1 - 1/sqrt(M))^2 Q(a)^2,  a = sqrt(3 Es/N0 / (M - 1)).
    ``es_n0`` is linear Es/N0 (array-like, any shape); returns the same shape (jnp float).
    """
    M = check_m(M)
    es_n0 = jnp.asarray(es_n0)
    if not jnp.issubdtype(es_n0.dtype, jnp.floating):
        es_n0 = es_n0.astype(jnp.float32)
    a = jnp.sqrt(3.0 * es_n0 / (M - 1))
    q = 0.5 * jax.scipy.special.erfc(a / jnp.sqrt(2.0).astype(a.dtype))
    c = 1.0 - 1.0 / math.sqrt(M)
    return 4 * c * q - 4 * c * c * q * q
