"""Quantised adapter updates (paper Fig. 9): per-output-channel symmetric uniform quantisation to
16, 8, 4 or 2 bits with float16 scales, dequantisation, bit-packing and the exact bytes sent.

Quantiser (per matrix, per output channel = the last axis in our Flax layout: r for ``lora_A``,
out for ``lora_B``, R for a gate kernel; every other axis is reduced):
    qmax = 2^(bits-1) - 1;  s = max|x| / qmax over the channel;
    s16 = s rounded to float16, rounded UP when nearest rounding went below s (so no element
          clips: |x| / s16 <= qmax), and 0 for an all-zero channel;
    q = round(x / s16) in [-qmax, qmax];  x_hat = q * s16.
Error bound: |x - x_hat| <= s16 / 2 per element, with s16 <= s·(1 + 2^-10) while s is a normal
float16 (s >= 2^-14; smaller scales are float16 subnormals and lose relative precision, but the
bound in s16 still holds). 2 bits gives the levels {-1, 0, 1}·s16 (symmetric: 2^b - 1 levels).
At 16 bits float16 itself (no scales) is the paper's baseline; ``fp16_bytes`` counts it.

Wire format of one matrix (``pack_matrix``): its channel scales as float16 little-endian
(2·C bytes), then the n = size codes in C order (Flax layout), each q + 2^(bits-1) as an unsigned
``bits``-bit field, MSB first, the whole stream padded with zero bits to a byte:
ceil(n·bits/8) bytes. Shapes, ranks and paths are known to the receiver from the rules (the
adapter set is agreed before any update is sent) and are not counted. So a matrix costs
``ceil(n·bits/8) + 2·C`` bytes; an adapter set is the sum over its matrices.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

__all__ = ["BITS", "quantise", "dequantise", "pack_matrix", "unpack_matrix", "matrix_bytes", "encode",
           "decode", "payload_bytes", "fp16_bytes"]

BITS = (16, 8, 4, 2)


def _check_bits(bits: int) -> int:
    if bits not in BITS:
        raise ValueError(f"bits must be one of {BITS}, got {bits!r}")
    return bits


def _scales(x: np.ndarray, qmax: int) -> np.ndarray:
    amax = np.max(np.abs(x.reshape(-1, x.shape[-1])), axis=0).astype(np.float64)
    s = amax / qmax
    if np.any(s > np.finfo(np.float16).max):
        raise ValueError(f"values up to {amax.max():.3g} overflow a float16 scale at qmax {qmax}")
    s16 = s.astype(np.float16)
    low = s16.astype(np.float64) < s
    s16[low] = np.nextafter(s16[low], np.float16(np.inf))
    return s16


def quantise(x: Any, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """``(q, scales)``: integer codes ``q`` (int32, x's shape, in [-qmax, qmax]) and float16
    ``scales [C]`` (C = x.shape[-1]). See the module doc for the rounding of the scales."""
    bits = _check_bits(bits)
    x = np.asarray(x, np.float64)
    if x.ndim < 1 or x.size == 0:
        raise ValueError(f"quantise needs a non-empty array with a channel axis, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("quantise: the matrix holds NaN or inf")
    qmax = 2 ** (bits - 1) - 1
    s16 = _scales(x, qmax)
    s = s16.astype(np.float64)
    q = np.where(s > 0, np.round(x / np.where(s > 0, s, 1.0)), 0.0)
    return np.clip(q, -qmax, qmax).astype(np.int32), s16


def dequantise(q: np.ndarray, scales: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
    """x_hat = q · scales (broadcast over the last axis), in ``dtype``."""
    return (np.asarray(q, np.float64) * np.asarray(scales, np.float64)).astype(dtype)


def matrix_bytes(shape: tuple[int, ...], bits: int) -> int:
    """Bytes of one packed matrix: ceil(size·bits/8) codes + 2 bytes per channel scale."""
    _check_bits(bits)
    return math.ceil(math.prod(shape) * bits / 8) + 2 * int(shape[-1])


def pack_matrix(x: Any, bits: int) -> bytes:
    """The wire bytes of one matrix (module doc): float16 scales, then bit-packed codes."""
    q, s16 = quantise(x, bits)
    u = (q.reshape(-1) + 2 ** (bits - 1)).astype(np.uint32)
    # bits of every code, MSB first
    bitmat = ((u[:, None] >> np.arange(bits - 1, -1, -1, dtype=np.uint32)) & 1).astype(np.uint8)
    payload = np.packbits(bitmat.reshape(-1)).tobytes()
    out = s16.astype("<f2").tobytes() + payload
    assert len(out) == matrix_bytes(q.shape, bits)
    return out


def unpack_matrix(data: bytes, shape: tuple[int, ...], bits: int, dtype: Any = np.float32) -> np.ndarray:
    """Inverse of ``pack_matrix``: the dequantised matrix of ``shape``."""
    _check_bits(bits)
    shape = tuple(int(s) for s in shape)
    if len(data) != matrix_bytes(shape, bits):
        raise ValueError(f"{len(data)} bytes for a {shape} matrix at {bits} bits; expected {matrix_bytes(shape, bits)}")
    c, n = shape[-1], math.prod(shape)
    s16 = np.frombuffer(data[:2 * c], "<f2")
    bitstream = np.unpackbits(np.frombuffer(data[2 * c:], np.uint8))[:n * bits].reshape(n, bits).astype(np.uint32)
    u = (bitstream << np.arange(bits - 1, -1, -1, dtype=np.uint32)).sum(axis=1)
    q = u.astype(np.int64) - 2 ** (bits - 1)
    return dequantise(q.reshape(shape), s16, dtype)


def encode(adapters: Mapping[str, Mapping[str, Any]], bits: int) -> dict[str, dict[str, bytes]]:
    """Every matrix of an adapter set (``{path: {"lora_A": ..., "lora_B": ..., gates...}}``) packed."""
    return {p: {k: pack_matrix(v, bits) for k, v in ad.items()} for p, ad in adapters.items()}


def decode(packed: Mapping[str, Mapping[str, bytes]], like: Mapping[str, Mapping[str, Any]], bits: int,
           dtype: Any = np.float32) -> dict[str, dict[str, np.ndarray]]:
    """Dequantised adapter set; ``like`` gives the shapes (arrays or ShapeDtypeStructs)."""
    return {p: {k: unpack_matrix(packed[p][k], tuple(v.shape), bits, dtype) for k, v in ad.items()}
            for p, ad in like.items()}


def payload_bytes(adapters: Mapping[str, Mapping[str, Any]], bits: int) -> int:
    """Exact bytes of ``encode(adapters, bits)`` without packing (shapes only)."""
    return sum(matrix_bytes(tuple(v.shape), bits) for ad in adapters.values() for v in ad.values())


def fp16_bytes(adapters: Mapping[str, Mapping[str, Any]]) -> int:
    """Bytes of the adapter set as plain float16 (2 per parameter, no scales): the paper's 16-bit."""
    return sum(2 * math.prod(v.shape) for ad in adapters.values() for v in ad.values())
