"""Adaptive modulation and coding (AMC) for the communication baselines (paper Sec. VI-B1).

"For the baselines, we sweep over different combinations of QAM modulation orders and LDPC
coding rates to determine the maximum achievable bit budget under a block error rate
constraint of 1%." This module does exactly that, with 5G NR LDPC (TS 38.212, rate
matching and bit interleaver for the QAM order) over the paper's correlated OFDM channel
(``dekag_jax.channel.ofdm``: block fading, perfect CSI, MMSE equalisation, max-log LLRs).

Modulation and coding schemes (MCS): QAM order M in ``QAM_ORDERS`` x LDPC code rate in
``CODE_RATES`` (a documented set spanning the 5G MCS tables' range, 1/4 .. 9/10).

Codewords: every codeword occupies ``SYMBOLS_PER_CODEWORD`` = 960 QAM symbols (8 OFDM
slots of the J = 120 sub-channels: n = 960 log2 M coded bits, k = round(R n) information
bits). A transmission of K = tau X symbols carries floor(K / 960) codewords (a budget below
960 symbols carries one shorter codeword of K symbols); the remaining symbols are unused
padding. Hence the information-bit budget of an MCS is ``num_codewords * k``.

BLER: Monte Carlo over independent channel realisations, one codeword per realisation
(each codeword of a real transmission sees the same marginal channel statistics, since
960 is a multiple of J), measured by ``scripts/make_amc_table.py`` and shipped as
``dekag_jax/channel/data/amc_table.json``: per (SNR gamma, delay spread omega) grid point the
BLER of the MCSs tried in decreasing spectral efficiency until the first one met the target
(the selection rule needs no other). ``select_mcs`` looks a condition up: the largest grid
SNR <= gamma (conservative) and the grid omega nearest in log scale; the chosen MCS is the
one with the most information bits whose measured BLER <= target. If none meets the
target at that point (deep block fading at low SNR), the most robust MCS tried is returned
with ``meets_target=False``; the baselines then transmit with it and live with the errors.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import math
from fractions import Fraction
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from . import qam
from .ldpc import NR5GCode
from .condition import Condition, as_condition
from .montecarlo import DEFAULT_NUM_PIXELS, num_symbols
from .ofdm import OFDMConfig, check_on_grid, equalized_llr, transmit

__all__ = [
    "QAM_ORDERS",
    "CODE_RATES",
    "SYMBOLS_PER_CODEWORD",
    "TARGET_BLER",
    "DECODER_KW",
    "MCS",
    "AMCPlan",
    "all_mcs",
    "codeword_shape",
    "make_code",
    "plan",
    "transmit_codewords",
    "bler_batch_fn",
    "measure_bler",
    "load_table",
    "select_mcs",
    "bit_budget",
    "send_bits",
]

QAM_ORDERS = (4, 16, 64, 256)
CODE_RATES = tuple(Fraction(x) for x in ("1/4", "1/3", "2/5", "1/2", "3/5", "2/3", "3/4", "5/6", "9/10"))
SYMBOLS_PER_CODEWORD = 960
TARGET_BLER = 0.01
#: Decoder used by AMC and the baselines (layered normalised min-sum, 20 iterations, early stop).
DECODER_KW = dict(cn_update="nms", alpha=0.8, schedule="layered", num_iter=20)
_TABLE = "data/amc_table.json"


@dataclasses.dataclass(frozen=True, order=True)
class MCS:
    """A modulation and coding scheme: QAM order and LDPC code rate."""
    qam_order: int
    code_rate: Fraction

    def __post_init__(self):
        qam.check_m(self.qam_order)
        object.__setattr__(self, "code_rate", Fraction(self.code_rate))
        if not 0 < self.code_rate < 1:
            raise ValueError(f"code rate {self.code_rate} must be in (0, 1)")

    @property
    def bits_per_symbol(self) -> int:
        return qam.bits_per_symbol(self.qam_order)

    @property
    def efficiency(self) -> float:
        """Information bits per QAM symbol."""
        return self.bits_per_symbol * float(self.code_rate)

    @property
    def key(self) -> str:
        return f"qam{self.qam_order}_r{self.code_rate.numerator}-{self.code_rate.denominator}"


def all_mcs() -> list[MCS]:
    """Every MCS of the documented set, in decreasing spectral efficiency."""
    # Ties in efficiency (e.g. 16-QAM 1/2 and 256-QAM 1/4): the lower order first.
    return sorted((MCS(m, r) for m in QAM_ORDERS for r in CODE_RATES),
                  key=lambda s: (-s.efficiency, s.qam_order))


def codeword_shape(mcs: MCS, symbols: int = SYMBOLS_PER_CODEWORD) -> tuple[int, int]:
    """``(k, n)`` of one codeword of ``symbols`` QAM symbols. Raises if no 5G code fits."""
    n = int(symbols) * mcs.bits_per_symbol
    k = int(round(float(mcs.code_rate) * n))
    if k < 12 or k > 8448:
        raise ValueError(f"{mcs.key}: codeword of {symbols} symbols gives k={k}, outside 5G's 12..8448")
    return k, n


@functools.lru_cache(maxsize=None)
def make_code(mcs: MCS, symbols: int = SYMBOLS_PER_CODEWORD) -> NR5GCode:
    """The 5G NR LDPC code of ``mcs`` (interleaved for its QAM order)."""
    k, n = codeword_shape(mcs, symbols)
    return NR5GCode(k, n, num_bits_per_symbol=mcs.bits_per_symbol)


@dataclasses.dataclass(frozen=True)
class AMCPlan:
    """How a symbol budget is used: MCS, codeword layout and information-bit budget.

    ``bler`` is the table's measured BLER for the chosen MCS at the looked-up grid point
    (None when planned without a table); ``meets_target`` whether it is <= the target.
    """
    mcs: MCS
    num_symbols: int
    symbols_per_codeword: int
    num_codewords: int
    k: int
    n: int
    bler: Optional[float] = None
    meets_target: bool = True
    grid_point: Optional[tuple] = None

    @property
    def info_bits(self) -> int:
        return self.num_codewords * self.k

    @property
    def used_symbols(self) -> int:
        return self.num_codewords * self.symbols_per_codeword


def plan(mcs: MCS, num_symbols_budget: int, **extra) -> AMCPlan:
    """Lay out ``num_symbols_budget`` symbols as codewords of ``mcs`` (see module doc)."""
    K = int(num_symbols_budget)
    if K < 1:
        raise ValueError(f"symbol budget must be >= 1, got {K}")
    spc = SYMBOLS_PER_CODEWORD if K >= SYMBOLS_PER_CODEWORD else K
    try:
        k, n = codeword_shape(mcs, spc)
    except ValueError:
        return AMCPlan(mcs, K, spc, 0, 0, spc * mcs.bits_per_symbol, **extra)
    return AMCPlan(mcs, K, spc, K // spc, k, n, **extra)


# ----------------------------------------------------------------------------- channel

def transmit_codewords(key, coded, qam_order: int, snr_db, delay_spread_s, *,
                       cfg: OFDMConfig = OFDMConfig(), one_transmission: bool = True):
    """Map coded bits to QAM, send them over the OFDM channel, return bit LLRs.

    Args:
      key: PRNG key.
      coded: ``[C, n]`` 0/1 coded bits (n a multiple of log2 M).
      qam_order: M.
      snr_db: gamma in dB; delay_spread_s: omega in seconds.
      cfg: channel configuration.
      one_transmission: True: the C codewords are consecutive parts of ONE transmission
        (one channel realisation, symbols allocated sequentially to the sub-channels, as a
        baseline image is sent); False: each codeword is its own transmission.
    Returns:
      ``[C, n]`` float32 LLRs (ours: ln P(0)/P(1)).
    """
    coded = jnp.asarray(coded)
    C, n = coded.shape
    syms = qam.bits_to_symbols(coded.reshape(1, C * n) if one_transmission else coded, qam_order)
    y, info = transmit(key, syms, snr_db, delay_spread_s, cfg=cfg)
    llr = equalized_llr(y, info, qam_order)                 # [..., K, q]
    return llr.reshape(C, n).astype(jnp.float32)


def bler_batch_fn(mcs: MCS, batch: int, *, cfg: OFDMConfig = OFDMConfig(),
                  decoder_kw: Optional[dict] = None):
    """Jitted ``f(key, snr_db, delay_spread_s) -> [batch] bool`` block errors of ``mcs``.

    Each of the ``batch`` codewords gets random information bits and its own channel
    realisation (``delay_spread_s`` may be traced: it is looked up in ``cfg``'s grid).
    """
    code = make_code(mcs)
    dec = code.decoder(**(decoder_kw or DECODER_KW))
    enc = code.encoder()

    def f(key, snr_db, delay_spread_s):
        kb, kc = jax.random.split(key)
        u = jax.random.bernoulli(kb, 0.5, (batch, code.k)).astype(jnp.uint8)
        mother = enc._encode(jnp.concatenate([u, jnp.zeros((batch, code.k_filler), jnp.uint8)], 1))
        c = mother[:, code.tx_positions]
        llr = transmit_codewords(kc, c, mcs.qam_order, snr_db, delay_spread_s, cfg=cfg,
                                 one_transmission=False)
        u_hat = dec._run(llr, dec.dec.tables).bits[:, : code.k]
        return jnp.any(u_hat != u, axis=1)

    return jax.jit(f)


def measure_bler(mcs: MCS, snr_db: float, delay_spread_s: float, *, key, max_blocks: int = 1000,
                 batch: int = 100, target: float = TARGET_BLER, early_reject: bool = True,
                 cfg: OFDMConfig = OFDMConfig(), decoder_kw: Optional[dict] = None,
                 fn=None) -> tuple[int, int]:
    """Monte Carlo block errors: ``(errors, blocks)`` after at most ``max_blocks`` blocks.

    With ``early_reject`` the run stops as soon as the error count exceeds
    ``target * max_blocks`` (the MCS cannot meet the target any more).
    """
    check_on_grid(delay_spread_s, cfg)  # fn traces omega: validate it while it is on the host
    fn = fn or bler_batch_fn(mcs, batch, cfg=cfg, decoder_kw=decoder_kw)
    allowed = math.floor(target * max_blocks)
    errors = blocks = 0
    i = 0
    while blocks < max_blocks:
        e = np.asarray(fn(jax.random.fold_in(key, i), jnp.float32(snr_db), jnp.float32(delay_spread_s)))
        errors += int(e.sum())
        blocks += e.size
        i += 1
        if early_reject and errors > allowed:
            break
    return errors, blocks


# ----------------------------------------------------------------------------- table

@functools.lru_cache(maxsize=4)
def _load(path: Optional[str]) -> dict:
    if path is None:
        text = importlib.resources.files(__package__).joinpath(_TABLE).read_text()
    else:
        with open(path) as f:
            text = f.read()
    tab = json.loads(text)
    if "points" not in tab or "meta" not in tab:
        raise ValueError(f"AMC table {path or _TABLE} lacks 'meta'/'points'")
    return tab


def load_table(path: Optional[str] = None) -> dict:
    """The shipped AMC table (or one written by ``scripts/make_amc_table.py`` at ``path``)."""
    return _load(None if path is None else str(path))


def _lookup(tab: dict, snr_db: float, delay_spread_s: float):
    snrs = sorted({p["snr_db"] for p in tab["points"]})
    omegas = sorted({p["delay_spread_s"] for p in tab["points"]})
    below = [s for s in snrs if s <= snr_db + 1e-9]
    s = below[-1] if below else None
    w = min(omegas, key=lambda o: abs(math.log(o / float(delay_spread_s))))
    return s, w


def _condition(phi, snr_db, delay_spread_s) -> Condition:
    """``phi`` a Condition (or ``(tau, gamma, omega)`` tuple), or tau with the two others."""
    if snr_db is None and delay_spread_s is None:
        return as_condition(phi)
    return Condition(phi, snr_db, delay_spread_s)


def select_mcs(phi, snr_db: Optional[float] = None, delay_spread_s: Optional[float] = None, *,
               num_pixels: int = DEFAULT_NUM_PIXELS, table: Optional[dict] = None,
               target: float = TARGET_BLER) -> AMCPlan:
    """AMC decision for phi = (tau, gamma, omega) and an image of ``num_pixels`` pixels.

    ``select_mcs(cond)`` with a :class:`~dekag_jax.channel.condition.Condition`, or
    ``select_mcs(tau, snr_db, delay_spread_s)``. Returns the :class:`AMCPlan` with the most
    information bits whose tabulated BLER is <= ``target`` (see module doc for grid lookup and
    the no-MCS-qualifies fallback).
    """
    cond = _condition(phi, snr_db, delay_spread_s)
    tau, snr_db, delay_spread_s = cond.tau, cond.snr_db, cond.delay_spread_s
    K = num_symbols(tau, num_pixels)
    tab = table if table is not None else load_table()
    s, w = _lookup(tab, float(snr_db), float(delay_spread_s))
    if s is None:
        lowest = min(p["snr_db"] for p in tab["points"])
        raise ValueError(f"SNR {snr_db} dB is below the AMC table's lowest grid point ({lowest} dB)")
    pts = [p for p in tab["points"] if p["snr_db"] == s and p["delay_spread_s"] == w]
    best = None
    robust = None
    for p in pts:
        mcs = MCS(int(p["qam"]), Fraction(p["rate"]))
        bler = p["errors"] / p["blocks"]
        pl = plan(mcs, K, bler=bler, meets_target=bler <= target, grid_point=(s, w))
        if pl.num_codewords == 0:
            continue
        if bler <= target and (best is None or (pl.info_bits, -mcs.qam_order)
                               > (best.info_bits, -best.mcs.qam_order)):
            best = pl
        if robust is None or (bler, -pl.info_bits) < (robust.bler, -robust.info_bits):
            robust = pl
    if best is not None:
        return best
    if robust is None:
        raise ValueError(f"AMC table has no usable MCS at gamma={s} dB, omega={w} s for K={K} symbols")
    return robust


def bit_budget(phi, snr_db: Optional[float] = None, delay_spread_s: Optional[float] = None, *,
               num_pixels: int = DEFAULT_NUM_PIXELS, table: Optional[dict] = None) -> int:
    """Information bits the AMC affords for phi = (tau, gamma, omega) (arguments as select_mcs)."""
    return select_mcs(phi, snr_db, delay_spread_s, num_pixels=num_pixels, table=table).info_bits


# ----------------------------------------------------------------------------- coded link

@functools.lru_cache(maxsize=64)
def _decoder_for(mcs: MCS, symbols: int, kw_items: tuple):
    return make_code(mcs, symbols).decoder(**dict(kw_items))


def send_bits(key, bits, plan_: AMCPlan, snr_db, delay_spread_s: Optional[float] = None, *,
              cfg: OFDMConfig = OFDMConfig(), decoder_kw: Optional[dict] = None):
    """Send up to ``plan_.info_bits`` payload bits as ONE transmission and decode them.

    The payload is zero-padded to ``num_codewords * k`` bits, cut into codewords, LDPC
    encoded, QAM mapped, allocated sequentially to the sub-channels (one block-fading channel
    realisation for the whole transmission), equalised, demapped and decoded.

    Args:
      key: PRNG key (channel and noise).
      bits: ``[P]`` 0/1 payload, ``P <= plan_.info_bits``.
      snr_db, delay_spread_s: gamma [dB] and omega [s]; or a Condition as ``snr_db`` alone.
    Returns:
      ``(bits_hat [P] uint8, block_errors int, num_codewords int)``; a failed codeword's
      bits are delivered as the decoder left them (a real receiver has nothing better).
    """
    if isinstance(snr_db, Condition):
        snr_db, delay_spread_s = snr_db.snr_db, snr_db.delay_spread_s
    bits = np.asarray(bits, np.uint8).ravel()
    P = bits.size
    if P > plan_.info_bits:
        raise ValueError(f"payload of {P} bits exceeds the AMC budget of {plan_.info_bits} bits")
    if plan_.num_codewords == 0 or P == 0:
        return np.zeros(P, np.uint8), 0, 0
    code = make_code(plan_.mcs, plan_.symbols_per_codeword)
    C, k = plan_.num_codewords, plan_.k
    u = np.zeros(C * k, np.uint8)
    u[:P] = bits
    u = u.reshape(C, k)
    c = code.encode(u)
    llr = transmit_codewords(key, c, plan_.mcs.qam_order, snr_db, delay_spread_s, cfg=cfg,
                             one_transmission=True)
    dec = _decoder_for(plan_.mcs, plan_.symbols_per_codeword,
                       tuple(sorted((decoder_kw or DECODER_KW).items())))
    u_hat = np.asarray(dec(llr))
    block_errors = int(np.any(u_hat != u, axis=1).sum())
    return u_hat.ravel()[:P].astype(np.uint8), block_errors, C
