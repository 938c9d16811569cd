"""IEEE 802.11n (HT) LDPC codes: n = 648, 1296, 1944 at rates 1/2, 2/3, 3/4, 5/6.

Prototype matrices (Z = 27, 54, 81) from IEEE Std 802.11-2020 Annex F (802.11n-2009
20.3.11.6 / Annex R), kept as data files ``data/ieee80211n_n{n}_r{12,23,34,56}.txt`` with
their provenance in the file header. The codes are systematic: the first ``k = R n``
columns carry the information bits, the parity part is dual-diagonal.

No shortening/puncturing/repetition of 20.3.11.7.5 here: one codeword = ``n`` bits.
"""
from __future__ import annotations

import functools
import importlib.resources
from fractions import Fraction
from typing import Union

import jax
import numpy as np

from .codes import ParityCheck, lift
from .decoder import DecodeResult, LDPCDecoder
from .encoder import LDPCEncoder

__all__ = ["WIFI_LENGTHS", "WIFI_RATES", "wifi_base_matrix", "wifi_parity_check", "WifiCode"]

WIFI_LENGTHS = {648: 27, 1296: 54, 1944: 81}
WIFI_RATES = (Fraction(1, 2), Fraction(2, 3), Fraction(3, 4), Fraction(5, 6))


def _rate(rate: Union[str, float, Fraction]) -> Fraction:
    try:
        r = Fraction(rate).limit_denominator(12) if not isinstance(rate, str) else Fraction(rate)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"802.11n: cannot parse rate {rate!r}") from None
    if r not in WIFI_RATES:
        raise ValueError(f"802.11n: rate {rate} unsupported (choose 1/2, 2/3, 3/4, 5/6)")
    return r


@functools.lru_cache(maxsize=None)
def wifi_base_matrix(n: int, rate: Union[str, float, Fraction]) -> np.ndarray:
    """Prototype matrix (``-1`` = zero block) for codeword length ``n`` and ``rate``."""
    if n not in WIFI_LENGTHS:
        raise ValueError(f"802.11n: n={n} unsupported (choose 648, 1296, 1944)")
    r = _rate(rate)
    name = f"data/ieee80211n_n{n}_r{r.numerator}{r.denominator}.txt"
    text = importlib.resources.files(__package__).joinpath(name).read_text()
    rows = [l.split() for l in text.splitlines() if l.strip() and not l.startswith("#")]
    return np.array(rows, dtype=np.int64)


@functools.lru_cache(maxsize=None)
def wifi_parity_check(n: int, rate) -> ParityCheck:
    r = _rate(rate)
    return lift(wifi_base_matrix(n, r), WIFI_LENGTHS[n], name=f"802.11n n={n} R={r}")


class WifiCode:
    """One 802.11n code. ``encode(bits [B, k]) -> [B, n]``; ``decode(llr [B, n]) -> [B, k]``."""

    def __init__(self, n: int, rate):
        self.rate_frac = _rate(rate)
        self.pcm = wifi_parity_check(n, self.rate_frac)
        self.n = n
        self.k = n - self.pcm.m
        self._encoder = None

    @property
    def rate(self) -> float:
        return self.k / self.n

    def encoder(self) -> LDPCEncoder:
        if self._encoder is None:
            self._encoder = LDPCEncoder(self.pcm)
        return self._encoder

    def encode(self, bits) -> jax.Array:
        return self.encoder()(bits)

    def decoder(self, **kwargs) -> "WifiDecoder":
        return WifiDecoder(self, **kwargs)

    def decode(self, llr, **kwargs) -> jax.Array:
        return self.decoder(**kwargs)(llr)


class WifiDecoder:
    """``dec(llr [B, n]) -> [B, k]``; ``dec.full(llr) -> DecodeResult``."""

    def __init__(self, code: WifiCode, **kwargs):
        self.code = code
        self.dec = LDPCDecoder(code.pcm, **kwargs)

    def full(self, llr) -> DecodeResult:
        return self.dec(llr)

    def __call__(self, llr) -> jax.Array:
        return self.dec(llr).bits[:, : self.code.k]
