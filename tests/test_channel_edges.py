"""Boundaries of the channel's configuration checks (written to kill mutants that moved them:
a check must reject its boundary value exactly when the documented rule says so)."""
import math

import pytest

from dekag_jax.channel.ofdm import OFDMConfig


@pytest.mark.parametrize("field", ["subcarrier_spacing_hz", "channel_power", "signal_power"])
def test_positive_fields_reject_zero_negative_and_nan(field):
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match=field):
            OFDMConfig(**{field: bad})
    OFDMConfig(**{field: 1e-9})   # any positive value is fine


def test_counts_and_variances_at_their_boundaries():
    OFDMConfig(num_subchannels=1)
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="num_subchannels"):
            OFDMConfig(num_subchannels=bad)
    OFDMConfig(csi_error_var=0.0)  # perfect CSI
    for bad in (-1e-9, math.nan):
        with pytest.raises(ValueError, match="csi_error_var"):
            OFDMConfig(csi_error_var=bad)
    for bad in (0.0, -30e-9, math.inf):
        with pytest.raises(ValueError, match="omega"):
            OFDMConfig(delay_spread_grid_s=(30e-9, bad))


def test_transmit_accepts_one_symbol_and_no_batch_axes():
    """``symbols [..., K]``: ``[...]`` may be empty and K = 1 is a transmission; K = 0 is not."""
    import jax
    import jax.numpy as jnp

    from dekag_jax.channel import ofdm

    cfg = OFDMConfig(channel="iid")
    for shape in ((5,), (3, 1)):
        y, info = ofdm.transmit(jax.random.key(0), jnp.ones(shape, jnp.complex64), 10.0, cfg=cfg)
        assert y.shape == shape and info["bias"].shape == shape and info["h"].shape[:-1] == shape[:-1]
    for shape in ((0,), ()):
        with pytest.raises(ValueError, match="K >= 1"):
            ofdm.transmit(jax.random.key(0), jnp.ones(shape, jnp.complex64), 10.0, cfg=cfg)


def test_condition_ids_are_distinct_31_bit_crcs():
    """Each condition seeds its own realisations: ids are crc32(key) in [0, 2^31) (documented)
    and distinct over the paper's grid (colliding ids would give two points the same noise)."""
    import zlib

    from dekag_jax.channel import montecarlo as mc
    from dekag_jax.channel.condition import phi_eu_grid

    grid = phi_eu_grid()
    ids = [mc.condition_id(c) for c in grid]
    assert len(set(ids)) == len(grid) == 75
    for c, i in zip(grid, ids):
        assert 0 <= i < 2 ** 31 and i == zlib.crc32(c.key.encode()) % 2 ** 31


def test_row_stats_check_the_delay_spread_on_the_host():
    """An omega array off the factor grid is rejected before tracing, naming the value."""
    import jax
    import numpy as np

    from dekag_jax.channel import montecarlo as mc

    keys = jax.random.split(jax.random.key(0), 2)
    with pytest.raises(ValueError, match="1e-07|100"):
        mc.uncoded_row_stats(keys, np.array([10.0, 10.0]), np.array([300e-9, 100e-9]), K=8)
