"""Eq. 5's consistency scores: DINO-score, CLIP-score and their sum (paper Sec. III-B, VI-B2).

The paper defines the consistency of a user-received image with the cloud's images as the sum of
a visual similarity (cosine of DINO features, the *DINO-score*) and a semantic similarity (cosine
of CLIP image features, the *CLIP-score*), in expectation over the generation noises n, n' of both
sides (eq. 5). Our reading, stated once here:

* **Estimator of the expectation.** For one subject, the score is the mean cosine over *all pairs*
  (a, b) of its images in set A (e.g. the 30 edge/user test images) and set B (the 10 cloud test
  images): every pair is one draw of (n, n'). Features are L2-normalised, so a cosine is a dot
  product.
* **Mean and standard deviation** ("evaluated for the test set of each target subject", Sec.
  VI-B2): per subject, over those pair cosines (population std, ddof = 0). Summaries over subjects
  are the means of the per-subject means and of the per-subject stds.
* **The sum** (eq. 5: DINO + CLIP) is formed per pair, so its std is that of the summed pair scores
  (not the sum of the two stds).
* **UB** ("the consistency among cloud-generated images"): set B is set A itself and the n = n'
  self-pairs are excluded (a self-pair has cosine 1 and would inflate the bound). Call with
  ``feats_b=None``.

All arithmetic is float64 NumPy on host: features are small (``[N, D]``, N a few hundred).
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Optional

import numpy as np

from dekag_jax.metrics.features import FeatureFn, batched_features

__all__ = ["Score", "cosine_matrix", "pair_cosines", "subject_scores", "consistency", "consistency_from_images"]


@dataclasses.dataclass(frozen=True)
class Score:
    """Mean and population std of one subject's pair scores, and how many pairs they cover."""

    mean: float
    std: float
    n_pairs: int


def _as_features(x, what: str) -> np.ndarray:
    f = np.asarray(x, np.float64)
    if f.ndim != 2 or f.shape[0] == 0:
        raise ValueError(f"{what}: features must be [N, D] with N >= 1, got shape {f.shape}")
    if not np.all(np.isfinite(f)):
        raise ValueError(f"{what}: features contain NaN or inf")
    return f


def _normalize(f: np.ndarray, what: str) -> np.ndarray:
    n = np.linalg.norm(f, axis=-1, keepdims=True)
    if np.any(n == 0):
        raise ValueError(f"{what}: a feature vector is all zeros (its cosine is undefined)")
    return f / n


def cosine_matrix(a, b) -> np.ndarray:
    """Cosines of every row pair: ``a [Na, D]``, ``b [Nb, D]`` -> ``[Na, Nb]`` float64 (rows are
    L2-normalised first, so unnormalised features are fine)."""
    fa, fb = _as_features(a, "a"), _as_features(b, "b")
    if fa.shape[1] != fb.shape[1]:
        raise ValueError(f"feature widths differ: a has D={fa.shape[1]}, b has D={fb.shape[1]}")
    return _normalize(fa, "a") @ _normalize(fb, "b").T


def pair_cosines(a, b=None) -> np.ndarray:
    """All pair cosines, flattened: ``[Na * Nb]`` between sets a and b, or, with ``b=None``, the
    ``[Na * (Na - 1)]`` ordered pairs (i, j), i != j, within a (self-pairs excluded: the UB)."""
    if b is not None:
        return cosine_matrix(a, b).reshape(-1)
    c = cosine_matrix(a, a)
    if c.shape[0] < 2:
        raise ValueError("pairs within one set need at least 2 images (self-pairs are excluded)")
    return c[~np.eye(c.shape[0], dtype=bool)]


def _labels(labels, n: int, what: str) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.shape != (n,):
        raise ValueError(f"{what}: labels must be [N] = [{n}], got shape {lab.shape}")
    return lab


def _groups(feats_a, labels_a, feats_b, labels_b):
    """Per shared subject: (features of A, features of B or None for within-A)."""
    fa = _as_features(feats_a, "feats_a")
    la = _labels(labels_a, fa.shape[0], "labels_a")
    if feats_b is None:
        if labels_b is not None:
            raise ValueError("labels_b given without feats_b")
        return {s: (fa[la == s], None) for s in np.unique(la)}
    fb = _as_features(feats_b, "feats_b")
    lb = _labels(labels_b, fb.shape[0], "labels_b")
    shared = np.intersect1d(la, lb)
    if shared.size == 0:
        raise ValueError("no subject label appears in both sets")
    return {s: (fa[la == s], fb[lb == s]) for s in shared}


def subject_scores(feats_a, labels_a, feats_b=None, labels_b=None) -> dict:
    """One similarity score per subject: ``{label: Score}`` over the subject's pair cosines.

    Args:
      feats_a: ``[Na, D]`` features of set A (any float dtype; L2-normalised here).
      labels_a: ``[Na]`` subject labels (any hashable NumPy dtype).
      feats_b, labels_b: set B; subjects present in both sets are scored. ``None``: pairs within
        A without self-pairs (the UB of Sec. VI-B2).
    """
    out = {}
    for s, (ga, gb) in _groups(feats_a, labels_a, feats_b, labels_b).items():
        p = pair_cosines(ga, gb)
        out[s.item() if hasattr(s, "item") else s] = Score(float(p.mean()), float(p.std()), int(p.size))
    return out


def consistency(feats_a: Mapping[str, np.ndarray], labels_a, feats_b: Optional[Mapping[str, np.ndarray]] = None,
                labels_b=None) -> dict:
    """Eq. 5's consistency between image sets A and B, per subject and over subjects.

    Args:
      feats_a: ``{"dino": [Na, D1], "clip": [Na, D2]}`` (any names; each one judge's features).
      labels_a: ``[Na]`` subject labels.
      feats_b, labels_b: the same for set B, or ``None`` for the UB (pairs within A, i != j).
    Returns: ``{"per_subject": {label: {name: Score, ..., "total": Score}}, name: {"mean", "std"}
    for each judge and for "total"}`` where total is the per-pair sum over the judges (DINO + CLIP),
    and the summaries are the means over subjects of the per-subject mean and std.
    """
    names = list(feats_a)
    if not names:
        raise ValueError("feats_a holds no judge features")
    if feats_b is not None and set(feats_b) != set(names):
        raise ValueError(f"judges differ between the sets: {sorted(names)} vs {sorted(feats_b)}")
    per: dict = {}
    pairs: dict = {}
    for name in names:
        groups = _groups(feats_a[name], labels_a, None if feats_b is None else feats_b[name], labels_b)
        for s, (ga, gb) in groups.items():
            key = s.item() if hasattr(s, "item") else s
            pairs.setdefault(key, {})[name] = pair_cosines(ga, gb)
    for key, by_name in pairs.items():
        total = sum(by_name[n] for n in names)  # per pair: DINO + CLIP (eq. 5)
        per[key] = {n: Score(float(v.mean()), float(v.std()), int(v.size)) for n, v in by_name.items()}
        per[key]["total"] = Score(float(total.mean()), float(total.std()), int(total.size))
    out: dict = {"per_subject": per}
    for n in names + ["total"]:
        out[n] = {"mean": float(np.mean([per[k][n].mean for k in per])),
                  "std": float(np.mean([per[k][n].std for k in per]))}
    return out


def consistency_from_images(feature_fns: Mapping[str, FeatureFn], images_a, labels_a, images_b=None,
                            labels_b=None, *, batch: int = 128) -> dict:
    """:func:`consistency` for image sets, with any feature functions (``{"dino": fn, "clip": fn}``,
    each ``images [b, H, W, 3] -> [b, D]``; e.g. :func:`dekag_jax.models.vit.image_feature_fn`)."""
    fa = {n: batched_features(fn, images_a, batch) for n, fn in feature_fns.items()}
    fb = None if images_b is None else {n: batched_features(fn, images_b, batch) for n, fn in feature_fns.items()}
    return consistency(fa, labels_a, fb, labels_b)
