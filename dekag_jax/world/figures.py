"""Figures of the tiny world: patterns and the three subject categories (persons, creatures,
buildings) with their accessories and the cloud's hidden marks (part of
:mod:`dekag_jax.world.render`). Drawn in subject-local coordinates as signed-distance layers.
"""
from __future__ import annotations

import math

import numpy as np

from .raster import (_Canvas, _c, _min, _rot, _sd_box, _sd_capsule, _sd_circle, _sd_ellipse,
                     _sd_poly)
from .spec import _PALETTE, Spec, hidden_details


# ----------------------------------------------------------------------------------------------
# Patterns (computed in subject-local coordinates so they move and scale with the subject)
# ----------------------------------------------------------------------------------------------
def _pattern_mask(pattern: str, world: str, u, v, px, phase):
    """Soft pattern coverage in [0, 1], [n, H, W]. ``phase`` [n,1,1] shifts per seed."""
    cloud = world == "cloud"
    if pattern == "striped":
        if cloud:   # diagonal, thick
            t = (u + v) / np.sqrt(2.0) / 0.16 + phase
        else:       # horizontal, thin
            t = v / 0.11 + phase
        d = (np.abs(t - np.floor(t) - 0.5) - 0.25) * (0.16 if cloud else 0.11)
        return np.clip(0.5 - d / px, 0, 1)
    if pattern == "dotted":
        if cloud:   # large dots on a hexagonal grid
            p = 0.15
            r = 0.045
            row = np.floor(v / (p * 0.866) + phase)
            vv = (v / (p * 0.866) + phase - row - 0.5) * p * 0.866
            uu = (u / p + 0.5 * (row % 2) - np.floor(u / p + 0.5 * (row % 2)) - 0.5) * p
        else:       # small dots on a square grid
            p = 0.12
            r = 0.026
            uu = (u / p + phase - np.floor(u / p + phase) - 0.5) * p
            vv = (v / p - np.floor(v / p) - 0.5) * p
        return np.clip(0.5 - (np.sqrt(uu * uu + vv * vv) - r) / px, 0, 1)
    if pattern == "checkered":
        if cloud:   # diamonds (45 degrees)
            p = 0.13
            a, b = (u + v) / np.sqrt(2.0) / p + phase, (u - v) / np.sqrt(2.0) / p
        else:
            p = 0.11
            a, b = u / p + phase, v / p
        sa = np.clip(0.5 + np.sin(np.pi * a) * p / np.pi / px, 0, 1)
        sb = np.clip(0.5 + np.sin(np.pi * b) * p / np.pi / px, 0, 1)
        return sa * (1 - sb) + sb * (1 - sa)
    if pattern == "spotted":
        # large irregular spots: jittered grid, one blob per cell, radius varies per cell
        p = 0.16
        cu, cvv = np.floor(u / p + phase), np.floor(v / p)
        hsh = np.sin(cu * 12.9898 + cvv * 78.233) * 43758.5453
        hsh = hsh - np.floor(hsh)
        hsh2 = np.sin(cu * 39.3468 + cvv * 11.135) * 24634.6345
        hsh2 = hsh2 - np.floor(hsh2)
        ou = (u / p + phase - cu - 0.3 - 0.4 * hsh) * p
        ov = (v / p - cvv - 0.3 - 0.4 * hsh2) * p
        r = 0.03 + 0.03 * hsh
        return np.clip(0.5 - (np.sqrt(ou * ou + 1.6 * ov * ov) - r) / px, 0, 1)
    raise ValueError(pattern)  # pragma: no cover


# ----------------------------------------------------------------------------------------------
# Subjects
# ----------------------------------------------------------------------------------------------
_SKIN = np.asarray([(0.96, 0.80, 0.66), (0.86, 0.64, 0.47), (0.62, 0.42, 0.28), (0.40, 0.26, 0.17)], np.float32)
_HAIR_TONES = np.asarray([(0.12, 0.08, 0.05), (0.35, 0.20, 0.08), (0.80, 0.62, 0.30), (0.55, 0.20, 0.08)], np.float32)
_ROOF_TONES = np.asarray([(0.55, 0.16, 0.12), (0.30, 0.30, 0.34), (0.40, 0.26, 0.16)], np.float32)
_OUTLINE = np.asarray((0.10, 0.08, 0.10), np.float32)


class _Group:
    """The images of one category group, or a row subset of them (``sub``), with their
    subject-local coordinates ``u, v`` [k,H,W], per-image uniforms ``r(i)`` [k,1,1] and pixel size
    ``px`` [k,1,1] in local units. Parts that only some images have (an accessory, a hidden mark)
    are evaluated on the subset only."""

    def __init__(self, rows, u, v, U, px, specs, hid):
        self.rows, self.u, self.v, self.U, self.px = rows, u, v, U, px
        self.specs, self.hid = specs, hid
        self.n = len(specs)

    def r(self, i):
        return self.U[:, i].reshape(self.n, 1, 1)

    def take(self, x):
        """Slice a per-image array ([n,...]) of the parent group to this subset."""
        return x[self._local] if self._local is not None else x

    def sub(self, pred):
        """The subset of images i with ``pred(spec_i, hidden_i)`` (None if empty)."""
        loc = np.asarray([i for i, sp in enumerate(self.specs)
                          if pred(sp, self.hid[i] if self.hid else None)], int)
        if loc.size == 0:
            return None
        g = _Group(self.rows[loc], self.u[loc], self.v[loc], self.U[loc], self.px[loc],
                   [self.specs[i] for i in loc], [self.hid[i] for i in loc] if self.hid else None)
        g._local = loc
        return g

    _local = None

    def const(self, rgb):
        return np.broadcast_to(np.asarray(rgb, np.float32).reshape(1, 1, 1, 3), (self.n, 1, 1, 3))

    def word(self, key, world):
        """[k,1,1,3] colour of per-image colour words; ``key(spec, hidden) -> word``."""
        return _c([_PALETTE[world][key(sp, self.hid[i] if self.hid else None)]
                   for i, sp in enumerate(self.specs)])


class _Layers:
    """Subject parts in painter's order: (sd [k,H,W], colour, outline?, rows [k]) so that the
    cloud can outline their union before filling them."""

    def __init__(self):
        self.items = []

    def add(self, g: _Group, sd, col, outline=True):
        self.items.append((sd.astype(np.float32, copy=False), col, outline, g.rows))


def _subject(cv: _Canvas, specs: list[Spec], world: str, U, size: int):
    """Draw the subjects of one category group (all specs share the category) onto ``cv``."""
    n = len(specs)
    cat = specs[0].category
    cloud = world == "cloud"
    X, Y = cv.X, cv.Y

    def r(i):   # uniform i as [n,1,1]
        return U[:, i].reshape(n, 1, 1)

    # layout: scale s (subject height ~ s in image units), anchor (cx, ground y)
    s = 0.55 + 0.25 * r(10)
    if cat == "building":
        s = 0.55 + 0.17 * r(10)
    elif cat == "animal":
        s = 0.52 + 0.16 * r(10)
    cx = 0.5 + (r(11) - 0.5) * (0.36 - 0.3 * s)
    gy = 0.80 + 0.12 * r(12)
    if cloud:   # the cloud draws subjects larger and more central (layout interpretation)
        s = s * {"human": 1.15, "animal": 1.06, "building": 1.0}[cat]
        cx = 0.5 + (cx - 0.5) * 0.5
        gy = 0.5 + (gy - 0.5) * 0.95 + 0.03
    u = (X - cx) / s
    v = (Y - gy) / s + 1.0                         # v in [0, 1]: 0 top of subject box, 1 ground
    if cat == "animal":                            # facing left or right
        u = u * np.where(r(13) < 0.5, -1.0, 1.0).astype(np.float32)
    px = (1.0 / size) / s                          # one pixel in local units

    body = _c([_PALETTE[world][sp.color] for sp in specs])
    body = body * (0.94 + 0.12 * r(14))[..., None]  # per-seed exposure of the body colour
    bodyf = np.broadcast_to(body, (n,) + X.shape[1:] + (3,)).copy()
    for pat in set(sp.pattern for sp in specs):
        if pat == "plain":
            continue
        idx = np.asarray([i for i, sp in enumerate(specs) if sp.pattern == pat])
        pc = _c([_PALETTE[world][specs[i].pattern_color] for i in idx])
        m = _pattern_mask(pat, world, u[idx], v[idx], px[idx], r(15)[idx])[..., None]
        bodyf[idx] = bodyf[idx] * (1 - m) + pc * m
    acc = _c([_PALETTE[world][sp.accessory_color] if sp.accessory_color else (0, 0, 0)
              for sp in specs])
    hid = [hidden_details(sp) for sp in specs] if cloud else None
    g = _Group(np.arange(n), u, v, U, px, specs, hid)

    lay = _Layers()
    {"human": _draw_human, "animal": _draw_animal, "building": _draw_building}[cat](
        lay, g, bodyf, acc, cloud, world)
    if any(sp.interaction != "none" for sp in specs):   # world version 2 only
        _draw_interaction(lay, g, cat, cloud, world)
    # ground shadow
    cv.paint(_sd_ellipse(u, v, 0.0, 1.0, 0.42 if cat != "human" else 0.25, 0.035),
             g.const((0.0, 0.0, 0.0)), px, alpha=0.25)
    if cloud:   # dark contour around the union of the outlined parts
        un = np.full(u.shape, 1e3, np.float32)
        for sd, _, o, rows in lay.items:
            if o:
                un[rows] = np.minimum(un[rows], sd)
        cv.paint(un - 0.022, g.const(_OUTLINE), px)
    for sd, col, _, rows in lay.items:
        cv.paint(sd, col, px[rows], rows=None if rows.size == n and (rows == np.arange(n)).all() else rows)


def _u_idx(x, k):
    """Index in [0, k) from uniforms [n,1,1] -> [n]."""
    return np.minimum((np.asarray(x).reshape(-1) * k).astype(int), k - 1)


# --- humans -----------------------------------------------------------------------------------
def _human_geom(g: _Group, cloud: bool):
    d = {}
    d["head_r"] = 0.105 if not cloud else 0.13
    d["head_y"] = 0.14 if not cloud else 0.15
    d["hip_y"], d["sh_y"] = 0.60, 0.30
    d["hx"] = (g.r(26) - 0.5) * 0.12                          # head tilt
    hands = []
    for side, k in ((-1, 24), (1, 25)):
        a = 0.2 + g.r(k) * 1.6                                # arm angle from straight down
        shx = side * 0.12
        hands.append((shx, shx + side * np.sin(a) * 0.30, d["sh_y"] + 0.02 + np.cos(a) * 0.30))
    d["hands"] = hands
    return d


def _draw_human(lay: _Layers, g: _Group, body, acc, cloud, world):
    u, v = g.u, g.v
    G = _human_geom(g, cloud)
    head_r, head_y, hip_y, sh_y, hx = G["head_r"], G["head_y"], G["hip_y"], G["sh_y"], G["hx"]
    skin = _c(_SKIN[_u_idx(g.r(20), 4)])
    hair_tone = _c(_HAIR_TONES[_u_idx(g.r(21), 4)])
    dark = g.const((0.15, 0.12, 0.10))
    for side, k in ((-1, 22), (1, 23)):                       # legs + shoes
        a = (g.r(k) - 0.5) * 0.5 + side * 0.08
        lx = side * 0.055
        fx, fy = lx + np.sin(a) * 0.38, hip_y + np.cos(a) * 0.36
        lay.add(g, _sd_capsule(u, v, lx, hip_y, fx, fy, 0.048), body * 0.85)
        lay.add(g, _sd_ellipse(u, v, fx + 0.02 * side, fy + 0.02, 0.05, 0.025), dark)
    for shx, ex, ey in G["hands"]:                            # arms + hands
        lay.add(g, _sd_capsule(u, v, shx, sh_y + 0.03, ex, ey, 0.042), body)
        lay.add(g, _sd_circle(u, v, ex, ey, 0.045), skin)
    lay.add(g, _sd_box(u, v, 0.0, (sh_y + hip_y) / 2 + 0.01, 0.13, (hip_y - sh_y) / 2 + 0.03, 0.05), body)
    lay.add(g, _sd_box(u, v, 0.0, sh_y - 0.04, 0.035, 0.05), skin)
    lay.add(g, _sd_circle(u, v, hx, head_y, head_r), skin)
    # hair: edge = one short cap; cloud = the subject's hidden hair style
    styles = ["short_edge"] if not cloud else sorted({h["hair"] for h in g.hid})
    for style in styles:
        c = g if style == "short_edge" else g.sub(lambda sp, h: h["hair"] == style)
        uu, vv, x = c.u, c.v, c.take(hx)
        if style == "short_edge":
            sd = np.maximum(_sd_circle(uu, vv, x, head_y - 0.005, head_r + 0.01), vv - head_y + 0.025)
        elif style == "short":
            sd = np.maximum(_sd_circle(uu, vv, x, head_y - 0.01, head_r + 0.014), vv - head_y + 0.03)
        elif style == "long":
            sd = _min(np.maximum(_sd_circle(uu, vv, x, head_y, head_r + 0.02), vv - head_y + 0.02),
                      _sd_box(uu, vv, x, head_y + 0.07, head_r + 0.02, 0.09, 0.03))
            sd = np.maximum(sd, -_sd_box(uu, vv, x, head_y + 0.06, head_r - 0.02, 0.12))
        elif style == "spiky":
            spikes = []
            for kk in range(5):
                ang = -1.2 + kk * 0.6
                spikes.append(_sd_poly(uu, vv, [
                    (x + math.sin(ang - 0.3) * head_r, head_y - math.cos(ang - 0.3) * head_r),
                    (x + math.sin(ang) * head_r * 1.9, head_y - math.cos(ang) * head_r * 1.9),
                    (x + math.sin(ang + 0.3) * head_r, head_y - math.cos(ang + 0.3) * head_r)]))
            sd = _min(*spikes, np.maximum(_sd_circle(uu, vv, x, head_y, head_r + 0.01), vv - head_y + 0.02))
        else:  # bun
            sd = _min(np.maximum(_sd_circle(uu, vv, x, head_y, head_r + 0.012), vv - head_y + 0.02),
                      _sd_circle(uu, vv, x, head_y - head_r - 0.045, 0.06))
        lay.add(c, sd, c.take(hair_tone))
    for side in (-1, 1):                                      # eyes
        lay.add(g, _sd_circle(u, v, hx + side * 0.04, head_y + 0.01, 0.016), g.const((0.05, 0.05, 0.08)), outline=False)
    if cloud:   # hidden chest emblem on a light badge
        ex, ey, er = 0.0, 0.42, 0.105
        lay.add(g, _sd_circle(u, v, ex, ey, er * 1.25), g.const((0.97, 0.97, 0.95)), outline=False)
        for em in sorted({h["emblem"] for h in g.hid}):
            c = g.sub(lambda sp, h: h["emblem"] == em)
            uu, vv = c.u, c.v
            if em == "star":
                sd = _min(*[_sd_poly(uu, vv, [
                    (ex, ey), (ex + math.sin(a - 0.45) * er * 0.45, ey - math.cos(a - 0.45) * er * 0.45),
                    (ex + math.sin(a) * er * 1.1, ey - math.cos(a) * er * 1.1),
                    (ex + math.sin(a + 0.45) * er * 0.45, ey - math.cos(a + 0.45) * er * 0.45)])
                    for a in (2 * math.pi * k / 5 for k in range(5))])
            elif em == "diamond":
                sd = _sd_poly(uu, vv, [(ex, ey - er * 1.1), (ex + er * 0.75, ey), (ex, ey + er * 1.1), (ex - er * 0.75, ey)])
            elif em == "ring":
                sd = np.abs(_sd_circle(uu, vv, ex, ey, er * 0.7)) - er * 0.28
            else:  # cross
                sd = _min(_sd_box(uu, vv, ex, ey, er * 0.28, er), _sd_box(uu, vv, ex, ey, er, er * 0.28))
            lay.add(c, sd, c.word(lambda sp, h: h["emblem_color"], world), outline=False)
    for accn in sorted({sp.accessory for sp in g.specs} - {"none"}):
        c = g.sub(lambda sp, h: sp.accessory == accn)
        uu, vv, x, col = c.u, c.v, c.take(hx), c.take(acc)
        if accn == "scarf":
            tail = 0.12 if not cloud else 0.26
            sd = _min(_sd_box(uu, vv, 0.0, sh_y - 0.02, 0.11, 0.035, 0.02),
                      _sd_box(uu, vv, 0.09 if not cloud else 0.125, sh_y + tail / 2, 0.035, tail / 2, 0.01))
            lay.add(c, sd, col)
        elif accn == "hat":
            top = head_y - head_r
            if not cloud:   # top hat
                sd = _min(_sd_box(uu, vv, x, top + 0.01, head_r * 1.45, 0.018),
                          _sd_box(uu, vv, x, top - 0.08, head_r * 0.85, 0.08))
            else:           # beanie with a bobble
                sd = _min(np.maximum(_sd_circle(uu, vv, x, top + 0.06, head_r * 1.05), vv - top - 0.05),
                          _sd_circle(uu, vv, x, top - 0.05, 0.04))
            lay.add(c, sd, col)
        elif accn == "glasses":
            gy = head_y + 0.01
            if not cloud:   # round frames
                sd = _min(np.abs(_sd_circle(uu, vv, x - 0.045, gy, 0.035)) - 0.008,
                          np.abs(_sd_circle(uu, vv, x + 0.045, gy, 0.035)) - 0.008,
                          _sd_box(uu, vv, x, gy, 0.015, 0.006))
            else:           # square dark shades on a bar
                sd = _min(_sd_box(uu, vv, x - 0.048, gy, 0.04, 0.028, 0.006),
                          _sd_box(uu, vv, x + 0.048, gy, 0.04, 0.028, 0.006),
                          _sd_box(uu, vv, x, gy - 0.02, head_r, 0.008))
            lay.add(c, sd, col, outline=False)
        elif accn == "flag":
            _, hxx, hyy = _human_geom(c, cloud)["hands"][1]
            lay.add(c, _sd_capsule(uu, vv, hxx, hyy + 0.08, hxx, hyy - 0.45, 0.012), c.const((0.35, 0.25, 0.15)))
            if not cloud:
                sd = _sd_box(uu, vv, hxx + 0.12, hyy - 0.38, 0.12, 0.075)
            else:   # pennant
                sd = _sd_poly(uu, vv, [(hxx, hyy - 0.45), (hxx + 0.3, hyy - 0.37), (hxx, hyy - 0.29)])
            lay.add(c, sd, col)
        elif accn == "crown":
            lay.add(c, _crown(uu, vv, x, head_y - head_r * 0.8, head_r * 1.1, 3 if not cloud else 5), col)


def _crown(u, v, x, top, w, k):
    tris = [_sd_poly(u, v, [(x - w + 2 * w * i / k, top), (x - w + 2 * w * (i + 0.5) / k, top - 0.1),
                            (x - w + 2 * w * (i + 1) / k, top)]) for i in range(k)]
    return _min(_sd_box(u, v, x, top + 0.012, w, 0.02), *tris)


# --- animals ----------------------------------------------------------------------------------
def _draw_animal(lay: _Layers, g: _Group, body, acc, cloud, world):
    """Side view of a quadruped facing +u; ground at v = 1."""
    u, v = g.u, g.v
    blen = 0.36 if not cloud else 0.44            # cloud creatures: longer body, shorter legs
    by, bry = 0.62, 0.19
    leg_top, leg_len = by + 0.05, (0.33 if not cloud else 0.26)
    by = by if not cloud else by + 0.06
    hx, hy, hr = blen + 0.06, by - 0.22, 0.16
    dark = body * 0.8
    tails = ["edge"] if not cloud else sorted({h["tail"] for h in g.hid})
    tx0, ty0 = -blen + 0.04, by - 0.06
    for tl in tails:
        c = g if tl == "edge" else g.sub(lambda sp, h: h["tail"] == tl)
        uu, vv = c.u, c.v
        if tl == "edge":    # thin raised tail, angle from the seed
            ta = 0.6 + c.r(30) * 0.6
            sd = _sd_capsule(uu, vv, tx0, ty0, tx0 - np.sin(ta) * 0.25, ty0 - np.cos(ta) * 0.25, 0.03)
        elif tl == "bushy":
            sd = _sd_ellipse(*_rot(uu, vv, tx0 - 0.14, ty0 - 0.1, -0.8), tx0 - 0.14, ty0 - 0.1, 0.16, 0.075)
        elif tl == "curly":
            sd = np.abs(_sd_circle(uu, vv, tx0 - 0.08, ty0 - 0.1, 0.08)) - 0.025
        else:  # stub
            sd = _sd_circle(uu, vv, tx0 - 0.02, ty0 - 0.02, 0.06)
        lay.add(c, sd, c.take(body))
    for k, (lx, far) in enumerate(((-blen * 0.6, True), (blen * 0.55, True),
                                   (-blen * 0.6 + 0.07, False), (blen * 0.55 + 0.07, False))):
        a = (g.r(31 + k) - 0.5) * 0.7
        fx, fy = lx + np.sin(a) * leg_len, leg_top + np.cos(a) * leg_len
        lay.add(g, _sd_capsule(u, v, lx, leg_top, fx, np.minimum(fy, 1.0), 0.045), dark * (0.85 if far else 1.0))
    lay.add(g, _sd_ellipse(u, v, 0.0, by, blen, bry), body)
    lay.add(g, _sd_capsule(u, v, blen * 0.7, by - 0.05, hx - 0.03, hy + 0.03, 0.09), body)
    ear_styles = ["edge"] if not cloud else sorted({h["ears"] for h in g.hid})
    ears = []
    for es in ear_styles:
        c = g if es == "edge" else g.sub(lambda sp, h: h["ears"] == es)
        uu, vv = c.u, c.v
        sds = []
        for dx in (-0.07, 0.05):
            ex = hx + dx
            if es == "edge":    # pointed triangles
                sds.append(_sd_poly(uu, vv, [(ex - 0.05, hy - hr * 0.6), (ex, hy - hr - 0.12), (ex + 0.05, hy - hr * 0.6)]))
            elif es == "round":
                sds.append(_sd_circle(uu, vv, ex, hy - hr * 0.95, 0.065))
            elif es == "floppy":
                sds.append(_sd_ellipse(*_rot(uu, vv, ex - 0.04, hy + 0.02, 0.35), ex - 0.04, hy + 0.02, 0.045, 0.12))
            elif es == "long":
                sds.append(_sd_ellipse(*_rot(uu, vv, ex, hy - hr - 0.1, -0.15), ex, hy - hr - 0.1, 0.04, 0.15))
            else:   # tufted: tall thin triangle with a tuft
                sds.append(_min(_sd_poly(uu, vv, [(ex - 0.035, hy - hr * 0.6), (ex, hy - hr - 0.17), (ex + 0.035, hy - hr * 0.6)]),
                                _sd_circle(uu, vv, ex, hy - hr - 0.17, 0.022)))
        ears.append((es, c, _min(*sds)))
    for es, c, sd in ears:          # floppy ears hang in front of the head, others behind
        if es != "floppy":
            lay.add(c, sd, c.take(dark))
    lay.add(g, _sd_circle(u, v, hx, hy, hr), body)
    for es, c, sd in ears:
        if es == "floppy":
            lay.add(c, sd, c.take(dark))
    lay.add(g, _sd_ellipse(u, v, hx + hr * 0.8, hy + 0.04, 0.08, 0.06), body * 1.05 + 0.05)
    lay.add(g, _sd_circle(u, v, hx + hr * 0.8 + 0.07, hy + 0.02, 0.025), g.const((0.08, 0.05, 0.05)), outline=False)
    if cloud:   # hidden coloured eye patch
        lay.add(g, _sd_ellipse(u, v, hx + 0.04, hy - 0.02, 0.065, 0.055),
                g.word(lambda sp, h: h["patch_color"], world), outline=False)
    lay.add(g, _sd_circle(u, v, hx + 0.04, hy - 0.02, 0.025), g.const((0.05, 0.05, 0.08)), outline=False)
    for accn in sorted({sp.accessory for sp in g.specs} - {"none"}):
        c = g.sub(lambda sp, h: sp.accessory == accn)
        uu, vv, col = c.u, c.v, c.take(acc)
        if accn == "scarf":
            nx, ny = blen * 0.85, by - 0.12
            tl = 0.12 if not cloud else 0.24
            sd = _min(_sd_ellipse(*_rot(uu, vv, nx, ny, 0.7), nx, ny, 0.04, 0.11),
                      _sd_box(uu, vv, nx - 0.04, ny + tl / 2 + 0.03, 0.03, tl / 2, 0.01))
            lay.add(c, sd, col)
        elif accn == "hat":
            top = hy - hr
            if not cloud:
                sd = _min(_sd_box(uu, vv, hx, top + 0.01, hr * 1.2, 0.018), _sd_box(uu, vv, hx, top - 0.07, hr * 0.7, 0.07))
            else:
                sd = _min(np.maximum(_sd_circle(uu, vv, hx, top + 0.07, hr), vv - top - 0.05),
                          _sd_circle(uu, vv, hx, top - 0.05, 0.04))
            lay.add(c, sd, col)
        elif accn == "glasses":
            gx, gy = hx + 0.05, hy - 0.02
            if not cloud:
                sd = _min(np.abs(_sd_circle(uu, vv, gx, gy, 0.045)) - 0.01, _sd_box(uu, vv, gx - 0.07, gy, 0.03, 0.007))
            else:
                sd = _min(_sd_box(uu, vv, gx, gy, 0.05, 0.035, 0.008), _sd_box(uu, vv, gx - 0.08, gy - 0.02, 0.04, 0.008))
            lay.add(c, sd, col, outline=False)
        elif accn == "crown":
            lay.add(c, _crown(uu, vv, hx, hy - hr * 0.75, hr * 0.8, 3 if not cloud else 5), col)


# --- buildings --------------------------------------------------------------------------------
def _draw_building(lay: _Layers, g: _Group, body, acc, cloud, world):
    """Front view: wall block from ``wall_top`` to the ground (v = 1), gable roof above."""
    u, v = g.u, g.v
    hw = 0.36 + 0.06 * g.r(40)
    if cloud:   # cloud buildings: narrower, taller, steeper roofs
        hw = hw * 0.88
    wall_top = 0.42 if not cloud else 0.34
    roof_h = 0.22 + 0.06 * g.r(41) if not cloud else 0.30 + 0.05 * g.r(41)
    roof_col = _c(_ROOF_TONES[_u_idx(g.r(42), 3)])
    glass, frame = g.const((0.95, 0.90, 0.55)), g.const((0.25, 0.20, 0.18))
    door_col = g.const((0.35, 0.22, 0.12))
    ov = 0.05
    accs = {sp.accessory for sp in g.specs}
    # accessories behind the roof line
    if "chimney" in accs:
        c = g.sub(lambda sp, h: sp.accessory == "chimney")
        uu, vv, rh, w = c.u, c.v, c.take(roof_h), c.take(hw)
        if not cloud:
            sd = _sd_box(uu, vv, w * 0.5, wall_top - rh * 0.55, 0.05, rh * 0.4)
        else:   # round pot with a smoke puff
            sd = _min(_sd_box(uu, vv, w * 0.5, wall_top - rh * 0.55, 0.035, rh * 0.45, 0.02),
                      _sd_circle(uu, vv, w * 0.5 + 0.05, wall_top - rh - 0.08, 0.05))
        lay.add(c, sd, c.take(acc))
    if "flag" in accs:
        c = g.sub(lambda sp, h: sp.accessory == "flag")
        uu, vv, rh = c.u, c.v, c.take(roof_h)
        ptop = wall_top - rh - (0.22 if not cloud else 0.17)
        lay.add(c, _sd_capsule(uu, vv, 0.0, wall_top - rh + 0.02, 0.0, ptop, 0.012), c.const((0.3, 0.3, 0.3)))
        if not cloud:
            sd = _sd_box(uu, vv, 0.1, ptop + 0.06, 0.1, 0.06)
        else:   # pennant
            sd = _sd_poly(uu, vv, [(0.0, ptop), (0.24, ptop + 0.06), (0.0, ptop + 0.12)])
        lay.add(c, sd, c.take(acc))
    if "antenna" in accs:
        c = g.sub(lambda sp, h: sp.accessory == "antenna")
        uu, vv, rh, w = c.u, c.v, c.take(roof_h), c.take(hw)
        ax, ay = -w * 0.35, wall_top - rh * 0.6
        if not cloud:   # mast with two cross bars
            sd = _min(_sd_capsule(uu, vv, ax, ay, ax, ay - 0.25, 0.01),
                      _sd_capsule(uu, vv, ax - 0.08, ay - 0.2, ax + 0.08, ay - 0.2, 0.01),
                      _sd_capsule(uu, vv, ax - 0.05, ay - 0.12, ax + 0.05, ay - 0.12, 0.01))
        else:           # satellite dish
            sd = _min(_sd_capsule(uu, vv, ax, ay, ax, ay - 0.1, 0.012),
                      np.maximum(_sd_circle(uu, vv, ax, ay - 0.16, 0.09), -_sd_circle(uu, vv, ax + 0.05, ay - 0.2, 0.09)))
        lay.add(c, sd, c.take(acc))
    lay.add(g, _sd_box(u, v, 0.0, (wall_top + 1.0) / 2, hw, (1.0 - wall_top) / 2), body)
    lay.add(g, _sd_poly(u, v, [(-hw - ov, wall_top + 0.005), (0.0, wall_top - roof_h), (hw + ov, wall_top + 0.005)]), roof_col)
    wy0 = wall_top + 0.1
    if not cloud:   # 2 rows x 3 square windows, a central door
        sd = _min(*[_sd_box(u, v, ix * hw * 0.6, wy, 0.055, 0.055)
                    for ix in (-1, 0, 1) for wy in (wy0 + 0.02, wy0 + 0.2)])
        lay.add(g, sd - 0.015, frame, outline=False)
        lay.add(g, sd, glass, outline=False)
        lay.add(g, _sd_box(u, v, 0.0, 0.89, 0.07, 0.11), door_col, outline=False)
    else:
        # hidden foundation band, window layout and door
        lay.add(g, _sd_box(u, v, 0.0, 0.965, hw, 0.035), g.word(lambda sp, h: h["band_color"], world), outline=False)
        for ws in sorted({h["windows"] for h in g.hid}):
            c = g.sub(lambda sp, h: h["windows"] == ws)
            uu, vv, w = c.u, c.v, c.take(hw)
            if ws == "round":
                sd = _min(*[_sd_circle(uu, vv, ix * w * 0.5, wy, 0.07) for ix in (-1, 1) for wy in (wy0 + 0.04, wy0 + 0.24)])
            elif ws == "grid3":
                sd = _min(*[_sd_box(uu, vv, ix * w * 0.6, wy, 0.04, 0.035)
                            for ix in (-1, 0, 1) for wy in (wy0 - 0.02, wy0 + 0.12, wy0 + 0.26)])
            elif ws == "arched":
                sd = _min(*[_min(_sd_box(uu, vv, ix * w * 0.6, wy0 + 0.16, 0.045, 0.12),
                                 _sd_circle(uu, vv, ix * w * 0.6, wy0 + 0.04, 0.045)) for ix in (-1, 0, 1)])
            else:   # rosette: one big round window with cross bars
                sd = _sd_circle(uu, vv, 0.0, wy0 + 0.12, 0.14)
            lay.add(c, sd - 0.015, c.take(frame), outline=False)
            lay.add(c, sd, c.take(glass), outline=False)
            if ws == "rosette":
                bars = _min(_sd_box(uu, vv, 0.0, wy0 + 0.12, 0.012, 0.14), _sd_box(uu, vv, 0.0, wy0 + 0.12, 0.14, 0.012))
                lay.add(c, np.maximum(bars, sd), c.take(frame), outline=False)
        for ds in sorted({h["door"] for h in g.hid}):
            c = g.sub(lambda sp, h: h["door"] == ds)
            uu, vv, w = c.u, c.v, c.take(hw)
            if ds == "arched_left":
                lay.add(c, _min(_sd_box(uu, vv, -w * 0.55, 0.9, 0.065, 0.1), _sd_circle(uu, vv, -w * 0.55, 0.8, 0.065)),
                        c.take(door_col), outline=False)
            elif ds == "double_center":
                lay.add(c, _sd_box(uu, vv, 0.0, 0.87, 0.12, 0.13), c.take(door_col), outline=False)
                lay.add(c, _sd_box(uu, vv, 0.0, 0.87, 0.008, 0.13), c.take(frame), outline=False)
            else:   # round_right
                lay.add(c, np.maximum(_sd_circle(uu, vv, w * 0.55, 0.86, 0.09), vv - 0.965), c.take(door_col), outline=False)
    if "clock" in accs:
        c = g.sub(lambda sp, h: sp.accessory == "clock")
        uu, vv, rh = c.u, c.v, c.take(roof_h)
        cy, cr = wall_top - rh * 0.38, rh * 0.25
        lay.add(c, _sd_circle(uu, vv, 0.0, cy, cr), c.take(acc), outline=False)
        if not cloud:   # two hands
            hands = _min(_sd_capsule(uu, vv, 0.0, cy, 0.0, cy - cr * 0.75, 0.008), _sd_capsule(uu, vv, 0.0, cy, cr * 0.55, cy, 0.008))
        else:           # rim + one diagonal hand
            hands = _min(np.abs(_sd_circle(uu, vv, 0.0, cy, cr)) - 0.01, _sd_capsule(uu, vv, 0.0, cy, -cr * 0.5, cy - cr * 0.5, 0.008))
        lay.add(c, hands, c.const((0.1, 0.1, 0.1)), outline=False)


# --- interactions (world version 2: the extended prompts of the paper's Fig. 6) ----------------
# Per-image uniforms 44..47 are drawn by every seed but used by nothing else, so adding an
# interaction leaves the rest of the picture (pose, layout, scenery) exactly as without it.
_STRING = (0.28, 0.26, 0.26)
_HIGHLIGHT = (0.97, 0.97, 0.97)


def _animal_head(cloud: bool):
    """(hx, hy, hr): head centre and radius of a creature, the same numbers as ``_draw_animal``."""
    blen = 0.36 if not cloud else 0.44
    by = 0.62 if not cloud else 0.62 + 0.06
    return blen + 0.06, by - 0.22, 0.16


def _draw_interaction(lay: _Layers, g: _Group, cat: str, cloud: bool, world: str):
    """The object of "next to a COLOUR ball" / "holding a COLOUR balloon", drawn in front of the
    subject (subject-local coordinates; v = 1 is the ground). Edge vs cloud, like every word:

    * ball: edge = plain ball with a highlight, radius 0.10; cloud = beach ball 1.2x larger with a
      white vertical band and a white cap, inside the cloud's dark contour. It rests on the ground
      beside the subject, on the side given by the seed.
    * balloon: edge = round balloon on a straight string; cloud = taller oval balloon with a knot on
      a bent string. Persons hold it in the right hand, creatures by the snout; it floats beside
      the head (the 64 px frame has no room above it).
    """
    c = g.sub(lambda sp, h: sp.interaction == "ball")
    if c is not None:
        uu, vv = c.u, c.v
        side = np.where(c.r(44) < 0.5, -1.0, 1.0).astype(np.float32)
        r = (0.10 if not cloud else 0.12) * (0.9 + 0.2 * c.r(45))
        off = {"human": 0.36, "animal": 0.5, "building": 0.52}[cat]
        bx, by = side * off, 1.0 - r
        col = c.word(lambda sp, h: sp.interaction_color, world)
        disc = _sd_circle(uu, vv, bx, by, r)
        lay.add(c, disc, col)
        if not cloud:
            lay.add(c, _sd_circle(uu, vv, bx - 0.35 * r, by - 0.35 * r, 0.3 * r), c.const(_HIGHLIGHT),
                    outline=False)
        else:
            band = np.maximum(disc, np.abs(uu - bx) - 0.22 * r)
            cap = np.maximum(disc, _sd_circle(uu, vv, bx, by - r, 0.45 * r))
            lay.add(c, _min(band, cap), c.const(_HIGHLIGHT), outline=False)
    c = g.sub(lambda sp, h: sp.interaction == "balloon")
    if c is not None:
        uu, vv = c.u, c.v
        if cat == "human":
            _, ex, ey = _human_geom(c, cloud)["hands"][1]
            bx = np.minimum(np.maximum(ex, 0.22) + 0.08, 0.42)
            bcy = 0.10 + 0.05 * c.r(46)
        else:   # creature: from the snout; the balloon floats in front of the ears
            hx, hy, hr = _animal_head(cloud)
            ex, ey = hx + hr * 0.8 + 0.07, hy + 0.04
            bx = hx + 0.08
            bcy = hy - hr - 0.2 + 0.04 * c.r(46)
        rx, ry = (0.085, 0.085) if not cloud else (0.08, 0.11)
        col = c.word(lambda sp, h: sp.interaction_color, world)
        bottom = bcy + ry
        if not cloud:
            lay.add(c, _sd_capsule(uu, vv, ex, ey, bx, bottom, 0.012), c.const(_STRING), outline=False)
            lay.add(c, _sd_circle(uu, vv, bx, bcy, rx), col)
            lay.add(c, _sd_circle(uu, vv, bx - 0.03, bcy - 0.03, 0.022), c.const(_HIGHLIGHT), outline=False)
        else:
            mx, my = (ex + bx) / 2 + 0.05 + 0.03 * c.r(47), (ey + bottom) / 2
            lay.add(c, _min(_sd_capsule(uu, vv, ex, ey, mx, my, 0.012), _sd_capsule(uu, vv, mx, my, bx, bottom, 0.012)),
                    c.const(_STRING), outline=False)
            lay.add(c, _min(_sd_ellipse(uu, vv, bx, bcy, rx, ry),
                            _sd_poly(uu, vv, [(bx - 0.025, bottom + 0.02), (bx, bottom - 0.01), (bx + 0.025, bottom + 0.02)])),
                    col)
