"""Raster primitives of the tiny world's renderer (part of :mod:`dekag_jax.world.render`).

Signed-distance shapes, per-seed uniform draws, bilinear upsampling, anti-aliased disc scatter
and the painter's-order :class:`_Canvas`. Pure numpy, float32; nothing here knows a word.
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np


# ----------------------------------------------------------------------------------------------
# Signed-distance primitives. Arrays are [n, H, W]; parameters broadcast as [n, 1, 1] or scalars.
# Negative inside. Units: subject-local (see _Subject).
# ----------------------------------------------------------------------------------------------
def _sd_circle(u, v, cx, cy, r):
    return np.sqrt((u - cx) ** 2 + (v - cy) ** 2) - r


def _sd_ellipse(u, v, cx, cy, rx, ry):
    k = np.sqrt(((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2)
    m = np.minimum(rx, ry)
    return (k - 1.0) * (float(m) if np.ndim(m) == 0 else m)


def _sd_box(u, v, cx, cy, hw, hh, r=0.0):
    dx = np.abs(u - cx) - hw + r
    dy = np.abs(v - cy) - hh + r
    out = np.sqrt(np.maximum(dx, 0) ** 2 + np.maximum(dy, 0) ** 2)
    return out + np.minimum(np.maximum(dx, dy), 0) - r


def _sd_capsule(u, v, ax, ay, bx, by, r):
    pax, pay = u - ax, v - ay
    bax, bay = bx - ax, by - ay
    h = np.clip((pax * bax + pay * bay) / (bax * bax + bay * bay + 1e-9), 0.0, 1.0)
    return np.sqrt((pax - bax * h) ** 2 + (pay - bay * h) ** 2) - r


def _sd_poly(u, v, pts):
    """Convex polygon (any winding); exact inside, slightly conservative outside (fine for AA)."""
    n = len(pts)
    # orientation from the signed area of the first three points (scalars or arrays)
    (x0, y0), (x1, y1), (x2, y2) = pts[0], pts[1], pts[2]
    area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
    sgn = np.where(np.asarray(area) > 0, 1.0, -1.0).astype(np.float32)
    d = None
    for i in range(n):
        ax, ay = pts[i]
        bx, by = pts[(i + 1) % n]
        ex, ey = bx - ax, by - ay
        ln = np.sqrt(ex * ex + ey * ey) + 1e-9
        if np.ndim(ln) == 0:
            ln = float(ln)
        # outward distance for a CCW (area>0, y down => clockwise on screen) polygon
        di = sgn * ((u - ax) * ey - (v - ay) * ex) / ln
        d = di if d is None else np.maximum(d, di)
    return d


def _rot(u, v, cx, cy, ang):
    """Coordinates rotated by -ang about (cx, cy) (to draw a shape rotated by +ang)."""
    c, s = np.cos(ang), np.sin(ang)
    if np.ndim(c) == 0:     # keep float32 (a numpy float64 scalar would promote the arrays)
        c, s = float(c), float(s)
    du, dv = u - cx, v - cy
    return cx + c * du + s * dv, cy - s * du + c * dv


# ----------------------------------------------------------------------------------------------
# Per-seed uniforms
# ----------------------------------------------------------------------------------------------
_NU = 48          # per-image uniforms for the layout/pose/tones
_NSCAT = 24       # scatter items (flakes, stars, skyline, flowers)


def _seed_draws(seeds: Sequence[int], size: int):
    """(U [N,_NU], scatter [N,_NSCAT,4], lownoise [N,8,8,3], pixnoise [N,size,size]) per seed."""
    n = len(seeds)
    U = np.empty((n, _NU), np.float32)
    S = np.empty((n, _NSCAT, 4), np.float32)
    L = np.empty((n, 8, 8, 3), np.float32)
    P = np.empty((n, size, size), np.float32)
    for i, sd in enumerate(seeds):
        sd = int(sd)
        if sd < 0:
            raise ValueError(f"seeds must be non-negative integers, got {sd}")
        rng = np.random.default_rng(sd)
        U[i] = rng.random(_NU)
        S[i] = rng.random((_NSCAT, 4))
        L[i] = rng.standard_normal((8, 8, 3))
        P[i] = rng.standard_normal((size, size))
    return U, S, L, P


@functools.lru_cache(maxsize=8)
def _interp_matrix(size: int, h: int) -> np.ndarray:
    """[size, h] bilinear interpolation weights (pixel centres, edge clamped)."""
    t = (np.arange(size) + 0.5) / size * h - 0.5
    i0 = np.clip(np.floor(t).astype(int), 0, h - 1)
    i1 = np.clip(i0 + 1, 0, h - 1)
    f = np.clip(t - np.floor(t), 0, 1)
    f = np.where(t < 0, 0.0, f)
    m = np.zeros((size, h))
    np.add.at(m, (np.arange(size), i0), 1 - f)
    np.add.at(m, (np.arange(size), i1), f)
    return m.astype(np.float32)


def _upsample(x, size):
    """Bilinear upsampling of [n, h, w, c] to [n, size, size, c]."""
    n, h, w, c = x.shape
    my, mx = _interp_matrix(size, h), _interp_matrix(size, w)
    return np.einsum("yh,nhwc,xw->nyxc", my, x, mx, optimize=True).astype(np.float32)


def _disc_alpha(shape, cx, cy, r):
    """Anti-aliased coverage [n,H,W] of small discs (image units; ``cx, cy, r`` [n,K]), max over
    the discs. Only a small window around each disc is evaluated."""
    n, H, W = shape
    w = int(np.ceil(2 * float(np.max(r)) * W)) + 3
    x0 = np.floor((cx - r) * W).astype(int) - 1
    y0 = np.floor((cy - r) * H).astype(int) - 1
    off = np.arange(w)
    ix = x0[..., None, None] + off[None, None, None, :]
    iy = y0[..., None, None] + off[None, None, :, None]
    d = np.sqrt(((ix + 0.5) / W - cx[..., None, None]) ** 2 + ((iy + 0.5) / H - cy[..., None, None]) ** 2) \
        - r[..., None, None]
    a = np.clip(0.5 - d * W, 0.0, 1.0).astype(np.float32)
    ix, iy = np.broadcast_arrays(ix, iy)
    ni = np.broadcast_to(np.arange(n)[:, None, None, None], a.shape)
    ok = (ix >= 0) & (ix < W) & (iy >= 0) & (iy < H) & (a > 0)
    alpha = np.zeros(shape, np.float32)
    np.maximum.at(alpha, (ni[ok], iy[ok], ix[ok]), a[ok])
    return alpha


def _c(arr_rgb):
    """[n,3] -> [n,1,1,3] colour field."""
    return np.asarray(arr_rgb, np.float32).reshape(-1, 1, 1, 3)


class _Canvas:
    """A sub-batch canvas: pixel grid, subject-local coordinates, painter's-order layers."""

    def __init__(self, img, X, Y):
        self.img = img          # [n, H, W, 3] float32
        self.X, self.Y = X, Y   # [1, H, W] in [0, 1], y down

    def paint(self, sd, col, px, alpha=1.0, rows=None):
        """Composite colour ``col`` ([n,1,1,3] or [n,H,W,3]) where signed distance ``sd`` < 0,
        anti-aliased over one pixel ``px`` (same units as ``sd``). With ``rows`` [k], ``sd``,
        ``col``, ``px`` cover only those images. Only covered pixels are touched (most parts
        cover a few percent of the frame)."""
        a = 0.5 - sd / px
        full = self.img.shape[:-1] if rows is None else (len(rows),) + self.img.shape[1:-1]
        if a.shape != full:
            a = np.broadcast_to(a, full)
        m = a > 0
        cnt = np.count_nonzero(m)
        if cnt == 0:
            return
        col = np.asarray(col, np.float32)
        if cnt > 0.3 * m.size and rows is None:      # large part: dense update
            av = np.clip(a, 0.0, 1.0)
            if np.ndim(alpha) or alpha != 1.0:
                av = av * alpha
            self.img += av[..., None] * (col - self.img)
            return
        idx = np.nonzero(m)
        av = np.minimum(a[idx], 1.0)
        if not np.isscalar(alpha):
            av = av * np.broadcast_to(alpha, full)[idx]
        elif alpha != 1.0:
            av = av * alpha
        if col.shape[1] == 1 and col.shape[2] == 1:
            cv = col[:, 0, 0][idx[0]] if col.shape[0] > 1 else col[0, 0, 0][None]
        else:
            cv = np.broadcast_to(col, full + (3,))[idx]
        gidx = idx if rows is None else (np.asarray(rows)[idx[0]],) + idx[1:]
        cur = self.img[gidx]
        self.img[gidx] = cur + av[:, None] * (cv - cur)

    def blend(self, alpha, col):
        """Composite ``col`` with coverage ``alpha`` [n,H,W]."""
        self.img += alpha[..., None] * (np.asarray(col, np.float32) - self.img)


def _min(*sds):
    """Union of signed distances."""
    return functools.reduce(np.minimum, sds)
