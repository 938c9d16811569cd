"""Batched min-sum belief-propagation decoder for any binary LDPC code, in JAX.

LLR convention (ours, everywhere in dekag_jax.channel): ``L = ln P(b=0) / P(b=1)``, so a
positive LLR means bit 0 and the hard decision is ``b = 1`` iff ``L < 0``. Sionna uses the
opposite sign (``ln P(1)/P(0)``); convert at the boundary (``llr_ours = -llr_sionna``).

Check-node rules (``cn_update``):
  * ``"minsum"``: plain min-sum, ``|out| = min``;
  * ``"nms"``: normalised min-sum, ``|out| = alpha * min`` (``alpha`` ~ 0.75-0.8);
  * ``"oms"``: offset min-sum, ``|out| = max(min - beta, 0)`` (``beta`` ~ 0.5, Sionna's
    "offset-minsum").
Schedules (``schedule``): ``"flooding"`` (all checks, then all variables) or ``"layered"``
(row layers updated in turn, each seeing the others' latest totals; layers are the block
rows of a quasi-cyclic code, else a greedy partition into rows sharing no variable).

Data layout, chosen for CPU speed: the batch is the LAST (contiguous) axis inside the
decoder, so every gather/scatter moves whole contiguous batch rows and every check-node
reduction is a vectorised loop over the batch. Checks are grouped by degree (no padding),
variables are renumbered so that each degree group is contiguous and the variable-node
sums are plain gathers + reductions (no scatter-add in the flooding loop).

Early stopping is per codeword: at the start of each iteration the syndrome of the
current hard decisions is evaluated (from the same gathered totals the iteration needs
anyway); a codeword whose syndrome is zero is frozen (its messages no longer change),
and the ``lax.while_loop`` ends when all codewords are frozen or ``num_iter`` is reached.

Numerics follow Sionna's LDPCBPDecoder so results are comparable: channel LLRs and
variable-to-check messages are clipped to ``+-llr_max`` (default 20).
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from .codes import ParityCheck

__all__ = ["LDPCDecoder", "DecodeResult", "CN_UPDATES", "SCHEDULES"]

CN_UPDATES = ("minsum", "nms", "oms")
SCHEDULES = ("flooding", "layered")


class DecodeResult(NamedTuple):
    """Output of :meth:`LDPCDecoder.__call__`.

    bits: ``[B, n] uint8`` hard decisions of all code bits.
    llr: ``[B, n] float32`` a-posteriori LLRs (ours: ln P(0)/P(1)).
    ok: ``[B] bool`` syndrome of ``bits`` is zero.
    iterations: ``[B] int32`` iterations each codeword ran before it stopped.
    """

    bits: jax.Array
    llr: jax.Array
    ok: jax.Array
    iterations: jax.Array


def _greedy_layers(pc: ParityCheck) -> list[np.ndarray]:
    """Partition rows into layers whose rows share no column (greedy, in row order)."""
    starts = np.searchsorted(pc.rows, np.arange(pc.m + 1))
    layers: list[list[int]] = []
    used: list[set] = []
    for i in range(pc.m):
        cols = set(pc.cols[starts[i]:starts[i + 1]].tolist())
        for li, u in enumerate(used):
            if not (u & cols):
                layers[li].append(i)
                u |= cols
                break
        else:
            layers.append([i])
            used.append(set(cols))
    return [np.array(l, np.int64) for l in layers]


@dataclasses.dataclass(frozen=True, eq=False)
class _Graph:
    """Host-side index tables (internal variable numbering)."""

    n: int
    perm: np.ndarray           # internal var j  <- external var perm[j]
    inv_perm: np.ndarray       # external var i -> internal inv_perm[i]
    cn_groups: tuple           # tuple of [r_d, d] int32 arrays (internal var ids), flooding order
    vn_groups: tuple           # tuple of (start, stop, [n_h, dv] edge ids) over concatenated cn_groups
    zero_deg: tuple            # (start, stop) of internal vars with no edge
    layers: tuple              # tuple of layers; each a tuple of [r, d] int32 arrays


def _build_graph(pc: ParityCheck, layers: Optional[list[np.ndarray]]) -> _Graph:
    starts = np.searchsorted(pc.rows, np.arange(pc.m + 1))
    rdeg = np.diff(starts)
    # Variables renumbered by degree (descending) so that each degree class is contiguous.
    cdeg = pc.col_degrees()
    perm = np.argsort(-cdeg, kind="stable")
    inv = np.empty_like(perm)
    inv[perm] = np.arange(pc.n)
    cols_int = inv[pc.cols]

    def rows_to_groups(rows):
        groups = []
        for d in sorted(set(rdeg[rows].tolist())):
            if d == 0:
                continue
            sel = rows[rdeg[rows] == d]
            idx = np.stack([cols_int[starts[i]:starts[i + 1]] for i in sel]).astype(np.int32)
            groups.append(idx)
        return tuple(groups)

    cn_groups = rows_to_groups(np.arange(pc.m))
    # Edge ids in the concatenated, flattened cn_groups order; VN-side gather tables.
    edge_var = np.concatenate([g.ravel() for g in cn_groups]) if cn_groups else np.zeros(0, np.int64)
    order = np.argsort(edge_var, kind="stable")
    sorted_var = edge_var[order]
    vdeg_int = cdeg[perm]
    vn_groups = []
    j = 0
    while j < pc.n and vdeg_int[j] > 0:
        dv = vdeg_int[j]
        k = j
        while k < pc.n and vdeg_int[k] == dv:
            k += 1
        lo, hi = np.searchsorted(sorted_var, [j, k])
        vn_groups.append((j, k, order[lo:hi].reshape(k - j, dv).astype(np.int32)))
        j = k
    zero_deg = (j, pc.n)
    if layers is None:
        if pc.is_qc:
            layers = [np.arange(r * pc.z, (r + 1) * pc.z) for r in range(pc.m // pc.z)]
        else:
            layers = _greedy_layers(pc)
    # Validate: rows of one layer must share no column (else layered updates would collide).
    seen_rows = np.zeros(pc.m, bool)
    for lay in layers:
        cols = np.concatenate([pc.cols[starts[i]:starts[i + 1]] for i in lay]) if len(lay) else np.zeros(0)
        if np.unique(cols).size != cols.size:
            raise ValueError(f"{pc.name}: a layer's rows share a variable node")
        seen_rows[lay] = True
    if not seen_rows.all():
        raise ValueError(f"{pc.name}: layers do not cover all check rows")
    layer_groups = tuple(rows_to_groups(np.asarray(l)) for l in layers)
    return _Graph(pc.n, perm, inv, cn_groups, tuple(vn_groups), zero_deg, layer_groups)


#: Message of a degree-1 check ("this bit is 0", certain). Finite on purpose: an infinite one
#: made the next iteration's ``total - message`` inf - inf = NaN, which spread over the graph.
_DEGREE_ONE_LLR = 1e4


def _cn_update(v: jax.Array, alpha: float, beta: float) -> jax.Array:
    """Min-sum check-node update along axis 1 of ``v`` ``[r, d, B]`` (extrinsic)."""
    if v.shape[1] == 1:
        return jnp.full_like(v, _DEGREE_ONE_LLR)
    a = jnp.abs(v)
    s = jnp.where(v < 0, -1.0, 1.0).astype(v.dtype)
    sign_all = jnp.prod(s, axis=1, keepdims=True)
    m1 = jnp.min(a, axis=1, keepdims=True)
    is1 = a == m1
    cnt = jnp.sum(is1, axis=1, keepdims=True, dtype=jnp.int32)
    m2 = jnp.min(jnp.where(is1, jnp.inf, a), axis=1, keepdims=True)
    m2 = jnp.where(cnt > 1, m1, m2)  # two minima: every edge sees the same value
    mag = jnp.where(is1, m2, m1)
    if alpha != 1.0:
        mag = mag * alpha
    if beta != 0.0:
        mag = jnp.maximum(mag - beta, 0.0)
    return sign_all * s * mag


def _syndrome_ok(total: jax.Array, groups: tuple) -> jax.Array:
    """``[B] bool``: all parity checks satisfied by hard decisions of ``total`` ``[n, B]``."""
    ok = None
    for g in groups:
        neg = jnp.take(total, g, axis=0) < 0                       # [r, d, B]
        par = jnp.sum(neg, axis=1, dtype=jnp.int32) & 1           # [r, B]
        o = jnp.all(par == 0, axis=0)
        ok = o if ok is None else ok & o
    return ok


class LDPCDecoder:
    """Min-sum BP decoder for a :class:`ParityCheck` (the code's own bits, no rate matching).

    Args:
      pc: parity-check matrix.
      cn_update: ``"minsum" | "nms" | "oms"`` (see module docstring).
      schedule: ``"flooding" | "layered"``.
      num_iter: maximum iterations (static; the loop stops earlier per codeword).
      alpha: normalisation for ``"nms"`` (ignored otherwise).
      beta: offset for ``"oms"`` (ignored otherwise).
      early_stop: stop each codeword once its syndrome is zero.
      llr_max: clip value for channel LLRs and variable-to-check messages (None: no clip).
      layers: optional explicit layers (list of row-index arrays) for ``"layered"``.
      batch_chunk: larger batches are decoded in chunks of this many codewords one after the
        other (``lax.map``): keeps the working set in cache (measured ~1.7x faster on CPU for
        B=1024 vs one piece) and lets early stopping end each chunk separately.

    Call: ``dec(llr)`` with ``llr`` ``[B, n]`` (ours: ln P(0)/P(1)) -> :class:`DecodeResult`.
    The jitted core is compiled once per (batch size, settings).
    """

    def __init__(self, pc: ParityCheck, cn_update: str = "nms", schedule: str = "flooding",
                 num_iter: int = 20, alpha: float = 0.8, beta: float = 0.5,
                 early_stop: bool = True, llr_max: Optional[float] = 20.0,
                 layers: Optional[list] = None, batch_chunk: int = 128):
        if cn_update not in CN_UPDATES:
            raise ValueError(f"cn_update must be one of {CN_UPDATES}, got {cn_update!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if int(num_iter) < 1:
            raise ValueError(f"num_iter must be >= 1, got {num_iter}")
        self.pc = pc
        self.n = pc.n
        self.cn_update = cn_update
        self.schedule = schedule
        self.num_iter = int(num_iter)
        self.alpha = float(alpha) if cn_update == "nms" else 1.0
        self.beta = float(beta) if cn_update == "oms" else 0.0
        self.early_stop = bool(early_stop)
        self.llr_max = None if llr_max is None else float(llr_max)
        if int(batch_chunk) < 1:
            raise ValueError(f"batch_chunk must be >= 1, got {batch_chunk}")
        self.batch_chunk = int(batch_chunk)
        self.graph = _build_graph(pc, layers if schedule == "layered" else None)
        g = self.graph
        # Index tables are closed over (compile-time constants): measured faster to compile
        # and run on XLA:CPU than passing them as jit arguments.
        self.tables = dict(
            perm=jnp.asarray(g.perm, jnp.int32), inv_perm=jnp.asarray(g.inv_perm, jnp.int32),
            cn=tuple(jnp.asarray(x) for x in g.cn_groups),
            vn=tuple(jnp.asarray(e) for _, _, e in g.vn_groups),
            layers=tuple(tuple(jnp.asarray(x) for x in lay) for lay in g.layers))
        self._fn = jax.jit(lambda llr: self._decode(llr, self.tables))

    # -- public -------------------------------------------------------------------------
    def __call__(self, llr: jax.Array) -> DecodeResult:
        llr = jnp.asarray(llr, jnp.float32)
        if llr.ndim != 2 or llr.shape[1] != self.n:
            raise ValueError(f"{self.pc.name}: llr must be [B, {self.n}], got {tuple(llr.shape)}")
        return self._fn(llr)

    # -- core ---------------------------------------------------------------------------
    def _decode(self, llr: jax.Array, tables: dict) -> DecodeResult:
        B, ch_ = llr.shape[0], self.batch_chunk
        if B <= ch_:
            return self._decode_chunk(llr, tables)
        nc = -(-B // ch_)
        pad = nc * ch_ - B
        x = jnp.concatenate([llr, jnp.zeros((pad, llr.shape[1]), llr.dtype)]) if pad else llr
        res = jax.lax.map(lambda c: self._decode_chunk(c, tables), x.reshape(nc, ch_, -1))
        return DecodeResult(*(a.reshape((nc * ch_,) + a.shape[2:])[:B] for a in res))

    def _decode_chunk(self, llr: jax.Array, tables: dict) -> DecodeResult:
        B = llr.shape[0]
        if self.llr_max is not None:
            llr = jnp.clip(llr, -self.llr_max, self.llr_max)
        ch = jnp.take(llr, tables["perm"], axis=1).T                # [n, B], internal order
        if self.schedule == "flooding":
            total, iters = self._flooding(ch, B, tables)
        else:
            total, iters = self._layered(ch, B, tables)
        ok = _syndrome_ok(total, tables["cn"])
        post = jnp.take(total.T, tables["inv_perm"], axis=1)        # [B, n] external order
        bits = (post < 0).astype(jnp.uint8)
        return DecodeResult(bits, post, ok, iters)

    def _clip(self, v):
        return v if self.llr_max is None else jnp.clip(v, -self.llr_max, self.llr_max)

    def _vn_totals(self, ch, flat, vn_tables):
        """``ch + sum of incoming check messages`` per variable, ``[n, B]``; ``flat`` ``[E, B]``."""
        g = self.graph
        parts = []
        for (lo, hi, _), eidx in zip(g.vn_groups, vn_tables):
            parts.append(ch[lo:hi] + jnp.sum(jnp.take(flat, eidx, axis=0), axis=1))
        lo, hi = g.zero_deg
        if hi > lo:
            parts.append(ch[lo:hi])
        return jnp.concatenate(parts, axis=0)

    def _loop(self, body, init, B):
        """Run ``body`` up to num_iter times, freezing codewords whose syndrome is zero."""
        if not self.early_stop:
            def step(i, carry):
                state, iters = carry
                state, _ = body(state, None)
                return state, iters + 1
            return jax.lax.fori_loop(0, self.num_iter, step, (init, jnp.zeros((B,), jnp.int32)))

        def cond(carry):
            it, _, done, _ = carry
            return (it < self.num_iter) & ~jnp.all(done)

        def step(carry):
            it, state, done, iters = carry
            state, done_now = body(state, done)
            done = done | done_now
            return it + 1, state, done, iters + (~done).astype(jnp.int32)

        _, state, _, iters = jax.lax.while_loop(
            cond, step, (jnp.int32(0), init, jnp.zeros((B,), bool), jnp.zeros((B,), jnp.int32)))
        return state, iters

    def _flooding(self, ch, B, tables):
        g = self.graph
        alpha, beta = self.alpha, self.beta
        idx = tables["cn"]
        # All check-to-variable messages live in ONE [E, B] carry, updated group by group with
        # in-place dynamic_update_slice (measured ~15% faster than per-group arrays + concat).
        offs = np.cumsum([0] + [int(x.size) for x in g.cn_groups])

        def body(state, done):
            total, flat = state
            gathered = [jnp.take(total, i, axis=0) for i in idx]        # [r, d, B] each
            done_now = None
            if done is not None:
                # Syndrome of the current totals, from the gathers this iteration needs anyway.
                for lg in gathered:
                    par = jnp.sum(lg < 0, axis=1, dtype=jnp.int32) & 1
                    o = jnp.all(par == 0, axis=0)
                    done_now = o if done_now is None else done_now & o
                freeze = (done | done_now)[None, None, :]
            for k, lg in enumerate(gathered):
                r, d = lg.shape[:2]
                c = jax.lax.dynamic_slice_in_dim(flat, int(offs[k]), r * d, 0).reshape(r, d, B)
                cn = _cn_update(self._clip(lg - c), alpha, beta)
                if done is not None:
                    cn = jnp.where(freeze, c, cn)
                flat = jax.lax.dynamic_update_slice_in_dim(flat, cn.reshape(-1, B), int(offs[k]), 0)
            return (self._vn_totals(ch, flat, tables["vn"]), flat), done_now

        init = (ch, jnp.zeros((int(offs[-1]), B), jnp.float32))
        (total, _), iters = self._loop(body, init, B)
        return total, iters

    def _layered(self, ch, B, tables):
        g = self.graph
        alpha, beta = self.alpha, self.beta
        lidx = tables["layers"]
        c0 = tuple(tuple(jnp.zeros(x.shape + (B,), jnp.float32) for x in lay) for lay in g.layers)
        check_idx = tables["cn"]

        def body(state, done):
            total, c_all = state
            if done is not None:
                done_now = _syndrome_ok(total, tuple(check_idx))
                freeze = (done | done_now)[None, :]
                total0, c_prev = total, c_all
            new_all = []
            for lay, c_lay in zip(lidx, c_all):
                new_lay = []
                for i, c in zip(lay, c_lay):
                    v = jnp.take(total, i, axis=0) - c                   # [r, d, B]
                    cn = _cn_update(self._clip(v), alpha, beta)
                    total = total.at[i.reshape(-1)].set((v + cn).reshape(-1, B),
                                                         unique_indices=True)
                    new_lay.append(cn)
                new_all.append(tuple(new_lay))
            new_all = tuple(new_all)
            if done is not None:
                total = jnp.where(freeze, total0, total)
                new_all = jax.tree_util.tree_map(
                    lambda a, b: jnp.where(freeze[None], a, b), c_prev, new_all)
                return (total, new_all), done_now
            return (total, new_all), None

        (total, _), iters = self._loop(body, (ch, c0), B)
        return total, iters
