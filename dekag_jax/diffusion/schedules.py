"""DDPM noise schedules and the training objective of eq. 1 / 6 / 8 / 9.

Notation. The paper (eq. 1) writes ``z_t = sqrt(alpha_t) z + sqrt(1 - alpha_t) eps`` with
"alpha_t a diffusion coefficient specified by the noise schedule". That alpha_t is what the DDPM
paper and diffusers call the *cumulative* product ``alpha_bar_t = prod_{s<=t} (1 - beta_s)``
(``alphas_cumprod``); the per-step ``alpha_t = 1 - beta_t`` never enters eq. 1. Everything here
uses ``alphas_cumprod`` for the paper's alpha_t.

Timesteps are integers ``t in [0, T)`` (``T = num_train_timesteps``, 1000 for SD), indexing
``alphas_cumprod`` exactly as diffusers does: ``t = 0`` is the least noisy step.

``SchedulerConfig`` is parsed from a diffusers ``scheduler_config.json`` (any of the usual
Stable Diffusion scheduler classes: DDIM, PNDM, Euler, DPM-Solver, ...: they share the noise
schedule fields; fields that only select *another* sampler's steps are ignored, because we always
sample with DDIM). Anything that changes the forward process or the DDIM math and is not
implemented raises :class:`UnsupportedConfigError` naming the field.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from dekag_jax.errors import UnsupportedConfigError

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")

# Fields of other diffusers schedulers that only pick *their* sampling steps/sigmas or solver;
# they do not change the forward process (alphas_cumprod) nor the DDIM update, so a pipeline
# whose scheduler is e.g. PNDM or Euler is sampled with DDIM on the same noise schedule (what
# ``DDIMScheduler.from_config(other.config)`` does in diffusers).
_OTHER_SAMPLER_FIELDS = frozenset({
    "skip_prk_steps",  # PNDM
    "interpolation_type", "sigma_min", "sigma_max", "timestep_type", "final_sigmas_type",
    "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas",  # Euler / LMS / DPM
    "algorithm_type", "solver_order", "solver_type", "lower_order_final", "euler_at_final",
    "use_lu_lambdas", "lambda_min_clipped", "disable_corrector", "predict_x0", "solver_p",
    "time_shift_type", "shift_terminal", "use_dynamic_shifting",  # DPM-Solver / UniPC
})


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
    """The diffusers DDIMScheduler config fields (same names, same defaults as diffusers)."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    trained_betas: tuple[float, ...] | None = None
    clip_sample: bool = True
    set_alpha_to_one: bool = True
    steps_offset: int = 0
    prediction_type: str = "epsilon"
    thresholding: bool = False
    dynamic_thresholding_ratio: float = 0.995
    clip_sample_range: float = 1.0
    sample_max_value: float = 1.0
    timestep_spacing: str = "leading"
    rescale_betas_zero_snr: bool = False

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> "SchedulerConfig":
        """Parse a diffusers scheduler config dict; raise UnsupportedConfigError naming the field."""
        known = {f.name for f in dataclasses.fields(cls)}
        kw: dict[str, Any] = {}
        src = cfg.get("_class_name", "scheduler")
        for k, v in cfg.items():
            if k.startswith("_"):  # diffusers metadata: _class_name, _diffusers_version, _use_default_values
                continue
            if k in known:
                kw[k] = v
            elif k in _OTHER_SAMPLER_FIELDS:
                continue
            elif k == "variance_type":  # DDPM / DPM-Solver
                if v not in (None, "fixed_small", "fixed_small_log"):
                    raise UnsupportedConfigError(
                        f"{src}: variance_type={v!r} (a model predicting its own variance) is not supported")
            elif k in ("use_flow_sigmas", "flow_shift"):
                if k == "use_flow_sigmas" and v:
                    raise UnsupportedConfigError(
                        f"{src}: use_flow_sigmas={v!r} (flow matching) is not supported; only DDPM noise schedules")
            else:
                raise UnsupportedConfigError(f"{src}: unknown scheduler config field {k}={v!r}")
        if kw.get("trained_betas") is not None:
            kw["trained_betas"] = tuple(float(b) for b in np.asarray(kw["trained_betas"]).ravel())
        out = cls(**kw)
        out.validate(src)
        return out

    def validate(self, src: str = "scheduler") -> None:
        if self.trained_betas is None and self.beta_schedule not in BETA_SCHEDULES:
            raise UnsupportedConfigError(f"{src}: beta_schedule={self.beta_schedule!r}; supported: {BETA_SCHEDULES}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise UnsupportedConfigError(
                f"{src}: prediction_type={self.prediction_type!r}; supported: {PREDICTION_TYPES}")
        if self.timestep_spacing not in TIMESTEP_SPACINGS:
            raise UnsupportedConfigError(
                f"{src}: timestep_spacing={self.timestep_spacing!r}; supported: {TIMESTEP_SPACINGS}")
        if int(self.num_train_timesteps) < 1:
            raise UnsupportedConfigError(f"{src}: num_train_timesteps={self.num_train_timesteps!r} must be >= 1")
        if self.trained_betas is not None and len(self.trained_betas) != self.num_train_timesteps:
            raise UnsupportedConfigError(
                f"{src}: trained_betas has {len(self.trained_betas)} entries, num_train_timesteps="
                f"{self.num_train_timesteps}")

    def to_dict(self, class_name: str = "DDIMScheduler") -> dict[str, Any]:
        """A diffusers ``scheduler_config.json`` dict (DDIMScheduler) reproducing this config."""
        d = dataclasses.asdict(self)
        if d["trained_betas"] is not None:
            d["trained_betas"] = list(d["trained_betas"])
        return {"_class_name": class_name, **d}


def _betas(cfg: SchedulerConfig) -> np.ndarray:
    """float64 betas [T] (diffusers builds them in float32; float64 here, cast once at the end)."""
    T = int(cfg.num_train_timesteps)
    if cfg.trained_betas is not None:
        betas = np.asarray(cfg.trained_betas, np.float64)
    elif cfg.beta_schedule == "linear":
        betas = np.linspace(cfg.beta_start, cfg.beta_end, T, dtype=np.float64)
    elif cfg.beta_schedule == "scaled_linear":  # SD: linear in sqrt(beta)
        betas = np.linspace(cfg.beta_start ** 0.5, cfg.beta_end ** 0.5, T, dtype=np.float64) ** 2
    elif cfg.beta_schedule == "squaredcos_cap_v2":  # Nichol & Dhariwal cosine, beta capped at 0.999
        f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        betas = np.array([min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)], np.float64)
    else:  # validate() ran already
        raise UnsupportedConfigError(f"beta_schedule={cfg.beta_schedule!r}")
    if cfg.rescale_betas_zero_snr:  # Lin et al. 2023, Algorithm 1 (as diffusers)
        ab_sqrt = np.sqrt(np.cumprod(1.0 - betas))
        a0, aT = ab_sqrt[0], ab_sqrt[-1]
        ab_sqrt = (ab_sqrt - aT) * a0 / (a0 - aT)
        ab = ab_sqrt ** 2
        alphas = np.concatenate([ab[:1], ab[1:] / ab[:-1]])
        betas = 1.0 - alphas
    return betas


@struct.dataclass
class NoiseSchedule:
    """Arrays of a DDPM noise schedule; a pytree (the config is static metadata, hashable).

    Fields (T = num_train_timesteps):
      betas: [T] float32.
      alphas_cumprod: [T] float32, the paper's alpha_t in eq. 1 (``alpha_bar_t``).
      final_alpha_cumprod: [] float32, alpha_bar used as the "previous" value at the last DDIM
        step (1.0 if ``set_alpha_to_one`` else ``alphas_cumprod[0]``).
      config: the parsed :class:`SchedulerConfig` (static).
    """

    betas: jax.Array
    alphas_cumprod: jax.Array
    final_alpha_cumprod: jax.Array
    config: SchedulerConfig = struct.field(pytree_node=False, default=SchedulerConfig())

    @property
    def num_train_timesteps(self) -> int:
        return int(self.config.num_train_timesteps)

    @property
    def prediction_type(self) -> str:
        return self.config.prediction_type


def from_scheduler_config(cfg: Mapping[str, Any] | SchedulerConfig) -> NoiseSchedule:
    """Build a :class:`NoiseSchedule` from a diffusers scheduler config dict (or SchedulerConfig)."""
    if not isinstance(cfg, SchedulerConfig):
        cfg = SchedulerConfig.from_dict(cfg)
    else:
        cfg.validate()
    betas = _betas(cfg)
    ac = np.cumprod(1.0 - betas)
    final = 1.0 if cfg.set_alpha_to_one else ac[0]
    return NoiseSchedule(
        betas=jnp.asarray(betas, jnp.float32),
        alphas_cumprod=jnp.asarray(ac, jnp.float32),
        final_alpha_cumprod=jnp.asarray(final, jnp.float32),
        config=cfg,
    )


def stable_diffusion_schedule(prediction_type: str = "epsilon") -> NoiseSchedule:
    """The SD1/SD2 schedule: scaled_linear 0.00085..0.012, T=1000, DDIM with steps_offset 1.

    SD2.1 (768) uses ``v_prediction``; SD2.1-base and SD1.x use ``epsilon``.
    """
    return from_scheduler_config(dict(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000,
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type))


# ----------------------------------------------------------------------------- forward process

def _bcast(v: jax.Array, like: jax.Array) -> jax.Array:
    """[B] -> [B, 1, ..., 1] to broadcast against ``like`` [B, ...]."""
    return v.reshape(v.shape + (1,) * (like.ndim - v.ndim))


def add_noise(schedule: NoiseSchedule, z0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
    """Forward diffusion of eq. 1: ``z_t = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps``.

    Args:
      z0: clean latents [B, h, w, C] (any float dtype).
      noise: eps ~ N(0, I), same shape as ``z0``.
      t: integer timesteps [B] (or a scalar) in [0, T).
    Returns: z_t, shape and dtype of ``z0`` (computed in float32).
    """
    ac = schedule.alphas_cumprod[jnp.asarray(t)]
    ac = _bcast(jnp.broadcast_to(ac, z0.shape[:1]), z0)
    out = jnp.sqrt(ac) * z0.astype(jnp.float32) + jnp.sqrt(1.0 - ac) * noise.astype(jnp.float32)
    return out.astype(z0.dtype)


def velocity(schedule: NoiseSchedule, z0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
    """v-prediction target (Salimans & Ho): ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) z0``."""
    ac = schedule.alphas_cumprod[jnp.asarray(t)]
    ac = _bcast(jnp.broadcast_to(ac, z0.shape[:1]), z0)
    out = jnp.sqrt(ac) * noise.astype(jnp.float32) - jnp.sqrt(1.0 - ac) * z0.astype(jnp.float32)
    return out.astype(z0.dtype)


def training_target(schedule: NoiseSchedule, z0: jax.Array, noise: jax.Array, t: jax.Array,
                    prediction_type: str | None = None) -> jax.Array:
    """What the network is regressed onto: eps (eq. 1), v, or z0, per ``prediction_type``
    (default: the schedule's, i.e. the checkpoint's: SD2.1-768 is v_prediction)."""
    p = prediction_type or schedule.prediction_type
    if p == "epsilon":
        return noise
    if p == "v_prediction":
        return velocity(schedule, z0, noise, t)
    if p == "sample":
        return z0
    raise ValueError(f"prediction_type={p!r}; supported: {PREDICTION_TYPES}")


def sample_timesteps(key: jax.Array, batch: int, schedule: NoiseSchedule) -> jax.Array:
    """t ~ Uniform{0, ..., T-1}, int32 [batch] (the E_t of eq. 1)."""
    return jax.random.randint(key, (batch,), 0, schedule.num_train_timesteps, dtype=jnp.int32)


def diffusion_loss(model_fn: Callable[..., jax.Array], z0: jax.Array, key: jax.Array, *,
                   schedule: NoiseSchedule, cond: Any = None, prediction_type: str | None = None,
                   t: jax.Array | None = None, noise: jax.Array | None = None,
                   reduction: str = "mean") -> jax.Array:
    """Monte Carlo estimate of the denoising objective of eq. 1 (and 6, 8, 9, which only change
    which parameters / prompt embedding ``model_fn`` closes over or receives in ``cond``).

    ``E_{t, eps} || target - model_fn(z_t, t, cond) ||^2`` with ``t ~ U{0..T-1}``, ``eps ~ N(0, I)``
    and ``target = eps`` for epsilon models (the paper's form) or ``v`` for v-prediction models.

    Args:
      model_fn: ``(z_t [B, h, w, C], t int32 [B], cond) -> prediction [B, h, w, C]``; e.g.
        ``lambda z, t, c: unet.apply({'params': p}, z, t, c)``.
      z0: clean latents [B, h, w, C] (VAE latents times scaling_factor).
      key: PRNG key for t and eps (ignored for whichever of ``t`` / ``noise`` is given).
      cond: conditioning passed through to ``model_fn`` (e.g. prompt embeddings [B, L, D]).
      prediction_type: override of the schedule's prediction type.
      reduction: "mean" -> scalar float32 (diffusers' ``F.mse_loss`` over all elements);
        "none" -> per-example MSE [B] float32.
    Pure and jittable.
    """
    kt, kn = jax.random.split(key)
    B = z0.shape[0]
    if t is None:
        t = sample_timesteps(kt, B, schedule)
    t = jnp.broadcast_to(jnp.asarray(t, jnp.int32), (B,))
    if noise is None:
        noise = jax.random.normal(kn, z0.shape, jnp.float32).astype(z0.dtype)
    z_t = add_noise(schedule, z0, noise, t)
    pred = model_fn(z_t, t, cond)
    target = training_target(schedule, z0, noise, t, prediction_type)
    err = jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32))
    per_example = err.reshape(B, -1).mean(axis=1)
    if reduction == "none":
        return per_example
    if reduction == "mean":
        return per_example.mean()
    raise ValueError(f"reduction={reduction!r}; use 'mean' or 'none'")
