"""Fixed per-subject seeds of the paper's sample sets (Sec. VI-A3) and the cloud sample source.

Splits (sizes as in the paper, seeds of different splits of a subject disjoint):

* ``cg_train``: 40 cloud images per subject, the set S_CG of eqs. 6, 8, 9 (N_CG = 40);
* ``cg_test``: 10 more cloud images per subject, for the consistency scores of eq. 5;
* ``eg_train``: 100 seeds for the aligned edge model's latents, the set S_EG of eqs. 7, 10
  (N_EG = 100; the latents are generated later by the aligned edge model from these seeds);
* ``eg_test``: 30 seeds for edge test latents (consistency and transmission tests).

The renderer's cloud world plays PixArt-Sigma's role: prompt + seeds in, images out
(:func:`cloud_generate`, :func:`cloud_samples`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .render import DEFAULT_SIZE, render_batch, SpecLike
from .subjects import Subject, _load, get_subject

__all__ = ["SPLITS", "SPLIT_SIZES", "split_seeds", "cloud_samples", "cloud_generate"]

SPLIT_SIZES = {"cg_train": 40, "cg_test": 10, "eg_train": 100, "eg_test": 30}
SPLITS = tuple(SPLIT_SIZES)


def split_seeds(subject_id: "str | Subject", split: str) -> list[int]:
    """The fixed seeds of ``split`` for a subject (sorted ints)."""
    if split not in SPLIT_SIZES:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    sid = get_subject(subject_id).id
    for s in _load()["subjects"]:
        if s["id"] == sid:
            seeds = list(s["seeds"][split])
            if len(seeds) != SPLIT_SIZES[split]:
                raise ValueError(f"data file: {sid}/{split} has {len(seeds)} seeds, expected {SPLIT_SIZES[split]}")
            return seeds
    raise KeyError(sid)  # pragma: no cover - get_subject already checked


def cloud_generate(prompt: SpecLike, seeds: Sequence[int], size: int = DEFAULT_SIZE) -> np.ndarray:
    """Cloud-GAI images of any prompt (or Spec): uint8 [len(seeds), size, size, 3]."""
    return render_batch([prompt] * len(seeds), list(seeds), "cloud", size)


def cloud_samples(subject: "str | Subject", split: str = "cg_train", size: int = DEFAULT_SIZE) -> np.ndarray:
    """The cloud images of a subject's ``cg_train`` or ``cg_test`` split: uint8 [N, size, size, 3]
    (N = 40 or 10). The ``eg_*`` splits are edge-model seeds and have no cloud images."""
    if split not in ("cg_train", "cg_test"):
        raise ValueError(f"cloud samples exist for 'cg_train' and 'cg_test' only, got {split!r} "
                         "(eg_* seeds are for the edge model's latents)")
    subj = get_subject(subject)
    return cloud_generate(subj.spec, split_seeds(subj, split), size)
