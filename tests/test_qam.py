"""QAM mapping, demapping, LLRs, quantiser and SNR helpers against first principles."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
enable_x64 = lambda: jax.enable_x64(True)  # context manager (jax >= 0.9)
from scipy import special

from dekag_jax.channel import qam, snr


def test_constellation_energy_and_gray_all_orders():
    for M in qam.SUPPORTED_M:
        c = np.asarray(qam.constellation(M))
        assert c.shape == (M,) and c.dtype == np.complex64
        assert abs(np.mean(np.abs(c) ** 2) - 1.0) < 1e-5
        assert len(np.unique(np.round(c, 5))) == M
        # Gray: points at minimum distance differ in exactly one bit
        dmin = 2.0 / math.sqrt(2 * (M - 1) / 3)
        d = np.abs(c[:, None] - c[None, :])
        i, j = np.nonzero(np.abs(d - dmin) < 1e-4)
        L = int(math.sqrt(M))
        assert len(i) == 2 * 2 * L * (L - 1)  # all grid edges, both directions
        assert np.all(np.vectorize(lambda a: bin(a).count("1"))(i ^ j) == 1)


@pytest.mark.parametrize("M", [4, 64, 1024])
def test_bits_symbols_roundtrip(M):
    k = qam.bits_per_symbol(M)

    @jax.jit
    def f(bits, pts):
        s = qam.bits_to_symbols(bits, M)
        idx = qam.symbols_to_indices(s, M)
        return (s, qam.hard_demap(s, M), idx, qam.indices_to_bits(idx, M),
                qam.symbols_to_indices(pts, M))

    c = np.asarray(qam.constellation(M))
    bits = np.random.default_rng(M).integers(0, 2, (3, 7 * k)).astype(np.int32)
    s, hb, idx, ib, cidx = f(bits, c)
    assert s.shape == (3, 7) and s.dtype == jnp.complex64
    np.testing.assert_array_equal(np.asarray(hb).reshape(3, -1), bits)
    np.testing.assert_allclose(c[np.asarray(idx)], s, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(ib).reshape(3, -1), bits)
    np.testing.assert_array_equal(cidx, np.arange(M))  # index i carries the binary of i


def test_64qam_matches_3gpp_38211():
    # TS 38.211 5.1.4: d = [(1-2b0)(4-(1-2b2)(2-(1-2b4))) + j(1-2b1)(4-(1-2b3)(2-(1-2b5)))]/sqrt(42)
    c = np.asarray(qam.constellation(64))
    for i in range(64):
        b = [int(x) for x in np.binary_repr(i, 6)]
        ref = ((1 - 2 * b[0]) * (4 - (1 - 2 * b[2]) * (2 - (1 - 2 * b[4])))
               + 1j * (1 - 2 * b[1]) * (4 - (1 - 2 * b[3]) * (2 - (1 - 2 * b[5])))) / math.sqrt(42)
        assert abs(c[i] - ref) < 1e-6


def test_llr_sign_and_exact_vs_bruteforce():
    M, N0, n, k = 16, 0.3, 50, 4
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, (n * k,)).astype(np.int32)
    w = (rng.normal(size=n) + 1j * rng.normal(size=n)) * math.sqrt(N0 / 2)
    nv = np.linspace(0.1, 1.0, n)
    with enable_x64():
        @jax.jit
        def f(bits, w, nv):
            s = qam.bits_to_symbols(bits, M, dtype=jnp.complex128)
            y = s + w
            return (qam.llr_maxlog(s, M, N0), y, qam.llr_exact(y, M, N0),
                    qam.llr_maxlog(y, M, N0), qam.llr_maxlog(y, M, nv))

        l0, y, lex, lml, lnv = f(bits, w, nv)
        c = np.asarray(qam.constellation(M, dtype=jnp.complex128))
    assert l0.shape == (n, k) and l0.dtype == np.float64
    # noiseless: our sign is ln P(b=0)/P(b=1) -> positive for 0-bits, negative for 1-bits
    np.testing.assert_array_equal(np.asarray(l0) < 0, bits.reshape(n, k) == 1)
    np.testing.assert_array_equal(qam.to_sionna_llr(np.asarray(l0)), -np.asarray(l0))
    np.testing.assert_array_equal(qam.from_sionna_llr(qam.to_sionna_llr(np.asarray(l0))), l0)
    # exact and max-log against brute force over all M points
    y = np.asarray(y)
    cb = np.array([[int(x) for x in np.binary_repr(i, k)] for i in range(M)])  # [M, k]

    def ref(nv_, red):
        d = -np.abs(y[:, None] - c[None, :]) ** 2 / np.broadcast_to(nv_, (n,))[:, None]
        return np.stack([red(np.where(cb[:, b] == 0, d, -np.inf))
                         - red(np.where(cb[:, b] == 1, d, -np.inf)) for b in range(k)], -1)

    lse = lambda x: special.logsumexp(x, axis=1)
    mx = lambda x: np.max(x, axis=1)
    np.testing.assert_allclose(lex, ref(N0, lse), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(lml, ref(N0, mx), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(lnv, ref(nv, mx), rtol=1e-9, atol=1e-9)  # per-symbol N0


@pytest.mark.parametrize("M,esn0_db", [(16, 12.0), (64, 18.0), (256, 24.0)])
def test_ser_awgn_matches_closed_form(M, esn0_db):
    n = 400_000
    n0 = 10 ** (-esn0_db / 10)
    with enable_x64():
        @jax.jit
        def sim(key):
            idx = jax.random.randint(key, (n,), 0, M)
            s = qam.constellation(M, jnp.complex128)[idx]
            w = jax.random.normal(jax.random.fold_in(key, 1), (n,), jnp.complex128) * n0 ** 0.5
            return jnp.mean(qam.symbols_to_indices(s + w, M) != idx)

        ser = float(sim(jax.random.key(M)))
        p = float(qam.ser_awgn_theory(M, 10 ** (esn0_db / 10)))
    # the closed form by hand: 4(1-1/sqrt M) Q(a) - 4(1-1/sqrt M)^2 Q(a)^2
    q = 0.5 * special.erfc(math.sqrt(3 * 10 ** (esn0_db / 10) / (M - 1)) / math.sqrt(2))
    a = 1 - 1 / math.sqrt(M)
    assert abs(p - (4 * a * q - 4 * a * a * q * q)) < 1e-12
    assert 0.005 < p < 0.5
    assert abs(ser - p) < 5 * math.sqrt(p * (1 - p) / n), (ser, p)


def test_quantizer_forward_and_gradients():
    M = 64
    rng = np.random.default_rng(3)
    s = ((rng.normal(size=200) + 1j * rng.normal(size=200)) / math.sqrt(2)).astype(np.complex64)
    w = (rng.normal(size=200) + 1j * rng.normal(size=200)).astype(np.complex64)
    c = qam.constellation(M)
    dmin2 = (2 / math.sqrt(42)) ** 2

    def probe(x, m):  # real-valued probe <Q(x), w>
        return jnp.sum(jnp.real(qam.quantize(x, M, method=m) * jnp.conj(w)))

    def soft_full(x):  # softmax over all M points (what the per-axis code must equal)
        p = jax.nn.softmax(-jnp.abs(x[:, None] - c[None, :]) ** 2 / (0.5 * dmin2), axis=1)
        return jnp.sum(jnp.real((p @ c) * jnp.conj(w)))

    @jax.jit
    def f(s):
        hard = qam.nearest_point(s, M)
        brute = c[jnp.argmin(jnp.abs(s[:, None] - c[None, :]), axis=1)]
        fwd = [qam.quantize(s, M, method=m) for m in ("soft", "ste", "none")]
        grads = [jax.grad(probe)(s, m) for m in ("soft", "ste", "none")]
        loss = qam.constellation_loss(s, M)
        gl = jax.grad(lambda x: qam.constellation_loss(x, M))(s)
        return (hard, brute, fwd, grads, jax.grad(soft_full)(s), loss, gl,
                qam.constellation_loss(hard, M))

    hard, brute, fwd, (g_soft, g_ste, g_none), g_full, loss, gl, loss0 = f(s)
    np.testing.assert_allclose(hard, brute, atol=1e-6)
    for q in fwd:  # forward pass is always the hard nearest point
        np.testing.assert_allclose(q, hard, atol=1e-6)
    np.testing.assert_allclose(np.conj(g_ste), w, rtol=1e-6)  # STE: identity
    assert np.all(np.isfinite(g_soft)) and float(np.mean(np.abs(g_soft))) > 1e-3
    assert not np.allclose(g_soft, g_ste)
    assert float(np.max(np.abs(g_none))) == 0.0
    np.testing.assert_allclose(g_soft, g_full, rtol=2e-3, atol=2e-4)
    # regulariser (eq. 4 iv): mean |s - Q(s)|^2; gradient 2 (s - Q(s)) / n pulls onto the grid
    np.testing.assert_allclose(loss, np.mean(np.abs(s - np.asarray(hard)) ** 2), rtol=1e-5)
    np.testing.assert_allclose(np.conj(gl), 2 * (s - np.asarray(hard)) / s.size, rtol=1e-4,
                               atol=1e-7)
    assert float(loss0) < 1e-12


def test_power_normalisation_and_real_complex():
    x = np.random.default_rng(5).normal(size=(3, 8, 10)).astype(np.float32) * 7.0

    @jax.jit
    def f(x):
        z = qam.real_to_complex(x)
        return (qam.normalize_power(x, axis=(1, 2)), z, qam.complex_to_real(z),
                qam.normalize_power(z))

    y, z, xr, zn = f(x)
    np.testing.assert_allclose(np.mean(np.asarray(y) ** 2, axis=(1, 2)), 1.0, rtol=1e-5)
    assert z.shape == (3, 8, 5) and z.dtype == jnp.complex64
    np.testing.assert_allclose(z, x[..., :5] + 1j * x[..., 5:])
    np.testing.assert_allclose(xr, x)
    np.testing.assert_allclose(np.mean(np.abs(np.asarray(zn)) ** 2, -1), 1.0, rtol=1e-5)
    with enable_x64():
        assert qam.real_to_complex(np.ones((4,), np.float64)).dtype == jnp.complex128


def test_bad_inputs():
    for M in (2, 8, 32, 128, 512, 2048, 64.5, "64"):
        with pytest.raises(ValueError, match=f"M={M!r}"):
            qam.constellation(M)
    with pytest.raises(ValueError, match="multiple of log2"):
        qam.bits_to_symbols(jnp.zeros((5,)), 16)
    with pytest.raises(TypeError, match="complex"):
        qam.llr_maxlog(jnp.zeros((3,)), 16, 1.0)
    with pytest.raises(ValueError, match="odd length"):
        qam.real_to_complex(jnp.zeros((3,)))
    with pytest.raises(ValueError, match="method"):
        qam.quantize(jnp.zeros((3,), jnp.complex64), 16, method="round")


def test_ebno_helper():
    # N0 = Es * eta / (Eb/N0 * k * r)
    assert abs(float(snr.ebno_db_to_n0(10.0, 6, 0.5)) - 1 / (10 * 3)) < 1e-7
    assert abs(float(snr.ebno_db_to_n0(0.0, 2, 1.0, ofdm_overhead=1.25, es=2.0)) - 1.25) < 1e-7
    e = jnp.array([-3.0, 0.0, 7.5])
    np.testing.assert_allclose(snr.n0_to_ebno_db(snr.ebno_db_to_n0(e, 4, 2 / 3, 1.1), 4, 2 / 3,
                                                 1.1), e, atol=1e-5)
    np.testing.assert_allclose(snr.n0_to_esno_db(snr.ebno_db_to_n0(e, 6, 0.5)),
                               snr.ebno_db_to_esno_db(e, 6, 0.5), atol=1e-5)
    np.testing.assert_allclose(snr.esno_db_to_ebno_db(snr.ebno_db_to_esno_db(e, 6, 0.5), 6, 0.5),
                               e, atol=1e-5)
    assert abs(float(snr.esno_db_to_n0(10.0)) - 0.1) < 1e-8
