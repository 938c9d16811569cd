"""Parity-check matrices: quasi-cyclic lifting, GF(2) helpers, and the ``alist`` format.

A code is held as a :class:`ParityCheck`: the positions of the ones of ``H`` (``m x n``,
binary) as two int arrays sorted by row, plus, for quasi-cyclic (QC) codes, the base
matrix and lifting size ``z`` that produced it. Everything here is host-side numpy: it
runs once per code and feeds the JAX encoder/decoder tables.

Lifting convention (TS 38.212 5.3.2 and IEEE 802.11 Annex F alike): a base entry
``V >= 0`` at ``(r, c)`` becomes the ``z x z`` identity cyclically shifted right by
``V mod z``, i.e. row ``r*z + i`` has a one in column ``c*z + (i + V) mod z``; ``-1`` is
the all-zero block.

``alist`` (MacKay's format): line 1 ``n m``; line 2 ``max_col_weight max_row_weight``;
line 3 the ``n`` column weights; line 4 the ``m`` row weights; then ``n`` lines with the
1-based row indices of each column, then ``m`` lines with the 1-based column indices of
each row. Short lists may be zero-padded to the maximum weight (we accept both, and write
padded lists, as MacKay's own files do).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Optional

import numpy as np

__all__ = [
    "ParityCheck",
    "lift",
    "from_dense",
    "read_alist",
    "write_alist",
    "parse_alist",
    "format_alist",
    "gf2_rank",
    "gf2_inv",
    "syndrome",
]


@dataclasses.dataclass(frozen=True, eq=False)
class ParityCheck:
    """Sparse binary parity-check matrix ``H`` (``m x n``).

    Attributes:
      m, n: shape of ``H``.
      rows, cols: ``[E] int32`` positions of the ones, sorted by (row, col).
      base: ``[mb, nb] int`` base matrix (``-1`` = zero block) for QC codes, else None.
      z: lifting size for QC codes, else None.
      name: free-form label used in error messages and reports.
    """

    m: int
    n: int
    rows: np.ndarray
    cols: np.ndarray
    base: Optional[np.ndarray] = None
    z: Optional[int] = None
    name: str = "ldpc"

    def __post_init__(self):
        rows = np.asarray(self.rows, dtype=np.int64)
        cols = np.asarray(self.cols, dtype=np.int64)
        if rows.shape != cols.shape or rows.ndim != 1:
            raise ValueError(f"{self.name}: rows/cols must be 1-D of equal length")
        if rows.size and (rows.min() < 0 or rows.max() >= self.m or cols.min() < 0 or cols.max() >= self.n):
            raise ValueError(f"{self.name}: edge index outside the {self.m}x{self.n} matrix")
        order = np.lexsort((cols, rows))
        rows, cols = rows[order], cols[order]
        key = rows * self.n + cols
        if key.size and np.any(np.diff(key) == 0):
            raise ValueError(f"{self.name}: duplicate ones in H (not a binary matrix)")
        object.__setattr__(self, "rows", rows.astype(np.int32))
        object.__setattr__(self, "cols", cols.astype(np.int32))

    @property
    def num_edges(self) -> int:
        return int(self.rows.size)

    @property
    def is_qc(self) -> bool:
        return self.base is not None and self.z is not None

    def dense(self) -> np.ndarray:
        """``[m, n] uint8`` dense copy of ``H``."""
        h = np.zeros((self.m, self.n), np.uint8)
        h[self.rows, self.cols] = 1
        return h

    def scipy(self):
        """``scipy.sparse.csr_matrix`` copy of ``H`` (int8)."""
        import scipy.sparse as sp

        return sp.csr_matrix(
            (np.ones(self.num_edges, np.int8), (self.rows, self.cols)), shape=(self.m, self.n)
        )

    def row_degrees(self) -> np.ndarray:
        return np.bincount(self.rows, minlength=self.m)

    def col_degrees(self) -> np.ndarray:
        return np.bincount(self.cols, minlength=self.n)

    def submatrix(self, num_rows: int, num_cols: int) -> "ParityCheck":
        """Top-left ``num_rows x num_cols`` corner; raises if it would drop a one of a kept row.

        Used to prune punctured degree-1 parity columns together with their check rows.
        """
        keep = self.rows < num_rows
        if np.any(self.cols[keep] >= num_cols):
            raise ValueError(f"{self.name}: pruning would cut edges of kept rows")
        base = None
        if self.is_qc and num_rows % self.z == 0 and num_cols % self.z == 0:
            base = self.base[: num_rows // self.z, : num_cols // self.z]
        return ParityCheck(num_rows, num_cols, self.rows[keep], self.cols[keep],
                           base=base, z=self.z if base is not None else None, name=self.name)


def lift(base: np.ndarray, z: int, name: str = "qc-ldpc") -> ParityCheck:
    """Lift a base matrix (``-1`` = zero block, else shift ``V``, taken ``mod z``)."""
    base = np.asarray(base, dtype=np.int64)
    if base.ndim != 2:
        raise ValueError(f"{name}: base matrix must be 2-D, got shape {base.shape}")
    if z < 1:
        raise ValueError(f"{name}: lifting size must be >= 1, got {z}")
    r_b, c_b = np.nonzero(base >= 0)
    s = base[r_b, c_b] % z
    i = np.arange(z)
    rows = (r_b[:, None] * z + i[None, :]).ravel()
    cols = (c_b[:, None] * z + (i[None, :] + s[:, None]) % z).ravel()
    return ParityCheck(base.shape[0] * z, base.shape[1] * z, rows, cols,
                       base=np.where(base >= 0, base % z, -1), z=int(z), name=name)


def from_dense(h: np.ndarray, name: str = "ldpc") -> ParityCheck:
    """Build from a dense 0/1 matrix ``[m, n]``."""
    h = np.asarray(h)
    if h.ndim != 2:
        raise ValueError(f"{name}: H must be 2-D, got shape {h.shape}")
    if not np.all((h == 0) | (h == 1)):
        raise ValueError(f"{name}: H must be binary")
    r, c = np.nonzero(h)
    return ParityCheck(h.shape[0], h.shape[1], r, c, name=name)


# ----------------------------------------------------------------------------- alist

def parse_alist(text: str, name: str = "alist") -> ParityCheck:
    """Parse ``alist`` text (see module docstring). Raises on inconsistent files."""
    tok = text.split()
    try:
        vals = [int(t) for t in tok]
    except ValueError as e:
        raise ValueError(f"{name}: alist must contain integers only ({e})") from None
    if len(vals) < 4:
        raise ValueError(f"{name}: alist too short")
    n, m, _, _ = vals[:4]
    p = 4
    if len(vals) < p + n + m:
        raise ValueError(f"{name}: alist truncated in the weight lines")
    cw = np.array(vals[p:p + n]); p += n
    rw = np.array(vals[p:p + m]); p += m
    maxc, maxr = vals[2], vals[3]
    if cw.size and cw.max() > maxc or rw.size and rw.max() > maxr:
        raise ValueError(f"{name}: a weight exceeds the stated maximum")

    rest = len(vals) - p
    if rest == n * maxc + m * maxr:
        padded = True  # MacKay's files: every list zero-padded to the maximum weight
    elif rest == int(cw.sum() + rw.sum()):
        padded = False
    else:
        raise ValueError(
            f"{name}: {rest} index entries; expected {n * maxc + m * maxr} (padded) "
            f"or {int(cw.sum() + rw.sum())} (unpadded)")

    def take_lists(count, weights, maxw, bound):
        nonlocal p
        out = []
        for j in range(count):
            w = int(weights[j])
            ent = vals[p:p + w]
            if any(e < 1 or e > bound for e in ent):
                raise ValueError(f"{name}: index out of range 1..{bound} in list {j}")
            if padded and any(e != 0 for e in vals[p + w:p + maxw]):
                raise ValueError(f"{name}: non-zero padding in list {j}")
            out.append(ent)
            p += maxw if padded else w
        return out

    col_lists = take_lists(n, cw, maxc, m)
    row_lists = take_lists(m, rw, maxr, n)
    rows = np.concatenate([np.array(l, np.int64) - 1 for l in col_lists]) if n else np.zeros(0, np.int64)
    cols = np.concatenate([np.full(len(l), j) for j, l in enumerate(col_lists)]) if n else np.zeros(0, np.int64)
    pc = ParityCheck(m, n, rows, cols, name=name)
    # Cross-check the row lists against the column lists.
    r2 = np.concatenate([np.full(len(l), i) for i, l in enumerate(row_lists)]) if m else np.zeros(0)
    c2 = np.concatenate([np.array(l, np.int64) - 1 for l in row_lists]) if m else np.zeros(0)
    pc2 = ParityCheck(m, n, r2, c2, name=name)
    if not (np.array_equal(pc.rows, pc2.rows) and np.array_equal(pc.cols, pc2.cols)):
        raise ValueError(f"{name}: alist row lists disagree with column lists")
    return pc


def format_alist(pc: ParityCheck) -> str:
    """``alist`` text for ``pc`` (lists zero-padded to the maximum weight)."""
    cw, rw = pc.col_degrees(), pc.row_degrees()
    maxc, maxr = int(cw.max(initial=0)), int(rw.max(initial=0))
    lines = [f"{pc.n} {pc.m}", f"{maxc} {maxr}", " ".join(map(str, cw)), " ".join(map(str, rw))]
    by_col = np.argsort(pc.cols, kind="stable")
    cs, rs = pc.cols[by_col], pc.rows[by_col]
    starts = np.searchsorted(cs, np.arange(pc.n + 1))
    for j in range(pc.n):
        ent = list(rs[starts[j]:starts[j + 1]] + 1) + [0] * (maxc - cw[j])
        lines.append(" ".join(map(str, ent)))
    starts = np.searchsorted(pc.rows, np.arange(pc.m + 1))
    for i in range(pc.m):
        ent = list(pc.cols[starts[i]:starts[i + 1]] + 1) + [0] * (maxr - rw[i])
        lines.append(" ".join(map(str, ent)))
    return "\n".join(lines) + "\n"


def read_alist(path: str | os.PathLike) -> ParityCheck:
    """Read an ``alist`` file."""
    with open(path, "r") as f:
        return parse_alist(f.read(), name=os.path.basename(str(path)))


def write_alist(pc: ParityCheck, path: str | os.PathLike) -> None:
    """Write ``pc`` as an ``alist`` file."""
    with open(path, "w") as f:
        f.write(format_alist(pc))


# ----------------------------------------------------------------------------- GF(2)

def _pack(a: np.ndarray) -> np.ndarray:
    return np.packbits(a.astype(np.uint8), axis=1)


def gf2_rank(a: np.ndarray) -> int:
    """Rank over GF(2) of a dense 0/1 matrix."""
    return _gf2_eliminate(np.asarray(a, np.uint8).copy())[1]


def _gf2_eliminate(a: np.ndarray):
    """In-place row reduction (bit-packed rows). Returns (reduced, rank, pivot_cols)."""
    m, n = a.shape
    p = _pack(a)
    pivots = []
    r = 0
    for c in range(n):
        if r == m:
            break
        byte, bit = divmod(c, 8)
        mask = np.uint8(0x80 >> bit)
        col = (p[r:, byte] & mask) != 0
        nz = np.flatnonzero(col)
        if nz.size == 0:
            continue
        piv = r + nz[0]
        if piv != r:
            p[[r, piv]] = p[[piv, r]]
        hit = np.flatnonzero((p[:, byte] & mask) != 0)
        hit = hit[hit != r]
        if hit.size:
            p[hit] ^= p[r]
        pivots.append(c)
        r += 1
    out = np.unpackbits(p, axis=1, count=n)
    return out, r, pivots


def gf2_inv(a: np.ndarray) -> np.ndarray:
    """Inverse over GF(2) of a square 0/1 matrix; raises ``ValueError`` if singular."""
    a = np.asarray(a, np.uint8)
    k = a.shape[0]
    if a.shape != (k, k):
        raise ValueError(f"gf2_inv needs a square matrix, got {a.shape}")
    aug = np.concatenate([a, np.eye(k, dtype=np.uint8)], axis=1)
    red, rank, piv = _gf2_eliminate(aug)
    if rank < k or piv[:k] != list(range(k)):
        raise ValueError("matrix is singular over GF(2)")
    return red[:, k:]


def syndrome(pc: ParityCheck, c: np.ndarray) -> np.ndarray:
    """``H c mod 2`` for codewords ``c`` ``[..., n]`` -> ``[..., m]`` (uint8)."""
    c = np.asarray(c)
    if c.shape[-1] != pc.n:
        raise ValueError(f"{pc.name}: codeword length {c.shape[-1]} != n={pc.n}")
    flat = c.reshape(-1, pc.n).astype(np.int32)
    s = np.zeros((flat.shape[0], pc.m), np.int32)
    np.add.at(s.T, pc.rows, flat[:, pc.cols].T)
    return (s % 2).astype(np.uint8).reshape(c.shape[:-1] + (pc.m,))
