"""AMC: MCS set, codeword layout, table lookup/selection, Monte Carlo BLER, coded link."""
from fractions import Fraction

import jax
import numpy as np
import pytest

from dekag_jax.channel import amc


def _table(points, snrs=(0.0, 10.0), omegas=(30e-9, 3e-6)):
    pts = []
    for s in snrs:
        for w in omegas:
            for (q, r), (e, b) in points(s, w).items():
                pts.append(dict(snr_db=s, delay_spread_s=w, qam=q, rate=r, errors=e, blocks=b))
    return dict(meta=dict(target_bler=0.01), points=pts)


def test_mcs_set_and_layout():
    ms = amc.all_mcs()
    assert len(ms) == len(amc.QAM_ORDERS) * len(amc.CODE_RATES)
    eff = [m.efficiency for m in ms]
    assert eff == sorted(eff, reverse=True)
    m = amc.MCS(64, Fraction(1, 2))
    assert amc.codeword_shape(m) == (2880, 5760)
    p = amc.plan(m, 8192)                       # tau = 2/64 of a 512 x 512 image
    assert (p.num_codewords, p.k, p.info_bits, p.used_symbols) == (8, 2880, 23040, 7680)
    small = amc.plan(m, 200)                    # below one codeword: one short codeword
    assert small.num_codewords == 1 and small.n == 1200
    with pytest.raises(ValueError):
        amc.MCS(32, Fraction(1, 2))
    with pytest.raises(ValueError, match="budget"):
        amc.plan(m, 0)


def test_select_mcs_rules():
    def pts(s, w):
        if s == 10.0 and w == 3e-6:
            return {(16, "1/2"): (2, 1000), (64, "3/4"): (50, 1000), (4, "1/4"): (0, 1000)}
        return {(64, "3/4"): (500, 1000), (16, "1/2"): (90, 1000), (4, "1/4"): (30, 1000)}
    tab = _table(pts)
    p = amc.select_mcs("2/64", 10.0, 3000e-9, table=tab)
    assert p.mcs == amc.MCS(16, Fraction(1, 2)) and p.meets_target and p.grid_point == (10.0, 3e-6)
    # gamma between grid points: the lower (conservative) one; omega: nearest in log scale.
    assert amc.select_mcs("2/64", 14.0, 2000e-9, table=tab).mcs == p.mcs
    q = amc.select_mcs("2/64", 9.9, 3000e-9, table=tab)
    assert q.grid_point == (0.0, 3e-6)
    # Nothing meets 1%: the most robust scheme tried, flagged.
    assert q.mcs == amc.MCS(4, Fraction(1, 4)) and not q.meets_target and q.bler == pytest.approx(0.03)
    with pytest.raises(ValueError, match="below"):
        amc.select_mcs("2/64", -3.0, 3000e-9, table=tab)
    with pytest.raises(ValueError):
        amc.select_mcs("7/64", 10.0, 3000e-9, table=tab)
    # Twice the symbols: floor(16384 / 960) = 17 codewords instead of 8.
    assert amc.bit_budget("4/64", 10.0, 3e-6, table=tab) == 17 * p.k


def test_shipped_table():
    tab = amc.load_table()
    meta = tab["meta"]
    assert meta["target_bler"] == 0.01 and meta["max_blocks_per_point"] >= 300
    grid = {(p["snr_db"], p["delay_spread_s"]) for p in tab["points"]}
    assert grid == {(s, w) for s in (0, 5, 10, 15, 20) for w in (30e-9, 300e-9, 3000e-9)}
    for w in (30e-9, 300e-9, 3000e-9):
        bits = [amc.select_mcs("2/64", s, w, table=tab).info_bits for s in (0, 5, 10, 15, 20)]
        assert bits == sorted(bits), (w, bits)     # more SNR never buys fewer bits
    # A frequency-selective channel (large omega) gives more diversity than a flat one.
    assert amc.bit_budget("2/64", 10, 3000e-9) > amc.bit_budget("2/64", 10, 30e-9)


def test_monte_carlo_bler():
    mcs = amc.MCS(16, Fraction(1, 2))
    fn = amc.bler_batch_fn(mcs, 40)
    e_hi, b_hi = amc.measure_bler(mcs, 25.0, 3000e-9, key=jax.random.key(0), max_blocks=80, batch=40, fn=fn)
    e_lo, b_lo = amc.measure_bler(mcs, -5.0, 3000e-9, key=jax.random.key(1), max_blocks=80, batch=40, fn=fn)
    assert (e_hi, b_hi) == (0, 80)
    assert e_lo > 0.5 * b_lo and b_lo == 40     # early reject after the first batch
    # The coded link itself is exercised bit-exactly by tests/test_baselines.py.
    p = amc.plan(mcs, 2 * amc.SYMBOLS_PER_CODEWORD)
    with pytest.raises(ValueError, match="exceeds"):
        amc.send_bits(jax.random.key(2), np.zeros(p.info_bits + 1), p, 30.0, 3000e-9)
