"""Correlated OFDM channel (eq. 2-3), equalisers and Monte Carlo link against theory."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special

from dekag_jax.channel import montecarlo as mc
from dekag_jax.channel import ofdm, qam
from dekag_jax.channel.ofdm import OFDMConfig

enable_x64 = lambda: jax.enable_x64(True)  # context manager (jax >= 0.9)


def test_covariance_and_factor_including_near_singular():
    for J, df in ((8, 30e3), (64, 30e3), (120, 30e3), (120, 360e3)):
        for w in (30e-9, 300e-9, 3000e-9):
            C = ofdm.covariance(J, df, w, channel_power=2.0)
            assert C.dtype == np.complex128 and C.shape == (J, J)
            np.testing.assert_allclose(np.diag(C), 2.0)
            np.testing.assert_allclose(C, C.conj().T)
            # eq. 3 as read: P_h / (1 + 2 pi i df (j'-j) w)
            assert abs(C[3, 1] - 2.0 / (1 + 2j * np.pi * df * 2 * w)) < 1e-14
            L = ofdm.channel_factor(J, df, w, channel_power=2.0)
            assert np.all(np.isfinite(L))
            err = np.linalg.norm(L @ L.conj().T - C) / np.linalg.norm(C)
            assert err < 1e-12, (J, df, w, err)
    # the near-singular cases really are singular in float64 (why we do not use Cholesky)
    lam = np.linalg.eigvalsh(ofdm.covariance(120, 30e3, 30e-9))
    assert lam.min() / lam.max() < 1e-13
    assert ofdm.channel_factor(120, 30e3, 30e-9) is ofdm.channel_factor(120, 30e3, 30e-9)  # cached


def test_sampled_covariance_matches_eq3():
    n = 4000
    with enable_x64():
        draw = jax.jit(lambda k, L: ofdm.sample_channel(k, L, (n,), jnp.complex128))
        for J, w in ((120, 30e-9), (120, 300e-9), (120, 3000e-9), (16, 3000e-9)):
            C = ofdm.covariance(J, 30e3, w)
            h = np.asarray(draw(jax.random.key(int(w * 1e9) + J), ofdm.channel_factor(J, 30e3, w)))
            assert h.shape == (n, J) and h.dtype == np.complex128
            C_hat = h.T @ h.conj() / n  # E[h_j' h_j^*]
            err = np.linalg.norm(C_hat - C) / np.linalg.norm(C)
            # E||C_hat - C||_F^2 = tr(C)^2 / n for complex Gaussian samples
            expected = np.trace(C).real / (np.linalg.norm(C) * math.sqrt(n))
            assert err < 4 * expected, (J, w, err, expected)
            # ... and the check can fail: another delay spread's covariance is far outside it
            other = ofdm.covariance(J, 30e3, w * 10 if w < 3e-6 else w / 10)
            assert np.linalg.norm(C_hat - other) / np.linalg.norm(other) > 4 * expected


def test_allocation_shapes_dtypes_and_traced_delay_spread():
    J, K = 120, 250  # 2 full slots + a partial one
    cfg = OFDMConfig()
    s = qam.bits_to_symbols(np.random.default_rng(0).integers(0, 2, (3, 6 * K)), 64)
    key = jax.random.key(0)
    y, info = jax.jit(lambda: ofdm.transmit(key, s, 0.0, 300e-9, cfg=cfg))()  # concrete omega
    assert y.shape == (3, K) and y.dtype == jnp.complex64
    assert info["h"].shape == (3, J) and info["noise_var"].shape == (3,)
    assert info["bias"].shape == (3, K) and info["noise_var_eff"].shape == (3, K)
    # symbol k sees h[k mod J]: the MMSE bias is |h_k|^2 / (|h_k|^2 + P_delta)
    g2 = np.abs(np.asarray(info["h"])[:, np.arange(K) % J]) ** 2
    np.testing.assert_allclose(info["bias"], g2 / (g2 + 1.0), rtol=1e-5)
    np.testing.assert_allclose(info["noise_var_eff"], 1.0 / g2, rtol=1e-5)
    # traced omega (vmap over a condition grid) == concrete omega; off-grid -> NaN
    f = jax.jit(jax.vmap(lambda g, w: ofdm.transmit(key, s, g, w, cfg=cfg)[0]))
    out = f(jnp.array([0.0, 10.0, 0.0]), jnp.array([300e-9, 3000e-9, 123e-9]))
    np.testing.assert_allclose(out[0], y, rtol=1e-4, atol=1e-5)
    assert np.all(np.isfinite(np.asarray(out[1]))) and not np.allclose(out[1], y, atol=1e-2)
    assert np.all(np.isnan(np.asarray(out[2])))
    with enable_x64():
        y64, info64 = jax.jit(lambda k, x: ofdm.transmit(k, x, 5.0, 30e-9, cfg=cfg))(
            key, s.astype(jnp.complex128))
        assert y64.dtype == jnp.complex128 and info64["noise_var_eff"].dtype == jnp.float64


def _ser_given_gain(g, snr, M, bias_fn):
    """Exact SER of nearest-point detection on u = beta s + w given |h|^2 = g.

    w has per-real-dimension variance beta^2 N0 / (2 g) (MMSE) or N0 / (2 g) (ZF, beta = 1).
    Per axis: L-PAM with levels a_l, decision boundaries at the unscaled midpoints.
    """
    n0 = 1.0 / snr
    L = int(math.sqrt(M))
    a = (2 * np.arange(L) - (L - 1)) / math.sqrt(2 * (M - 1) / 3)
    b = np.concatenate([[-np.inf], (a[1:] + a[:-1]) / 2, [np.inf]])
    beta = bias_fn(g, n0)
    sig = beta * math.sqrt(n0 / (2 * g))
    pc = np.mean(special.ndtr((b[1:] - beta * a) / sig) - special.ndtr((b[:-1] - beta * a) / sig))
    return 1.0 - pc * pc


@pytest.mark.parametrize("equalizer", ["zf", "mmse"])
def test_ser_over_rayleigh_matches_integration(equalizer):
    """Uncoded 16-QAM over Rayleigh sub-channels (iid, and correlated eq. 3 at 3000 ns), hard
    decision directly on the equaliser output (the biased MMSE output for 'mmse')."""
    M, snr_db, J = 16, 15.0, 120
    snr = 10 ** (snr_db / 10)
    if equalizer == "zf":
        bias_fn = lambda g, n0: 1.0
    else:
        bias_fn = lambda g, n0: g / (g + n0)
    theory, _ = integrate.quad(lambda g: _ser_given_gain(g, snr, M, bias_fn) * np.exp(-g),
                               0, np.inf, limit=200)
    if equalizer == "zf":  # ZF decision = ML decision: the closed-form Rayleigh average
        assert abs(theory - mc.ser_rayleigh_theory(M, snr)) < 1e-6
    for channel, batch in (("iid", 1000), ("ofdm", 3000)):
        cfg = OFDMConfig(channel=channel, equalizer=equalizer)

        @jax.jit
        def sim(key):
            k1, k2 = jax.random.split(key)
            idx = jax.random.randint(k1, (batch, J), 0, M)
            y, _ = ofdm.transmit(k2, qam.constellation(M)[idx], snr_db, 3000e-9, cfg=cfg)
            return jnp.mean(qam.symbols_to_indices(y, M) != idx)

        ser = float(sim(jax.random.key(7)))
        # iid: binomial std; correlated: ~J/8 effective independent gains per draw at 3000 ns
        n_eff = batch * J if channel == "iid" else batch * 15
        tol = 5 * math.sqrt(theory * (1 - theory) / n_eff)
        assert abs(ser - theory) < tol, (channel, equalizer, ser, theory, tol)
    if equalizer == "mmse":  # the biased decision is measurably worse than ML
        assert theory > mc.ser_rayleigh_theory(M, snr) * 1.03


def test_awgn_imperfect_csi_and_llrs():
    key = jax.random.key(3)
    M, K = 64, 600
    idx = jax.random.randint(key, (50, K), 0, M)
    s = qam.constellation(M)[idx]

    @functools.partial(jax.jit, static_argnums=1)
    def run(key, cfg, snr_db):
        y, info = ofdm.transmit(key, s, snr_db, 300e-9, cfg=cfg)
        return y, info, ofdm.equalized_llr(y, info, M)

    # AWGN: received = s + n, var 1 / gamma
    y, info, _ = run(key, OFDMConfig(channel="awgn"), 10.0)
    assert abs(float(jnp.mean(jnp.abs(y - s) ** 2)) - 0.1) < 0.005
    np.testing.assert_allclose(info["noise_var_eff"], 0.1, rtol=1e-5)
    # imperfect CSI: h_est - h ~ CN(0, sigma_e^2), independent of h
    y, info, _ = run(key, OFDMConfig(csi_error_var=0.05), 20.0)
    e = np.asarray(info["h_est"] - info["h"])
    assert abs(np.mean(np.abs(e) ** 2) - 0.05) < 0.01
    g2 = np.abs(np.asarray(info["h_est"])[:, np.arange(K) % 120]) ** 2
    np.testing.assert_allclose(info["noise_var_eff"], (0.01 + 0.05) / g2, rtol=1e-4)
    # LLR hard decisions at high SNR reproduce the sent bits (sign: positive <-> bit 0)
    y, info, llr = run(key, OFDMConfig(), 60.0)
    bits = np.asarray(qam.indices_to_bits(idx, M))
    strong = np.abs(np.asarray(info["h"])[:, np.arange(K) % 120]) > 0.1
    assert np.all((np.asarray(llr) < 0)[strong] == (bits == 1)[strong])


def test_bad_inputs():
    with pytest.raises(ValueError, match="omega"):
        ofdm.covariance(8, 30e3, 0.0)
    with pytest.raises(ValueError, match="omega"):
        ofdm.channel_factor(8, 30e3, -1e-9)
    with pytest.raises(ValueError, match="omega"):
        ofdm.transmit(jax.random.key(0), jnp.ones((4,), jnp.complex64), 10.0, 0.0)
    with pytest.raises(ValueError, match="omega"):
        OFDMConfig(delay_spread_grid_s=(30e-9, 0.0))
    with pytest.raises(ValueError, match="equalizer"):
        OFDMConfig(equalizer="lmmse2")
    with pytest.raises(ValueError, match="channel"):
        OFDMConfig(channel="tdl")
    with pytest.raises(TypeError, match="complex"):
        ofdm.transmit(jax.random.key(0), jnp.ones((4,)), 10.0, 300e-9)
    with pytest.raises(ValueError, match="delay_spread_s or factor"):
        ofdm.transmit(jax.random.key(0), jnp.ones((4,), jnp.complex64), 10.0)
    for tau in (0.0, 7 / 64, 0.5, "1/32x", 1 / 128):
        with pytest.raises(ValueError, match="tau"):
            mc.check_rate(tau)
    assert mc.check_rate("3/64") == mc.check_rate(3 / 64) == mc.RATES[2]
    assert mc.num_symbols(2 / 64) == 8192
    f = mc.make_link(1 / 64, num_pixels=64 * 64)
    with pytest.raises(ValueError, match="K=65.*K=64"):
        f(jax.random.key(0), 10.0, 300e-9, jnp.ones((2, 65), jnp.complex64))
    y, info = f(jax.random.key(0), 10.0, 300e-9, jnp.full((2, 64), 0.3 + 0.2j, jnp.complex64))
    assert y.shape == (2, 64)
    c = np.asarray(qam.constellation(64))
    np.testing.assert_allclose(info["sent"], np.full((2, 64), c[np.argmin(np.abs(c - 0.3 - 0.2j))]),
                               atol=1e-6)


def test_channel_import_pulls_no_model_code():
    import subprocess
    import sys
    root = __file__.rsplit("/tests/", 1)[0]
    code = ("import sys, dekag_jax.channel; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('flax', 'torch', 'transformers')"
            " or m.startswith(('dekag_jax.models', 'dekag_jax.diffusion'))]; "
            "assert not bad, bad")
    p = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
