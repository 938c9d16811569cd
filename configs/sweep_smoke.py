"""Smoke sweep: the default grid shape, tiny sizes (seconds on a laptop CPU; used by tests).

    python -m dekag_jax.sweep --config configs/sweep_smoke.py --out /tmp/sweep_smoke
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.taus = "1/64,2/64"
    c.snrs_db = (0.0, 10.0, 20.0)
    c.delay_spreads_ns = (30.0, 3000.0)
    c.num_pixels = 64 * 64                       # K = 64 and 128 symbols
    c.M = 64
    c.num_realizations = 16
    c.batch = 8
    c.seed = 0
    c.channel = ml_collections.ConfigDict()
    c.channel.num_subchannels = 120
    c.channel.subcarrier_spacing_hz = 30e3
    c.channel.channel = "ofdm"
    c.channel.equalizer = "mmse"
    c.channel.csi_error_var = 0.0
    c.lock()
    return c
