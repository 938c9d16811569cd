"""Systematic LDPC encoder from a parity-check matrix (GF(2)), jit-able and batched.

Two paths, chosen automatically from the structure of ``H`` (``m x n``):

* **Structured** (5G NR, IEEE 802.11n and any code of the same shape): the last ``m``
  columns are parity and split as ``H = [H_s | A 0 ; H_s' | C I_t]``: a square ``core``
  ``A`` (5G: the ``4Z x 4Z`` double-diagonal core; 802.11n: the whole dual-diagonal
  parity part) followed by ``t`` degree-1 "extension" parity columns forming an identity.
  Then ``p_core = A^{-1} (H_s s)`` and ``p_ext = H_s' s + C p_core``. ``A^{-1}`` is
  computed once over GF(2); when it is sparse (5G) it is applied as a gather-sum, else as
  a dense matmul.
* **Generic** (user ``alist`` codes): Gaussian elimination of ``H`` picks ``rank(H)``
  pivot (parity) columns, preferring the last ones; the other ``k = n - rank`` columns
  carry the information bits in increasing column order. Redundant rows are allowed.

Codewords are returned in the column order of ``H``; ``info_positions`` says where the
information bits sit (``arange(k)`` on the structured path).
"""
from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

from .codes import ParityCheck, _gf2_eliminate, gf2_inv

__all__ = ["LDPCEncoder"]

# Sparse (gather) application of a 0/1 matrix when its heaviest row has at most this weight.
_MAX_GATHER_WEIGHT = 48


class _GF2Mat:
    """A fixed 0/1 matrix ``M`` ``[r, c]`` applied as ``x -> M x mod 2`` to ``x`` ``[B, c]``."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]):
        self.shape = shape
        r, c = shape
        deg = np.bincount(rows, minlength=r)
        self.sparse = deg.max(initial=0) <= _MAX_GATHER_WEIGHT
        if self.sparse:
            w = int(deg.max(initial=0))
            idx = np.full((r, max(w, 1)), c, np.int32)  # c = pointer to an appended zero
            order = np.lexsort((cols, rows))
            rs, cs = rows[order], cols[order]
            pos = np.arange(rs.size) - np.searchsorted(rs, rs)
            idx[rs, pos] = cs
            self.idx = idx
        else:
            dense = np.zeros((r, c), np.float32)
            dense[rows, cols] = 1.0
            self.dense_t = dense.T

    @classmethod
    def from_dense(cls, m: np.ndarray):
        r, c = np.nonzero(m)
        return cls(r, c, m.shape)

    def __call__(self, x, xp=jnp):
        """``x`` ``[B, c]`` uint8 bits -> ``[B, r]`` uint8 bits (``xp``: jax.numpy or numpy)."""
        if xp is np:
            if self.sparse:
                xz = np.concatenate([x, np.zeros((x.shape[0], 1), x.dtype)], axis=1)
                return (np.sum(xz[:, self.idx], axis=-1, dtype=np.uint8) & 1).astype(np.uint8)
            return ((x.astype(np.float32) @ self.dense_t).astype(np.int64) & 1).astype(np.uint8)
        if self.sparse:
            xp = jnp.concatenate([x, jnp.zeros((x.shape[0], 1), x.dtype)], axis=1)
            # uint8 sums wrap mod 256, which preserves parity.
            return jnp.sum(xp[:, self.idx], axis=-1, dtype=jnp.uint8) & 1
        y = jnp.dot(x.astype(jnp.float32), jnp.asarray(self.dense_t),
                    precision=jax.lax.Precision.HIGHEST)
        return (y.astype(jnp.int32) & 1).astype(jnp.uint8)


def _identity_tail(pc: ParityCheck) -> int:
    """Largest ``t`` with ``H[:, n-t:] == [0; I_t]`` (degree-1 parity columns on the diagonal)."""
    deg = pc.col_degrees()
    by_col = np.argsort(pc.cols, kind="stable")
    row_of_col = np.full(pc.n, -1)
    row_of_col[pc.cols[by_col]] = pc.rows[by_col]  # for degree-1 columns: their only row
    t = 0
    while t < min(pc.m, pc.n):
        j = pc.n - 1 - t
        if deg[j] == 1 and row_of_col[j] == pc.m - 1 - t:
            t += 1
        else:
            break
    return t


class LDPCEncoder:
    """Systematic encoder for ``pc``. ``enc(bits [B, k] uint8) -> [B, n] uint8``.

    ``jit=False`` encodes with numpy instead (no compile), for one-off encodes of many codes.

    Attributes: ``k``, ``n``, ``info_positions`` (``[k]`` column indices of the info bits),
    ``structured`` (which path was taken).
    """

    def __init__(self, pc: ParityCheck, force_generic: bool = False, jit: bool = True):
        self.pc = pc
        self.n = pc.n
        self.structured = False
        if not force_generic:
            try:
                self._init_structured()
                self.structured = True
            except ValueError:
                pass
        if not self.structured:
            self._init_generic()
        # jit=False: a numpy implementation (no compile), for one-off encodes of many codes.
        self.jit = bool(jit)
        self._fn = jax.jit(self._encode) if jit else self._encode_np

    # -- structured ---------------------------------------------------------------------
    def _init_structured(self):
        pc = self.pc
        m, n = pc.m, pc.n
        k = n - m
        if k <= 0:
            raise ValueError("no information columns")
        t = _identity_tail(pc)
        mc = m - t                       # core size
        rows, cols = pc.rows.astype(np.int64), pc.cols.astype(np.int64)
        core = np.zeros((mc, mc), np.uint8)
        sel = (rows < mc) & (cols >= k) & (cols < k + mc)
        core[rows[sel], cols[sel] - k] = 1
        if np.any((rows < mc) & (cols >= k + mc)):
            raise ValueError("core rows touch extension columns")
        ainv = gf2_inv(core)             # raises ValueError if singular
        s_top = (rows < mc) & (cols < k)
        self.hs_top = _GF2Mat(rows[s_top], cols[s_top], (mc, k))
        self.ainv = _GF2Mat.from_dense(ainv)
        bot = (rows >= mc) & (cols < k + mc)
        self.h_bot = _GF2Mat(rows[bot] - mc, cols[bot], (t, k + mc)) if t else None
        self.k = k
        self.info_positions = np.arange(k)

    def _encode_structured(self, u, xp=jnp):
        p_core = self.ainv(self.hs_top(u, xp), xp)
        x = xp.concatenate([u, p_core], axis=1)
        if self.h_bot is None:
            return x
        return xp.concatenate([x, self.h_bot(x, xp)], axis=1)

    # -- generic ------------------------------------------------------------------------
    def _init_generic(self):
        pc = self.pc
        h = pc.dense()[:, ::-1]                              # prefer the last columns as pivots
        red, rank, piv = _gf2_eliminate(h.copy())
        piv_cols = pc.n - 1 - np.array(piv, np.int64)        # original column ids
        info = np.setdiff1d(np.arange(pc.n), piv_cols)
        red = red[:rank][:, ::-1]                            # back to original column order
        # Row i of red: x[piv_cols[i]] + sum_j red[i, info_j] x[info_j] = 0.
        self.k = int(info.size)
        if self.k == 0:
            raise ValueError(f"{pc.name}: H has full column rank, no information bits")
        self.info_positions = info
        self.parity_positions = piv_cols
        self.gen = _GF2Mat.from_dense(red[:, info])
        out_order = np.concatenate([info, piv_cols])
        self.unperm = np.argsort(out_order)

    def _encode_generic(self, u, xp=jnp):
        p = self.gen(u, xp)
        x = xp.concatenate([u, p], axis=1)
        return x[:, self.unperm]

    # -- public -------------------------------------------------------------------------
    def _encode(self, u):
        u = u.astype(jnp.uint8)
        return self._encode_structured(u) if self.structured else self._encode_generic(u)

    def _encode_np(self, u):
        u = np.asarray(u).astype(np.uint8)
        return self._encode_structured(u, np) if self.structured else self._encode_generic(u, np)

    def __call__(self, bits) -> jax.Array:
        bits = jnp.asarray(bits) if self.jit else np.asarray(bits)
        if bits.ndim != 2 or bits.shape[1] != self.k:
            raise ValueError(
                f"{self.pc.name}: bits must be [B, k={self.k}], got {tuple(bits.shape)}")
        return self._fn(bits)
