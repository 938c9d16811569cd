"""JPEG-LDPC and Latent-LDPC baselines, their CLI. A synthetic AMC table pins the MCS
(16-QAM, rate 1/2) so every test shares one decoder compile."""
import csv
import json

import jax
import numpy as np
import pytest
from PIL import Image

from dekag_jax.baselines import decode_bytes, dequantize, encode_to_budget, jpeg_ldpc, latent_ldpc, quantize
from dekag_jax.baselines.__main__ import main as cli_main
from dekag_jax.errors import UsageError
from dekag_jax.metrics import psnr

TAB = dict(meta=dict(target_bler=0.01), points=[
    dict(snr_db=s, delay_spread_s=w, qam=16, rate="1/2", errors=0, blocks=1000)
    for s in (-10.0, 0.0, 20.0) for w in (30e-9, 3e-6)])
PHI_CLEAN = ("6/64", 30.0, 3000e-9)   # 256 x 256 px -> K = 6144 symbols -> 6 codewords, 11520 bits


def _image(h=256, w=256, seed=0):
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    rng = np.random.default_rng(seed)
    img = np.stack([np.sin(6 * xx + 3 * yy), np.cos(5 * yy), xx * yy], -1) * 0.45 + 0.5
    img[h // 4: h // 2, w // 4: w // 2] = rng.uniform(size=3)
    return (img * 255).astype(np.uint8)


def test_encode_to_budget():
    img = _image()
    sizes, quals = [], []
    for budget in (8 * 1500, 8 * 3000, 8 * 8000):
        data, q, scale = encode_to_budget(img, budget)
        assert len(data) * 8 <= budget and scale == 1
        sizes.append(len(data))
        quals.append(q)
    assert quals == sorted(quals) and quals[0] < quals[-1]
    data, q, scale = encode_to_budget(img, 8 * 400)          # too small at full size -> downscale
    assert 0 < len(data) <= 400 and scale > 1
    assert encode_to_budget(img, 8 * 10) == (b"", None, None)
    d2, ratio, s2 = encode_to_budget(img, 8 * 2000, codec="jpeg2000")
    assert 0 < len(d2) <= 2000 and ratio > 1
    with pytest.raises(ValueError, match="uint8"):
        encode_to_budget(img.astype(np.float32), 1000)


def test_receiver_falls_back_to_grey():
    out, failed = decode_bytes(b"\x00garbage" * 10, (16, 16, 3))
    assert failed and out.shape == (16, 16, 3) and np.all(out == 128)
    out, failed = decode_bytes(b"", (8, 8, 3))
    assert failed and np.all(out == 128)


def test_jpeg_ldpc_clean_and_noisy():
    img = _image()
    r = jpeg_ldpc(img, PHI_CLEAN, jax.random.key(0), table=TAB)
    assert r["plan"].info_bits == 11520 and r["bytes"] * 8 <= 11520
    assert r["block_errors"] == 0 and r["bit_errors"] == 0 and not r["decode_failed"]
    want, _ = decode_bytes(encode_to_budget(img, 11520)[0], img.shape)
    np.testing.assert_array_equal(r["image"], want)             # lossless link: the JPEG itself
    assert float(psnr(img.astype(np.float32), r["image"].astype(np.float32), data_range=255.0)) > 22
    # Far below the MCS's threshold every codeword fails: no crash, a (grey or broken) image.
    bad = jpeg_ldpc(img, ("6/64", -10.0, 3000e-9), jax.random.key(1), table=TAB)
    assert bad["block_errors"] > 0 and bad["image"].shape == img.shape and bad["image"].dtype == np.uint8


def test_quantizer_roundtrip():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 8, 4)).astype(np.float32) * np.array([1, 2, 3, 4], np.float32)
    for b in (1, 3, 8):
        q, lo, hi = quantize(x, b)
        assert q.min() >= 0 and q.max() < 2 ** b
        err = np.abs(dequantize(q, b, lo, hi) - x)
        assert np.all(err <= (hi - lo) / 2 ** b / 2 + 1e-5)


def test_latent_ldpc():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(32, 32, 4)).astype(np.float32)
    r = latent_ldpc(z, PHI_CLEAN, jax.random.key(0), table=TAB)
    assert r["bits_per_element"] == 2 and r["pool"] == 1 and r["payload_bits"] == 8192
    q, lo, hi = quantize(z, 2)
    np.testing.assert_allclose(r["latent"], dequantize(q, 2, lo, hi), rtol=0, atol=1e-6)
    # A larger latent with the same symbol budget (X = 64*64*16 = 65536 px): 1 bit per element
    # does not fit (16384 > 11520), so it is 2x2-pooled (4096 elements) and sent with 2 bits.
    z2 = rng.normal(size=(64, 64, 4)).astype(np.float32)
    r2 = latent_ldpc(z2, PHI_CLEAN, jax.random.key(0), pixels_per_element=16, table=TAB)
    assert r2["pool"] == 2 and r2["bits_per_element"] == 2 and r2["latent"].shape == z2.shape
    pooled = z2.reshape(32, 2, 32, 2, 4).mean(axis=(1, 3))
    q2, lo2, hi2 = quantize(pooled, 2)
    want = np.repeat(np.repeat(dequantize(q2, 2, lo2, hi2), 2, 0), 2, 1)
    np.testing.assert_allclose(r2["latent"], want, atol=1e-6)
    with pytest.raises(ValueError, match=r"\[h, w, c\]"):
        latent_ldpc(z[0], PHI_CLEAN, jax.random.key(0), table=TAB)


def test_cli(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(2):
        Image.fromarray(_image(seed=i)).save(src / f"im{i}.png")
    tab = tmp_path / "amc.json"
    tab.write_text(json.dumps(TAB))
    rc = cli_main(["--method", "jpeg-ldpc", "--images", str(src), "--out", str(out), "--snr", "30",
                   "--delay-spread", "3000ns", "--rate", "6/64", "--amc-table", str(tab)])
    assert rc == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["file"] for r in rows] == ["im0.png", "im1.png"]
    assert all(float(r["psnr_db"]) > 22 and int(r["bytes"]) * 8 <= 11520 for r in rows)
    assert (out / "im0.png").exists() and (out / "im1.png").exists()
    with pytest.raises(UsageError, match="--latents is required"):
        cli_main(["--method", "latent-ldpc", "--out", str(out), "--snr", "1", "--delay-spread", "1e-6",
                  "--rate", "2/64"])


# ----------------------------------------------------------------------------- 64 x 64: agreed headers
def _tiny_images():
    from dekag_jax.world.render import render_batch
    return render_batch(["a blue and white striped person with a red scarf on snow",
                         "a gray and red checkered building at night"], [1, 2], "cloud")


def test_agreed_header_rebuild_equals_full_file():
    """Pillow's header (SOI .. SOS, standard Huffman tables) depends only on quality and size, so
    header + entropy-coded segment + EOI decodes exactly as the full file."""
    import importlib
    import io
    J = importlib.import_module("dekag_jax.baselines.jpeg_ldpc")  # the package exports the function

    a, b = _tiny_images()
    for size in ((64, 64), (32, 32), (64, 40)):
        ia, ib = (Image.fromarray(x).resize(size) for x in (a, b))
        for q in (1, 37, 95):
            fa, fb = J._jpeg_bytes(ia, q, optimize=False), J._jpeg_bytes(ib, q, optimize=False)
            (ha, ea), (hb, eb) = J.split_jpeg(fa), J.split_jpeg(fb)
            assert ha == hb == J.agreed_header(q, *size) and ea != eb
            payload = J._agreed_payload(ia, q)
            assert payload == bytes([q]) + ea and len(payload) == len(fa) - len(ha) - 2 + 1
            rebuilt = J._agreed_to_file(payload, *size)
            assert rebuilt == fa
            full = np.asarray(Image.open(io.BytesIO(fa)).convert("RGB"))
            got, failed = decode_bytes(payload, (size[1], size[0], 3), headers="agreed")
            assert not failed
            np.testing.assert_array_equal(got, full)
    with pytest.raises(ValueError, match="SOI or EOI"):
        J.split_jpeg(b"\xff\xd8garbage")


def test_header_mode_auto_threshold():
    from dekag_jax.baselines.jpeg_ldpc import AGREED_HEADERS_BELOW_PIXELS, header_mode

    assert AGREED_HEADERS_BELOW_PIXELS == 256 * 256
    assert header_mode("auto", (64, 64, 3)) == "agreed"
    assert header_mode("auto", (255, 256, 3)) == "agreed"
    assert header_mode("auto", (256, 256, 3)) == header_mode("auto", (512, 512, 3)) == "in-band"
    assert header_mode("auto", (64, 64, 3), "jpeg2000") == "in-band"
    with pytest.raises(ValueError, match="JPEG only"):
        header_mode("agreed", (64, 64, 3), "jpeg2000")
    with pytest.raises(ValueError, match="headers must be"):
        header_mode("inband", (64, 64, 3))


TAB_TINY = dict(meta=dict(target_bler=0.01), points=[   # 4-QAM rate 1/4: 64 symbols -> 32 bits
    dict(snr_db=s, delay_spread_s=w, qam=4, rate="1/4", errors=0, blocks=1000)
    for s in (0.0, 20.0) for w in (30e-9, 3e-6)])


def test_jpeg_ldpc_64px_agreed_headers_and_unsendable(tmp_path):
    imgs = _tiny_images()
    # 64 x 64 at tau = 6/64: K = 384 symbols, one shortened 16-QAM r1/2 codeword: 768 bits = 96 B,
    # far below the 623-byte header of a full file; agreed headers send the image itself.
    r = jpeg_ldpc(imgs[0], ("6/64", 30.0, "3000ns"), jax.random.key(0), table=TAB)
    assert r["sent"] and r["headers"] == "agreed" and r["plan"].info_bits == 768
    assert 0 < r["bytes"] <= 96 and r["block_errors"] == 0 and not r["decode_failed"]
    assert float(psnr(imgs[0].astype(np.float32), r["image"].astype(np.float32), data_range=255.0)) > 14
    inband = jpeg_ldpc(imgs[0], ("6/64", 30.0, "3000ns"), jax.random.key(0), table=TAB, headers="in-band")
    assert not inband["sent"] and inband["image"] is None and inband["bytes"] == 0   # says so
    # 32 bits (4 bytes) hold not even an 8 x 8 thumbnail: not sent, no image, no PSNR
    small = jpeg_ldpc(imgs[0], ("1/64", 20.0, "30ns"), jax.random.key(0), table=TAB_TINY)
    assert small["plan"].info_bits == 32 and not small["sent"] and small["image"] is None

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i, im in enumerate(imgs):
        Image.fromarray(im).save(src / f"t{i}.png")
    tab = tmp_path / "tiny.json"
    tab.write_text(json.dumps(TAB_TINY))
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli_main(["--method", "jpeg-ldpc", "--images", str(src), "--out", str(out), "--snr", "20dB",
                         "--delay-spread", "30ns", "--rate", "1/64", "--amc-table", str(tab)]) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["sent"] for r in rows] == ["False", "False"] and all(r["psnr_db"] == "" for r in rows)
    assert all(r["headers"] == "agreed" for r in rows) and not (out / "t0.png").exists()
    assert "2 of 2 could not be sent" in buf.getvalue() and "mean psnr" not in buf.getvalue()
