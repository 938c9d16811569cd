"""FID and KID over any feature function (paper Sec. VI-B4, Fig. 12b reports FID).

* **FID** (Heusel et al. 2017): ``|mu_a - mu_b|^2 + Tr(S_a) + Tr(S_b) - 2 Tr sqrt(S_a S_b)`` with
  the features' means and (ddof = 1) covariances, as pytorch-fid and clean-fid. ``Tr sqrt(S_a S_b)``
  equals ``Tr sqrt(S_a^1/2 S_b S_a^1/2)``, a symmetric PSD matrix, so two ``eigh`` calls give it
  (eigenvalues clipped at 0 against round-off) instead of a general ``sqrtm``
  (``jax.scipy.linalg.sqrtm`` runs on CPU only, SciPy's may return complex values).
* **KID** (Binkowski et al. 2018): the unbiased MMD^2 with the polynomial kernel
  ``k(x, y) = (x . y / D + 1)^3``, averaged over random subsets of both sets (torch-fidelity's and
  clean-fid's estimator): mean and population std over the subsets.

Precision: the statistics are computed on host in float64 NumPy. JAX runs in float32 unless x64 is
switched on globally (a process-wide setting a library must not change), and FID of close sets is a
small difference of large traces; the D x D matrices (D <= 2048) are cheap on host. Feature
extraction itself runs wherever the feature function runs (device).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from dekag_jax.metrics.features import FeatureFn, batched_features

__all__ = ["feature_statistics", "frechet_distance", "fid_from_features", "fid", "KID", "kid_from_features", "kid"]


def _feats(x, what: str, min_n: int = 2) -> np.ndarray:
    f = np.asarray(x, np.float64)
    if f.ndim != 2:
        raise ValueError(f"{what}: features must be [N, D], got shape {f.shape}")
    if f.shape[0] < min_n:
        raise ValueError(f"{what}: need at least {min_n} feature vectors, got {f.shape[0]}")
    if not np.all(np.isfinite(f)):
        raise ValueError(f"{what}: features contain NaN or inf")
    return f


def feature_statistics(feats) -> tuple[np.ndarray, np.ndarray]:
    """(mean ``[D]``, covariance ``[D, D]``, ddof = 1) in float64 of features ``[N, D]``, N >= 2."""
    f = _feats(feats, "feats")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu_a, sigma_a, mu_b, sigma_b) -> float:
    """Fréchet distance of two Gaussians ``N(mu_a, sigma_a)``, ``N(mu_b, sigma_b)`` (``[D]``, ``[D, D]``)."""
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    sa, sb = np.asarray(sigma_a, np.float64), np.asarray(sigma_b, np.float64)
    d = mu_a.shape[0]
    if mu_a.shape != (d,) or mu_b.shape != (d,) or sa.shape != (d, d) or sb.shape != (d, d):
        raise ValueError(f"shapes do not match: mu {mu_a.shape}, {mu_b.shape}; sigma {sa.shape}, {sb.shape}")
    ra = _psd_sqrt(sa)
    m = ra @ sb @ ra
    w = np.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = float(np.sum(np.sqrt(np.clip(w, 0.0, None))))
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(sa) + np.trace(sb) - 2.0 * tr_covmean)


def fid_from_features(feats_a, feats_b) -> float:
    """FID between two feature sets ``[Na, D]``, ``[Nb, D]`` (Na, Nb >= 2)."""
    fa, fb = _feats(feats_a, "feats_a"), _feats(feats_b, "feats_b")
    if fa.shape[1] != fb.shape[1]:
        raise ValueError(f"feature widths differ: {fa.shape[1]} vs {fb.shape[1]}")
    return frechet_distance(*feature_statistics(fa), *feature_statistics(fb))


def fid(feature_fn: FeatureFn, images_a, images_b, *, batch: int = 128) -> float:
    """FID between two image sets under any feature function (``images [b, ...] -> [b, D]``)."""
    return fid_from_features(batched_features(feature_fn, images_a, batch),
                             batched_features(feature_fn, images_b, batch))


class KID(NamedTuple):
    mean: float  # mean over subsets of the unbiased MMD^2
    std: float   # population std over subsets
    subset_size: int
    num_subsets: int


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    m = x.shape[0]
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2.0 * kxy.sum() / (m * m))


def kid_from_features(feats_a, feats_b, *, subset_size: Optional[int] = None, num_subsets: int = 100,
                      seed: int = 0) -> KID:
    """KID between feature sets ``[Na, D]`` and ``[Nb, D]``.

    Each of ``num_subsets`` rounds draws ``subset_size`` rows of each set without replacement
    (NumPy ``default_rng(seed)``) and computes the unbiased MMD^2. ``subset_size`` defaults to
    ``min(1000, Na, Nb)`` (torch-fidelity's 1000, capped for small sets); larger than a set is an
    error. The estimate is unbiased, so it can be slightly negative for equal distributions.
    """
    fa, fb = _feats(feats_a, "feats_a"), _feats(feats_b, "feats_b")
    if fa.shape[1] != fb.shape[1]:
        raise ValueError(f"feature widths differ: {fa.shape[1]} vs {fb.shape[1]}")
    n = min(fa.shape[0], fb.shape[0])
    m = min(1000, n) if subset_size is None else int(subset_size)
    if m < 2 or m > n:
        raise ValueError(f"subset_size={m} must be in [2, {n}] (the smaller set has {n} feature vectors)")
    if int(num_subsets) < 1:
        raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
    rng = np.random.default_rng(seed)
    vals = np.array([_mmd2_unbiased(fa[rng.choice(fa.shape[0], m, replace=False)],
                                    fb[rng.choice(fb.shape[0], m, replace=False)]) for _ in range(int(num_subsets))])
    return KID(float(vals.mean()), float(vals.std()), m, int(num_subsets))


def kid(feature_fn: FeatureFn, images_a, images_b, *, subset_size: Optional[int] = None, num_subsets: int = 100,
        seed: int = 0, batch: int = 128) -> KID:
    """KID between two image sets under any feature function (see :func:`kid_from_features`)."""
    return kid_from_features(batched_features(feature_fn, images_a, batch), batched_features(feature_fn, images_b, batch),
                             subset_size=subset_size, num_subsets=num_subsets, seed=seed)
