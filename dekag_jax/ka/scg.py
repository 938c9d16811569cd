"""S_CG from the cloud (Algorithm 1 step 1, paper Sec. IV-A eq. 6): cloud-generated images of a
target subject, resized to the edge's resolution and encoded with the edge's latent encoder f_LE.

One interface, :func:`build_scg`, with a *source* that produces the cloud images:

* ``"world"`` (default): the tiny world's cloud renderer (:func:`dekag_jax.world.splits.cloud_samples`),
  40 ``cg_train`` and 10 ``cg_test`` images per subject from the fixed seeds of ``world/splits.py``;
* ``"folder:<dir>"``: images the user has, ``<dir>/<subject>/cg_train/*`` and ``<dir>/<subject>/cg_test/*``
  (png/jpg/webp, sorted by name; any size, RGB).

The cloud side may have another latent space than the edge (the paper: PixArt-Sigma vs SD2.1),
so images, not latents, cross: they are resized to the edge resolution (antialiased bilinear)
and re-encoded by the edge's VAE (posterior mean, as :func:`dekag_jax.diffusion.generate.encode_images`).
A diffusers text-to-image pipeline as a source (the issue's third one) is not built yet.

Shapes: ``train_latents [N_CG, h, w, C]`` float32 (diffusion latents, = scaling_factor * VAE mean),
``train_images``/``test_images`` uint8 ``[N, H, W, 3]`` at the edge resolution ``H = W = sample_size *
vae_scale_factor``. Encoded once: an in-memory cache per (source, subject, pipeline) and, with
``cache_dir``, an ``.npz`` per subject keyed by the source, the size and a fingerprint of the VAE
weights (a retrained VAE never reads stale latents).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["SCG", "edge_resolution", "cloud_images", "build_scg", "vae_fingerprint"]

_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_MEMORY: dict = {}


@dataclasses.dataclass(frozen=True)
class SCG:
    """One subject's cloud set: ``train_latents`` ``[N, h, w, C]`` (S_CG of eqs. 6, 8, 9),
    ``train_images`` ``[N, H, W, 3]`` uint8 and ``test_images`` ``[M, H, W, 3]`` uint8 (the cloud side of
    eq. 5), at the edge resolution. ``prompt`` is the subject's prompt v."""

    subject: str
    prompt: str
    source: str
    train_latents: np.ndarray
    train_images: np.ndarray
    test_images: np.ndarray


def edge_resolution(pipe) -> int:
    """Image side of the edge pipeline: UNet sample_size x VAE downsampling (64 in the tiny world)."""
    from dekag_jax.diffusion.generate import vae_scale_factor

    ss = pipe.unet.config.sample_size if pipe.unet is not None else None
    if not isinstance(ss, int):
        raise ValueError(f"edge UNet sample_size must be one int, got {ss!r}")
    return ss * vae_scale_factor(pipe)


def _resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 [N, H, W, 3] -> uint8 [N, size, size, 3] (antialiased bilinear; identity if equal)."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"cloud images must be [N, H, W, 3] RGB, got shape {x.shape}")
    if x.shape[1:3] == (size, size):
        return x.astype(np.uint8)
    y = jax.image.resize(jnp.asarray(x, jnp.float32), (x.shape[0], size, size, 3), "bilinear", antialias=True)
    return np.asarray(jnp.clip(jnp.round(y), 0, 255)).astype(np.uint8)


def _folder_images(root: str, subject: str, split: str) -> np.ndarray:
    from PIL import Image

    d = Path(root) / subject / split
    if not d.is_dir():
        raise FileNotFoundError(f"S_CG folder source: {d} does not exist (expected <dir>/<subject>/{split}/*.png)")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in _IMAGE_EXTS)
    if not files:
        raise FileNotFoundError(f"S_CG folder source: no images ({', '.join(_IMAGE_EXTS)}) in {d}")
    imgs = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    shapes = {i.shape for i in imgs}
    if len(shapes) != 1:
        # different sizes: bring each to the first one's size before stacking (resized again below)
        h, w = imgs[0].shape[:2]
        imgs = [np.asarray(Image.fromarray(i).resize((w, h), Image.BILINEAR)) for i in imgs]
    return np.stack(imgs)


def cloud_images(source: str, subject: str, split: str, size: int) -> np.ndarray:
    """Cloud images uint8 ``[N, size, size, 3]`` of a subject's ``cg_train`` or ``cg_test`` split from
    ``source`` (``"world"`` or ``"folder:<dir>"``)."""
    if split not in ("cg_train", "cg_test"):
        raise ValueError(f"S_CG split must be 'cg_train' or 'cg_test', got {split!r}")
    if source == "world":
        from dekag_jax.world.render import DEFAULT_SIZE
        from dekag_jax.world.splits import cloud_samples

        # render at the world's own size (the cloud's resolution), then resize to the edge's
        return _resize_uint8(cloud_samples(subject, split, DEFAULT_SIZE), size)
    if source.startswith("folder:"):
        return _resize_uint8(_folder_images(source[len("folder:"):], subject, split), size)
    raise ValueError(f"unknown S_CG source {source!r}; use 'world' or 'folder:<dir>'")


def params_fingerprint(*trees) -> str:
    """sha1 (12 hex) of parameter trees (shapes, dtypes and values): a cache key that changes
    whenever the model that produced the cached arrays does."""
    h = hashlib.sha1()
    for leaf in jax.tree_util.tree_leaves(trees):
        a = np.asarray(leaf)
        h.update(str(a.shape).encode() + str(a.dtype).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:12]


def vae_fingerprint(pipe) -> str:
    """The cache key of encoded latents: the fingerprint of the VAE weights."""
    return params_fingerprint(pipe.vae_params)


def _prompt_of(subject: str, prompt: str | None) -> str:
    if prompt is not None:
        return prompt
    from dekag_jax.world.subjects import get_subject

    return get_subject(subject).prompt


def build_scg(pipe, subject: str, *, source: str = "world", prompt: str | None = None,
              cache_dir: str | os.PathLike | None = None, batch: int = 64) -> SCG:
    """S_CG of one subject (see the module doc). ``prompt`` defaults to the tiny world subject's
    prompt (a folder source for other subjects must pass it). Encodes once per process and, with
    ``cache_dir``, once per (source, subject, size, VAE) on disk."""
    from dekag_jax.diffusion.generate import encode_images

    size = edge_resolution(pipe)
    fp = vae_fingerprint(pipe)
    key = (source, subject, size, fp)
    prompt = _prompt_of(subject, prompt)
    if key in _MEMORY:
        z, tr, te = _MEMORY[key]
        return SCG(subject, prompt, source, z, tr, te)
    path = None
    if cache_dir is not None:
        tag = hashlib.sha1(f"{source}|{subject}|{size}|{fp}".encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"scg_{subject}_{tag}.npz"
        if path.is_file():
            with np.load(path) as d:
                z, tr, te = d["train_latents"], d["train_images"], d["test_images"]
            _MEMORY[key] = (z, tr, te)
            return SCG(subject, prompt, source, z, tr, te)
    tr = cloud_images(source, subject, "cg_train", size)
    te = cloud_images(source, subject, "cg_test", size)
    z = np.concatenate([np.asarray(encode_images(pipe, jnp.asarray(tr[i:i + batch], jnp.float32) / 255.0))
                        for i in range(0, len(tr), batch)])
    _MEMORY[key] = (z, tr, te)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, train_latents=z, train_images=tr, test_images=te)
        os.replace(tmp, path)
    return SCG(subject, prompt, source, z, tr, te)
