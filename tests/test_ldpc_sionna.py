"""Parity with Sionna 2.x (PyTorch) LDPC5GEncoder / LDPC5GDecoder and its example 802.11n code.

Needs the ``sionna`` extra (``pip install sionna-no-rt``); skipped otherwise.
Sionna's LLRs are ln P(1)/P(0), ours ln P(0)/P(1): we feed Sionna ``-llr``.
"""
import numpy as np
import pytest

sionna_ldpc = pytest.importorskip(
    "sionna.phy.fec.ldpc", reason="sionna (extra 'sionna': pip install sionna-no-rt) not importable")
torch = pytest.importorskip("torch", reason="torch is needed by Sionna 2.x")

from dekag_jax.channel.ldpc import NR5GCode, nr5g_parity_check, wifi_parity_check  # noqa: E402

LDPC5GEncoder = sionna_ldpc.LDPC5GEncoder
LDPC5GDecoder = sionna_ldpc.LDPC5GDecoder


@pytest.mark.parametrize("k,n,qm", [
    (972, 1944, None), (12, 40, None), (4000, 6000, 6), (8448, 8900, None), (3000, 3840, 8),
    (600, 3000, 2),   # BG2 near rate 1/5
])
def test_encoder_bit_exact(k, n, qm):
    rng = np.random.default_rng(k + n)
    u = rng.integers(0, 2, (6, k))
    ref = LDPC5GEncoder(k, n, num_bits_per_symbol=qm)(torch.tensor(u, dtype=torch.float32)).numpy()
    ours = np.asarray(NR5GCode(k, n, num_bits_per_symbol=qm).encode(u.astype(np.uint8)))
    np.testing.assert_array_equal(ours, ref.astype(np.uint8))


def test_parity_check_matrices_equal():
    for k, n in ((972, 1944), (4000, 6000)):
        enc = LDPC5GEncoder(k, n)
        code = NR5GCode(k, n)
        ref = enc.pcm.toarray().astype(np.uint8)
        np.testing.assert_array_equal(code.pcm.dense(), ref)
        assert nr5g_parity_check(code.bg, code.z) is code.pcm
    from sionna.phy.fec.utils import load_parity_check_examples
    pcm, k, n = load_parity_check_examples(4)[:3]  # 802.11n n=648, R=1/2
    np.testing.assert_array_equal(wifi_parity_check(648, "1/2").dense(), np.asarray(pcm, np.uint8))


def _compare(k, n, ebno_db, blocks, ours_kw, sionna_kw, seed=0):
    rng = np.random.default_rng(seed)
    code = NR5GCode(k, n)
    u = rng.integers(0, 2, (blocks, k)).astype(np.uint8)
    c = np.asarray(code.encode(u))
    sig2 = 1.0 / (2.0 * (k / n) * 10 ** (ebno_db / 10))
    llr = (2.0 * ((1.0 - 2.0 * c) + np.sqrt(sig2) * rng.standard_normal(c.shape)) / sig2).astype(np.float32)
    ours = np.asarray(code.decoder(**ours_kw)(llr))
    torch.set_num_threads(1)
    dec = LDPC5GDecoder(LDPC5GEncoder(k, n), **sionna_kw)
    ref = dec(torch.tensor(-llr)).numpy().astype(np.uint8)
    e_ours, e_ref = (ours != u).any(1), (ref != u).any(1)
    # Same LLRs, same algorithm: each codeword should succeed or fail in both decoders (the
    # wrong bits of a failed codeword are chaotic in float rounding, so those may differ).
    return e_ours, e_ref, e_ours == e_ref


def _assert_close(e_ours, e_ref, same, min_same):
    b = e_ours.size
    p = max((e_ours.mean() + e_ref.mean()) / 2, 1.0 / b)
    # Both BLERs agree within 3 binomial standard deviations of their difference.
    assert abs(e_ours.mean() - e_ref.mean()) <= 3 * np.sqrt(2 * p * (1 - p) / b) + 1e-12
    assert same.mean() >= min_same, same.mean()


def test_decoder_matches_sionna_minsum_flooding():
    e_ours, e_ref, same = _compare(
        300, 600, 2.0, 80,
        dict(cn_update="minsum", schedule="flooding", num_iter=20, early_stop=False),
        dict(cn_update="minsum", cn_schedule="flooding", num_iter=20))
    assert e_ref.any() and not e_ref.all()  # the point is inside the waterfall
    _assert_close(e_ours, e_ref, same, 0.95)


def test_decoder_matches_sionna_offset_minsum_layered():
    e_ours, e_ref, same = _compare(
        300, 600, 1.75, 60,
        dict(cn_update="oms", beta=0.5, schedule="layered", num_iter=10, early_stop=False),
        dict(cn_update="offset-minsum", cn_schedule="layered", num_iter=10))
    _assert_close(e_ours, e_ref, same, 0.9)


@pytest.mark.slow
@pytest.mark.parametrize("ebno", [1.5, 2.0])
def test_decoder_matches_sionna_972_1944(ebno):
    e_ours, e_ref, same = _compare(
        972, 1944, ebno, 400,
        dict(cn_update="minsum", schedule="flooding", num_iter=20, early_stop=False),
        dict(cn_update="minsum", cn_schedule="flooding", num_iter=20), seed=int(ebno * 10))
    _assert_close(e_ours, e_ref, same, 0.97)
