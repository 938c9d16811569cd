"""Correlated block-fading OFDM channel of the paper (eq. 2-3), AWGN, and equalisation.

Model (Sec. II-B)
    J sub-channels (default 120, Sec. VI-A2). One transmission = K complex symbols; symbol k is
    sent on sub-channel j = k mod J in time slot floor(k / J) (sequential allocation, the last
    slot may be partial). Block fading: one gain vector h = (h_1..h_J) ~ CN(0, C) per
    transmission, constant over its slots. y_k = h_{k mod J} s_k + delta_k, delta ~ CN(0, P_delta),
    gamma = P_h / P_delta (the paper's SNR).

Covariance (eq. 3, typo corrected)
    The printed eq. 3 reads C = P_h / exp(1 + 2 pi i Delta omega), whose diagonal would be P_h/e.
    We use the form it was meant to have (frequency correlation of an exponential power-delay
    profile with rms delay spread omega, refs [29], [30]):

        C[j', j] = P_h / (1 + 2 pi i * Delta_f * (j' - j) * omega),

    Hermitian, positive semi-definite, diagonal P_h (each h_j is Rayleigh with E|h_j|^2 = P_h).

Sub-channel spacing Delta_f (not stated in the paper)
    Default 30 kHz: NR numerology 1, the usual choice at 3.5 GHz (3GPP UMa, Sec. VI-A2), reading a
    "sub-channel" as one sub-carrier (120 sub-carriers = 3.6 MHz, 10 resource blocks). If a
    sub-channel is read as a resource block of 12 sub-carriers, use Delta_f = 360 kHz: the
    correlation argument Delta_f * omega grows 12x, so the channel becomes far more frequency
    selective (at omega = 300 ns adjacent sub-channels have |rho| = 0.83 instead of 0.998, and
    the effective diversity over K symbols increases); the per-symbol Rayleigh marginal, and
    hence uncoded SER, does not change.

Numerics of the factor
    At Delta_f = 30 kHz, J = 120, C is numerically singular for omega = 30 ns and 300 ns (2 pi
    Delta_f omega J << 1: a handful of eigenvalues carry all the power), so Cholesky fails. We
    compute, in float64 numpy once per (J, Delta_f, omega, P_h) (``functools.lru_cache``), the
    eigen-factor L = U sqrt(max(lambda, 0)), which is finite and satisfies L L^H = C to ~1e-13
    relative accuracy, then sample h = L z, z ~ CN(0, I) with jax.random.

Tracing
    ``transmit`` is pure and jittable; SNR may be traced (any batch shape). The delay spread
    changes the factor: a concrete omega (Python/numpy float) uses its cached factor; a traced
    omega (e.g. under ``vmap`` over a condition grid) is looked up in a stack of factors
    precomputed for ``cfg.delay_spread_grid_s`` (nearest grid point in log scale, within 0.1%).
    An omega off that grid is an error naming it, checked where the value is still on the host:
    a concrete omega ARRAY passed to ``transmit`` (and the package's entry points
    ``montecarlo.uncoded_row_stats``/``make_link``, ``amc.measure_bler``, ``dekag_jax.sweep``,
    which all see host values before they trace) is validated by :func:`check_on_grid`. A value
    traced by the caller's own ``jit``/``vmap`` cannot raise: with ``check_grid=True`` the
    lookup emits a ``jax.experimental.checkify`` check (wrap the function in
    ``checkify.checkify`` and call ``err.throw()``); without it, an off-grid traced omega gives
    NaN outputs as the last line of defence (never a silently wrong channel).
    Alternatively pass ``factor=`` explicitly (e.g. ``factor_table(grid, cfg)[idx]``).

Dtypes: symbols complex64 (default) or complex128 (x64); all outputs follow the symbol
precision. Batch axes ``[...]`` are arbitrary leading axes of ``symbols``.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "OFDMConfig",
    "CHANNELS",
    "EQUALIZERS",
    "covariance",
    "channel_factor",
    "factor_table",
    "check_on_grid",
    "sample_channel",
    "per_symbol_gain",
    "transmit",
    "equalized_llr",
]

CHANNELS = ("ofdm", "iid", "awgn")
EQUALIZERS = ("mmse", "zf")


@dataclasses.dataclass(frozen=True)
class OFDMConfig:
    """Static channel configuration (hashable; safe as a jit static argument).

    Attributes:
      num_subchannels: J, sub-channels allocated to the user (paper: 120).
      subcarrier_spacing_hz: Delta_f between adjacent sub-channels (default 30e3; see module doc).
      channel_power: P_h = E|h_j|^2.
      signal_power: P_s = E|s_k|^2 assumed by the MMSE equaliser (1 for unit-energy QAM).
      channel: "ofdm" (correlated, eq. 3), "iid" (uncorrelated Rayleigh sub-channels as in
        [27], [28]) or "awgn" (h = sqrt(P_h), no fading: the related works' convention; the
        output is y / sqrt(P_h), whatever the equaliser).
      equalizer: "mmse" (default) conj(h) y / (|h|^2 + P_delta / P_s) or "zf" y / h.
      csi_error_var: sigma_e^2 of imperfect CSI h_est = h + e, e ~ CN(0, sigma_e^2) i.i.d. per
        sub-channel and transmission; 0 = perfect CSI (the paper's setting).
      delay_spread_grid_s: delay spreads (seconds) whose factors are precomputed for a traced
        omega (paper: 30, 300, 3000 ns).
      snr_in_db: whether the ``snr`` argument of ``transmit`` is gamma in dB (default) or linear.
    """
    num_subchannels: int = 120
    subcarrier_spacing_hz: float = 30e3
    channel_power: float = 1.0
    signal_power: float = 1.0
    channel: str = "ofdm"
    equalizer: str = "mmse"
    csi_error_var: float = 0.0
    delay_spread_grid_s: tuple = (30e-9, 300e-9, 3000e-9)
    snr_in_db: bool = True

    def __post_init__(self):
        if int(self.num_subchannels) != self.num_subchannels or self.num_subchannels < 1:
            raise ValueError(f"num_subchannels={self.num_subchannels!r} must be a positive int")
        if not self.subcarrier_spacing_hz > 0:
            raise ValueError(f"subcarrier_spacing_hz={self.subcarrier_spacing_hz!r} must be > 0")
        if not self.channel_power > 0:
            raise ValueError(f"channel_power={self.channel_power!r} must be > 0")
        if not self.signal_power > 0:
            raise ValueError(f"signal_power={self.signal_power!r} must be > 0")
        if self.channel not in CHANNELS:
            raise ValueError(f"channel={self.channel!r}: expected one of {CHANNELS}")
        if self.equalizer not in EQUALIZERS:
            raise ValueError(f"equalizer={self.equalizer!r}: expected one of {EQUALIZERS}")
        if not self.csi_error_var >= 0:
            raise ValueError(f"csi_error_var={self.csi_error_var!r} must be >= 0")
        grid = tuple(float(w) for w in self.delay_spread_grid_s)
        for w in grid:
            _check_omega(w)
        object.__setattr__(self, "delay_spread_grid_s", grid)


def _check_omega(omega) -> float:
    w = float(omega)
    if not (math.isfinite(w) and w > 0):
        raise ValueError(f"delay spread omega={omega!r} s must be finite and > 0")
    return w


# ----------------------------------------------------------------------------- covariance
def covariance(num_subchannels: int, subcarrier_spacing_hz: float, delay_spread_s: float,
               channel_power: float = 1.0) -> np.ndarray:
    """Eq. 3 (corrected): C[j', j] = P_h / (1 + 2 pi i Delta_f (j' - j) omega).

    Returns numpy complex128 ``[J, J]`` (Hermitian PSD). Raises ValueError for omega <= 0.
    """
    w = _check_omega(delay_spread_s)
    j = np.arange(int(num_subchannels))
    d = (j[:, None] - j[None, :]).astype(np.float64)
    return channel_power / (1.0 + 2j * np.pi * float(subcarrier_spacing_hz) * d * w)


@functools.lru_cache(maxsize=64)
def _factor_cached(J: int, df: float, w: float, ph: float) -> np.ndarray:
    c = covariance(J, df, w, ph)
    lam, u = np.linalg.eigh(c)  # float64; C is Hermitian
    f = u * np.sqrt(np.maximum(lam, 0.0))[None, :]
    if not np.all(np.isfinite(f)):
        raise FloatingPointError(f"non-finite channel factor for J={J}, df={df}, omega={w}")
    f.setflags(write=False)
    return f


def channel_factor(num_subchannels: int = 120, subcarrier_spacing_hz: float = 30e3,
                   delay_spread_s: float = 300e-9, channel_power: float = 1.0) -> np.ndarray:
    """Eigen-factor L = U sqrt(max(lambda, 0)) of C with L L^H = C (float64, cached).

    Returns a read-only numpy complex128 ``[J, J]``; sample h = L z, z ~ CN(0, I_J).
    Finite even where C is numerically singular (omega = 30, 300 ns at J=120, 30 kHz).
    """
    return _factor_cached(int(num_subchannels), float(subcarrier_spacing_hz),
                          _check_omega(delay_spread_s), float(channel_power))


def factor_table(delay_spreads_s: Sequence[float], cfg: OFDMConfig = OFDMConfig()) -> np.ndarray:
    """Stack of factors for a grid of delay spreads: numpy complex128 ``[W, J, J]``.

    Index it with a (traced) grid index and pass the result as ``transmit(..., factor=...)``.
    """
    return np.stack([channel_factor(cfg.num_subchannels, cfg.subcarrier_spacing_hz, w,
                                    cfg.channel_power) for w in delay_spreads_s])


@functools.lru_cache(maxsize=16)
def _grid_table(cfg: OFDMConfig) -> np.ndarray:
    t = factor_table(cfg.delay_spread_grid_s, cfg)
    t.setflags(write=False)
    return t


# ----------------------------------------------------------------------------- sampling
def sample_channel(key, factor, batch_shape=(), dtype=jnp.complex64) -> jax.Array:
    """h = L z with z ~ CN(0, I): complex ``[*batch_shape, J]`` (dtype complex64/complex128).

    ``factor``: ``[J, J]`` or ``[*batch_shape, J, J]`` (broadcastable) complex.
    """
    factor = jnp.asarray(factor, dtype)
    J = factor.shape[-1]
    z = jax.random.normal(key, tuple(batch_shape) + (J,), dtype)
    if factor.ndim == 2:
        return z @ factor.T
    return jnp.einsum("...ij,...j->...i", factor, z)


def per_symbol_gain(h, K: int) -> jax.Array:
    """Gains seen by the K symbols: ``[..., J] -> [..., K]``, entry k = h[..., k mod J]."""
    J = h.shape[-1]
    reps = -(-K // J)
    return jnp.tile(h, (1,) * (h.ndim - 1) + (reps,))[..., :K]


_GRID_TOL = 1e-3  # |log(omega / grid point)|: 0.1%, far above float32 rounding of ns values


def check_on_grid(delay_spread_s, cfg: OFDMConfig = OFDMConfig()) -> np.ndarray:
    """Host check that every omega (seconds, any shape) is on ``cfg.delay_spread_grid_s``
    (within 0.1%), i.e. can be looked up when traced. Returns the grid indices (int ``[...]``);
    raises ValueError naming the first offending value and the grid."""
    w = np.asarray(delay_spread_s, np.float64)
    grid = np.asarray(cfg.delay_spread_grid_s, np.float64)
    bad = ~(np.isfinite(w) & (w > 0))
    if bad.any():
        raise ValueError(f"delay spread omega={w[bad].flat[0]!r} s must be finite and > 0")
    dist = np.abs(np.log(w)[..., None] - np.log(grid))
    off = dist.min(-1) >= _GRID_TOL
    if off.any():
        raise ValueError(
            f"delay spread omega={w[off].flat[0] * 1e9:g} ns is not on the cached factor grid "
            f"({', '.join(f'{g * 1e9:g}' for g in grid)} ns); add it to "
            "OFDMConfig.delay_spread_grid_s or pass it as a Python float")
    return dist.argmin(-1)


def _lookup_factor(omega, cfg: OFDMConfig, dtype, batch_shape, check_grid: bool = False):
    grid = np.asarray(cfg.delay_spread_grid_s, np.float64)
    table = jnp.asarray(_grid_table(cfg), dtype)  # [W, J, J]
    rdt = jnp.finfo(dtype).dtype
    lw = jnp.log(jnp.broadcast_to(jnp.asarray(omega, rdt), batch_shape))
    dist = jnp.abs(lw[..., None] - jnp.log(jnp.asarray(grid, rdt)))  # [..., W]
    idx = jnp.argmin(dist, axis=-1)
    ok = jnp.min(dist, axis=-1) < _GRID_TOL
    if check_grid:
        from jax.experimental import checkify
        w_all = jnp.broadcast_to(jnp.asarray(omega, rdt), batch_shape).reshape(-1)
        first_bad = w_all[jnp.argmin(ok.reshape(-1))] if w_all.size else jnp.asarray(0.0, rdt)
        checkify.check(jnp.all(ok), "delay spread omega={w} s is not on the cached factor grid "
                       + f"({', '.join(f'{g * 1e9:g}' for g in grid)} ns)", w=first_bad)
    f = table[idx]  # [..., J, J]
    return jnp.where(ok[..., None, None], f, jnp.asarray(jnp.nan, rdt).astype(dtype))


# ----------------------------------------------------------------------------- transmit
def _complex_normal(key, shape, cdt, std):
    """CN(0, std^2) samples (real std broadcastable to shape), built from two real normal draws
    scaled in real arithmetic: same law as jax.random.normal's complex path, fewer flops.
    (Slicing one [2, *shape] draw instead is ~10x slower on XLA:CPU: it breaks RNG fusion.)"""
    rdt = jnp.finfo(cdt).dtype
    k_re, k_im = jax.random.split(key)
    r = std * np.sqrt(0.5).astype(rdt)
    return jax.lax.complex(jax.random.normal(k_re, shape, rdt) * r,
                           jax.random.normal(k_im, shape, rdt) * r)


def _scale(z, r):
    """complex z times real r with 2 real multiplies (jnp would promote r to complex: 4 + 2)."""
    return jax.lax.complex(jnp.real(z) * r, jnp.imag(z) * r)


def transmit(key, symbols, snr, delay_spread_s=None, *, cfg: OFDMConfig = OFDMConfig(),
             factor=None, check_grid: bool = False):
    """Send symbols over the channel of ``cfg`` and equalise (eq. 2-3 + perfect/imperfect CSI).

    Args:
      key: a jax PRNG key (any impl). Split internally into channel / noise / CSI-error keys.
      symbols: complex ``[..., K]`` (complex64 or complex128), normally unit-average-energy QAM
        points; ``[...]`` are independent transmissions (each gets its own h).
      snr: gamma = P_h / P_delta, in dB if ``cfg.snr_in_db`` (default) else linear; scalar or
        broadcastable to ``[...]``; may be traced.
      delay_spread_s: omega in seconds; a concrete float (cached factor), or a traced scalar /
        ``[...]``-broadcastable array looked up in ``cfg.delay_spread_grid_s``. Ignored for
        ``cfg.channel`` "iid"/"awgn" and when ``factor`` is given.
      cfg: static ``OFDMConfig``.
      factor: optional channel factor ``[J, J]`` or ``[..., J, J]`` (overrides delay_spread_s).
      check_grid: with a traced omega, add a ``checkify`` check that it is on the grid (the
        caller must then run under ``checkify.checkify``); a concrete omega array is always
        checked on the host (ValueError naming it).
    Returns:
      ``(received, info)``: ``received`` complex ``[..., K]`` equalised symbols (MMSE output is
      biased: E[received | s, h] = bias * s), and ``info`` with
        ``h``            ``[..., J]`` complex true sub-channel gains,
        ``h_est``        ``[..., J]`` complex gains used by the equaliser (= h for perfect CSI),
        ``noise_var``    ``[...]`` real P_delta = P_h / gamma,
        ``bias``         ``[..., K]`` real |h_est|^2 / (|h_est|^2 + N'/P_s) for MMSE, 1 for ZF,
        ``noise_var_eff`` ``[..., K]`` real variance of the noise (+ CSI-error interference) in
                         the UNBIASED estimate ``received / bias``, i.e. N' / |h_est|^2 with
                         N' = P_delta + sigma_e^2 P_s (P_delta / P_h for "awgn").
      For bit LLRs use ``equalized_llr(received, info, M)`` =
      ``qam.demap_llr(received / bias, M, noise_var_eff)``; post-equalisation SNR = P_s / noise_var_eff.
    Raises:
      ValueError for non-complex/empty symbols, missing or non-positive concrete omega, or a
      concrete omega array off ``cfg.delay_spread_grid_s`` (naming the value).
    """
    if (cfg.channel == "ofdm" and factor is None and delay_spread_s is not None
            and not isinstance(delay_spread_s, (jax.core.Tracer, int, float)) and np.size(delay_spread_s) > 1):
        check_on_grid(np.asarray(delay_spread_s), cfg)  # a host array to be looked up: raise here
    symbols = jnp.asarray(symbols)
    if not jnp.issubdtype(symbols.dtype, jnp.complexfloating):
        raise TypeError(f"symbols must be complex64/complex128, got {symbols.dtype}")
    if symbols.ndim < 1 or symbols.shape[-1] < 1:
        raise ValueError(f"symbols must have shape [..., K] with K >= 1, got {symbols.shape}")
    cdt = symbols.dtype
    rdt = jnp.finfo(cdt).dtype
    batch, K = symbols.shape[:-1], symbols.shape[-1]
    J = cfg.num_subchannels
    k_h, k_n, k_e = jax.random.split(key, 3)

    snr = jnp.asarray(snr, rdt)
    gamma = 10.0 ** (snr / 10.0) if cfg.snr_in_db else snr
    p_delta = jnp.broadcast_to(cfg.channel_power / gamma, batch).astype(rdt)  # [...]

    noise = _complex_normal(k_n, symbols.shape, cdt, jnp.sqrt(p_delta)[..., None])

    if cfg.channel == "awgn":
        # Related works' AWGN channel: y = sqrt(P_h) s + n, scaled back; SNR per symbol = gamma.
        sq = math.sqrt(cfg.channel_power)
        received = symbols + noise / sq
        h = jnp.full(batch + (J,), sq, cdt)
        nve = jnp.broadcast_to((p_delta / cfg.channel_power)[..., None], symbols.shape)
        info = dict(h=h, h_est=h, noise_var=p_delta, bias=jnp.ones(symbols.shape, rdt),
                    noise_var_eff=nve)
        return received, info

    if cfg.channel == "iid":
        h = jax.random.normal(k_h, batch + (J,), cdt) * math.sqrt(cfg.channel_power)
    else:
        if factor is None:
            if delay_spread_s is None:
                raise ValueError("transmit: channel='ofdm' needs delay_spread_s or factor")
            try:
                w = float(delay_spread_s)  # concrete -> cached float64 factor
            except (TypeError, jax.errors.ConcretizationTypeError,
                    jax.errors.TracerArrayConversionError):
                w = None
            if w is not None:
                factor = channel_factor(J, cfg.subcarrier_spacing_hz, w, cfg.channel_power)
            else:
                factor = _lookup_factor(delay_spread_s, cfg, cdt, batch, check_grid)
        factor = jnp.asarray(factor, cdt)
        if factor.shape[-2:] != (J, J):
            raise ValueError(f"factor shape {factor.shape} does not end in (J, J)=({J}, {J})")
        h = sample_channel(k_h, factor, batch, cdt)

    if cfg.csi_error_var > 0:
        h_est = h + jax.random.normal(k_e, h.shape, cdt) * math.sqrt(cfg.csi_error_var)
    else:
        h_est = h

    g = per_symbol_gain(h, K)
    y = g * symbols + noise
    ge = per_symbol_gain(h_est, K) if h_est is not h else g
    g2 = jnp.real(ge) ** 2 + jnp.imag(ge) ** 2
    n_eff = p_delta[..., None] + cfg.csi_error_var * cfg.signal_power  # N' [..., 1]
    if cfg.equalizer == "zf":
        received = y / ge
        bias = jnp.ones(symbols.shape, rdt)
    else:
        inv = 1.0 / (g2 + n_eff / cfg.signal_power)
        received = _scale(jnp.conj(ge) * y, inv)
        bias = g2 * inv
    info = dict(h=h, h_est=h_est, noise_var=p_delta, bias=bias, noise_var_eff=n_eff / g2)
    return received, info


def equalized_llr(received, info, M: int, *, method: str = "maxlog"):
    """Bit LLRs ``[..., K, log2 M]`` (ours: ln P(b=0)/P(b=1)) from ``transmit``'s outputs.

    Removes the MMSE bias and uses the per-symbol effective noise variance:
    ``qam.demap_llr(received / info['bias'], M, info['noise_var_eff'], method=method)``.
    """
    from . import qam
    return qam.demap_llr(received / info["bias"].astype(received.dtype), M,
                         info["noise_var_eff"], method=method)
