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
