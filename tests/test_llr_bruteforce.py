"""``ofdm.equalized_llr`` against LLRs computed by brute force from y, h and N0.

The brute force never looks at the equaliser's output model: it takes the RAW observation
y = h s + n (recovered from ``transmit``'s equalised output with the textbook equaliser
formula), the gain the receiver believes (h_est), the noise power, and evaluates for every bit
the posterior over all 64 points, each point built from the TS 38.211 5.1.4 formula (not from
our tables):

    exact:   LLR_b = ln sum_{c: b=0} exp(-|y - h_est c|^2 / N') - ln sum_{c: b=1} (same)
    max-log: LLR_b = (min_{c: b=1} |y - h_est c|^2 - min_{c: b=0} |y - h_est c|^2) / N'

with N' = N0 + sigma_e^2 P_s. Reading for imperfect CSI (the one ``transmit`` documents):
mismatched decoding with the estimate, the estimation-error term e s treated as extra Gaussian
noise of its AVERAGE power sigma_e^2 P_s (not the per-point sigma_e^2 |c|^2). With perfect CSI
N' = N0 and both LLR types are the true ones. Equalisation with bias removal is then only a
change of variables (|y - h c|^2 = |h|^2 |y/h - c|^2), so the two must agree to rounding.
"""
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dekag_jax.channel import ofdm, qam
from dekag_jax.channel.ofdm import OFDMConfig

M = 64


def _points_38211():
    """[64] unit-energy points and [64, 6] bits from TS 38.211 5.1.4 (64-QAM)."""
    bits = np.array(list(itertools.product([0, 1], repeat=6)))
    s = 1 - 2 * bits
    re = s[:, 0] * (4 - s[:, 2] * (2 - s[:, 4]))
    im = s[:, 1] * (4 - s[:, 3] * (2 - s[:, 5]))
    return (re + 1j * im) / np.sqrt(42.0), bits


def _llr_brute(y, h, n_eff, exact):
    """y, h: complex [N]; n_eff: real [N] -> [N, 6] float64 LLRs (ln P(0)/P(1))."""
    pts, bits = _points_38211()
    d = np.abs(y[:, None] - h[:, None] * pts[None, :]) ** 2 / n_eff[:, None]     # [N, 64]
    out = np.empty((y.size, 6))
    for b in range(6):
        m0, m1 = bits[:, b] == 0, bits[:, b] == 1
        if exact:
            def lse(z):
                zmax = z.max(axis=1, keepdims=True)
                return zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=1))
            out[:, b] = lse(-d[:, m0]) - lse(-d[:, m1])
        else:
            out[:, b] = d[:, m1].min(axis=1) - d[:, m0].min(axis=1)
    return out


@functools.partial(jax.jit, static_argnums=(1, 3, 4))
def _run_jit(key, cfg, snr_db, K, B):
    # One compile per configuration (eager dispatch recompiles every op per shape: ~10 s).
    k1, k2 = jax.random.split(key)
    idx = jax.random.randint(k1, (B, K), 0, M)
    s = qam.constellation(M, jnp.complex128)[idx]
    received, info = ofdm.transmit(k2, s, snr_db, 300e-9, cfg=cfg)
    return s, received, info


def _run(cfg, snr_db, seed, K=2400, B=20):
    s, received, info = _run_jit(jax.random.key(seed), cfg, snr_db, K, B)
    return np.asarray(s), received, info


_llr = jax.jit(ofdm.equalized_llr, static_argnums=2, static_argnames="method")


@pytest.fixture(scope="module", autouse=True)
def _x64():
    # float64 end to end so that agreement is to rounding, not to float32 LLR noise.
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("equalizer,csi_var,snr_db", [
    ("mmse", 0.0, 12.0), ("mmse", 0.0, 0.0), ("mmse", 0.02, 15.0), ("zf", 0.02, 15.0),
    # Each further channel configuration costs a ~3 s compile: the rest run with -m slow.
    pytest.param("zf", 0.0, 12.0, marks=pytest.mark.slow),
    pytest.param("mmse", 0.05, 5.0, marks=pytest.mark.slow),
])
@pytest.mark.parametrize("method", ["exact", "maxlog"])
def test_equalized_llr_equals_bruteforce_from_raw_observation(equalizer, csi_var, snr_db, method):
    cfg = OFDMConfig(equalizer=equalizer, csi_error_var=csi_var, channel="iid")
    s, received, info = _run(cfg, snr_db, seed=7)
    K = s.shape[-1]
    got = np.asarray(_llr(received, info, M, method=method))     # [B, K, 6]

    j = np.arange(K) % cfg.num_subchannels
    h_est = np.asarray(info["h_est"])[:, j]                                    # [B, K]
    h = np.asarray(info["h"])[:, j]
    n0 = np.asarray(info["noise_var"])[:, None] * np.ones_like(h.real)        # [B, K]
    n_eff = n0 + csi_var * cfg.signal_power
    r = np.asarray(received)
    # Undo the textbook equaliser to get the raw observation y.
    if equalizer == "zf":
        y = r * h_est
    else:
        y = r * (np.abs(h_est) ** 2 + n_eff / cfg.signal_power) / np.conj(h_est)
    # The raw observation is the channel's: y - h s is the receiver noise, of power N0.
    noise = y - h * s
    assert abs(np.mean(np.abs(noise) ** 2) / n0.mean() - 1) < 0.1
    ref = _llr_brute(y.ravel(), h_est.ravel(), n_eff.ravel(), exact=(method == "exact"))
    ref = ref.reshape(got.shape)
    np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-7 * np.abs(ref).max())


def test_llrs_without_bias_removal_would_differ():
    """Guard for the test above: at 0 dB the MMSE bias is far from 1, so demapping the biased
    output with the same noise variance gives clearly different LLRs."""
    cfg = OFDMConfig(equalizer="mmse", channel="iid")
    s, received, info = _run(cfg, 0.0, seed=7)
    right = np.asarray(_llr(received, info, M, method="exact"))
    biased = np.asarray(jax.jit(qam.demap_llr, static_argnums=1, static_argnames="method")(
        received, M, info["noise_var_eff"], method="exact"))
    assert np.median(np.abs(np.asarray(info["bias"]) - 1)) > 0.2
    assert np.max(np.abs(right - biased)) > 1.0


def test_exact_llrs_are_calibrated():
    """Perfect CSI: exact LLRs are true posteriors, so the mean of 1 / (1 + e^|L|) (each bit's
    posterior probability of a wrong hard decision) equals the measured hard-decision BER.
    ~290k bits at 10 dB, MMSE with bias removal; N0 misjudged by a factor 1.25 either way
    moves the prediction by > 8% (measured), the tolerance is 3% (Monte Carlo error ~0.7%)."""
    cfg = OFDMConfig(equalizer="mmse", channel="iid")
    s, received, info = _run(cfg, 10.0, seed=3)
    idx = np.asarray(qam.symbols_to_indices(jnp.asarray(s), M)).ravel()
    bits = ((idx[:, None] >> np.arange(5, -1, -1)) & 1).ravel()
    ber_pred = {}
    for scale in (1.0, 0.8, 1.25):
        inf = dict(info, noise_var_eff=info["noise_var_eff"] * scale)
        llr = np.asarray(_llr(received, inf, M, method="exact")).ravel()
        ber_pred[scale] = np.mean(1.0 / (1.0 + np.exp(np.minimum(np.abs(llr), 50))))
        if scale == 1.0:
            ber = np.mean((llr < 0) != (bits == 1))
    assert abs(ber_pred[1.0] / ber - 1) < 0.03, (ber, ber_pred)
    assert abs(ber_pred[0.8] / ber - 1) > 0.06 and abs(ber_pred[1.25] / ber - 1) > 0.06, ber_pred
