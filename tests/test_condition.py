"""One condition type phi = (tau, gamma, omega): parsing with units, validation, the paper's grid
Phi_EU, the batched form for CALA, and off-grid delay spreads raising instead of giving NaN."""
import dataclasses
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

from dekag_jax.channel import amc, montecarlo as mc, ofdm, qam
from dekag_jax.channel.condition import (PHI_EU_DELAY_SPREADS_S, PHI_EU_SNRS_DB, PHI_EU_TAUS, Condition,
                                         ConditionError, as_condition, parse_delay_spread, parse_rate,
                                         parse_snr_db, phi_array, phi_eu_grid)


def test_units_and_hints():
    for text in ("3000ns", "3000 ns", "3us", "3µs", "3μs", "0.003ms", "3e-6s", "3e-6", "3E-6S"):
        assert parse_delay_spread(text) == pytest.approx(3e-6, rel=1e-12), text
    assert parse_delay_spread(30e-9) == 30e-9
    with pytest.raises(ConditionError, match="did you mean 3000ns"):
        parse_delay_spread("3000")
    with pytest.raises(ConditionError, match="did you mean 3000ns"):
        parse_delay_spread(3000)
    for bad, msg in (("-3ns", "> 0"), ("0", "> 0"), ("nan", "unit of time"), ("3 parsecs", "unit of time"),
                     ("inf", "unit of time")):
        with pytest.raises(ConditionError, match=msg):
            parse_delay_spread(bad)
    assert parse_rate("2/64") == parse_rate("1/32") == parse_rate("0.03125") == Fraction(2, 64)
    with pytest.raises(ConditionError, match="did you mean 2/64"):
        parse_rate("2")
    for bad in ("7/64", "0", "1/128", "abc", "1/0"):
        with pytest.raises(ConditionError, match="tau="):
            parse_rate(bad)
    assert parse_snr_db("10dB") == parse_snr_db(" 10 db ") == parse_snr_db("10") == 10.0
    assert parse_snr_db("-2.5dB") == -2.5
    with pytest.raises(ConditionError, match="dB"):
        parse_snr_db("10 dBm")
    with pytest.raises(ConditionError, match="finite"):
        parse_snr_db(float("nan"))


def test_condition_type():
    c = Condition("2/64", "10dB", "3000ns")
    assert c == Condition(Fraction(1, 32), 10, 3e-6) == Condition.parse("2/64, 10dB, 3us")
    assert c.tau == c.rate == Fraction(2, 64) and isinstance(c.snr_db, float)
    assert c.key == "tau2-64_snr10_omega3000ns" and hash(c) == hash(Condition(2 / 64, 10.0, 3e-6))
    assert c.phi() == (2 / 64, 10.0, 3e-6) and c.as_array().dtype == np.float32
    assert c.num_symbols(64 * 64) == 128 and c.num_symbols(512 * 512) == 8192
    assert str(c) == "tau=2/64, gamma=10 dB, omega=3000ns"
    assert as_condition(("2/64", 10.0, 3e-6)) == as_condition("2/64,10,3e-6s") == as_condition(c) == c
    assert mc.Condition is Condition  # one type, re-exported where it was first defined
    with pytest.raises(ConditionError, match="did you mean 3000ns"):
        Condition("2/64", 10.0, 3000)
    with pytest.raises(ConditionError, match="tau="):
        Condition("7/64", 10.0, 3e-6)
    with pytest.raises(ConditionError, match="tau,gamma,omega"):
        Condition.parse("2/64,10")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.snr_db = 3.0


def test_phi_eu_grid_is_the_papers():
    """Sec. VI-A2: tau in {i/64 | i = 2..6}, gamma in {0, 5, ..., 20} dB, omega in {30, 300, 3000} ns."""
    assert PHI_EU_TAUS == tuple(Fraction(i, 64) for i in range(2, 7))
    assert PHI_EU_SNRS_DB == (0.0, 5.0, 10.0, 15.0, 20.0)
    assert PHI_EU_DELAY_SPREADS_S == (30e-9, 300e-9, 3000e-9)
    grid = phi_eu_grid()
    assert len(grid) == 75 == len(set(grid)) and grid[0] == Condition("2/64", 0, "30ns")
    a = phi_array(grid)
    assert a.shape == (75, 3) and a.dtype == np.float32
    np.testing.assert_allclose(a[-1], [6 / 64, 20.0, 3e-6], rtol=1e-6)


def test_condition_grid_one_place_for_values_and_validation():
    from dekag_jax.channel.condition import ConditionGrid, delay_spread_unit_hint
    from dekag_jax.ka import codec_training
    from dekag_jax.ka.transmission import LinkConfig, sample_conditions

    g = ConditionGrid()  # Phi_EU
    assert g.conditions() == phi_eu_grid() and g.rate_units() == (2, 3, 4, 5, 6) and g.taus == PHI_EU_TAUS
    g = ConditionGrid.from_config("6/64, 2/64", ("10dB", -3), (3000, 30.0))  # order kept, units parsed
    assert g.rates == (Fraction(6, 64), Fraction(2, 64)) and g.snrs_db == (10.0, -3.0)
    assert g.delay_spreads_s == (3000e-9, 30e-9)
    for kw, msg in ((dict(rates=("7/64",)), "7/64"), (dict(snrs_db=(1e4,)), "linear ratio"),
                    (dict(delay_spreads_s=(3000.0,)), "did you mean 3000ns"), (dict(rates=()), "non-empty"),
                    (dict(rates="2/64"), "sequence")):
        with pytest.raises(ConditionError, match=msg):
            ConditionGrid(**kw)
    assert delay_spread_unit_hint(3e-6, "ns") == "did you mean 3e-06s = 3000ns?"
    # the codec trainer's grid is this one (plus link indices): the same static values in the same
    # order reach the sampler, so a seed gives the draws it gave before the grids were merged
    cg = codec_training.ConditionGrid(rates=("2/64", "4/64", "6/64"), snrs_db=(5.0, 15.0),
                                      delay_spreads_s=(300e-9, 3000e-9))
    assert isinstance(cg, ConditionGrid) and cg.omega_indices(LinkConfig()) == (1, 2)
    got = sample_conditions(jax.random.key(3), 16, cg.rate_units(), cg.snrs_db, cg.omega_indices(LinkConfig()))
    want = sample_conditions(jax.random.key(3), 16, (2, 4, 6), (5.0, 15.0), (1, 2))
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_off_grid_delay_spread_raises_instead_of_nan():
    cfg = ofdm.OFDMConfig()  # grid 30, 300, 3000 ns
    s = qam.bits_to_symbols(np.random.default_rng(0).integers(0, 2, (2, 6 * 64)), 64)
    key = jax.random.key(0)
    np.testing.assert_array_equal(ofdm.check_on_grid([30e-9, 3e-6, 300e-9], cfg), [0, 2, 1])
    with pytest.raises(ValueError, match="omega=123 ns is not on the cached factor grid"):
        ofdm.check_on_grid(np.array([300e-9, 123e-9]), cfg)
    # a concrete array reaching the table look-up is checked on the host
    with pytest.raises(ValueError, match="omega=123 ns is not on the cached factor grid"):
        ofdm.transmit(key, s, jnp.array([0.0, 10.0]), np.array([300e-9, 123e-9]), cfg=cfg)
    # ... and so are the package's jitted entry points, before they trace
    keys = jax.random.split(key, 2)
    with pytest.raises(ValueError, match="omega=1000 ns"):
        mc.uncoded_row_stats(keys, jnp.array([0.0, 10.0]), np.array([1e-6, 3e-6], np.float32), K=64, cfg=cfg)
    link = mc.make_link("1/64", num_pixels=64 * 64)
    with pytest.raises(ValueError, match="omega=1000 ns"):
        link(key, jnp.zeros(2), np.array([1e-6, 3e-6]), s[:, :64])
    with pytest.raises(ValueError, match="omega=1000 ns"):
        amc.measure_bler(amc.MCS(4, Fraction(1, 2)), 10.0, 1e-6, key=key, fn=lambda *a: None)
    # a value traced by the caller: checkify names it (one compile, two values)
    f = jax.jit(checkify.checkify(lambda w: ofdm.transmit(key, s, 10.0, w, cfg=cfg, check_grid=True)[0]))
    err, y = f(jnp.float32(3e-6))
    err.throw()  # on the grid: no error
    assert np.all(np.isfinite(np.asarray(y)))
    err, _ = f(jnp.float32(123e-9))
    with pytest.raises(checkify.JaxRuntimeError, match="not on the cached factor grid"):
        err.throw()


def test_amc_takes_a_condition():
    tab = dict(meta=dict(target_bler=0.01), points=[
        dict(snr_db=s, delay_spread_s=w, qam=16, rate="1/2", errors=0, blocks=1000)
        for s in (0.0, 20.0) for w in (30e-9, 3e-6)])
    c = Condition("2/64", 10.0, "3000ns")
    assert amc.select_mcs(c, table=tab) == amc.select_mcs("2/64", 10.0, 3e-6, table=tab)
    assert amc.bit_budget(c, table=tab) == amc.select_mcs(c, table=tab).info_bits
    with pytest.raises(ConditionError, match="did you mean 3000ns"):
        amc.select_mcs("2/64", 10.0, 3000.0, table=tab)
