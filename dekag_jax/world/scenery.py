"""Scenery of the tiny world: the six backgrounds in both worlds (part of
:mod:`dekag_jax.world.render`). Sky and ground gradients, flakes, stars, skyline, dunes, water and
the cloud world's own scenery (mountains, flowers, sun, moon, lit windows, sailboat).
"""
from __future__ import annotations

import numpy as np

from .raster import _Canvas, _c, _disc_alpha, _sd_box, _sd_capsule, _sd_circle, _sd_poly


# ----------------------------------------------------------------------------------------------
# Backgrounds
# ----------------------------------------------------------------------------------------------
def _vgrad(Y, top, bottom, y0=0.0, y1=1.0):
    """Vertical colour gradient; only a column is computed ([n,H,1,3]), it broadcasts along x."""
    t = np.clip((Y[..., :1] - y0) / (y1 - y0), 0, 1)[..., None]
    return _c(top) * (1 - t) + _c(bottom) * t


def _background(cv: _Canvas, bg: str, world: str, U, S, px):
    X, Y = cv.X, cv.Y
    n = U.shape[0]
    hz = (0.56 + 0.14 * U[:, 0]).reshape(n, 1, 1)        # horizon height
    cloud = world == "cloud"
    j = (U[:, 1:4] - 0.5) * 0.08                            # per-image tone jitter [n,3]
    ground_sd = hz - Y                                      # < 0 below the horizon

    def sky(top, bottom):
        cv.img[:] = _vgrad(Y, np.asarray(top, np.float32) + j, np.asarray(bottom, np.float32) + j, 0.0, 0.7)

    def ground(top, bottom):
        g = _vgrad(Y - hz + 0.0, np.asarray(top) + j, np.asarray(bottom) + j, 0.0, 0.45)
        cv.paint(ground_sd, g, px)

    if bg == "snow":
        sky((0.62, 0.72, 0.85), (0.85, 0.88, 0.93)) if not cloud else sky((0.55, 0.58, 0.66), (0.78, 0.78, 0.82))
        if cloud:   # distant mountains
            for k in range(3):
                mx = (S[:, k, 0] * 1.2 - 0.1).reshape(n, 1, 1)
                mh = (0.18 + 0.12 * S[:, k, 1]).reshape(n, 1, 1)
                sd = _sd_poly(X, Y, [(mx - 0.3, hz), (mx, hz - mh), (mx + 0.3, hz)])
                cv.paint(sd, _c([(0.42, 0.45, 0.55)] * n), px)
                cap = _sd_poly(X, Y, [(mx - 0.09, hz - mh + 0.09 * mh / 0.3 * 3.3),
                                      (mx, hz - mh), (mx + 0.09, hz - mh + 0.09 * mh / 0.3 * 3.3)])
                cv.paint(np.maximum(cap, sd), _c([(0.95, 0.95, 0.97)] * n), px)
        ground((0.93, 0.95, 0.98), (0.80, 0.86, 0.95))
        if not cloud:   # falling flakes
            cv.blend(_disc_alpha(cv.img.shape[:3], S[:, :14, 0], S[:, :14, 1], 0.012 + 0.008 * S[:, :14, 2]),
                     _c([(1.0, 1.0, 1.0)] * n))
    elif bg == "grass":
        sky((0.35, 0.62, 0.92), (0.72, 0.85, 0.97)) if not cloud else sky((0.50, 0.70, 0.88), (0.86, 0.90, 0.90))
        ground((0.40, 0.72, 0.25), (0.22, 0.50, 0.12)) if not cloud else ground((0.28, 0.52, 0.18), (0.14, 0.34, 0.10))
        if cloud:   # flowers
            colsel = ((0.95, 0.30, 0.35), (0.98, 0.92, 0.40), (0.98, 0.98, 0.98))
            kind = (S[:, :12, 2] * 3).astype(int) % 3
            fy = hz.reshape(n, 1) + (1 - hz.reshape(n, 1)) * (0.15 + 0.85 * S[:, :12, 1])
            for q in range(3):   # one disc layer per flower colour (others get radius 0)
                rr = np.where(kind == q, 0.014, 0.0).astype(np.float32)
                cv.blend(_disc_alpha(cv.img.shape[:3], S[:, :12, 0], fy, rr), _c([colsel[q]] * n))
        else:       # grass blades as darker streaks
            for k in range(10):
                fx = S[:, k, 0].reshape(n, 1, 1)
                fy = hz + (1 - hz) * (0.1 + 0.9 * S[:, k, 1].reshape(n, 1, 1))
                cv.paint(_sd_capsule(X, Y, fx, fy, fx + 0.01, fy - 0.04, 0.005),
                         _c([(0.15, 0.40, 0.10)] * n), px)
    elif bg == "sand":
        sky((0.55, 0.75, 0.95), (0.90, 0.92, 0.90)) if not cloud else sky((0.95, 0.72, 0.45), (0.98, 0.88, 0.65))
        if cloud:   # low sun
            sx = (0.15 + 0.7 * S[:, 0, 0]).reshape(n, 1, 1)
            cv.paint(_sd_circle(X, Y, sx, hz - 0.12, 0.08), _c([(0.99, 0.93, 0.55)] * n), px)
        # dunes: sinusoidal horizon
        ph = (U[:, 4] * 6.28).reshape(n, 1, 1)
        dune = hz + 0.03 * np.sin(X * 9.0 + ph) - Y
        g = _vgrad(Y - hz, np.asarray((0.93, 0.82, 0.55)) + j, np.asarray((0.80, 0.64, 0.36)) + j, 0, 0.45)
        cv.paint(dune, g, px)
        ripple = 0.5 + 0.5 * np.sin((Y * 60.0 + 2.0 * np.sin(X * 7 + ph)))
        cv.img += (-0.04 * ripple * (Y > hz))[..., None]
    elif bg == "night":
        sky((0.02, 0.03, 0.12), (0.10, 0.12, 0.30)) if not cloud else sky((0.10, 0.03, 0.20), (0.28, 0.14, 0.38))
        cv.blend(_disc_alpha(cv.img.shape[:3], S[:, :16, 0], S[:, :16, 1] * 0.55, 0.006 + 0.005 * S[:, :16, 2]),
                 _c([(1.0, 1.0, 0.85)] * n))
        mx = (0.12 + 0.76 * S[:, 20, 0]).reshape(n, 1, 1)
        mr = 0.05 if not cloud else 0.11
        cv.paint(_sd_circle(X, Y, mx, 0.14, mr), _c([(0.98, 0.96, 0.80)] * n), px)
        if not cloud:   # crescent
            cv.paint(_sd_circle(X, Y, mx + 0.025, 0.13, mr), _c([(0.03, 0.04, 0.14)] * n), px)
        ground((0.08, 0.10, 0.16), (0.03, 0.04, 0.08))
    elif bg == "city":
        sky((0.60, 0.70, 0.82), (0.82, 0.84, 0.86)) if not cloud else sky((0.88, 0.62, 0.52), (0.96, 0.84, 0.66))
        # skyline: per column the last-drawn building covering it (painter's order)
        K = 9
        bx = (np.arange(K) / 8.0 + (S[:, :K, 0] - 0.5) * 0.06)[..., None]          # [n,K,1]
        bh = (0.15 + 0.3 * S[:, :K, 1])[..., None]
        bw = (0.045 + 0.03 * S[:, :K, 2])[..., None]
        xs = X[0, 0][None, None, :]                                              # [1,1,W]
        cover = np.abs(xs - bx) < bw                                             # [n,K,W]
        last = K - 1 - np.argmax(cover[:, ::-1], axis=1)                         # [n,W]
        anyb = cover.any(1)
        take = lambda a: np.take_along_axis(a[..., 0], last, 1)                 # noqa: E731
        top = hz[:, 0] - take(bh)                                                # [n,W]
        tone = np.take_along_axis(0.35 + 0.25 * S[:, :K, 3], last, 1)
        col = np.stack([tone, tone, tone * 1.08], -1)                            # [n,W,3]
        if cloud:
            col = col * np.asarray([0.75, 0.62, 0.70], np.float32)
        mask = anyb[:, None, :] & (Y >= top[:, None, :])                         # [n,H,W]
        cv.img[:] = np.where(mask[..., None], col[:, None, :, :], cv.img)
        if cloud:   # lit windows
            inner = (np.abs(xs[0] - take(bx)) < take(bw) - 0.01)[:, None, :] & (Y >= top[:, None, :] + 0.015)
            win = (np.sin(X * 120.0) > 0.3) & (np.sin(Y * 110.0) > 0.3) & mask & inner
            cv.img[:] = np.where(win[..., None], np.asarray([1.0, 0.85, 0.45], np.float32), cv.img)
        ground((0.42, 0.42, 0.44), (0.30, 0.30, 0.32))
        # road markings
        cv.paint(_sd_box(X, Y, 0.5, hz + (1 - hz) * 0.55, 0.6, 0.006), _c([(0.9, 0.9, 0.85)] * n), px, alpha=0.6)
    elif bg == "lake":
        sky((0.45, 0.68, 0.95), (0.80, 0.88, 0.96)) if not cloud else sky((0.62, 0.70, 0.80), (0.88, 0.88, 0.86))
        # far tree line
        cv.paint(hz - 0.025 + 0.012 * np.sin(X * 40 + U[:, 5].reshape(n, 1, 1) * 6) - Y,
                 _c([(0.12, 0.35, 0.18)] * n), px)
        water = _vgrad(Y - hz, np.asarray((0.20, 0.45, 0.75)) + j, np.asarray((0.10, 0.25, 0.55)) + j, 0, 0.3)
        cv.paint(ground_sd, water, px)
        cv.img += (0.05 * (np.sin(Y * 90 + 3 * np.sin(X * 11)) > 0.8) * (Y > hz))[..., None]
        # near shore
        shore = hz + (1 - hz) * 0.55
        cv.paint(shore - Y, _c([(0.45, 0.62, 0.28)] * n) if not cloud else _c([(0.70, 0.62, 0.45)] * n), px)
        if cloud:   # sailboat
            sx = (0.1 + 0.8 * S[:, 1, 0]).reshape(n, 1, 1)
            sy = hz + 0.06
            cv.paint(_sd_poly(X, Y, [(sx - 0.05, sy), (sx + 0.05, sy), (sx + 0.035, sy + 0.02), (sx - 0.035, sy + 0.02)]),
                     _c([(0.45, 0.25, 0.12)] * n), px)
            cv.paint(_sd_poly(X, Y, [(sx, sy - 0.1), (sx, sy - 0.005), (sx + 0.05, sy - 0.005)]),
                     _c([(0.98, 0.98, 0.96)] * n), px)
    else:  # pragma: no cover - Spec validates
        raise ValueError(bg)
