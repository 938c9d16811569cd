"""The generic corpus and the endless training stream of the tiny world.

* :func:`generic_corpus`: about 1,000 edge-world images of random NON-target prompts, the analogue
  of the paper's 1,000 DiffusionDB images on which the JSCC codec is pretrained (Sec. VI-A4), so
  the codec starts out misaligned with the target subjects' latents.
* :func:`random_specs` / :func:`training_batch` / :func:`training_stream`: deterministic
  (prompt, image) pairs from a seed for pretraining the edge UNet / VAE / text encoder on
  edge-world renders of random prompts.

Distribution of a random spec: category, body colour, background uniform; pattern uniform over
the 5 patterns (so 20% plain), pattern colour uniform over the other 11 colours; accessory uniform
over the category's options including none, its colour uniform over 12 colours. With
``include_targets=False`` the 30 target specs are rejected (redrawn).

World version 2 (``version=2``; default 1, whose streams are unchanged): after the version-1 draws
of a spec, an interaction is drawn uniformly over the category's options including none (persons
and creatures: none / ball / balloon, a third each; buildings: none / ball, half each) and its
colour uniformly over the 12 colours. ``include_targets=False`` then rejects every spec whose
subject is a target (``spec.base``), with or without an interaction: a target subject's extended
prompt is never in the corpus, so G-KA can test an aligned edge model on prompts it never saw
(issue 17); the target subjects' own prompts (S_CG) never carry an interaction.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from .render import (ACCESSORIES, BACKGROUNDS, CATEGORIES, COLORS, DEFAULT_SIZE, INTERACTIONS, PATTERNS, Spec,
                     check_version, render_batch)
from .subjects import target_specs

__all__ = ["random_specs", "generic_corpus", "training_batch", "training_stream", "seed_from_key"]

_CORPUS_SALT = 0x6E6E
_STREAM_SALT = 0x7575


def seed_from_key(key_or_seed) -> np.random.SeedSequence:
    """A numpy SeedSequence from an int seed, a sequence of ints, or a JAX PRNG key (raw uint32
    [2] or typed key)."""
    if isinstance(key_or_seed, np.random.SeedSequence):
        return key_or_seed
    if isinstance(key_or_seed, (int, np.integer)):
        if key_or_seed < 0:
            raise ValueError(f"seed must be non-negative, got {key_or_seed}")
        return np.random.SeedSequence(int(key_or_seed))
    k = key_or_seed
    if hasattr(k, "dtype") and "key" in str(k.dtype):   # typed JAX key
        import jax
        k = jax.random.key_data(k)
    arr = np.asarray(k)
    if arr.dtype.kind not in "ui":
        raise TypeError(f"expected an int seed or an integer key array, got dtype {arr.dtype}")
    return np.random.SeedSequence([int(x) for x in arr.astype(np.uint64).reshape(-1)])


def _draw_spec(rng: np.random.Generator, version: int = 1) -> Spec:
    cat = CATEGORIES[rng.integers(len(CATEGORIES))]
    color = COLORS[rng.integers(len(COLORS))]
    pattern = PATTERNS[rng.integers(len(PATTERNS))]
    pcol = None
    if pattern != "plain":
        others = [c for c in COLORS if c != color]
        pcol = others[rng.integers(len(others))]
    acc = ACCESSORIES[cat][rng.integers(len(ACCESSORIES[cat]))]
    acol = None if acc == "none" else COLORS[rng.integers(len(COLORS))]
    bg = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    if version < 2:
        return Spec(cat, color, pattern, pcol, acc, acol, bg)
    inter = INTERACTIONS[cat][rng.integers(len(INTERACTIONS[cat]))]
    icol = None if inter == "none" else COLORS[rng.integers(len(COLORS))]
    return Spec(cat, color, pattern, pcol, acc, acol, bg, inter, icol)


def random_specs(key_or_seed, n: int, include_targets: bool = False, version: int = 1) -> list[Spec]:
    """``n`` random Specs of world ``version``, deterministic in ``key_or_seed`` (int or JAX key).
    Without ``include_targets`` no spec's subject (``spec.base``) is one of the 30 targets."""
    version = check_version(version)
    rng = np.random.default_rng(seed_from_key(key_or_seed))
    targets = target_specs()
    out = []
    while len(out) < n:
        sp = _draw_spec(rng, version)
        if include_targets or sp.base not in targets:
            out.append(sp)
    return out


def generic_corpus(n: int = 1000, seed: int = 0, size: int = DEFAULT_SIZE,
                   world: str = "edge", version: int = 1) -> tuple[list[str], np.ndarray]:
    """(prompts list[str], images uint8 [n, size, size, 3]) of random non-target prompts of world
    ``version``, rendered in the edge world; deterministic in (n, seed, size, version). Image i
    uses render seed ``seeds[i]`` drawn from the same stream."""
    ss = np.random.SeedSequence([int(seed), _CORPUS_SALT])
    specs = random_specs(ss.spawn(1)[0], n, include_targets=False, version=version)
    rseeds = np.random.default_rng(ss.spawn(2)[1]).integers(0, 2**31 - 1, size=n)
    imgs = np.empty((n, size, size, 3), np.uint8)
    for k in range(0, n, 128):
        imgs[k:k + 128] = render_batch(specs[k:k + 128], rseeds[k:k + 128].tolist(), world, size, version)
    return [s.prompt for s in specs], imgs


def training_batch(seed: int, step: int, batch_size: int, include_targets: bool = False,
                   world: str = "edge", size: int = DEFAULT_SIZE, version: int = 1) -> tuple[list[str], np.ndarray]:
    """Batch ``step`` of the training stream ``seed`` of world ``version``: (prompts, uint8
    [B, size, size, 3]). A pure function of its arguments, so training can resume at any step."""
    ss = np.random.SeedSequence([int(seed), _STREAM_SALT, int(step)])
    a, b = ss.spawn(2)
    specs = random_specs(a, batch_size, include_targets, version)
    rseeds = np.random.default_rng(b).integers(0, 2**31 - 1, size=batch_size).tolist()
    return [s.prompt for s in specs], render_batch(specs, rseeds, world, size, version)


def training_stream(seed: int, batch_size: int, include_targets: bool = False, world: str = "edge",
                    size: int = DEFAULT_SIZE, start_step: int = 0,
                    version: int = 1) -> Iterator[tuple[list[str], np.ndarray]]:
    """Endless deterministic stream of :func:`training_batch` for steps start_step, start_step+1, ..."""
    step = start_step
    while True:
        yield training_batch(seed, step, batch_size, include_targets, world, size, version)
        step += 1
