"""5G NR LDPC (3GPP TS 38.212): base graphs, lifting, filler bits, rate matching.

What is implemented (single code block, no CRC attachment or segmentation, i.e. the
transport-block payload is the code block, as in Sionna's ``LDPC5GEncoder``):

* base graph 1 (46 x 68) and 2 (42 x 52), all lifting sizes ``Zc`` of Table 5.3.2-1
  (sets ``iLS`` 0..7), shifts ``V_ij mod Zc`` (Tables 5.3.2-2/-3, data files in
  ``data/nr5g_bg{1,2}.csv``);
* base-graph selection (7.2.2 / 6.2.2): BG2 if ``K <= 292``, or ``K <= 3824`` and
  ``R <= 0.67``, or ``R <= 0.25``; else BG1 (``K`` = payload bits, ``R = K / n``);
* ``K_b`` and ``Zc`` (5.2.2): BG1 ``K_b = 22``; BG2 ``K_b`` = 10 / 9 / 8 / 6 for
  ``K`` > 640 / > 560 / > 192 / else; ``Zc`` = smallest lifting size with
  ``K_b Zc >= K``; ``K_ldpc`` = 22 Zc (BG1) or 10 Zc (BG2), filler bits ``K_ldpc - K``
  (value 0, known to the decoder, never transmitted);
* rate matching (5.4.2.1) with ``N_cb = N`` (no limited-buffer): the first ``2 Zc``
  systematic bits are punctured, the circular buffer skips filler bits, starts at
  ``k0(rv)`` and wraps around; ``rv`` 0..3;
* optional bit interleaver (5.4.2.2) for ``Qm = num_bits_per_symbol`` (as Sionna does
  when ``num_bits_per_symbol`` is given).

Decoding inverts the rate matching (repeated bits' LLRs add up; punctured bits get LLR 0;
filler bits get ``+llr_max``, i.e. a certain 0 in our convention ln P(0)/P(1)) and prunes
trailing parity columns that are neither transmitted nor needed (degree-1 columns and
their checks, exactly as Sionna's ``prune_pcm``, but in whole lifting blocks), then runs
:class:`~dekag_jax.channel.ldpc.decoder.LDPCDecoder`.
"""
from __future__ import annotations

import functools
import importlib.resources
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from .codes import ParityCheck, lift
from .decoder import DecodeResult, LDPCDecoder
from .encoder import LDPCEncoder

__all__ = [
    "LIFTING_SETS",
    "base_graph",
    "select_base_graph",
    "select_lifting",
    "nr5g_parity_check",
    "NR5GCode",
]

# TS 38.212 Table 5.3.2-1: lifting sizes Zc per set index iLS.
LIFTING_SETS = (
    (2, 4, 8, 16, 32, 64, 128, 256),
    (3, 6, 12, 24, 48, 96, 192, 384),
    (5, 10, 20, 40, 80, 160, 320),
    (7, 14, 28, 56, 112, 224),
    (9, 18, 36, 72, 144, 288),
    (11, 22, 44, 88, 176, 352),
    (13, 26, 52, 104, 208),
    (15, 30, 60, 120, 240),
)
_BG_SHAPE = {1: (46, 68), 2: (42, 52)}
_BG_KB = {1: 22, 2: 10}
_BG_NCOLS = {1: 66, 2: 50}                     # N = ncols * Zc (after 2Zc puncturing)
_RV_COEFF = {1: (0, 17, 33, 56), 2: (0, 13, 25, 43)}   # Table 5.4.2.1-2


def _ils_of(z: int) -> int:
    for i, s in enumerate(LIFTING_SETS):
        if z in s:
            return i
    raise ValueError(f"Zc={z} is not a lifting size of TS 38.212 Table 5.3.2-1")


@functools.lru_cache(maxsize=None)
def _base_table(bg: int) -> np.ndarray:
    """``[rows, cols, 8]`` shifts for all iLS (``-1`` = zero block)."""
    if bg not in (1, 2):
        raise ValueError(f"base graph must be 1 or 2, got {bg}")
    text = importlib.resources.files(__package__).joinpath(f"data/nr5g_bg{bg}.csv").read_text()
    lines = [l for l in text.splitlines() if l and not l.startswith("#")][1:]
    tab = np.full(_BG_SHAPE[bg] + (8,), -1, np.int64)
    for l in lines:
        v = [int(x) for x in l.split(",")]
        tab[v[0], v[1]] = v[2:]
    return tab


def base_graph(bg: int, z: int) -> np.ndarray:
    """Base matrix of BG ``bg`` for lifting size ``z`` (shifts already ``mod z``)."""
    tab = _base_table(bg)[..., _ils_of(z)]
    return np.where(tab >= 0, tab % z, -1)


@functools.lru_cache(maxsize=None)
def nr5g_parity_check(bg: int, z: int) -> ParityCheck:
    """Lifted mother-code parity-check matrix (``46 Zc x 68 Zc`` or ``42 Zc x 52 Zc``)."""
    return lift(base_graph(bg, z), z, name=f"5G-NR BG{bg} Zc={z}")


def select_base_graph(k: int, rate: float) -> int:
    """TS 38.212 7.2.2 (6.2.2 for the uplink, same rule): LDPC base graph from (K, R)."""
    if k <= 292 or (k <= 3824 and rate <= 0.67) or rate <= 0.25:
        return 2
    return 1


def select_lifting(k: int, bg: int) -> tuple[int, int, int]:
    """TS 38.212 5.2.2: ``(Zc, iLS, K_b)`` for ``K`` payload bits (single code block)."""
    if bg == 1:
        kb = 22
    elif k > 640:
        kb = 10
    elif k > 560:
        kb = 9
    elif k > 192:
        kb = 8
    else:
        kb = 6
    best = None
    for i, s in enumerate(LIFTING_SETS):
        for z in s:
            if kb * z >= k and (best is None or z < best[0]):
                best = (z, i)
    if best is None:
        raise ValueError(f"K={k} too large for BG{bg} (max {kb * 384})")
    return best[0], best[1], kb


class NR5GCode:
    """One 5G NR LDPC code with rate matching: ``k`` info bits -> ``n`` coded bits.

    Args:
      k: information bits per codeword (12 <= k <= 8448; <= 3840 for BG2).
      n: transmitted bits per codeword (rate k/n in [1/5, 0.95], >= 1/3 for BG1).
      bg: force base graph 1 or 2; default: the standard's selection from (k, k/n).
      num_bits_per_symbol: if given, apply the 5.4.2.2 bit interleaver (n must be a
        multiple of it), like Sionna's ``LDPC5GEncoder(num_bits_per_symbol=...)``.
      rv: redundancy version 0..3 (start of the circular buffer).

    ``encode(bits [B, k]) -> [B, n]`` (uint8), ``decode(llr [B, n]) -> [B, k]`` (uint8);
    ``decoder(...)`` builds a reusable :class:`LDPCDecoder` wrapper with its settings.
    """

    def __init__(self, k: int, n: int, bg: Optional[int] = None,
                 num_bits_per_symbol: Optional[int] = None, rv: int = 0):
        k, n = int(k), int(n)
        if k < 12:
            raise ValueError(f"5G LDPC: k={k} too small (min 12)")
        if k > 8448:
            raise ValueError(f"5G LDPC: k={k} too large for one code block (max 8448)")
        if n <= 0:
            raise ValueError(f"5G LDPC: n must be positive, got {n}")
        rate = k / n
        if rate > 0.95:
            raise ValueError(f"5G LDPC: rate k/n={k}/{n}={rate:.3f} > 0.95 is unsupported")
        if rate < 0.2:
            raise ValueError(f"5G LDPC: rate k/n={k}/{n}={rate:.3f} < 1/5 (repetition) unsupported")
        bg = select_base_graph(k, rate) if bg is None else int(bg)
        if bg not in (1, 2):
            raise ValueError(f"5G LDPC: bg must be 1 or 2, got {bg}")
        if bg == 2 and k > 3840:
            raise ValueError(f"5G LDPC: k={k} too large for BG2 (max 3840)")
        if bg == 1 and rate < 1 / 3:
            raise ValueError(f"5G LDPC: BG1 needs rate >= 1/3 without repetition, got {rate:.3f}")
        if rv not in (0, 1, 2, 3):
            raise ValueError(f"5G LDPC: rv must be 0..3, got {rv}")
        self.k, self.n, self.bg, self.rv = k, n, bg, int(rv)
        self.z, self.ils, self.kb = select_lifting(k, bg)
        self.k_ldpc = _BG_KB[bg] * self.z
        self.n_ldpc = _BG_SHAPE[bg][1] * self.z
        self.k_filler = self.k_ldpc - k
        self.pcm = nr5g_parity_check(bg, self.z)
        self.num_bits_per_symbol = num_bits_per_symbol
        if num_bits_per_symbol is not None and n % int(num_bits_per_symbol) != 0:
            raise ValueError(f"5G LDPC: n={n} must be a multiple of num_bits_per_symbol={num_bits_per_symbol}")
        self._build_rate_matching()
        self._encoder: Optional[LDPCEncoder] = None

    @property
    def rate(self) -> float:
        return self.k / self.n

    # -- rate matching tables -----------------------------------------------------------
    def _build_rate_matching(self):
        z = self.z
        ncb = self.n_ldpc - 2 * z                                   # N_cb = N (no LBRM)
        k0 = (_RV_COEFF[self.bg][self.rv] * ncb // (_BG_NCOLS[self.bg] * z)) * z
        buf = np.arange(2 * z, self.n_ldpc)                          # mother positions
        is_filler = (buf >= self.k) & (buf < self.k_ldpc)
        order = np.roll(buf, -k0)
        order = order[~np.isin(order, buf[is_filler])]               # skip <NULL> (filler)
        reps = -(-self.n // order.size)
        pos = np.tile(order, reps)[: self.n]                         # e_j = mother bit pos[j]
        if self.num_bits_per_symbol is not None:
            # 5.4.2.2: f[i + j*Qm] = e[i*(E/Qm) + j]
            q = int(self.num_bits_per_symbol)
            e = self.n
            i, j = np.meshgrid(np.arange(q), np.arange(e // q), indexing="ij")
            perm = np.empty(e, np.int64)
            perm[(i + j * q).ravel()] = (i * (e // q) + j).ravel()
            pos = pos[perm]
        self.tx_positions = pos.astype(np.int32)                     # [n] mother-code index
        # Pruning: keep the smallest prefix of block columns covering every transmitted bit
        # and the information columns; trailing columns are degree-1 parity (5G structure).
        used_cols = max(int(pos.max()) // z + 1, _BG_KB[self.bg] + 4)
        nb = _BG_SHAPE[self.bg][1]
        used_cols = min(used_cols, nb)
        kept_rows = _BG_SHAPE[self.bg][0] - (nb - used_cols)
        self.pruned = self.pcm.submatrix(kept_rows * z, used_cols * z)

    # -- encoder ------------------------------------------------------------------------
    def encoder(self) -> LDPCEncoder:
        if self._encoder is None:
            self._encoder = LDPCEncoder(self.pcm)
            if not self._encoder.structured:
                raise RuntimeError("5G parity part did not match the expected structure")
        return self._encoder

    def encode_mother(self, bits) -> jax.Array:
        """``[B, k]`` -> full mother codeword ``[B, n_ldpc]`` (fillers as 0, nothing punctured)."""
        bits = jnp.asarray(bits)
        self._check_bits(bits)
        u = jnp.concatenate([bits.astype(jnp.uint8),
                             jnp.zeros((bits.shape[0], self.k_filler), jnp.uint8)], axis=1)
        return self.encoder()(u)

    def encode(self, bits) -> jax.Array:
        """Rate-matched codewords ``[B, n]`` uint8 for info bits ``[B, k]``."""
        return self.encode_mother(bits)[:, self.tx_positions]

    def _check_bits(self, bits):
        if bits.ndim != 2 or bits.shape[1] != self.k:
            raise ValueError(f"5G LDPC: bits must be [B, k={self.k}], got {tuple(bits.shape)}")

    # -- decoder ------------------------------------------------------------------------
    def rate_recover(self, llr: jax.Array, llr_max: Optional[float] = 20.0) -> jax.Array:
        """``[B, n]`` channel LLRs -> ``[B, n_pruned]`` LLRs of the pruned mother code."""
        llr = jnp.asarray(llr, jnp.float32)
        if llr.ndim != 2 or llr.shape[1] != self.n:
            raise ValueError(f"5G LDPC: llr must be [B, n={self.n}], got {tuple(llr.shape)}")
        npr = self.pruned.n
        out = jnp.zeros((llr.shape[0], npr), jnp.float32)
        # Repeated positions (wrap-around) add up: scatter-add along the code axis.
        out = out.at[:, self.tx_positions].add(llr)
        known = 20.0 if llr_max is None else float(llr_max)
        fill = jnp.arange(npr)
        is_fill = (fill >= self.k) & (fill < self.k_ldpc)
        return jnp.where(is_fill[None, :], known, out)

    def decoder(self, **kwargs) -> "NR5GDecoder":
        """A decoder with fixed settings (see :class:`LDPCDecoder` for the keywords)."""
        return NR5GDecoder(self, **kwargs)

    def decode(self, llr, **kwargs) -> jax.Array:
        """Decode ``[B, n]`` LLRs (ours: ln P(0)/P(1)) -> info bits ``[B, k]`` uint8."""
        return self.decoder(**kwargs)(llr)


class NR5GDecoder:
    """Rate recovery + pruned-graph :class:`LDPCDecoder` for an :class:`NR5GCode`.

    ``dec(llr [B, n]) -> [B, k] uint8``; ``dec.full(llr)`` returns the
    :class:`DecodeResult` on the pruned mother code.
    """

    def __init__(self, code: NR5GCode, **kwargs):
        self.code = code
        self.llr_max = kwargs.get("llr_max", 20.0)
        self.dec = LDPCDecoder(code.pruned, **kwargs)
        self._fn = jax.jit(lambda llr: self._run(llr, self.dec.tables))

    def _run(self, llr, tables):
        return self.dec._decode(self.code.rate_recover(llr, self.llr_max), tables)

    def full(self, llr) -> DecodeResult:
        llr = jnp.asarray(llr, jnp.float32)
        if llr.ndim != 2 or llr.shape[1] != self.code.n:
            raise ValueError(f"5G LDPC: llr must be [B, n={self.code.n}], got {tuple(llr.shape)}")
        return self._fn(llr)

    def __call__(self, llr) -> jax.Array:
        return self.full(llr).bits[:, : self.code.k]
