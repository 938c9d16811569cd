"""Running any feature function over an image set, in batches (shared by eq. 5's scores and FID/KID).

Metrics take feature *functions* (or the feature arrays they produced), never model classes: the
judges' functions are built next to the models (``dekag_jax.models.vit.image_feature_fn``) and
passed in, so ``metrics/`` stays free of model code (tests/test_layers.py).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

FeatureFn = Callable[[np.ndarray], np.ndarray]  # images [b, H, W, C] -> features [b, D]


def batched_features(feature_fn: FeatureFn, images, batch: int = 128) -> np.ndarray:
    """Features ``[N, D]`` (host NumPy, the function's dtype) of ``images`` ``[N, ...]``, ``batch``
    images per call (the last call may be smaller: a jitted function compiles once more for it).

    ``feature_fn`` maps an image batch ``[b, ...]`` to ``[b, D]`` (a jax or NumPy array); it is
    called on slices of ``images`` as given (uint8 or float: the function decides).
    """
    if not callable(feature_fn):
        raise TypeError(f"feature_fn must be callable, got {type(feature_fn).__name__}")
    if int(batch) < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    n = len(images)
    if n == 0:
        raise ValueError("no images: need at least one to compute features")
    out = []
    for k in range(0, n, int(batch)):
        f = np.asarray(feature_fn(images[k:k + int(batch)]))
        if f.ndim != 2 or f.shape[0] != min(int(batch), n - k):
            raise ValueError(f"feature_fn returned shape {f.shape} for {min(int(batch), n - k)} images; "
                             "expected [batch, D]")
        out.append(f)
    return np.concatenate(out)
