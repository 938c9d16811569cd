"""Sweep statistics against theory, with confidence bounds that a wrong detector cannot meet.

The measurement is ``montecarlo.uncoded_row_stats`` (what ``python -m dekag_jax.sweep``
aggregates). Theory: 64-QAM (TS 38.211 Gray labelling) over Rayleigh fading with perfect CSI,
computed here from the decision regions of each axis (exact for AWGN given the gain, then
integrated over the gain): SER and BER separately, so a BER derived from the SER (e.g. SER / 6,
"one bit per symbol error") fails where the two differ (low SNR: BER/SER = 0.41 at 0 dB,
theory and measured).

Independence: with ``channel="iid"`` and K = J = 120 symbols per transmission, every symbol
sees its own independent gain, and transmissions are independent, so the per-row error rates
are i.i.d.; confidence bounds use their sample standard deviation (robust to the correlation
of the bits of one symbol) at 4.5 sigma. A random detector (SER 63/64) or one that ignores
the equaliser's bias fails every bound by tens of sigma.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

from dekag_jax.channel import montecarlo as mc
from dekag_jax.channel.ofdm import OFDMConfig

M = 64
# Amplitude of each 8-PAM level index l (in unit-energy units) and the 3 Gray bits of the
# level from TS 38.211 5.1.4: amplitude = (1-2 b0)(4 - (1-2 b2)(2 - (1-2 b4))) / sqrt(42).
_BITS = np.array([[b0, b2, b4] for b0 in (0, 1) for b2 in (0, 1) for b4 in (0, 1)])
_AMP = np.array([(1 - 2 * a) * (4 - (1 - 2 * b) * (2 - (1 - 2 * c))) for a, b, c in _BITS])
_ORDER = np.argsort(_AMP)
_LEVELS = _AMP[_ORDER] / np.sqrt(42.0)      # ascending
_LBITS = _BITS[_ORDER]
_HAM = (_LBITS[:, None, :] != _LBITS[None, :, :]).sum(-1)   # [8, 8] bit differences


def _axis_error_probs(esn0):
    """AWGN, one axis (noise variance N0/2): (P[level decision wrong], mean bit errors / 3)."""
    sigma = np.sqrt(1.0 / (2.0 * esn0))
    edges = np.concatenate([[-np.inf], (_LEVELS[1:] + _LEVELS[:-1]) / 2, [np.inf]])
    cdf = stats.norm.cdf((edges[None, :] - _LEVELS[:, None]) / sigma)      # [8, 9]
    p = np.diff(cdf, axis=1)                                               # [8 sent, 8 decided]
    p_sym = 1.0 - np.mean(np.diag(p))
    p_bit = np.mean((p * _HAM).sum(1)) / 3.0
    return p_sym, p_bit


@functools.lru_cache(maxsize=None)
def theory(snr_db):
    """(SER, BER) of 64-QAM over Rayleigh (E|h|^2 = 1), ML detection with perfect CSI."""
    g0 = 10 ** (snr_db / 10)

    def ser(g):
        pa, _ = _axis_error_probs(g0 * g)
        return 1 - (1 - pa) ** 2

    def ber(g):
        return _axis_error_probs(g0 * g)[1]

    w = lambda f: lambda g: f(g) * np.exp(-g)                                   # noqa: E731
    return (integrate.quad(w(ser), 0, np.inf, limit=200)[0],
            integrate.quad(w(ber), 0, np.inf, limit=200)[0])


def _rows(cfg, snrs_db, omega_s, R, K, seed):
    n = len(snrs_db) * R
    keys = jax.random.split(jax.random.key(seed), n)
    snr = jnp.repeat(jnp.asarray(snrs_db, jnp.float32), R)
    om = jnp.full((n,), omega_s, jnp.float32)
    out = mc.uncoded_row_stats(keys, snr, om, K=K, M=M, cfg=cfg)
    return {k: np.asarray(v).reshape(len(snrs_db), R) for k, v in out.items()}


def test_our_theory_matches_the_package_theory():
    for snr_db in (0.0, 10.0, 25.0):
        assert abs(theory(snr_db)[0] / mc.ser_rayleigh_theory(M, 10 ** (snr_db / 10)) - 1) < 1e-6


@pytest.mark.parametrize("equalizer", ["mmse", pytest.param("zf", marks=pytest.mark.slow)])
def test_ser_and_ber_within_confidence_bounds_of_theory(equalizer):
    snrs = (0.0, 10.0, 20.0, 30.0)
    R, K = 1000, 120
    out = _rows(OFDMConfig(channel="iid", equalizer=equalizer), snrs, 300e-9, R, K, seed=5)
    for i, snr_db in enumerate(snrs):
        ser_t, ber_t = theory(snr_db)
        for name, per_row, t in (("SER", out["sym_err"][i] / K, ser_t),
                                 ("BER", out["bit_err"][i] / (6 * K), ber_t)):
            mean, se = per_row.mean(), per_row.std(ddof=1) / np.sqrt(R)
            # Floor on the standard error: binomial value at the theory (guards a zero sd).
            se = max(se, np.sqrt(t * (1 - t) / (R * K)))
            assert abs(mean - t) < 4.5 * se, f"{name} at {snr_db} dB: {mean:.5f} vs {t:.5f} (se {se:.1e})"
    if equalizer == "mmse":
        # MSE of the (biased) MMSE output, what a JSCC decoder receives: given the gain g,
        # E|y - s|^2 = N0 / (g + N0) (P_s = 1), so over Rayleigh N0 e^N0 E1(N0), N0 = 1 / gamma.
        for i, snr_db in enumerate(snrs):
            n0 = 10 ** (-snr_db / 10)
            t = n0 * np.exp(n0) * special.exp1(n0)
            per_row = out["sse"][i] / K
            mean, se = per_row.mean(), per_row.std(ddof=1) / np.sqrt(R)
            assert abs(mean - t) < 4.5 * se, f"MSE at {snr_db} dB: {mean:.5f} vs {t:.5f} (se {se:.1e})"
    # BER is counted bit by bit: at 0 dB the BER/SER ratio is far from Gray's high-SNR 1/6.
    ratio = out["bit_err"][0].sum() / (6 * out["sym_err"][0].sum())
    assert abs(ratio - theory(0.0)[1] / theory(0.0)[0]) < 0.01 and ratio > 0.25, ratio


def test_smaller_delay_spread_gives_larger_spread_across_transmissions():
    """Paper Sec. VI-B3: smaller omega = stronger frequency correlation = fewer independent
    fades per transmission, so the per-transmission SER varies more. F-test on the variances
    of per-transmission SER (K = 1200 symbols, 10 dB, 200 transmissions per omega), one-sided
    at p < 1e-6 for each adjacent pair; the mean SER is the same for all omega (the marginal
    of every sub-channel is the same Rayleigh), checked with Welch's t-test."""
    R, K = 200, 1200
    cfg = OFDMConfig()
    sers = {}
    for i, om in enumerate((30e-9, 300e-9, 3000e-9)):
        sers[om] = _rows(cfg, (10.0,), om, R, K, seed=20 + i)["sym_err"][0] / K
    crit = stats.f.ppf(1 - 1e-6, R - 1, R - 1)
    for small, large in ((30e-9, 300e-9), (300e-9, 3000e-9)):
        f = sers[small].var(ddof=1) / sers[large].var(ddof=1)
        assert f > crit, (small, large, f, crit)
    for om, s in sers.items():
        t = stats.ttest_1samp(s, theory(10.0)[0])
        assert t.pvalue > 1e-4, (om, s.mean(), theory(10.0)[0])


def test_sweep_tables_match_theory_on_iid_channel(tmp_path):
    """The sweep end to end (aggregation included) on independent fades: 0 and 10 dB,
    128 transmissions x 64 symbols = 8192 independent symbols per point; SER and BER each
    within 4.5 binomial sigma of theory (BER: bits of one symbol are correlated, so its sigma
    is taken over symbols: sqrt(BER (1 - BER) / n_sym), conservative). At 0 dB a guessing
    detector (SER 63/64 = 0.984 vs 0.929) is 19 sigma off."""
    import importlib.util
    import os

    from dekag_jax import sweep

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(
        "sweep_smoke_cfg2", os.path.join(root, "configs", "sweep_smoke.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config()
    c.taus, c.snrs_db, c.delay_spreads_ns = "1/64", (0.0, 10.0), (300.0,)
    c.num_realizations, c.batch = 128, 64
    c.channel.channel = "iid"
    rows = sweep.run_sweep(c, str(tmp_path / "iid"), progress=False).rows
    assert len(rows) == 2
    for r in rows:
        n = r["num_symbols"]
        ser_t, ber_t = theory(r["snr_db"])
        assert abs(r["ser_theory"] / ser_t - 1) < 1e-6
        assert abs(r["ser"] - ser_t) < 4.5 * np.sqrt(ser_t * (1 - ser_t) / n), (r, ser_t)
        assert abs(r["ber"] - ber_t) < 4.5 * np.sqrt(ber_t * (1 - ber_t) / n), (r, ber_t)
