"""Image-quality and consistency metrics: pure math over arrays and feature *functions*.

* ``image``: PSNR.
* ``consistency``: eq. 5's DINO-score, CLIP-score and their sum, per subject (mean, std), with the
  UB's self-pair exclusion.
* ``fid``: FID (eigh-based matrix square root, float64) and KID (unbiased polynomial-kernel MMD^2
  over subsets).
* ``features``: run any feature function over an image set in batches.

No model code is imported here (tests/test_layers.py): the judges' feature functions come from
``dekag_jax.models.vit.image_feature_fn``.
"""
from dekag_jax.metrics.consistency import Score, consistency, consistency_from_images, cosine_matrix, pair_cosines, \
    subject_scores
from dekag_jax.metrics.features import batched_features
from dekag_jax.metrics.fid import KID, feature_statistics, fid, fid_from_features, frechet_distance, kid, \
    kid_from_features
from dekag_jax.metrics.image import psnr

__all__ = ["psnr", "Score", "consistency", "consistency_from_images", "cosine_matrix", "pair_cosines",
           "subject_scores", "batched_features", "KID", "feature_statistics", "fid", "fid_from_features",
           "frechet_distance", "kid", "kid_from_features"]
