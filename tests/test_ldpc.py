"""LDPC: parity-check construction, encoders (H c = 0), decoder correctness and waterfall.

BLER references used below (BPSK, AWGN, Eb/N0 = Es/N0 / R):
* 802.11n n=1944 R=1/2: with ~50 BP iterations the BLER crosses 1e-2 at about 1.5-2 dB
  (the usual published sum-product curves for this code; min-sum variants are ~0.1-0.3 dB
  worse). We assert BLER > 10% at 0.75 dB and <= 1% at 2.25 dB.
* 5G NR k=972, n=1944 (BG2, Zc=104): Sionna's LDPC5GDecoder (boxplus/min-sum, 20 it)
  crosses 1e-2 near 2 dB; tests/test_ldpc_sionna.py checks our decoder against it directly.
"""
import functools

import numpy as np
import pytest

from dekag_jax.channel.ldpc import (
    LDPCDecoder, LDPCEncoder, NR5GCode, UserCode, WifiCode, base_graph, from_dense, nr5g_parity_check, read_alist, select_base_graph, select_lifting, syndrome, wifi_parity_check,
    write_alist,
)
from dekag_jax.channel.ldpc.codes import format_alist, gf2_inv, gf2_rank, parse_alist
from dekag_jax.channel.ldpc.nr5g import LIFTING_SETS


@functools.lru_cache(maxsize=None)
def _code(kind, *args):
    return WifiCode(*args) if kind == "wifi" else NR5GCode(*args)


@functools.lru_cache(maxsize=None)
def _dec(kind, args, **kw):
    """Decoders shared between tests: each distinct one costs a jit compile."""
    return _code(kind, *args).decoder(**kw)


def _bpsk_awgn_llr(rng, c, ebno_db, rate):
    """LLR (ours, ln P0/P1) of BPSK (0 -> +1) over real AWGN at Eb/N0."""
    sig2 = 1.0 / (2.0 * rate * 10 ** (ebno_db / 10))
    y = (1.0 - 2.0 * c) + np.sqrt(sig2) * rng.standard_normal(c.shape)
    return (2.0 * y / sig2).astype(np.float32)


# ----------------------------------------------------------------------------- structure

def test_base_graph_tables_match_the_standard_shape():
    for bg, shape, nnz in ((1, (46, 68), 316), (2, (42, 52), 197)):
        b = base_graph(bg, 384)
        assert b.shape == shape and int((b >= 0).sum()) == nnz
        # Core structure (5.3.2): extension parity columns are an identity (shift 0).
        kb = 22 if bg == 1 else 10
        for r in range(4, shape[0]):
            assert b[r, kb + r] == 0
            assert np.all(b[r, kb + r + 1:] < 0)


@pytest.mark.parametrize("bg", [1, 2])
def test_5g_every_lifting_set_gives_codewords(bg):
    """H c = 0 for every iLS set (smallest and a mid/large Zc of each)."""
    rng = np.random.default_rng(bg)
    # One Zc per set, alternating small and large, plus the largest of all.
    zs = sorted({s[(i * 3) % len(s)] for i, s in enumerate(LIFTING_SETS)} | {384})
    for z in zs:
        pc = nr5g_parity_check(bg, z)
        enc = LDPCEncoder(pc, jit=False)
        assert enc.structured
        u = rng.integers(0, 2, (3, enc.k), dtype=np.uint8)
        c = np.asarray(enc(u))
        assert not syndrome(pc, c).any(), f"BG{bg} Zc={z}"
        np.testing.assert_array_equal(c[:, :enc.k], u)


def test_wifi_all_codes_are_codes():
    rng = np.random.default_rng(0)
    for n in (648, 1296, 1944):
        for r, k in (("1/2", n // 2), ("2/3", 2 * n // 3), ("3/4", 3 * n // 4), ("5/6", 5 * n // 6)):
            code = WifiCode(n, r)
            assert code.k == k
            pc = code.pcm
            # Dual-diagonal parity part of Annex F: every column has degree >= 2 and H has full rank.
            assert pc.col_degrees().min() >= 2
            u = rng.integers(0, 2, (4, k), dtype=np.uint8)
            c = np.asarray(LDPCEncoder(pc, jit=False)(u))
            assert not syndrome(pc, c).any(), (n, r)
    assert gf2_rank(wifi_parity_check(648, "1/2").dense()) == 324


def test_5g_selection_rules():
    assert select_base_graph(292, 0.9) == 2
    assert select_base_graph(293, 0.9) == 1
    assert select_base_graph(3824, 0.67) == 2
    assert select_base_graph(3825, 0.5) == 1
    assert select_base_graph(5000, 0.25) == 2
    assert select_lifting(972, 2) == (104, 6, 10)
    assert select_lifting(8448, 1) == (384, 1, 22)
    assert select_lifting(100, 2)[2] == 6 and select_lifting(100, 2)[0] == 18
    c = NR5GCode(972, 1944)
    assert (c.bg, c.z, c.k_ldpc, c.k_filler, c.n_ldpc) == (2, 104, 1040, 68, 5408)


def test_5g_rate_matching_positions():
    c = NR5GCode(100, 300)
    z = c.z
    pos = c.tx_positions
    # Punctured: the first 2 Zc systematic bits; never sent: the filler bits.
    assert pos.min() >= 2 * z
    assert not np.any((pos >= c.k) & (pos < c.k_ldpc))
    # rv0 reads the buffer in order.
    assert np.all(np.diff(pos[: c.k - 2 * z]) == 1)
    # A rate close to 1/5 on BG2 wraps around the circular buffer: repeated bits.
    low = NR5GCode(200, 1000)
    assert low.tx_positions.size == 1000
    u = np.random.default_rng(1).integers(0, 2, (2, 200), dtype=np.uint8)
    mother = np.asarray(low.encode_mother(u))  # jitted path (the other tests run eager)
    assert not syndrome(low.pcm, mother).any()
    np.testing.assert_array_equal(np.asarray(low.encode(u)), mother[:, low.tx_positions])
    # Other redundancy versions start later in the buffer.
    assert NR5GCode(100, 300, rv=2).tx_positions[0] > 2 * z


# ----------------------------------------------------------------------------- alist, generic

def test_alist_roundtrip(tmp_path):
    pc = wifi_parity_check(648, "2/3")
    p = tmp_path / "w.alist"
    write_alist(pc, p)
    back = read_alist(p)
    np.testing.assert_array_equal(back.rows, pc.rows)
    np.testing.assert_array_equal(back.cols, pc.cols)
    # Unpadded variant of a tiny irregular code parses to the same matrix.
    h = np.array([[1, 1, 0, 1, 0, 0], [0, 1, 1, 0, 1, 0], [1, 0, 0, 0, 1, 1]], np.uint8)
    small = from_dense(h)
    padded = parse_alist(format_alist(small))
    unpadded = "6 3\n2 3\n2 2 1 1 2 1\n3 3 3\n1 3\n1 2\n2\n1\n2 3\n3\n1 2 4\n2 3 5\n1 5 6\n"
    np.testing.assert_array_equal(parse_alist(unpadded).dense(), h)
    np.testing.assert_array_equal(padded.dense(), h)
    with pytest.raises(ValueError, match="disagree"):
        parse_alist(unpadded.replace("1 5 6\n", "1 4 6\n"))


def test_generic_encoder_on_random_code_with_redundant_rows():
    rng = np.random.default_rng(3)
    n, m = 96, 48
    h = np.zeros((m, n), np.uint8)
    for j in range(n):
        h[rng.choice(m, 3, replace=False), j] = 1
    h = np.concatenate([h, (h[:1] ^ h[1:2])], axis=0)        # a redundant row
    code = UserCode(from_dense(h))
    assert code.k == n - gf2_rank(h)
    u = rng.integers(0, 2, (5, code.k), dtype=np.uint8)
    c = np.asarray(code.encode(u))
    assert not syndrome(code.pcm, c).any()
    np.testing.assert_array_equal(c[:, code.info_positions], u)
    # A non-QC code decodes (flooding); the layered schedule gets greedy, disjoint row layers.
    llr = ((1.0 - 2.0 * c) * 4.0).astype(np.float32)
    llr[:, 5] *= -1.0
    np.testing.assert_array_equal(np.asarray(code.decode(llr, cn_update="minsum", num_iter=10)), u)
    layers = LDPCDecoder(code.pcm, schedule="layered").graph.layers
    rows_in_layers = sum(g.shape[0] for lay in layers for g in lay)
    assert len(layers) >= 3 and rows_in_layers == int((code.pcm.row_degrees() > 0).sum())
    # The generic path on a structured code gives valid codewords too.
    enc = LDPCEncoder(wifi_parity_check(648, "1/2"), force_generic=True, jit=False)
    cw = np.asarray(enc(rng.integers(0, 2, (2, enc.k), dtype=np.uint8)))
    assert not syndrome(enc.pc, cw).any()


def test_gf2_inv():
    rng = np.random.default_rng(0)
    while True:
        a = rng.integers(0, 2, (20, 20), dtype=np.uint8)
        if gf2_rank(a) == 20:
            break
    ai = gf2_inv(a)
    np.testing.assert_array_equal((a.astype(int) @ ai) % 2, np.eye(20, dtype=int))
    with pytest.raises(ValueError, match="singular"):
        gf2_inv(np.zeros((3, 3), np.uint8))


# ----------------------------------------------------------------------------- decoder

def test_single_bit_errors_corrected_exhaustively_wifi():
    """Every single hard error (equal |LLR|) on the 648/1/2 code is corrected."""
    code = _code("wifi", 648, "1/2")
    rng = np.random.default_rng(0)
    u = rng.integers(0, 2, (1, code.k), dtype=np.uint8)
    c = np.asarray(code.encode(u))[0]
    llr = np.tile((1.0 - 2.0 * c) * 2.0, (code.n, 1)).astype(np.float32)
    llr[np.arange(code.n), np.arange(code.n)] *= -1.0
    res = _dec("wifi", (648, "1/2"), cn_update="minsum", schedule="flooding", num_iter=10).full(llr)
    assert np.asarray(res.ok).all()
    np.testing.assert_array_equal(np.asarray(res.bits), np.tile(c, (code.n, 1)))


_NR = ("nr", (972, 1944))
_NR_FLOOD = dict(cn_update="nms", alpha=0.8, schedule="flooding", num_iter=20)


def test_decoder_noiseless_and_early_stop():
    code = _code(*_NR[:1], *_NR[1])
    rng = np.random.default_rng(2)
    u = rng.integers(0, 2, (8, code.k), dtype=np.uint8)
    c = np.asarray(code.encode(u))
    llr = _bpsk_awgn_llr(rng, c, 3.0, code.rate)
    es = _dec(*_NR, **_NR_FLOOD).full(llr)
    no = _dec(*_NR, early_stop=False, **_NR_FLOOD).full(llr)
    np.testing.assert_array_equal(np.asarray(es.bits)[:, :code.k], u)
    np.testing.assert_array_equal(np.asarray(no.bits)[:, :code.k], u)
    np.testing.assert_array_equal(np.asarray(es.bits), np.asarray(no.bits))
    it = np.asarray(es.iterations)
    assert it.max() < 20 and np.all(np.asarray(no.iterations) == 20)
    assert np.asarray(es.ok).all()
    # Noiseless: only the punctured 2Zc bits and the untransmitted parity need to settle.
    clean = ((1.0 - 2.0 * c) * 10.0).astype(np.float32)
    res = _dec(*_NR, **_NR_FLOOD).full(clean)
    assert np.asarray(res.ok).all() and np.asarray(res.iterations).max() <= 5


def test_single_bit_errors_5g_info_bits():
    """5G k=972, n=1944: every single flipped transmitted bit (equal |LLR|) still gives the
    right info bits (degree-1 parity bits may stay wrong: no BP decoder can fix those)."""
    code = _code(*_NR[:1], *_NR[1])
    rng = np.random.default_rng(1)
    u = rng.integers(0, 2, (1, code.k), dtype=np.uint8)
    c = np.asarray(code.encode(u))[0]
    pos = np.arange(0, code.n, 3)   # every third position (the 648/1/2 test is exhaustive)
    llr = np.tile((1.0 - 2.0 * c) * 3.0, (pos.size, 1)).astype(np.float32)
    llr[np.arange(pos.size), pos] *= -1.0
    out = np.asarray(_dec(*_NR, **_NR_FLOOD)(llr))
    np.testing.assert_array_equal(out, np.tile(u, (pos.size, 1)))


def test_waterfall_wifi_1944_half():
    """BLER falls through 1% between 0.75 and 2.25 dB (layered NMS, 50 it)."""
    code = _code("wifi", 1944, "1/2")
    dec = _dec("wifi", (1944, "1/2"), cn_update="nms", alpha=0.8, schedule="layered", num_iter=50)
    rng = np.random.default_rng(5)
    res = {}
    for ebno, blocks in ((0.75, 100), (2.25, 400)):
        u = rng.integers(0, 2, (blocks, code.k), dtype=np.uint8)
        c = np.asarray(code.encode(u))
        uh = np.asarray(dec(_bpsk_awgn_llr(rng, c, ebno, code.rate)))
        res[ebno] = (uh != u).any(axis=1).mean()
    assert res[0.75] > 0.1, res
    assert res[2.25] <= 0.01, res


def test_waterfall_5g_972_1944():
    """Flooding NMS, 20 iterations: through 1% between 0.75 and 2.5 dB."""
    code = _code(*_NR[:1], *_NR[1])
    dec = _dec(*_NR, **_NR_FLOOD)
    rng = np.random.default_rng(6)
    res = {}
    for ebno, blocks in ((0.75, 100), (2.5, 300)):
        u = rng.integers(0, 2, (blocks, code.k), dtype=np.uint8)
        c = np.asarray(code.encode(u))
        uh = np.asarray(dec(_bpsk_awgn_llr(rng, c, ebno, code.rate)))
        res[ebno] = (uh != u).any(axis=1).mean()
    assert res[0.75] > 0.1, res
    assert res[2.5] <= 0.01, res


@pytest.mark.slow
@pytest.mark.parametrize("schedule,cn", [("flooding", "nms"), ("layered", "nms"), ("flooding", "oms")])
def test_waterfall_wifi_1944_half_detailed(schedule, cn):
    """Heavier: 2000 blocks at 2.0 dB -> BLER <= 1%, and > 1% at 1.25 dB."""
    code = WifiCode(1944, "1/2")
    dec = code.decoder(cn_update=cn, schedule=schedule, num_iter=50)
    rng = np.random.default_rng(7)
    bl = {}
    for ebno, blocks in ((1.25, 500), (2.0, 2000)):
        errs = 0
        for _ in range(blocks // 250):
            u = rng.integers(0, 2, (250, code.k), dtype=np.uint8)
            c = np.asarray(code.encode(u))
            errs += int((np.asarray(dec(_bpsk_awgn_llr(rng, c, ebno, code.rate))) != u).any(1).sum())
        bl[ebno] = errs / blocks
    assert bl[1.25] > 0.01 and bl[2.0] <= 0.01, bl


# ----------------------------------------------------------------------------- errors

def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="too small"):
        NR5GCode(8, 40)
    with pytest.raises(ValueError, match="too large"):
        NR5GCode(9000, 12000)
    with pytest.raises(ValueError, match="0.95"):
        NR5GCode(1000, 1010)
    with pytest.raises(ValueError, match="1/5"):
        NR5GCode(100, 1000)
    with pytest.raises(ValueError, match="BG2"):
        NR5GCode(4000, 12000, bg=2)
    with pytest.raises(ValueError, match="multiple"):
        NR5GCode(100, 301, num_bits_per_symbol=2)
    code = NR5GCode(100, 200)
    with pytest.raises(ValueError, match=r"k=100"):
        code.encode(np.zeros((2, 101), np.uint8))
    with pytest.raises(ValueError, match=r"n=200"):
        code.decode(np.zeros((2, 150), np.float32))
    with pytest.raises(ValueError, match="n=1000"):
        WifiCode(1000, "1/2")
    with pytest.raises(ValueError, match="unsupported"):
        WifiCode(648, "3/5")
    with pytest.raises(ValueError, match="cn_update"):
        LDPCDecoder(wifi_parity_check(648, "1/2"), cn_update="sumproduct")
    with pytest.raises(ValueError, match="schedule"):
        LDPCDecoder(wifi_parity_check(648, "1/2"), schedule="random")
    with pytest.raises(ValueError, match="k=324"):
        WifiCode(648, "1/2").encode(np.zeros((1, 400), np.uint8))
