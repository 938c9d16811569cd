"""DDIM sampling (Song et al. 2021), step-for-step equal to diffusers' ``DDIMScheduler``.

The whole loop runs on device: ``lax.scan`` over a static number of steps, classifier-free
guidance by concatenating the unconditional and conditional batch (uncond first, as diffusers'
``StableDiffusionPipeline``), and the eta > 0 noise drawn from a passed PRNG key.

diffusers details reproduced on purpose (so that a checkpoint samples as its authors expect):
  * timesteps per ``timestep_spacing`` ("leading" + ``steps_offset``, "trailing", "linspace");
  * the "previous" timestep of every update is ``t - T // num_steps`` for every spacing (for
    "linspace" this is not the next entry of the timestep list; diffusers does the same);
  * ``prev_t < 0`` uses ``final_alpha_cumprod`` (1 if ``set_alpha_to_one`` else abar_0);
  * ``thresholding`` (dynamic, Imagen) takes precedence over ``clip_sample``;
  * ``sigma_t = eta * sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))``.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dekag_jax.diffusion.schedules import NoiseSchedule, SchedulerConfig


def _config(cfg: SchedulerConfig | NoiseSchedule | Mapping[str, Any]) -> SchedulerConfig:
    if isinstance(cfg, NoiseSchedule):
        return cfg.config
    if isinstance(cfg, SchedulerConfig):
        return cfg
    return SchedulerConfig.from_dict(cfg)


def ddim_timesteps(cfg: SchedulerConfig | NoiseSchedule | Mapping[str, Any], num_steps: int) -> np.ndarray:
    """Descending int64 timesteps [num_steps], as ``DDIMScheduler.set_timesteps(num_steps)``."""
    c = _config(cfg)
    T = int(c.num_train_timesteps)
    n = int(num_steps)
    if not 1 <= n <= T:
        raise ValueError(f"num_steps={num_steps} must be in [1, num_train_timesteps={T}]")
    if c.timestep_spacing == "linspace":
        ts = np.linspace(0, T - 1, n).round()[::-1].copy().astype(np.int64)
    elif c.timestep_spacing == "leading":
        ratio = T // n
        ts = (np.arange(0, n) * ratio).round()[::-1].copy().astype(np.int64)
        ts += int(c.steps_offset)
    elif c.timestep_spacing == "trailing":
        ratio = T / n
        ts = np.round(np.arange(T, 0, -ratio)).astype(np.int64) - 1
    else:
        raise ValueError(f"timestep_spacing={c.timestep_spacing!r}")
    return ts


def ddim_prev_timesteps(cfg: SchedulerConfig | NoiseSchedule | Mapping[str, Any], num_steps: int) -> np.ndarray:
    """The "previous" timestep used by each update: ``t - T // num_steps`` (may be negative)."""
    c = _config(cfg)
    return ddim_timesteps(c, num_steps) - int(c.num_train_timesteps) // int(num_steps)


def _threshold(x: jax.Array, cfg: SchedulerConfig) -> jax.Array:
    """Dynamic thresholding (Imagen): per example, s = quantile(|x|, ratio) clamped to
    [1, sample_max_value]; x -> clip(x, -s, s) / s."""
    B = x.shape[0]
    flat = x.reshape(B, -1).astype(jnp.float32)
    s = jnp.quantile(jnp.abs(flat), cfg.dynamic_thresholding_ratio, axis=1)
    s = jnp.clip(s, 1.0, cfg.sample_max_value)[:, None]
    return (jnp.clip(flat, -s, s) / s).reshape(x.shape)


def ddim_step(schedule: NoiseSchedule, model_output: jax.Array, timestep: jax.Array | int,
              prev_timestep: jax.Array | int, sample: jax.Array, *, eta: float = 0.0,
              variance_noise: jax.Array | None = None, key: jax.Array | None = None,
              use_clipped_model_output: bool = False) -> tuple[jax.Array, jax.Array]:
    """One DDIM update z_t -> z_{prev_t}; equals ``DDIMScheduler.step`` (set_timesteps done).

    Args:
      model_output: network output at (sample, timestep) [B, ...] (eps, v or x0 per the schedule's
        ``prediction_type``; guidance already applied).
      timestep, prev_timestep: int scalars (may be traced); ``prev_timestep`` from
        :func:`ddim_prev_timesteps` (negative -> ``final_alpha_cumprod``).
      sample: z_t [B, ...].
      eta: static Python float; 0 = deterministic DDIM, 1 = DDPM-like variance.
      variance_noise: N(0, I) noise of ``sample``'s shape used when eta > 0; else drawn from ``key``.
    Returns: (prev_sample, pred_original_sample), both [B, ...] in ``sample.dtype``
      (math in float32).
    """
    cfg = schedule.config
    dtype = sample.dtype
    x = sample.astype(jnp.float32)
    out = model_output.astype(jnp.float32)
    t = jnp.asarray(timestep, jnp.int32)
    tp = jnp.asarray(prev_timestep, jnp.int32)
    a_t = schedule.alphas_cumprod[t]
    a_prev = jnp.where(tp >= 0, schedule.alphas_cumprod[jnp.maximum(tp, 0)], schedule.final_alpha_cumprod)
    b_t = 1.0 - a_t

    p = cfg.prediction_type
    if p == "epsilon":
        x0 = (x - b_t ** 0.5 * out) / a_t ** 0.5
        eps = out
    elif p == "sample":
        x0 = out
        eps = (x - a_t ** 0.5 * x0) / b_t ** 0.5
    elif p == "v_prediction":
        x0 = a_t ** 0.5 * x - b_t ** 0.5 * out
        eps = a_t ** 0.5 * out + b_t ** 0.5 * x
    else:
        raise ValueError(f"prediction_type={p!r}")

    if cfg.thresholding:
        x0 = _threshold(x0, cfg)
    elif cfg.clip_sample:
        x0 = jnp.clip(x0, -cfg.clip_sample_range, cfg.clip_sample_range)

    variance = ((1.0 - a_prev) / b_t) * (1.0 - a_t / a_prev)
    std = eta * variance ** 0.5
    if use_clipped_model_output:
        eps = (x - a_t ** 0.5 * x0) / b_t ** 0.5
    direction = (1.0 - a_prev - std ** 2) ** 0.5 * eps
    prev = a_prev ** 0.5 * x0 + direction
    if eta > 0:
        if variance_noise is None:
            if key is None:
                raise ValueError("ddim_step: eta > 0 needs variance_noise or key")
            variance_noise = jax.random.normal(key, x.shape, jnp.float32)
        prev = prev + std * variance_noise.astype(jnp.float32)
    return prev.astype(dtype), x0.astype(dtype)


def _tree_concat(a: Any, b: Any) -> Any:
    return jax.tree.map(lambda u, c: jnp.concatenate([u, c], axis=0), a, b)


def ddim_sample(eps_fn: Callable[[jax.Array, jax.Array, Any], jax.Array], z_T: jax.Array, cond: Any,
                uncond: Any = None, *, schedule: NoiseSchedule, num_steps: int = 50,
                guidance_scale: float | jax.Array = 7.5, eta: float = 0.0,
                key: jax.Array | None = None) -> jax.Array:
    """Run the DDIM chain from z_T to z_0 (equal to diffusers' SD denoising loop).

    Args:
      eps_fn: the network, ``(z [N, h, w, C], t int32 [N], cond [N, ...]) -> output [N, h, w, C]``
        where output is eps / v / x0 per ``schedule.prediction_type``.
      z_T: initial noise [B, h, w, C] (times init_noise_sigma = 1 for DDIM).
      cond: conditioning for the B samples (array or pytree of arrays with leading dim B),
        e.g. prompt embeddings [B, 77, D].
      uncond: unconditional conditioning of the same structure, or None for no classifier-free
        guidance. diffusers only guides when ``guidance_scale > 1``: pass None otherwise to match.
      num_steps: static number of DDIM steps (compiles once per value).
      guidance_scale: w in ``out_u + w (out_c - out_u)``; may be traced.
      eta: static Python float; > 0 needs ``key`` (one fresh normal draw per step).
    Returns: z_0 [B, h, w, C] in ``z_T.dtype``. Jittable (``num_steps``, ``eta`` static).
    """
    ts = ddim_timesteps(schedule.config, num_steps)
    prev = ts - schedule.num_train_timesteps // int(num_steps)
    use_cfg = uncond is not None
    ctx = _tree_concat(uncond, cond) if use_cfg else cond
    if eta > 0:
        if key is None:
            raise ValueError("ddim_sample: eta > 0 needs a PRNG key")
        keys = jax.random.split(key, int(num_steps))
    else:
        keys = jnp.zeros((int(num_steps), 0), jnp.uint32)  # unused placeholder scanned alongside

    def body(z, xs):
        t, tp, k = xs
        zin = jnp.concatenate([z, z], axis=0) if use_cfg else z
        out = eps_fn(zin, jnp.full((zin.shape[0],), t, jnp.int32), ctx)
        if use_cfg:
            out_u, out_c = jnp.split(out.astype(jnp.float32), 2, axis=0)
            out = out_u + guidance_scale * (out_c - out_u)
        z, _ = ddim_step(schedule, out, t, tp, z, eta=eta, key=k if eta > 0 else None)
        return z, None

    z0, _ = jax.lax.scan(body, z_T, (jnp.asarray(ts, jnp.int32), jnp.asarray(prev, jnp.int32), keys))
    return z0
