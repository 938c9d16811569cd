"""Deterministic image/prompt pools of the tiny world for the pretraining scripts.

Thin wrappers over ``dekag_jax.world`` (render_batch, random_specs, target_subjects) that every
``scripts/pretrain_*.py`` uses, so all of them draw their data the same way:

* ``spec_pool(n, seed, target_frac)``: n Specs, a fraction of them the 30 target subjects (so
  the models know the target prompts in the EDGE world's reading), the rest random prompts;
* ``render_pool(specs, seed, world)``: one render per spec, with render seeds drawn from
  ``seed`` (disjoint from the subjects' fixed split seeds with overwhelming probability:
  seeds are 31-bit);
* ``image_pool(n, seed, worlds)``: images of both worlds, for the VAE and the DINO judge.

``version`` (default 1) is the tiny world's version: 2 draws the random prompts with the extended
prompts' interaction phrases (the target subjects never carry one). ``DEKAG_RENDER_WORKERS`` > 1
renders a pool's chunks in that many processes (spawned: the parent may hold a GPU); the images
are identical to one process's, since every chunk is a pure function of its specs and seeds.
"""
from __future__ import annotations

import os

import numpy as np

from dekag_jax.world import DEFAULT_SIZE, random_specs, render_batch, target_subjects


def image_size() -> int:
    return DEFAULT_SIZE


def spec_pool(n: int, seed: int, target_frac: float = 0.25, version: int = 1) -> list:
    """``n`` Specs: ``round(n * target_frac)`` drawn uniformly from the 30 target subjects, the
    rest from the random-prompt distribution of world ``version`` (targets included at their
    natural rate; under version 2 a target subject may then appear with an interaction, which
    is what the edge model should be able to draw)."""
    rng = np.random.default_rng([seed, 0x5EC])
    n_t = int(round(n * target_frac))
    targets = [s.spec for s in target_subjects()]
    specs = [targets[i] for i in rng.integers(0, len(targets), size=n_t)]
    specs += random_specs(int(rng.integers(0, 2**31 - 1)), n - n_t, include_targets=True, version=version)
    order = rng.permutation(n)
    return [specs[i] for i in order]


def _render_chunk(args):
    specs, seeds, world, size = args
    return render_batch(specs, seeds, world, size, version=2)   # any Spec renders under version 2


def render_workers() -> int:
    return max(1, int(os.environ.get("DEKAG_RENDER_WORKERS", "1")))


def render_pool(specs, seed: int, world: str, size: int | None = None, chunk: int = 256,
                workers: int | None = None) -> np.ndarray:
    """uint8 [len(specs), size, size, 3], one render per spec, seeds from ``(seed, world)``.
    ``workers`` (default ``DEKAG_RENDER_WORKERS``, else 1) processes render the chunks."""
    size = size or DEFAULT_SIZE
    rs = np.random.default_rng([seed, 0xD0 if world == "edge" else 0xC1]).integers(0, 2**31 - 1, size=len(specs))
    out = np.empty((len(specs), size, size, 3), np.uint8)
    jobs = [(list(specs[k:k + chunk]), rs[k:k + chunk].tolist(), world, size) for k in range(0, len(specs), chunk)]
    workers = render_workers() if workers is None else max(1, int(workers))
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=mp.get_context("spawn")) as ex:
            results = list(ex.map(_render_chunk, jobs))
    else:
        results = map(_render_chunk, jobs)
    for k, imgs in zip(range(0, len(specs), chunk), results):
        out[k:k + chunk] = imgs
    return out


def image_pool(n_per_world: int, seed: int, worlds=("edge", "cloud"), target_frac: float = 0.25,
               version: int = 1) -> np.ndarray:
    """uint8 [n_per_world * len(worlds), S, S, 3]: renders of both worlds (different specs each)."""
    parts = [render_pool(spec_pool(n_per_world, seed + 101 * i, target_frac, version), seed + 101 * i, w)
             for i, w in enumerate(worlds)]
    return np.concatenate(parts)
