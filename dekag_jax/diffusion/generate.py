"""Text -> latents -> images with a loaded Stable Diffusion pipeline (the edge-GAI of Sec. II).

Latent spaces (the one thing to get right when wiring the paper's blocks together):
  * *diffusion latents* ``z`` are what the UNet denoises and what eq. 1 / 6 / 8 / 9 train on:
    ``z = scaling_factor * (vae_latent - shift_factor)`` (scaling_factor 0.18215 for SD1/2,
    no shift), roughly unit variance. :func:`text_to_latents` returns them and
    :func:`encode_images` produces them.
  * the VAE decoder wants ``z / scaling_factor (+ shift_factor)``; :func:`decode_latents` does that.

Shapes: latents NHWC ``[B, h, w, C]`` float32 with ``h = H / vae_scale_factor`` (8 for SD);
images NHWC ``[B, H, W, 3]`` float32 in [0, 1].

Every entry point is jitted and cached per (model, static settings); a new batch size, resolution
or step count compiles once more. The persistent compilation cache is enabled only by command-line
tools (:func:`dekag_jax.runtime.setup`), never on import.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dekag_jax.diffusion.ddim import ddim_sample
from dekag_jax.diffusion.schedules import NoiseSchedule, from_scheduler_config



# ----------------------------------------------------------------------------- building blocks (pure)

def encode_prompt(text_encoder, params, ids: jax.Array) -> jax.Array:
    """Prompt embedding c = CLIP last_hidden_state (after final LayerNorm), as diffusers' SD pipelines.

    Args: ids int32 [B, L] (L = 77). Returns [B, L, D] in the encoder's dtype.
    """
    return text_encoder.apply({"params": params}, jnp.asarray(ids, jnp.int32))["last_hidden_state"]


def make_eps_fn(unet, unet_params) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
    """``(z [N,h,w,C], t int32 [N], context [N,L,D]) -> model output [N,h,w,C] float32``."""
    def eps_fn(z, t, ctx):
        return unet.apply({"params": unet_params}, z, t, ctx).astype(jnp.float32)
    return eps_fn


def sample_latents(unet, unet_params, cond: jax.Array, uncond: jax.Array | None, z_T: jax.Array, key: jax.Array,
                   *, schedule: NoiseSchedule, num_steps: int = 50, guidance_scale: float | jax.Array = 7.5,
                   eta: float = 0.0) -> jax.Array:
    """DDIM from z_T [B,h,w,C] given prompt embeddings cond [B,L,D] (and uncond for guidance, or None).

    Pure and jittable (``num_steps``, ``eta`` static): use it inside training/evaluation code that
    swaps ``unet_params`` (e.g. LoRA-merged) or the embeddings (e.g. the metaword of eq. 8).
    Returns diffusion latents z_0 [B,h,w,C] float32.
    """
    return ddim_sample(make_eps_fn(unet, unet_params), z_T.astype(jnp.float32), cond, uncond, schedule=schedule,
                       num_steps=num_steps, guidance_scale=guidance_scale, eta=eta, key=key)


def vae_decode(vae, vae_params, z: jax.Array) -> jax.Array:
    """Diffusion latents [B,h,w,C] -> images [B,H,W,3] float32 in [0, 1] (pure)."""
    x = z.astype(jnp.float32) / vae.scaling_factor
    if getattr(vae, "shift_factor", None) is not None:
        x = x + vae.shift_factor
    img = vae.apply({"params": vae_params}, x, method=vae.decode).astype(jnp.float32)
    return jnp.clip(img / 2 + 0.5, 0.0, 1.0)


def vae_encode(vae, vae_params, images: jax.Array, key: jax.Array | None = None) -> jax.Array:
    """Images [B,H,W,3] in [0, 1] -> diffusion latents [B,h,w,C] float32 (pure).

    ``key`` None: the posterior mean; else a posterior sample mean + exp(logvar/2) * N(0, I).
    """
    x = images.astype(jnp.float32) * 2.0 - 1.0
    mean, logvar = vae.apply({"params": vae_params}, x, method=vae.encode)
    z = mean.astype(jnp.float32)
    if key is not None:
        z = z + jnp.exp(0.5 * logvar.astype(jnp.float32)) * jax.random.normal(key, z.shape, jnp.float32)
    if getattr(vae, "shift_factor", None) is not None:
        z = z - vae.shift_factor
    return z * vae.scaling_factor


# ----------------------------------------------------------------------------- pipeline-level API

def _cache(pipe) -> dict:
    c = getattr(pipe, "_jit_cache", None)
    if c is None:
        c = {}
        try:
            pipe._jit_cache = c
        except AttributeError:  # an object that refuses attributes: no caching across calls
            pass
    return c


def vae_scale_factor(pipe) -> int:
    """Pixels per latent cell: 2 ** (number of VAE blocks - 1) (8 for SD)."""
    if pipe.vae is not None:
        return int(pipe.vae.downsample_factor)
    return 2 ** (len(pipe.unet.config.block_out_channels) - 1)


def _as_ids(pipe, prompts, what: str) -> np.ndarray:
    if isinstance(prompts, str):
        prompts = [prompts]
    if isinstance(prompts, (np.ndarray, jax.Array)):
        ids = np.asarray(prompts)
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"{what}: token ids must be an integer array [B, L], got {ids.dtype} {ids.shape}")
        return ids.astype(np.int32)
    # The pipeline object carries its tokenize function (weights.pipeline.StableDiffusion.tokenize):
    # diffusion/ takes functions only and does not import models/ (tests/test_layers.py).
    tokenize = getattr(pipe, "tokenize", None)
    if getattr(pipe, "tokenizer", None) is None or tokenize is None:
        raise ValueError(f"{what}: the pipeline has no tokenizer; pass token ids [B, L] instead of strings")
    return np.asarray(tokenize(list(prompts)), np.int32)


def text_to_latents(pipe, prompts: str | Sequence[str] | np.ndarray, key: jax.Array, *, num_steps: int = 50,
                    guidance_scale: float = 7.5, eta: float = 0.0, height: int | None = None,
                    width: int | None = None, latents: jax.Array | None = None,
                    negative_prompts: str | Sequence[str] | np.ndarray | None = None) -> jax.Array:
    """Generate diffusion latents for prompts with DDIM + classifier-free guidance (as diffusers'
    ``StableDiffusionPipeline(..., output_type="latent")`` with a DDIMScheduler).

    Args:
      pipe: a :class:`dekag_jax.weights.pipeline.StableDiffusion` (unet, text_encoder, tokenizer,
        scheduler_config needed).
      prompts: a string, a list of B strings, or token ids int [B, L].
      key: PRNG key; split into the initial-noise key (unused if ``latents`` is given) and the
        eta > 0 noise key.
      guidance_scale: classifier-free guidance weight; <= 1 disables guidance (no uncond pass), as in
        diffusers.
      height, width: image size in pixels (default: unet sample_size * vae_scale_factor); latents are
        height / vae_scale_factor.
      latents: optional initial noise z_T [B, h, w, C] (NHWC), e.g. to reproduce a diffusers run.
      negative_prompts: the unconditional prompts (default "" for each), strings or ids.
    Returns: diffusion latents z_0 [B, h, w, C] float32 (= scaling_factor * VAE latents; decode with
      :func:`decode_latents`).
    """
    if pipe.unet is None or pipe.text_encoder is None:
        raise ValueError("text_to_latents needs a pipeline loaded with the unet and text_encoder components")
    ids = _as_ids(pipe, prompts, "prompts")
    B = ids.shape[0]
    use_cfg = float(guidance_scale) > 1.0
    neg = None
    if use_cfg:
        if negative_prompts is None:
            negative_prompts = [""] * B
        elif isinstance(negative_prompts, str):
            negative_prompts = [negative_prompts] * B
        neg = _as_ids(pipe, negative_prompts, "negative_prompts")
        if neg.shape != ids.shape:
            raise ValueError(f"negative prompt ids {neg.shape} must match prompt ids {ids.shape}")

    k_lat, k_eta = jax.random.split(key)
    if latents is None:
        f = vae_scale_factor(pipe)
        if height is None or width is None:
            ss = pipe.unet.config.sample_size
            if ss is None:
                raise ValueError("unet config has no sample_size: pass height and width")
            ss = (ss, ss) if isinstance(ss, int) else tuple(ss)
            height = height or ss[0] * f
            width = width or ss[1] * f
        if height % f or width % f:
            raise ValueError(f"height, width = {height}, {width} must be multiples of vae_scale_factor {f}")
        shape = (B, height // f, width // f, pipe.unet.config.in_channels)
        latents = jax.random.normal(k_lat, shape, jnp.float32)  # init_noise_sigma = 1 for DDIM
    else:
        latents = jnp.asarray(latents, jnp.float32)
        if latents.ndim != 4 or latents.shape[0] != B or latents.shape[-1] != pipe.unet.config.in_channels:
            raise ValueError(f"latents must be [B={B}, h, w, {pipe.unet.config.in_channels}] (NHWC), "
                             f"got {latents.shape}")

    schedule = from_scheduler_config(pipe.scheduler_config)
    unet, te = pipe.unet, pipe.text_encoder
    ck = ("t2l", id(unet), id(te), int(num_steps), float(eta), use_cfg, schedule.config)
    cache = _cache(pipe)
    if ck not in cache:
        def run(text_params, unet_params, sched, ids, neg, z_T, k, g):
            cond = encode_prompt(te, text_params, ids)
            uncond = encode_prompt(te, text_params, neg) if use_cfg else None
            return sample_latents(unet, unet_params, cond, uncond, z_T, k, schedule=sched, num_steps=num_steps,
                                  guidance_scale=g, eta=eta)
        cache[ck] = jax.jit(run)
    return cache[ck](pipe.text_params, pipe.unet_params, schedule, ids, neg if use_cfg else None, latents, k_eta,
                     jnp.float32(guidance_scale))


def decode_latents(pipe, z: jax.Array) -> jax.Array:
    """Diffusion latents [B, h, w, C] -> images [B, H, W, 3] float32 in [0, 1]
    (``vae.decode(z / scaling_factor)``, then ``x / 2 + 0.5`` clipped, as diffusers' postprocess)."""
    if pipe.vae is None:
        raise ValueError("decode_latents needs a pipeline loaded with the vae component")
    ck = ("dec", id(pipe.vae))
    cache = _cache(pipe)
    if ck not in cache:
        vae = pipe.vae
        cache[ck] = jax.jit(lambda p, z: vae_decode(vae, p, z))
    return cache[ck](pipe.vae_params, jnp.asarray(z))


def encode_images(pipe, images: jax.Array, key: jax.Array | None = None) -> jax.Array:
    """Images [B, H, W, 3] in [0, 1] -> diffusion latents [B, h, w, C] float32
    (= scaling_factor * posterior mean, or a posterior sample when ``key`` is given): the latent
    encoder f_LE of Sec. IV that builds the training set S_CG of eq. 6."""
    if pipe.vae is None:
        raise ValueError("encode_images needs a pipeline loaded with the vae component")
    images = jnp.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [B, H, W, 3] (NHWC) in [0, 1], got {images.shape}")
    sample = key is not None
    ck = ("enc", id(pipe.vae), sample)
    cache = _cache(pipe)
    if ck not in cache:
        vae = pipe.vae
        cache[ck] = jax.jit(lambda p, x, k: vae_encode(vae, p, x, k if sample else None))
    return cache[ck](pipe.vae_params, images, key if sample else jax.random.key(0))
