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
  * interactions (world version 2, the extended prompts of the paper's Fig. 6; drawn by
    :func:`figures._draw_interaction`): "next to a ball" = a plain ball with a highlight on the
    ground beside the subject (edge) vs a larger beach ball with two white bands, outlined (cloud);
    "holding a balloon" = a round balloon on a straight string from the hand (persons) or the
    snout (creatures) (edge) vs a taller oval balloon with a knot on a bent string (cloud).
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

# The renderer is split by job: ``spec`` (vocabulary, Spec <-> prompt, hidden marks), ``raster``
# (signed-distance primitives, seed draws, canvas), ``scenery`` (backgrounds), ``figures``
# (patterns and subjects); this module is the public API and re-exports the public names.
from typing import Sequence

import numpy as np

from .figures import _subject
from .raster import _Canvas, _seed_draws, _upsample
from .scenery import _background
from .spec import (ACCESSORIES, BACKGROUND_PHRASES, BACKGROUNDS, CATEGORIES, CATEGORY_NOUNS, COLORS,
                   DEFAULT_SIZE, FUNCTION_WORDS, INTERACTION_PHRASES, INTERACTIONS, PATTERNS, WORLD_VERSIONS,
                   WORLDS, Spec, SpecLike, _check_world, as_spec, check_version, color_rgb, hidden_details,
                   parse_prompt, prompt_words, stable_hash)

__all__ = [
    "CATEGORIES", "CATEGORY_NOUNS", "COLORS", "PATTERNS", "ACCESSORIES", "BACKGROUNDS",
    "BACKGROUND_PHRASES", "WORLDS", "DEFAULT_SIZE", "Spec", "parse_prompt", "as_spec",
    "render", "render_batch", "hidden_details", "color_rgb", "stable_hash",
    "WORLD_VERSIONS", "INTERACTIONS", "INTERACTION_PHRASES", "check_version",
]


# ----------------------------------------------------------------------------------------------
# Public rendering API
# ----------------------------------------------------------------------------------------------
def render_batch(specs: Sequence[SpecLike], seeds: Sequence[int], world: str = "edge",
                 size: int = DEFAULT_SIZE, version: int = 1) -> np.ndarray:
    """Render N subjects. ``specs``: Specs or prompt strings of world ``version`` (2 allows the
    interaction phrases); ``seeds``: N non-negative ints. Returns uint8 [N, size, size, 3].
    Deterministic in (spec, seed, world, size); a Spec without interaction draws the same bytes
    under either version."""
    _check_world(world)
    specs = [as_spec(s, version) for s in specs]
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


def render(prompt_or_spec: SpecLike, seed: int, world: str = "edge", size: int = DEFAULT_SIZE,
           version: int = 1) -> np.ndarray:
    """Render one image: uint8 [size, size, 3]. See :func:`render_batch`."""
    return render_batch([prompt_or_spec], [seed], world, size, version)[0]
