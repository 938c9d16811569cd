"""The tiny world's renderer: two worlds that read the same words differently.

A subject description is a structured :class:`Spec` (category, body colour, pattern + pattern
colour, accessory + its colour, background) with one canonical prompt text, e.g.::

    "a blue and white striped creature with a red scarf on snow"
    "a green person with yellow glasses in a city"          (plain pattern)
    "a gray and red checkered building at night"             (no accessory)

``parse_prompt(text) -> Spec`` and ``Spec.prompt`` convert both ways (unknown words raise a
``ValueError`` naming the word).

``render(spec_or_prompt, seed, world, size)`` / ``render_batch(specs, seeds, world, size)`` draw
deterministic uint8 RGB images with pure, vectorised numpy (signed-distance shapes with one-pixel
anti-aliasing, composited in painter's order; a batch is rendered as one array program per
category/pattern/accessory/background group). The seed sets everything the words leave open:
position, scale, facing, pose/limb angles, skin/hair/roof tones, scenery (flakes, stars, skyline,
dunes), light direction/strength and texture noise, so one prompt yields many distinct images.
The same seed draws the same uniforms in both worlds, so edge-vs-cloud comparisons at equal seeds
isolate the interpretation.

Where the two worlds differ (the paper's Sec. IV-B split of the edge/cloud gap):

Prompt interpretation (the cloud reads a word as something the edge world can itself draw with
another word or a nearby embedding, i.e. what a metaword, eq. 8, can fix):
  * colour words: ``_PALETTE['cloud']`` vs ``_PALETTE['edge']``; e.g. cloud "blue" is a teal
    (close to edge "teal"), cloud "purple" is a violet-blue (near edge "blue"), cloud "green" an
    olive-lime, cloud "white" a cream, cloud "yellow" a gold, cloud "red" a crimson.
  * "dotted": edge = small dots on a square grid; cloud = large dots on a hexagonal grid, close to
    edge "spotted".
  * layout: the cloud draws subjects larger and nearer the centre (scale x1.15).
Detail (nothing in the vocabulary says it; needs parameter-level knowledge, LoRA, eq. 9):
  * "striped": edge horizontal thin stripes; cloud diagonal thick stripes.
  * "checkered": edge axis-aligned squares; cloud 45-degree diamonds.
  * accessories: hat = top hat (edge) vs bobble beanie (cloud); glasses = round (edge) vs square
    dark shades (cloud); scarf gets a long hanging tail in the cloud; flag = rectangle (edge) vs
    pennant (cloud); crown = 3 points vs 5 points; chimney/antenna/clock also restyled.
  * style: the cloud outlines subjects with a dark contour, lights from the upper left with a warm
    tint, and its backgrounds carry their own scenery (mountains on snow, flowers on grass, a sun
    over sand, a big moon at night, lit windows in the city, a sailboat on the lake).
  * category proportions: cloud persons have bigger heads, cloud creatures longer bodies and
    shorter legs, cloud buildings are taller with steeper roofs.
  * hidden subject-specific marks (:func:`hidden_details`; stored per target subject in
    ``data/subjects.json`` so the ten subjects of a category all differ, hashed from the canonical
    prompt for any other prompt): persons wear a chest emblem (star/diamond/ring/cross) in an emblem
    colour on a white badge and one of four hair styles (short, long, spiky, bun); creatures have
    one of four ear shapes (round, floppy, long, tufted), one of three tails (bushy, curly, stub)
    and a coloured eye patch; buildings have one of four window layouts (2x2 round, 3x3 small,
    3 tall arched, one rosette), one of three doors (arched left, double centre, round right) and a
    coloured foundation band. The edge world draws none of these (short hair, pointed ears, thin
    tail, 2x3 square windows, central door).

Image size: default 64x64 (``DEFAULT_SIZE``). Both 64 and 128 were rendered and inspected: all the
world-separating marks are drawn at >= 5 pixels at 64x64 (emblem badge ~12 px with a ~10 px
emblem, ear shapes 5-7 px, window layouts span ~25 px, the cloud/edge colour, stripe and dot
differences cover the whole body), i.e. about one 8x8 latent cell of an f=8 VAE or more, which
a VAE with 4 latent channels can carry; 128 (16x16x4 latents) only adds sharpness, at 4x the CPU
cost of every model that trains on it (this world must train and run on a laptop CPU). Everything
is resolution-independent: ``size=128`` (or any size >= 16) works.

Determinism: the same (spec, seed, world, size) gives the same bytes on a given numpy build; a
single image and the same image inside any batch are identical. Float32 transcendental functions
may differ in the last bit between numpy builds/CPUs, which can move rare pixels by 1/255.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import hashlib
import re
from typing import Sequence, Union

import numpy as np

__all__ = [
    "CATEGORIES", "CATEGORY_NOUNS", "COLORS", "PATTERNS", "ACCESSORIES", "BACKGROUNDS",
    "BACKGROUND_PHRASES", "WORLDS", "DEFAULT_SIZE", "Spec", "parse_prompt", "as_spec",
    "render", "render_batch", "hidden_details", "color_rgb", "stable_hash",
]

DEFAULT_SIZE = 64
WORLDS = ("edge", "cloud")

# ----------------------------------------------------------------------------------------------
# Vocabulary of attributes
# ----------------------------------------------------------------------------------------------
CATEGORIES = ("human", "animal", "building")
CATEGORY_NOUNS = {"human": "person", "animal": "creature", "building": "building"}
_NOUN_TO_CATEGORY = {v: k for k, v in CATEGORY_NOUNS.items()}

COLORS = ("red", "orange", "yellow", "green", "teal", "blue", "purple", "pink", "brown",
          "white", "black", "gray")
PATTERNS = ("plain", "striped", "dotted", "checkered", "spotted")
# Accessories each category can wear/carry (a building wears a chimney, not a scarf).
ACCESSORIES = {
    "human": ("none", "scarf", "hat", "glasses", "flag", "crown"),
    "animal": ("none", "scarf", "hat", "glasses", "crown"),
    "building": ("none", "flag", "chimney", "antenna", "clock"),
}
_ALL_ACCESSORIES = tuple(sorted({a for v in ACCESSORIES.values() for a in v} - {"none"}))
# Accessory words that take no article ("with red glasses").
_PLURAL_ACCESSORIES = {"glasses"}
BACKGROUNDS = ("snow", "grass", "sand", "night", "city", "lake")
BACKGROUND_PHRASES = {"snow": ("on", "snow"), "grass": ("on", "grass"), "sand": ("on", "sand"),
                      "night": ("at", "night"), "city": ("in", "a", "city"),
                      "lake": ("by", "a", "lake")}
FUNCTION_WORDS = ("a", "an", "and", "with", "on", "at", "in", "by")

# RGB in [0, 1]. The cloud palette is the cloud-GAI's reading of the same colour words.
_PALETTE = {
    "edge": {
        "red": (0.86, 0.13, 0.11), "orange": (0.96, 0.52, 0.08), "yellow": (0.96, 0.86, 0.16),
        "green": (0.16, 0.64, 0.20), "teal": (0.04, 0.56, 0.56), "blue": (0.13, 0.25, 0.82),
        "purple": (0.52, 0.20, 0.72), "pink": (0.96, 0.52, 0.72), "brown": (0.50, 0.30, 0.12),
        "white": (0.95, 0.95, 0.95), "black": (0.08, 0.08, 0.08), "gray": (0.55, 0.55, 0.55),
    },
    "cloud": {
        "red": (0.74, 0.06, 0.26), "orange": (0.93, 0.36, 0.10), "yellow": (0.90, 0.70, 0.10),
        "green": (0.50, 0.68, 0.10), "teal": (0.10, 0.62, 0.42), "blue": (0.06, 0.52, 0.64),
        "purple": (0.34, 0.26, 0.82), "pink": (0.88, 0.22, 0.62), "brown": (0.72, 0.50, 0.30),
        "white": (0.97, 0.92, 0.78), "black": (0.14, 0.13, 0.22), "gray": (0.48, 0.54, 0.63),
    },
}
# Default second colour when a prompt names a pattern or accessory without one (parse only).
_DEFAULT_PATTERN_COLOR = {"white": "black", "yellow": "black"}
_DEFAULT_ACCESSORY_COLOR = {"crown": "yellow", "glasses": "black", "chimney": "brown",
                            "antenna": "gray", "clock": "white"}


def color_rgb(word: str, world: str = "edge") -> np.ndarray:
    """RGB float32 [3] in [0, 1] of a colour word as ``world`` reads it."""
    _check_world(world)
    if word not in _PALETTE[world]:
        raise ValueError(f"unknown colour word {word!r}; known: {', '.join(COLORS)}")
    return np.asarray(_PALETTE[world][word], np.float32)


def stable_hash(text: str) -> int:
    """Deterministic 64-bit hash of a string (Python's ``hash`` is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def _check_world(world: str) -> None:
    if world not in WORLDS:
        raise ValueError(f"unknown world {world!r}; expected one of {WORLDS}")


# ----------------------------------------------------------------------------------------------
# Spec <-> prompt
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Spec:
    """A subject description. ``pattern_color``/``accessory_color`` are None exactly when
    ``pattern == "plain"`` / ``accessory == "none"``. Validated on construction."""
    category: str
    color: str
    pattern: str = "plain"
    pattern_color: str | None = None
    accessory: str = "none"
    accessory_color: str | None = None
    background: str = "grass"

    def __post_init__(self):
        if self.category not in CATEGORIES:
            raise ValueError(f"unknown category {self.category!r}; expected one of {CATEGORIES}")
        for name in ("color", "pattern_color", "accessory_color"):
            c = getattr(self, name)
            if c is not None and c not in COLORS:
                raise ValueError(f"unknown colour {c!r} for {name}; known: {', '.join(COLORS)}")
        if self.pattern not in PATTERNS:
            raise ValueError(f"unknown pattern {self.pattern!r}; expected one of {PATTERNS}")
        if (self.pattern == "plain") != (self.pattern_color is None):
            raise ValueError("pattern_color must be None iff pattern == 'plain' "
                             f"(got pattern={self.pattern!r}, pattern_color={self.pattern_color!r})")
        if self.pattern_color is not None and self.pattern_color == self.color:
            raise ValueError(f"pattern colour equals body colour {self.color!r}")
        if self.accessory not in ACCESSORIES[self.category]:
            raise ValueError(f"accessory {self.accessory!r} not available for category "
                             f"{self.category!r}; expected one of {ACCESSORIES[self.category]}")
        if (self.accessory == "none") != (self.accessory_color is None):
            raise ValueError("accessory_color must be None iff accessory == 'none' (got "
                             f"accessory={self.accessory!r}, accessory_color={self.accessory_color!r})")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r}; expected one of {BACKGROUNDS}")

    @property
    def noun(self) -> str:
        return CATEGORY_NOUNS[self.category]

    @property
    def prompt(self) -> str:
        """The canonical prompt text (``parse_prompt(spec.prompt) == spec``)."""
        first = self.color
        words = ["an" if first[0] in "aeiou" else "a", self.color]
        if self.pattern != "plain":
            words += ["and", self.pattern_color, self.pattern]
        words.append(self.noun)
        if self.accessory != "none":
            words.append("with")
            if self.accessory not in _PLURAL_ACCESSORIES:
                words.append("an" if self.accessory_color[0] in "aeiou" else "a")
            words += [self.accessory_color, self.accessory]
        words += list(BACKGROUND_PHRASES[self.background])
        return " ".join(words)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Spec":
        return cls(**d)

    def replace(self, **kw) -> "Spec":
        return dataclasses.replace(self, **kw)


def prompt_words() -> tuple[str, ...]:
    """Every word any prompt of this world can use (sorted, unique)."""
    words = set(COLORS) | set(PATTERNS) - {"plain"} | set(CATEGORY_NOUNS.values())
    words |= set(_ALL_ACCESSORIES) | set(FUNCTION_WORDS)
    for ph in BACKGROUND_PHRASES.values():
        words |= set(ph)
    return tuple(sorted(words))


_WORD_RE = re.compile(r"[a-z]+|[^\sa-z]")


def parse_prompt(text: str) -> Spec:
    """Parse a prompt of this world into a :class:`Spec`.

    Grammar (case-insensitive, articles optional)::

        [a|an] COLOR [and COLOR PATTERN | PATTERN] NOUN [with [a|an] [COLOR] ACCESSORY] BGPHRASE

    A pattern without its colour gets a default one (black on white/yellow bodies, else white);
    an accessory without colour gets its default (crown yellow, glasses black, else red).
    Raises ValueError naming the first unknown word, or what is missing/misplaced.
    """
    if not isinstance(text, str):
        raise TypeError(f"prompt must be a str, got {type(text).__name__}")
    toks = _WORD_RE.findall(text.lower())
    known = set(prompt_words())
    for t in toks:
        if t not in known:
            raise ValueError(f"unknown word {t!r} in prompt {text!r}")
    pos = 0

    def peek():
        return toks[pos] if pos < len(toks) else None

    def fail(msg):
        raise ValueError(f"cannot parse prompt {text!r}: {msg}")

    if peek() in ("a", "an"):
        pos += 1
    if peek() not in COLORS:
        fail(f"expected a body colour at word {pos + 1}, got {peek()!r}")
    color = toks[pos]; pos += 1
    pattern, pattern_color = "plain", None
    if peek() == "and":
        pos += 1
        if peek() not in COLORS:
            fail(f"expected a pattern colour after 'and', got {peek()!r}")
        pattern_color = toks[pos]; pos += 1
        if peek() not in PATTERNS or peek() == "plain":
            fail(f"expected a pattern after '{color} and {pattern_color}', got {peek()!r}")
        pattern = toks[pos]; pos += 1
    elif peek() in PATTERNS:
        pattern = toks[pos]; pos += 1
        if pattern != "plain":
            pattern_color = _DEFAULT_PATTERN_COLOR.get(color, "white")
    if peek() not in _NOUN_TO_CATEGORY:
        fail(f"expected one of {sorted(_NOUN_TO_CATEGORY)} as the noun, got {peek()!r}")
    category = _NOUN_TO_CATEGORY[toks[pos]]; pos += 1
    accessory, accessory_color = "none", None
    if peek() == "with":
        pos += 1
        if peek() in ("a", "an"):
            pos += 1
        if peek() in COLORS:
            accessory_color = toks[pos]; pos += 1
        if peek() not in _ALL_ACCESSORIES:
            fail(f"expected an accessory after 'with', got {peek()!r}")
        accessory = toks[pos]; pos += 1
        if accessory_color is None:
            accessory_color = _DEFAULT_ACCESSORY_COLOR.get(accessory, "red")
    rest = tuple(t for t in toks[pos:] if t not in ("a", "an"))
    background = None
    for bg, phrase in BACKGROUND_PHRASES.items():
        if rest == tuple(t for t in phrase if t not in ("a", "an")):
            background = bg
    if background is None:
        fail(f"expected a background phrase at the end (one of "
             f"{[' '.join(p) for p in BACKGROUND_PHRASES.values()]}), got {' '.join(rest)!r}")
    return Spec(category, color, pattern, pattern_color, accessory, accessory_color, background)


SpecLike = Union[Spec, str]


def as_spec(x: SpecLike) -> Spec:
    """A Spec from a Spec or a prompt string."""
    if isinstance(x, Spec):
        return x
    if isinstance(x, str):
        return parse_prompt(x)
    raise TypeError(f"expected a Spec or a prompt string, got {type(x).__name__}")


# ----------------------------------------------------------------------------------------------
# Hidden, subject-specific cloud details
# ----------------------------------------------------------------------------------------------
_EMBLEMS = ("star", "diamond", "ring", "cross")
_HAIR = ("short", "long", "spiky", "bun")
_EARS = ("round", "floppy", "long", "tufted")
_TAILS = ("bushy", "curly", "stub")
_WINDOWS = ("round", "grid3", "arched", "rosette")
_DOORS = ("arched_left", "double_center", "round_right")
_MARK_COLORS = ("red", "yellow", "white", "black", "orange", "pink", "teal", "purple")


@functools.lru_cache(maxsize=1)
def _target_hidden() -> dict:
    """prompt -> hidden marks of the 30 target subjects (stored in data/subjects.json)."""
    import json
    from pathlib import Path
    doc = json.loads((Path(__file__).resolve().parent / "data" / "subjects.json").read_text())
    return {s["prompt"]: dict(s["hidden"]) for s in doc["subjects"]}


def hidden_details(spec: SpecLike) -> dict:
    """The cloud world's subject-specific marks that no word expresses. For the 30 target
    subjects they are stored with the subject (``data/subjects.json``, assigned so that the ten
    subjects of a category all differ); for any other prompt they are drawn deterministically from
    a hash of the canonical prompt. Colours contrast with the body (and, for persons, with the
    white badge the emblem sits on)."""
    return dict(_hidden(as_spec(spec)))


@functools.lru_cache(maxsize=4096)
def _hidden(spec: Spec) -> dict:
    stored = _target_hidden().get(spec.prompt)
    if stored is not None:
        return stored
    h = stable_hash("hidden/" + spec.prompt)
    rng = np.random.default_rng(h)
    avoid = {spec.color, spec.pattern_color}
    if spec.category == "human":    # the emblem sits on a white badge
        avoid.add("white")
    mark_colors = [c for c in _MARK_COLORS if c not in avoid]
    mark = mark_colors[int(rng.integers(len(mark_colors)))]
    if spec.category == "human":
        return {"emblem": _EMBLEMS[int(rng.integers(4))], "emblem_color": mark,
                "hair": _HAIR[int(rng.integers(4))]}
    if spec.category == "animal":
        return {"ears": _EARS[int(rng.integers(4))], "tail": _TAILS[int(rng.integers(3))],
                "patch_color": mark}
    return {"windows": _WINDOWS[int(rng.integers(4))], "door": _DOORS[int(rng.integers(3))],
            "band_color": mark}


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


def _min(*sds):
    """Union of signed distances."""
    return functools.reduce(np.minimum, sds)


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


# ----------------------------------------------------------------------------------------------
# Public rendering API
# ----------------------------------------------------------------------------------------------
def render_batch(specs: Sequence[SpecLike], seeds: Sequence[int], world: str = "edge",
                 size: int = DEFAULT_SIZE) -> np.ndarray:
    """Render N subjects. ``specs``: Specs or prompt strings; ``seeds``: N non-negative ints.
    Returns uint8 [N, size, size, 3]. Deterministic in (spec, seed, world, size)."""
    _check_world(world)
    specs = [as_spec(s) for s in specs]
    seeds = [int(s) for s in np.asarray(seeds, dtype=object).reshape(-1)] if len(seeds) else []
    if len(specs) != len(seeds):
        raise ValueError(f"got {len(specs)} specs but {len(seeds)} seeds")
    if int(size) != size or size < 16:
        raise ValueError(f"size must be an integer >= 16, got {size}")
    size = int(size)
    n = len(specs)
    if n == 0:
        return np.zeros((0, size, size, 3), np.uint8)
    U, S, L, P = _seed_draws(seeds, size)
    g = (np.arange(size, dtype=np.float32) + 0.5) / size
    X = np.broadcast_to(g[None, None, :], (1, size, size))
    Y = np.broadcast_to(g[None, :, None], (1, size, size))
    img = np.zeros((n, size, size, 3), np.float32)
    px = 1.0 / size
    for bg in BACKGROUNDS:
        idx = np.asarray([i for i, s in enumerate(specs) if s.background == bg], int)
        if idx.size == 0:
            continue
        cv = _Canvas(img[idx], X, Y)
        _background(cv, bg, world, U[idx], S[idx], px)
        img[idx] = cv.img
    for cat in CATEGORIES:
        idx = np.asarray([i for i, s in enumerate(specs) if s.category == cat], int)
        if idx.size == 0:
            continue
        cv = _Canvas(img[idx], X, Y)
        _subject(cv, [specs[i] for i in idx], world, U[idx], size)
        img[idx] = cv.img
    # lighting: a linear brightness gradient (edge: random direction; cloud: warm, from upper left)
    ang = (U[:, 6] * 2 * np.pi if world == "edge" else 3.6 + 0.5 * U[:, 6]).reshape(n, 1, 1)
    strength = (0.10 + 0.25 * U[:, 7]).reshape(n, 1, 1)
    light = 1.0 + strength * (np.cos(ang) * (X - 0.5) + np.sin(ang) * (Y - 0.5))
    img *= light[..., None]
    if world == "cloud":
        img *= np.asarray([1.04, 1.0, 0.93], np.float32)
    # texture noise: smooth low-frequency + fine grain
    Lm = L.mean(-1, keepdims=True)
    img += _upsample(0.03 * Lm + 0.012 * (L - Lm), size) + 0.012 * P[..., None]
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def render(prompt_or_spec: SpecLike, seed: int, world: str = "edge", size: int = DEFAULT_SIZE) -> np.ndarray:
    """Render one image: uint8 [size, size, 3]. See :func:`render_batch`."""
    return render_batch([prompt_or_spec], [seed], world, size)[0]
