"""Default link-level sweep (paper Sec. VI-A2 grid, no model): uncoded 64-QAM over the
correlated OFDM channel (eq. 2-3), K = tau * 512 * 512 symbols per transmission.

    python -m dekag_jax.sweep --config configs/sweep_default.py --out runs/sweep_default
    python -m dekag_jax.sweep --config configs/sweep_default.py --config.num_realizations=1000 ...

200 transmissions per point (90 points, 18,000 channel draws) is what README.md describes and
times; 1000 narrows the spread estimates at 5x the time.
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.taus = "1/64,2/64,3/64,4/64,5/64,6/64"   # rates tau (symbols per pixel), each in {1..6}/64
    c.snrs_db = (0.0, 5.0, 10.0, 15.0, 20.0)     # gamma = P_h / P_delta [dB]
    c.delay_spreads_ns = (30.0, 300.0, 3000.0)   # omega [ns]
    c.num_pixels = 512 * 512                     # X: K = tau * X
    c.M = 64                                     # QAM order
    c.num_realizations = 200                     # transmissions (channel draws) per condition
    c.batch = 64                                 # transmissions per device step (all devices)
    c.seed = 0
    c.channel = ml_collections.ConfigDict()      # fields of dekag_jax.channel.OFDMConfig
    c.channel.num_subchannels = 120
    c.channel.subcarrier_spacing_hz = 30e3
    c.channel.channel = "ofdm"                   # ofdm | iid | awgn
    c.channel.equalizer = "mmse"                 # mmse | zf
    c.channel.csi_error_var = 0.0
    c.lock()
    return c
