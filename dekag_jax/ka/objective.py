"""The JSCC objective L(x, z; Theta_J | phi) of eq. 4 (paper Sec. II-B), used by pretraining (eq. 4)
and by T-KA (eq. 7, 10).

    L = w_lat  * MSE(z_check, z)                                   (i)   latent MSE
      + w_img  * MSE(x_check, x)                                   (ii)  image MSE, images in [0, 1]
      + w_perc * d_feat(x_check, x)                                (iii) perceptual distance
      + w_con  * mean |s_k - Q(s_k)|^2                             (iv)  constellation regulariser

Readings
    * (ii) x is the image paired with z. For pretraining and T-KA we pair z with x = f_LD(z), the
      latent decoder's own image (as S_EG is built in eq. 7, and as evaluation measures PSNR
      against x = f_LD(z)); then z_check = z makes every term zero, so the codec is not asked to
      fix the VAE's own reconstruction error with a decoder it does not own.
    * (iii) "features extracted ... by a pre-trained visual neural model": pluggable
      (``FeatureFn``: images [B, H, W, 3] in [0, 1] -> list of [B, h_l, w_l, c_l] maps). It must not
      be a network the evaluation uses (the DINO and CLIP judges score the results). Default for
      the tiny world: the shipped edge VAE *encoder*'s down-block outputs (a pretrained vision
      network no metric uses; ``vae_encoder_features``); with real checkpoints, LPIPS-VGG or any
      other network fits the same interface. The distance is LPIPS-style without learned
      weights: per location, unit-normalise channels, squared difference, mean over positions,
      sum over layers.
    * (iv) is ``channel.qam.constellation_loss`` on the power-normalised symbols before the
      quantiser (mean over the K symbols of each sample).

Every term is returned per sample ``[B]`` as well, so a caller can weight samples (CALA) or
average over conditions; ``eq4_loss`` returns the batch mean and a metrics dict.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from dekag_jax.channel import qam as _qam

__all__ = ["LossWeights", "FeatureFn", "perceptual_distance", "vae_encoder_features", "eq4_terms", "eq4_loss"]

FeatureFn = Callable[[jax.Array], Sequence[jax.Array]]


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """Weights of the four eq. 4 terms (the paper gives none; ours are in configs/jscc_pretrain.py)."""
    latent: float = 1.0
    image: float = 1.0
    perceptual: float = 0.1
    constellation: float = 0.05

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not (isinstance(v, (int, float)) and v >= 0):
                raise ValueError(f"LossWeights: {f.name}={v!r} must be a number >= 0")


def _mean_per_sample(x):
    return jnp.mean(x.reshape(x.shape[0], -1), axis=-1)


def perceptual_distance(feats_a: Sequence[jax.Array], feats_b: Sequence[jax.Array], eps: float = 1e-10) -> jax.Array:
    """LPIPS-style distance without learned channel weights: sum over layers of the mean over
    positions of |f_a/|f_a| - f_b/|f_b||^2 (channel-wise unit norm per position). Each feature
    ``[B, h, w, c]``; returns ``[B]`` float32 in [0, 4 * layers]."""
    if len(feats_a) != len(feats_b) or not feats_a:
        raise ValueError(f"perceptual_distance: got {len(feats_a)} and {len(feats_b)} feature maps")
    total = 0.0
    for a, b in zip(feats_a, feats_b):
        a = a.astype(jnp.float32)
        b = b.astype(jnp.float32)
        a = a / jnp.sqrt(jnp.sum(a * a, axis=-1, keepdims=True) + eps)
        b = b / jnp.sqrt(jnp.sum(b * b, axis=-1, keepdims=True) + eps)
        total = total + _mean_per_sample(jnp.sum((a - b) ** 2, axis=-1))
    return total


def vae_encoder_features(vae) -> Callable[[Any, jax.Array], list]:
    """Feature network from an SD-style VAE's encoder: ``features(vae_params, images)`` returns the
    outputs of its down blocks (after each block's downsampler) for images [B, H, W, 3] in [0, 1]
    (mapped to [-1, 1] as the VAE expects). Bind the parameters (``lambda im: f(params, im)``) to
    get a ``FeatureFn``; pass them as a jit argument rather than closing over them, so they are not
    baked into the compiled program. They are constants of the loss (not trained)."""
    from dekag_jax.models.vae import DownEncoderBlock2D

    def is_block(mdl, method_name):
        return isinstance(mdl, DownEncoderBlock2D) and method_name == "__call__"

    def features(vae_params, images):
        x = images.astype(jnp.float32) * 2.0 - 1.0
        _, state = vae.apply({"params": vae_params}, x, method=vae.encode, capture_intermediates=is_block,
                             mutable=["intermediates"])
        blocks = state["intermediates"]["encoder"]
        names = sorted((k for k in blocks if k.startswith("down_blocks.")), key=lambda k: int(k.split(".")[1]))
        return [blocks[k]["__call__"][0] for k in names]

    return features


def eq4_terms(*, z: jax.Array, z_check: jax.Array, x: jax.Array, x_check: jax.Array, symbols: jax.Array,
              qam_order: int, features: FeatureFn | None, mask: jax.Array | None = None,
              feats_x: Sequence[jax.Array] | None = None) -> dict:
    """The four terms per sample, each ``[B]`` float32: ``latent``, ``image``, ``perceptual``
    (zeros when ``features`` is None), ``constellation`` (over the used symbol slots ``mask``
    [B, K] bool of a mixed-rate transmission; all slots when None). ``feats_x`` may carry
    precomputed features of x (they are constants)."""
    if z.shape != z_check.shape:
        raise ValueError(f"eq4_terms: z {z.shape} and z_check {z_check.shape} differ")
    if x.shape != x_check.shape:
        raise ValueError(f"eq4_terms: x {x.shape} and x_check {x_check.shape} differ")
    lat = _mean_per_sample((z_check.astype(jnp.float32) - z.astype(jnp.float32)) ** 2)
    img = _mean_per_sample((x_check.astype(jnp.float32) - x.astype(jnp.float32)) ** 2)
    if features is not None:
        fx = feats_x if feats_x is not None else [jax.lax.stop_gradient(f) for f in features(x)]
        perc = perceptual_distance(features(x_check), fx)
    else:
        perc = jnp.zeros_like(lat)
    if mask is None:
        con = _qam.constellation_loss(symbols, qam_order, axis=-1).astype(jnp.float32)
    else:
        d2 = jnp.abs(symbols - jax.lax.stop_gradient(_qam.nearest_point(symbols, qam_order))) ** 2
        con = (jnp.sum(jnp.where(mask, d2, 0), axis=-1) / jnp.maximum(jnp.sum(mask, axis=-1), 1)).astype(jnp.float32)
    return {"latent": lat, "image": img, "perceptual": perc, "constellation": con}


def eq4_loss(terms: dict, weights: LossWeights, sample_weights: jax.Array | None = None):
    """Weighted sum of ``eq4_terms``: ``(loss scalar, metrics dict of batch means)``; metrics also hold
    ``psnr`` (dB, mean over samples of 10 log10(1 / image MSE))."""
    per = (weights.latent * terms["latent"] + weights.image * terms["image"]
           + weights.perceptual * terms["perceptual"] + weights.constellation * terms["constellation"])
    if sample_weights is None:
        loss = jnp.mean(per)
    else:
        loss = jnp.sum(per * sample_weights) / jnp.maximum(jnp.sum(sample_weights), 1e-12)
    metrics = {k: jnp.mean(v) for k, v in terms.items()}
    metrics["psnr"] = jnp.mean(-10.0 * jnp.log10(jnp.maximum(terms["image"], 1e-10)))
    metrics["loss"] = loss
    return loss, metrics
