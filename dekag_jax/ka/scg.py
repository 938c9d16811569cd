"""S_CG from the cloud (Algorithm 1 step 1, paper Sec. IV-A eq. 6): cloud-generated images of a
target subject, resized to the edge's resolution and encoded with the edge's latent encoder f_LE.

One interface, :func:`build_scg`, with a *source* that produces the cloud images:

* ``"world"`` (default): the tiny world's cloud renderer (:func:`dekag_jax.world.splits.cloud_samples`),
  40 ``cg_train`` and 10 ``cg_test`` images per subject from the fixed seeds of ``world/splits.py``;
* ``"folder:<dir>"``: images the user has, ``<dir>/<subject>/cg_train/*`` and ``<dir>/<subject>/cg_test/*``
  (png/jpg/webp, sorted by name; any size, RGB);
* ``"diffusers:<dir>"`` or ``"diffusers:hf:<repo id>"``: any diffusers text-to-image pipeline (the paper's
  PixArt-Sigma-XL, an SD/SDXL pipeline, ...), a local directory or an entry of the *local* Hugging Face
  cache (never downloads), loaded with ``DiffusionPipeline.from_pretrained(use_safetensors=True)`` and run
  in PyTorch on the cloud side (``device="auto"``: CUDA when torch sees one, else CPU). One image per
  seed of the subject's ``cg_train`` (40) / ``cg_test`` (10) split (:func:`subject_seeds`), each from its
  own ``torch.Generator("cpu").manual_seed(seed)`` (CPU generators: the same initial noise on any
  device; a batch of per-image generators equals one call per image), at ``steps`` DDIM/solver steps
  and classifier-free guidance ``guidance`` (the paper: 50 steps; PixArt's default guidance 4.5), at
  the pipeline's own square resolution unless ``cloud_size`` is given (resolution binning off: it only
  matters for non-square sizes). torch and diffusers are imported inside that function only, so this
  module stays torch-free. An image the pipeline's own safety checker flags (SD pipelines ship one;
  PixArt none) is an error naming the seed, never a silent black image in S_CG. On a GPU the cloud
  pipeline is dropped after each subject's S_CG (:func:`release_cloud`); when JAX shares that GPU,
  start with ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` (JAX otherwise reserves 75% of its memory up
  front and the PyTorch cloud cannot load).

The cloud side may have another latent space than the edge (the paper: PixArt-Sigma vs SD2.1),
so images, not latents, cross: they are resized to the edge resolution (antialiased bilinear)
and re-encoded by the edge's VAE (posterior mean, as :func:`dekag_jax.diffusion.generate.encode_images`).
Reading of Sec. VI-A1: the paper says PixArt-Sigma and SD2.1 "use the same latent codec", while
PixArt-Sigma's published pipelines carry the SDXL VAE (scaling factor 0.13025; SD2.1's is 0.18215).
Either way it does not matter here: the cloud pipeline decodes its own latents with its own VAE and
scaling factor, and S_CG is re-encoded with the edge's f_LE and the edge's scaling factor (eq. 6
needs latents in the *edge's* space), so no latent ever crosses between the two codecs.

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

__all__ = ["SCG", "edge_resolution", "cloud_images", "build_scg", "vae_fingerprint", "subject_seeds",
           "diffusers_images", "check_source", "release_cloud"]

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


_SPLITS = ("cg_train", "cg_test", "eg_train", "eg_test")
_SPLIT_OFFSETS = {"cg_train": (0, 40), "cg_test": (40, 10), "eg_train": (100, 100), "eg_test": (200, 30)}


def subject_seeds(subject: str, split: str) -> list[int]:
    """The fixed seeds of a subject's split: a tiny-world subject id (``human_00``, ...) has the seeds
    of :func:`dekag_jax.world.splits.split_seeds`; any other subject name (a real-weights run's own
    subjects) gets its own fixed block derived from the name, ``B + offset + i`` with
    ``B = 10**9 + 1000 * (sha256(name) mod 10**6)`` and offsets cg_train 0..39, cg_test 40..49,
    eg_train 100..199, eg_test 200..229 (disjoint splits, < 2**31, the paper's 40/10/100/30 sizes)."""
    if split not in _SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {_SPLITS}")
    from dekag_jax.world.subjects import get_subject
    from dekag_jax.world.splits import split_seeds

    try:
        get_subject(subject)
    except (KeyError, ValueError):
        h = int.from_bytes(hashlib.sha256(str(subject).encode()).digest()[:8], "big")
        base = 10 ** 9 + 1000 * (h % 10 ** 6)
        off, n = _SPLIT_OFFSETS[split]
        return [base + off + i for i in range(n)]
    return split_seeds(subject, split)


def check_source(source: str) -> str:
    """``source`` if it names a known S_CG source, else ValueError with one line (checked before work)."""
    s = str(source)
    if s == "world":
        return s
    for prefix in ("folder:", "diffusers:"):
        if s.startswith(prefix):
            if not s[len(prefix):] or s[len(prefix):] == "hf:":
                raise ValueError(f"S_CG source {s!r}: nothing after {prefix!r} (expected {prefix}<dir>)")
            return s
    raise ValueError(f"unknown S_CG source {s!r}; use 'world', 'folder:<dir>', 'diffusers:<dir>' or "
                     "'diffusers:hf:<repo id>'")


_CLOUD: dict = {}  # (resolved dir, device, dtype) -> loaded diffusers pipeline (one per process)


def _cloud_dir(target: str) -> str:
    from dekag_jax.weights.pipeline import resolve_pipeline_dir

    # resolve_pipeline_dir: a directory, or a snapshot of the *local* HF cache (never downloads)
    return resolve_pipeline_dir(target[len("hf:"):] if target.startswith("hf:") else target)


def _dir_fingerprint(d: str) -> str:
    """Names, sizes and mtimes of a pipeline directory's files (cheap; changes with any re-save)."""
    h = hashlib.sha1()
    for root, dirs, files in sorted(os.walk(d, followlinks=True)):
        dirs.sort()
        for f in sorted(files):
            st = os.stat(os.path.join(root, f))
            h.update(f"{os.path.relpath(os.path.join(root, f), d)}|{st.st_size}|{int(st.st_mtime)}".encode())
    return h.hexdigest()[:12]


def _load_cloud(target: str, device: str, dtype: str):
    import torch
    from diffusers import DiffusionPipeline

    d = _cloud_dir(target)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    key = (os.path.realpath(d), device, dtype)
    if key not in _CLOUD:
        try:
            torch_dtype = getattr(torch, dtype)
        except AttributeError:
            raise ValueError(f"cloud dtype {dtype!r}: not a torch dtype (float32, float16, bfloat16)") from None
        # use_safetensors=True: a pipeline with only pickle weights is refused, never unpickled
        pipe = DiffusionPipeline.from_pretrained(d, dtype=torch_dtype, use_safetensors=True, local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        _CLOUD.clear()  # one cloud model in memory at a time (a real one is several GB)
        _CLOUD[key] = pipe.to(device)
    return _CLOUD[key]


def release_cloud(*, accelerators_only: bool = False) -> None:
    """Drop the cached cloud pipeline (all, or only one held on an accelerator) and give its GPU memory
    back, so that the JAX stages that follow S_CG have it. ``build_scg`` calls this with
    ``accelerators_only=True`` after generating: on a GPU the cloud (PixArt-Sigma with T5-XXL: many GB)
    is reloaded per subject rather than kept beside the edge's training; on the CPU it stays cached."""
    drop = [k for k in _CLOUD if not accelerators_only or k[1] != "cpu"]
    for k in drop:
        del _CLOUD[k]
    if drop and any(k[1] != "cpu" for k in drop):
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def diffusers_images(target: str, prompt: str, seeds, *, steps: int = 50, guidance: float = 4.5,
                     cloud_size: int | None = None, device: str = "auto", dtype: str = "float32",
                     batch: int = 8) -> np.ndarray:
    """Images of ``prompt`` from a diffusers text-to-image pipeline (``target``: ``<dir>`` or
    ``hf:<repo id>``), one per seed: uint8 ``[len(seeds), H, W, 3]`` at the cloud's resolution
    (``cloud_size`` or the pipeline's default). See the module doc for seeding and devices."""
    import inspect

    import torch

    pipe = _load_cloud(target, device, dtype)
    params = inspect.signature(pipe.__call__).parameters
    kw = {"num_inference_steps": int(steps), "guidance_scale": float(guidance), "output_type": "np"}
    if cloud_size:
        kw.update(height=int(cloud_size), width=int(cloud_size))
    if "use_resolution_binning" in params:  # PixArt: binning only matters for non-square sizes
        kw["use_resolution_binning"] = False
    if "clean_caption" in params:  # PixArt's caption cleaning needs bs4/ftfy; our prompts are clean
        kw["clean_caption"] = False
    seeds = [int(x) for x in seeds]
    out = []
    for i in range(0, len(seeds), batch):
        part = seeds[i:i + batch]
        gens = [torch.Generator("cpu").manual_seed(x) for x in part]
        with torch.no_grad():
            res = pipe([prompt] * len(part), generator=gens, **kw)
        flagged = getattr(res, "nsfw_content_detected", None)
        if flagged and any(flagged):
            bad = [x for x, f in zip(part, flagged) if f]
            raise RuntimeError(f"cloud pipeline's safety checker flagged the image(s) of seed(s) {bad} for prompt "
                               f"{prompt!r}; change the prompt (S_CG never trains on blacked-out images)")
        x = np.asarray(res.images, np.float32)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"cloud pipeline returned images of shape {x.shape}; expected [N, H, W, 3] RGB")
        out.append(np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8))
    return np.concatenate(out)


def cloud_images(source: str, subject: str, split: str, size: int, *, prompt: str | None = None,
                 cloud: dict | None = None) -> np.ndarray:
    """Cloud images uint8 ``[N, size, size, 3]`` of a subject's ``cg_train`` or ``cg_test`` split from
    ``source`` (``"world"``, ``"folder:<dir>"`` or ``"diffusers:<dir | hf:repo>"``). ``prompt`` (needed
    by the diffusers source; default: the tiny world subject's) and ``cloud`` (keyword arguments of
    :func:`diffusers_images`: steps, guidance, cloud_size, device, dtype) matter for diffusers only."""
    if split not in ("cg_train", "cg_test"):
        raise ValueError(f"S_CG split must be 'cg_train' or 'cg_test', got {split!r}")
    check_source(source)
    if source == "world":
        from dekag_jax.world.render import DEFAULT_SIZE
        from dekag_jax.world.splits import cloud_samples

        # render at the world's own size (the cloud's resolution), then resize to the edge's
        return _resize_uint8(cloud_samples(subject, split, DEFAULT_SIZE), size)
    if source.startswith("folder:"):
        return _resize_uint8(_folder_images(source[len("folder:"):], subject, split), size)
    images = diffusers_images(source[len("diffusers:"):], _prompt_of(subject, prompt),
                              subject_seeds(subject, split), **(cloud or {}))
    return _resize_uint8(images, size)


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

    try:
        return get_subject(subject).prompt
    except (KeyError, ValueError):
        raise ValueError(f"subject {subject!r} is not a tiny-world subject: pass its prompt "
                         "(config 'prompts', see dekag_jax/ka/sources.py)") from None


def build_scg(pipe, subject: str, *, source: str = "world", prompt: str | None = None,
              cache_dir: str | os.PathLike | None = None, batch: int = 64, cloud: dict | None = None) -> SCG:
    """S_CG of one subject (see the module doc). ``prompt`` defaults to the tiny world subject's
    prompt (other subjects must pass it). ``cloud``: options of the diffusers source
    (:func:`diffusers_images`: ``steps``, ``guidance``, ``cloud_size``, ``device``, ``dtype``), part of its
    cache key together with the prompt, the seeds and a fingerprint of the cloud directory. Encodes once
    per process and, with ``cache_dir``, once per (source, subject, size, VAE[, cloud options]) on disk."""
    from dekag_jax.diffusion.generate import encode_images

    check_source(source)
    size = edge_resolution(pipe)
    fp = vae_fingerprint(pipe)
    prompt = _prompt_of(subject, prompt)
    extra = ""
    if source.startswith("diffusers:"):
        c = {k: v for k, v in sorted((cloud or {}).items()) if k not in ("device", "batch")}
        d = _cloud_dir(source[len("diffusers:"):])
        extra = f"|{os.path.realpath(d)}|{_dir_fingerprint(d)}|{prompt}|{c}|" + ",".join(
            str(x) for x in subject_seeds(subject, "cg_train") + subject_seeds(subject, "cg_test"))
    key = (source, subject, size, fp, extra)
    if key in _MEMORY:
        z, tr, te = _MEMORY[key]
        return SCG(subject, prompt, source, z, tr, te)
    path = None
    if cache_dir is not None:
        tag = hashlib.sha1(f"{source}|{subject}|{size}|{fp}{extra}".encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"scg_{subject}_{tag}.npz"
        if path.is_file():
            with np.load(path) as d:
                z, tr, te = d["train_latents"], d["train_images"], d["test_images"]
            _MEMORY[key] = (z, tr, te)
            return SCG(subject, prompt, source, z, tr, te)
    tr = cloud_images(source, subject, "cg_train", size, prompt=prompt, cloud=cloud)
    te = cloud_images(source, subject, "cg_test", size, prompt=prompt, cloud=cloud)
    if source.startswith("diffusers:"):
        release_cloud(accelerators_only=True)
    z = np.concatenate([np.asarray(encode_images(pipe, jnp.asarray(tr[i:i + batch], jnp.float32) / 255.0))
                        for i in range(0, len(tr), batch)])
    _MEMORY[key] = (z, tr, te)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, train_latents=z, train_images=tr, test_images=te)
        os.replace(tmp, path)
    return SCG(subject, prompt, source, z, tr, te)
