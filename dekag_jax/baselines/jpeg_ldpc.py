"""JPEG-LDPC baseline (paper Sec. VI-B1): JPEG (or JPEG2000) -> 5G LDPC -> QAM -> OFDM -> back.

Transmitter: the AMC (``dekag_jax.channel.amc.select_mcs``) fixes the MCS and the bit budget
for phi = (tau, gamma, omega) and the image's own pixel count X (K = tau X symbols). The
image is compressed with Pillow at the LARGEST quality whose file fits the budget (JPEG:
quality 1..95, optimised Huffman tables; JPEG2000: the smallest compression ratio that
fits). If even the lowest quality does not fit, the image is downscaled by 2 (area
filter), repeatedly, until it does; the receiver upscales back (bicubic).

Side information assumed known to the receiver without error (as in any real system's
control channel): the MCS, the payload length in bytes, the codec and the downscale factor.

Receiver (what a real receiver gets): the decoded information bits as they are, including
those of codewords the LDPC decoder failed on (no retransmission); the received byte
string is handed to Pillow. If Pillow raises on the corrupt stream, the output is a
mid-grey image (all 128); if it decodes (Pillow tolerates many corruptions and truncated
data), its output is used as is. If the budget is zero (no codeword fits), the output is
mid-grey too.

Not jittable (Pillow); pure in the sense that the output is a function of the inputs and
the key only.
"""
from __future__ import annotations

import io
from typing import Optional

import numpy as np
from PIL import Image, ImageFile

from ..channel import amc
from ..channel.ofdm import OFDMConfig

__all__ = ["encode_to_budget", "decode_bytes", "jpeg_ldpc"]

_CODECS = ("jpeg", "jpeg2000")


def _jpeg_bytes(img: Image.Image, quality: int) -> bytes:
    b = io.BytesIO()
    img.save(b, format="JPEG", quality=int(quality), optimize=True)
    return b.getvalue()


def _j2k_bytes(img: Image.Image, ratio: float) -> bytes:
    b = io.BytesIO()
    img.save(b, format="JPEG2000", quality_mode="rates", quality_layers=[float(ratio)],
             irreversible=True)
    return b.getvalue()


def encode_to_budget(image: np.ndarray, budget_bits: int, codec: str = "jpeg"):
    """Compress ``image`` ``[H, W, 3] uint8`` into at most ``budget_bits`` bits.

    Returns ``(data: bytes, quality, scale)``: ``quality`` is the JPEG quality or the
    JPEG2000 compression ratio, ``scale`` the downscale factor (1, 2, 4, ...). ``data`` is
    empty if nothing fits even at 8 x 8 pixels.
    """
    if codec not in _CODECS:
        raise ValueError(f"codec must be one of {_CODECS}, got {codec!r}")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be [H, W, 3] uint8, got {image.shape} {image.dtype}")
    budget = int(budget_bits) // 8
    H, W = image.shape[:2]
    scale = 1
    while min(H, W) // scale >= 8:
        img = Image.fromarray(image)
        if scale > 1:
            img = img.resize((max(1, W // scale), max(1, H // scale)), Image.Resampling.BOX)
        if codec == "jpeg":
            if len(_jpeg_bytes(img, 1)) <= budget:
                lo, hi = 1, 95            # largest quality that fits (binary search; size ~monotone)
                while lo < hi:
                    mid = (lo + hi + 1) // 2
                    if len(_jpeg_bytes(img, mid)) <= budget:
                        lo = mid
                    else:
                        hi = mid - 1
                return _jpeg_bytes(img, lo), lo, scale
        else:
            raw = img.size[0] * img.size[1] * 3
            ratio = max(raw / max(budget, 1), 1.0)
            for _ in range(40):           # the codec overshoots a little: tighten until it fits
                data = _j2k_bytes(img, ratio)
                if len(data) <= budget:
                    return data, ratio, scale
                ratio *= 1.1
                if ratio > raw:
                    break
        scale *= 2
    return b"", None, None


def decode_bytes(data: bytes, shape: tuple, codec: str = "jpeg", scale: Optional[int] = 1):
    """Receiver side: bytes -> ``[H, W, 3] uint8``; mid-grey if undecodable (see module doc)."""
    H, W = shape[:2]
    grey = np.full((H, W, 3), 128, np.uint8)
    if not data:
        return grey, True
    prev = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        img = img.convert("RGB")
        if img.size != (W, H):
            img = img.resize((W, H), Image.Resampling.BICUBIC)
        return np.asarray(img, np.uint8), False
    except Exception:  # noqa: BLE001 - any decoder failure means "no image"
        return grey, True
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = prev


def jpeg_ldpc(image, phi, key, *, codec: str = "jpeg", table: Optional[dict] = None,
              cfg: OFDMConfig = OFDMConfig(), decoder_kw: Optional[dict] = None) -> dict:
    """JPEG-LDPC baseline for one image.

    Args:
      image: ``[H, W, 3] uint8``.
      phi: ``(tau, snr_db, delay_spread_s)``; tau in {1..6}/64 symbols per pixel of THIS image.
      key: jax PRNG key for the channel.
      codec: ``"jpeg"`` or ``"jpeg2000"``.
      table: AMC table (default: the shipped one).
    Returns:
      dict with ``image`` (received ``[H, W, 3] uint8``), ``bytes`` (payload size),
      ``quality``, ``scale``, ``plan`` (:class:`~dekag_jax.channel.amc.AMCPlan`),
      ``block_errors``, ``num_codewords``, ``bit_errors``, ``decode_failed``.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be [H, W, 3] uint8, got {image.shape} {image.dtype}")
    tau, snr_db, omega = phi
    H, W = image.shape[:2]
    pl = amc.select_mcs(tau, snr_db, omega, num_pixels=H * W, table=table)
    data, quality, scale = encode_to_budget(image, pl.info_bits, codec)
    bits = np.unpackbits(np.frombuffer(data, np.uint8)) if data else np.zeros(0, np.uint8)
    bits_hat, block_err, C = amc.send_bits(key, bits, pl, snr_db, omega, cfg=cfg, decoder_kw=decoder_kw)
    rx = np.packbits(bits_hat).tobytes() if bits.size else b""
    out, failed = decode_bytes(rx, image.shape, codec, scale)
    return dict(image=out, bytes=len(data), quality=quality, scale=scale, plan=pl,
                block_errors=block_err, num_codewords=C, bit_errors=int((bits_hat != bits).sum()),
                decode_failed=failed)
