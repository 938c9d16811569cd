"""Latent-LDPC baseline (paper Sec. VI-B1): uniform quantisation of the latent -> 5G LDPC -> QAM
-> OFDM -> dequantisation.

Transmitter: the AMC (``dekag_jax.channel.amc.select_mcs``) fixes the MCS and the bit budget
for phi = (tau, gamma, omega), the symbol budget being K = tau X with X the number of IMAGE
pixels the latent stands for (``pixels_per_element`` = 64 for an SD VAE latent: 8 x 8
pixels per latent position). Each channel is quantised uniformly over its own
[min, max] with the LARGEST bit depth b (1..16) such that all h w c b bits fit; codes are
sent MSB first. If even b = 1 does not fit, the latent is average-pooled 2 x 2
(repeatedly) until it does and the receiver upsamples it back (nearest).

Side information known to the receiver without error: the MCS, b, the pooling factor and
the per-channel (min, max) (2 c float32 values).

Receiver: bits as decoded (failed codewords included, no retransmission) -> bin centres.
If no codeword fits at all, the receiver outputs the per-channel mid-range (min+max)/2.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..channel import amc
from ..channel.condition import as_condition
from ..channel.ofdm import OFDMConfig

__all__ = ["quantize", "dequantize", "latent_ldpc"]


def quantize(latent: np.ndarray, bits: int):
    """Per-channel uniform quantiser: ``[h, w, c]`` float -> (int codes, lo [c], hi [c])."""
    x = np.asarray(latent, np.float64)
    lo = x.min(axis=(0, 1))
    hi = x.max(axis=(0, 1))
    span = np.where(hi > lo, hi - lo, 1.0)
    L = 2 ** int(bits)
    q = np.floor((x - lo) / span * L).clip(0, L - 1).astype(np.int64)
    return q, lo.astype(np.float32), hi.astype(np.float32)


def dequantize(q: np.ndarray, bits: int, lo, hi) -> np.ndarray:
    """Bin centres of :func:`quantize`'s codes, ``float32``."""
    L = 2 ** int(bits)
    lo = np.asarray(lo, np.float64)
    hi = np.asarray(hi, np.float64)
    span = np.where(hi > lo, hi - lo, 0.0)
    return (lo + (q + 0.5) / L * span).astype(np.float32)


def _pool(x, f):
    if f == 1:
        return x
    h, w, c = x.shape
    h2, w2 = h // f, w // f
    return x[: h2 * f, : w2 * f].reshape(h2, f, w2, f, c).mean(axis=(1, 3))


def _unpool(x, f, shape):
    if f == 1:
        return x
    up = np.repeat(np.repeat(x, f, axis=0), f, axis=1)
    out = np.empty(shape, x.dtype)
    out[...] = np.mean(x, axis=(0, 1))
    out[: up.shape[0], : up.shape[1]] = up
    return out


def latent_ldpc(latent, phi, key, *, pixels_per_element: int = 64, table: Optional[dict] = None,
                cfg: OFDMConfig = OFDMConfig(), decoder_kw: Optional[dict] = None,
                max_bits: int = 16) -> dict:
    """Latent-LDPC baseline for one latent.

    Args:
      latent: ``[h, w, c]`` float.
      phi: a :class:`~dekag_jax.channel.condition.Condition` (or ``(tau, snr_db,
        delay_spread_s)``); tau in symbols per IMAGE pixel.
      key: jax PRNG key for the channel.
      pixels_per_element: image pixels per latent spatial position (64 for SD's 8x VAE).
    Returns:
      dict with ``sent`` (False: not even 1 bit per element of a fully pooled latent fits; the
      output is then the per-channel mid-range, not a received latent), ``latent`` (received
      ``[h, w, c] float32``), ``bits_per_element``, ``pool``,
      ``payload_bits``, ``plan``, ``block_errors``, ``num_codewords``, ``bit_errors``.
    """
    x = np.asarray(latent, np.float32)
    if x.ndim != 3:
        raise ValueError(f"latent must be [h, w, c], got shape {x.shape}")
    cond = as_condition(phi)
    h, w, c = x.shape
    pl = amc.select_mcs(cond, num_pixels=h * w * int(pixels_per_element), table=table)
    budget = pl.info_bits
    f = 1
    while True:
        xp = _pool(x, f)
        n_el = xp.size
        b = min(int(max_bits), budget // max(n_el, 1))
        if b >= 1 or min(xp.shape[:2]) <= 1:
            break
        f *= 2
    if b < 1:
        mid = ((x.min(axis=(0, 1)) + x.max(axis=(0, 1))) / 2).astype(np.float32)
        return dict(sent=False, latent=np.broadcast_to(mid, x.shape).copy(), bits_per_element=0, pool=f,
                    payload_bits=0, plan=pl, block_errors=0, num_codewords=0, bit_errors=0)
    q, lo, hi = quantize(xp, b)
    shifts = np.arange(b - 1, -1, -1)
    bits = ((q.ravel()[:, None] >> shifts) & 1).astype(np.uint8).ravel()   # MSB first
    bits_hat, block_err, C = amc.send_bits(key, bits, pl, cond, cfg=cfg, decoder_kw=decoder_kw)
    q_hat = (bits_hat.reshape(-1, b).astype(np.int64) << shifts).sum(axis=1).reshape(xp.shape)
    out = _unpool(dequantize(q_hat, b, lo, hi), f, x.shape)
    return dict(sent=True, latent=out, bits_per_element=b, pool=f, payload_bits=int(bits.size), plan=pl,
                block_errors=block_err, num_codewords=C, bit_errors=int((bits_hat != bits).sum()))
