"""JPEG-LDPC baseline (paper Sec. VI-B1): JPEG (or JPEG2000) -> 5G LDPC -> QAM -> OFDM -> back.

Transmitter: the AMC (``dekag_jax.channel.amc.select_mcs``) fixes the MCS and the bit budget
for phi = (tau, gamma, omega) and the image's own pixel count X (K = tau X symbols). The
image is compressed with Pillow at the LARGEST quality whose payload fits the budget (JPEG:
quality 1..95; JPEG2000: the smallest compression ratio that fits). If even the lowest quality
does not fit, the image is downscaled by 2 (area filter), repeatedly down to 8 x 8 pixels, until
it does; the receiver upscales back (bicubic).

Two readings of what travels (``headers``), both labelled in every result:

* ``"in-band"``: the whole JPEG file (markers, quantisation and Huffman tables, optimised
  Huffman codes). Right at the paper's 512 x 512, where the budget is kilobytes.
* ``"agreed"``: both ends agree on the JPEG headers in advance. With standard (not optimised)
  Huffman tables, Pillow's header (SOI .. end of the SOS segment, 623 bytes for an RGB image)
  depends only on the quality setting and the image size, so the receiver can rebuild it: only
  ONE byte with the quality and the entropy-coded segment travel (no EOI marker; the receiver
  re-attaches header and EOI). Decoding the rebuilt file equals decoding the full file, bit for
  bit. At the tiny world's 64 x 64 a budget is a few dozen to a few hundred bytes, less than the
  header alone: a header-bound codec there would measure the header, not the image.
* ``"auto"`` (default): ``"agreed"`` for JPEG below ``AGREED_HEADERS_BELOW_PIXELS`` = 256 x 256
  pixels, ``"in-band"`` otherwise (and always for JPEG2000).

Side information assumed known to the receiver without error (as in any real system's control
channel): the MCS, the payload length in bytes, the codec, the header mode and the downscale
factor (the quality travels in-band in both modes).

Receiver (what a real receiver gets): the decoded information bits as they are, including
those of codewords the LDPC decoder failed on (no retransmission); the received byte
string is handed to Pillow. If Pillow raises on the corrupt stream, the output is a
mid-grey image (all 128, ``decode_failed=True``); if it decodes (Pillow tolerates many
corruptions and truncated data), its output is used as is.

Images that cannot be sent at all (no codeword fits, or not even an 8 x 8 thumbnail at quality
1 fits the budget) are reported as such: ``sent=False`` and ``image=None`` (no made-up output and
no PSNR).

Not jittable (Pillow); pure in the sense that the output is a function of the inputs and
the key only.
"""
from __future__ import annotations

import functools
import io
from typing import Optional

import numpy as np
from PIL import Image, ImageFile

from ..channel import amc
from ..channel.condition import as_condition
from ..channel.ofdm import OFDMConfig

__all__ = ["encode_to_budget", "decode_bytes", "jpeg_ldpc", "HEADER_MODES",
           "AGREED_HEADERS_BELOW_PIXELS", "header_mode", "split_jpeg", "agreed_header"]

_CODECS = ("jpeg", "jpeg2000")
#: What travels: the whole file, or only the quality byte + the entropy-coded segment.
HEADER_MODES = ("in-band", "agreed")
#: ``headers="auto"`` agrees on JPEG headers in advance for images with fewer pixels than this
#: (the paper's 512 x 512 sends whole files; the tiny world's 64 x 64 sends entropy-coded data).
AGREED_HEADERS_BELOW_PIXELS = 256 * 256
_EOI = b"\xff\xd9"


def header_mode(headers: str, shape, codec: str = "jpeg") -> str:
    """Resolve ``headers`` ("auto" | "in-band" | "agreed") for an image of ``shape`` [H, W, ...]."""
    if headers == "auto":
        small = int(shape[0]) * int(shape[1]) < AGREED_HEADERS_BELOW_PIXELS
        return "agreed" if small and codec == "jpeg" else "in-band"
    if headers not in HEADER_MODES:
        raise ValueError(f"headers must be 'auto' or one of {HEADER_MODES}, got {headers!r}")
    if headers == "agreed" and codec != "jpeg":
        raise ValueError(f"headers='agreed' is implemented for JPEG only, not {codec!r}")
    return headers


def _jpeg_bytes(img: Image.Image, quality: int, optimize: bool = True) -> bytes:
    b = io.BytesIO()
    img.save(b, format="JPEG", quality=int(quality), optimize=optimize)
    return b.getvalue()


def split_jpeg(data: bytes) -> tuple[bytes, bytes]:
    """``(header, entropy_coded)`` of a baseline JPEG file: the header runs from SOI to the end
    of the SOS segment; the entropy-coded segment follows, without the final EOI marker."""
    if data[:2] != b"\xff\xd8" or data[-2:] != _EOI:
        raise ValueError("not a complete JPEG file (missing SOI or EOI marker)")
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise ValueError(f"JPEG marker expected at byte {i}")
        marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
        i += 2 + length
        if marker == 0xDA:  # SOS: entropy-coded data starts after its segment
            return data[:i], data[i:-2]
    raise ValueError("JPEG file has no SOS marker")


@functools.lru_cache(maxsize=256)
def agreed_header(quality: int, width: int, height: int) -> bytes:
    """The header both ends agree on for ``quality`` and size: Pillow's SOI .. SOS of an RGB
    JPEG with standard Huffman tables (it depends on nothing else; tested)."""
    blank = Image.new("RGB", (int(width), int(height)))
    return split_jpeg(_jpeg_bytes(blank, quality, optimize=False))[0]


def _agreed_payload(img: Image.Image, quality: int) -> bytes:
    """One quality byte + the entropy-coded segment (what travels with agreed headers)."""
    header, ecs = split_jpeg(_jpeg_bytes(img, quality, optimize=False))
    assert header == agreed_header(quality, *img.size), "Pillow header depends on the image"
    return bytes([int(quality)]) + ecs


def _agreed_to_file(payload: bytes, width: int, height: int) -> bytes:
    """Receiver: rebuild a JPEG file from an agreed-header payload (quality byte + ECS)."""
    q = payload[0]
    if not 1 <= q <= 100:
        raise ValueError(f"received quality byte {q} is not a JPEG quality")
    return agreed_header(q, width, height) + payload[1:] + _EOI


def _j2k_bytes(img: Image.Image, ratio: float) -> bytes:
    b = io.BytesIO()
    img.save(b, format="JPEG2000", quality_mode="rates", quality_layers=[float(ratio)],
             irreversible=True)
    return b.getvalue()


def encode_to_budget(image: np.ndarray, budget_bits: int, codec: str = "jpeg",
                     headers: str = "in-band"):
    """Compress ``image`` ``[H, W, 3] uint8`` into at most ``budget_bits`` bits.

    ``headers``: ``"in-band"`` (the whole file, optimised Huffman tables) or ``"agreed"`` (JPEG
    only: a quality byte + the entropy-coded segment, standard tables; see the module doc).
    Returns ``(data: bytes, quality, scale)``: ``quality`` is the JPEG quality or the
    JPEG2000 compression ratio, ``scale`` the downscale factor (1, 2, 4, ...). ``data`` is
    empty (and quality, scale None) if nothing fits even at 8 x 8 pixels.
    """
    if codec not in _CODECS:
        raise ValueError(f"codec must be one of {_CODECS}, got {codec!r}")
    headers = header_mode(headers, np.shape(image), codec)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be [H, W, 3] uint8, got {image.shape} {image.dtype}")
    budget = int(budget_bits) // 8
    H, W = image.shape[:2]
    scale = 1
    if codec == "jpeg" and headers == "agreed":
        encode = _agreed_payload
    else:
        encode = _jpeg_bytes
    while min(H, W) // scale >= 8:
        img = Image.fromarray(image)
        if scale > 1:
            img = img.resize((max(1, W // scale), max(1, H // scale)), Image.Resampling.BOX)
        if codec == "jpeg":
            if len(encode(img, 1)) <= budget:
                lo, hi = 1, 95            # largest quality that fits (binary search; size ~monotone)
                while lo < hi:
                    mid = (lo + hi + 1) // 2
                    if len(encode(img, mid)) <= budget:
                        lo = mid
                    else:
                        hi = mid - 1
                return encode(img, lo), lo, scale
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


def decode_bytes(data: bytes, shape: tuple, codec: str = "jpeg", scale: Optional[int] = 1,
                 headers: str = "in-band"):
    """Receiver side: bytes -> ``([H, W, 3] uint8, failed)``; mid-grey and ``failed=True`` if
    undecodable (see module doc). With ``headers="agreed"`` ``data`` is the quality byte + the
    entropy-coded segment of the ``scale``-downscaled image; the header is rebuilt here."""
    H, W = shape[:2]
    grey = np.full((H, W, 3), 128, np.uint8)
    if not data:
        return grey, True
    prev = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        if headers == "agreed":
            s = int(scale or 1)
            data = _agreed_to_file(data, max(1, W // s), max(1, H // s))
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


def jpeg_ldpc(image, phi, key, *, codec: str = "jpeg", headers: str = "auto",
              table: Optional[dict] = None, cfg: OFDMConfig = OFDMConfig(),
              decoder_kw: Optional[dict] = None) -> dict:
    """JPEG-LDPC baseline for one image.

    Args:
      image: ``[H, W, 3] uint8``.
      phi: a :class:`~dekag_jax.channel.condition.Condition` (or ``(tau, snr_db,
        delay_spread_s)``); tau in {1..6}/64 symbols per pixel of THIS image.
      key: jax PRNG key for the channel.
      codec: ``"jpeg"`` or ``"jpeg2000"``.
      headers: ``"auto"`` | ``"in-band"`` | ``"agreed"`` (module doc).
      table: AMC table (default: the shipped one).
    Returns:
      dict with ``sent`` (False: nothing fits the budget; then ``image`` is None), ``image``
      (received ``[H, W, 3] uint8``), ``headers`` (the mode used), ``bytes`` (payload size),
      ``quality``, ``scale``, ``plan`` (:class:`~dekag_jax.channel.amc.AMCPlan`),
      ``block_errors``, ``num_codewords``, ``bit_errors``, ``decode_failed``.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be [H, W, 3] uint8, got {image.shape} {image.dtype}")
    cond = as_condition(phi)
    mode = header_mode(headers, image.shape, codec)
    H, W = image.shape[:2]
    pl = amc.select_mcs(cond, num_pixels=H * W, table=table)
    data, quality, scale = encode_to_budget(image, pl.info_bits, codec, mode)
    if not data:   # not even an 8 x 8 thumbnail at the lowest quality fits: nothing is sent
        return dict(sent=False, image=None, headers=mode, bytes=0, quality=None, scale=None,
                    plan=pl, block_errors=0, num_codewords=0, bit_errors=0, decode_failed=False)
    bits = np.unpackbits(np.frombuffer(data, np.uint8))
    bits_hat, block_err, C = amc.send_bits(key, bits, pl, cond, cfg=cfg, decoder_kw=decoder_kw)
    rx = np.packbits(bits_hat).tobytes()
    out, failed = decode_bytes(rx, image.shape, codec, scale, mode)
    return dict(sent=True, image=out, headers=mode, bytes=len(data), quality=quality, scale=scale,
                plan=pl, block_errors=block_err, num_codewords=C,
                bit_errors=int((bits_hat != bits).sum()), decode_failed=failed)
