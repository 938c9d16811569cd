"""Noise schedules and the eq. 1 training objective vs diffusers' DDIMScheduler."""
import numpy as np
import pytest

import jax
import jax.numpy as jnp

from dekag_jax.diffusion import schedules as S
from dekag_jax.errors import UnsupportedConfigError

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

SD = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000,
          clip_sample=False, set_alpha_to_one=False, steps_offset=1)


@pytest.mark.parametrize("cfg", [
    SD,
    dict(beta_schedule="linear"),
    dict(beta_schedule="squaredcos_cap_v2"),
    dict(SD, rescale_betas_zero_snr=True),
    dict(beta_schedule="linear", num_train_timesteps=100, set_alpha_to_one=True),
])
def test_schedule_arrays_match_diffusers(cfg):
    ref = diffusers.DDIMScheduler(**cfg)
    ours = S.from_scheduler_config(ref.config)
    # diffusers rescales zero-SNR betas in float32 (betas = 1 - ratio of cumprods: ~1e-4 relative
    # rounding); ours in float64, so betas differ there by up to ~1e-5 absolute, alphas_cumprod do not.
    atol = 1e-5 if cfg.get("rescale_betas_zero_snr") else 1e-8
    np.testing.assert_allclose(np.asarray(ours.betas), ref.betas.numpy(), rtol=1e-5, atol=atol)
    np.testing.assert_allclose(np.asarray(ours.alphas_cumprod), ref.alphas_cumprod.numpy(), rtol=2e-5, atol=1e-8)
    np.testing.assert_allclose(float(ours.final_alpha_cumprod), float(ref.final_alpha_cumprod), rtol=1e-6)


def test_trained_betas():
    betas = np.linspace(1e-4, 2e-2, 50)
    ref = diffusers.DDIMScheduler(num_train_timesteps=50, trained_betas=betas)
    ours = S.from_scheduler_config(ref.config)
    np.testing.assert_allclose(np.asarray(ours.alphas_cumprod), ref.alphas_cumprod.numpy(), rtol=1e-5)


def test_other_scheduler_configs_parse():
    # SD1.5 ships PNDM, others Euler / DPM-Solver: same noise schedule, sampler fields ignored.
    for cls in (diffusers.PNDMScheduler, diffusers.EulerDiscreteScheduler, diffusers.DPMSolverMultistepScheduler):
        cfg = dict(cls(**{k: v for k, v in SD.items() if k in ("beta_schedule", "beta_start", "beta_end")}).config)
        cfg["_class_name"] = cls.__name__
        sched = S.from_scheduler_config(cfg)
        assert sched.config.beta_schedule == "scaled_linear"


@pytest.mark.parametrize("field,value", [
    ("beta_schedule", "sigmoid"), ("prediction_type", "flow"), ("timestep_spacing", "karras"),
    ("variance_type", "learned_range"), ("use_flow_sigmas", True), ("some_new_field", 3),
])
def test_unsupported_fields_are_named(field, value):
    with pytest.raises(UnsupportedConfigError, match=field):
        S.from_scheduler_config({**SD, field: value})


def test_config_roundtrip_through_diffusers():
    cfg = S.SchedulerConfig.from_dict({**SD, "prediction_type": "v_prediction", "_class_name": "PNDMScheduler"})
    d = cfg.to_dict()
    assert d["_class_name"] == "DDIMScheduler"
    ref = diffusers.DDIMScheduler.from_config(d)
    assert S.SchedulerConfig.from_dict(dict(ref.config)) == cfg


def test_add_noise_and_velocity_match_diffusers():
    ref = diffusers.DDIMScheduler(**SD)
    ours = S.from_scheduler_config(ref.config)
    rng = np.random.default_rng(0)
    z0 = rng.standard_normal((3, 4, 4, 2)).astype(np.float32)
    eps = rng.standard_normal(z0.shape).astype(np.float32)
    t = np.array([0, 517, 999])
    got = S.add_noise(ours, jnp.asarray(z0), jnp.asarray(eps), jnp.asarray(t))
    want = ref.add_noise(torch.from_numpy(z0), torch.from_numpy(eps), torch.from_numpy(t)).numpy()
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
    got_v = S.training_target(ours, jnp.asarray(z0), jnp.asarray(eps), jnp.asarray(t), "v_prediction")
    want_v = ref.get_velocity(torch.from_numpy(z0), torch.from_numpy(eps), torch.from_numpy(t)).numpy()
    np.testing.assert_allclose(np.asarray(got_v), want_v, rtol=1e-5, atol=1e-6)
    assert S.training_target(ours, z0, eps, t, "epsilon") is eps


@pytest.mark.parametrize("pred", ["epsilon", "v_prediction"])
def test_diffusion_loss_is_eq1_mse(pred):
    sched = S.stable_diffusion_schedule(pred)
    rng = np.random.default_rng(1)
    z0 = jnp.asarray(rng.standard_normal((2, 4, 4, 4)), jnp.float32)
    W = jnp.asarray(rng.standard_normal((4, 4)) * 0.3, jnp.float32)

    def model(z, t, c):
        return z @ W + c[:, None, None, :] * (t[:, None, None, None] / 1000.0)

    cond = jnp.ones((2, 4))
    key = jax.random.key(3)
    loss = jax.jit(lambda p, k: S.diffusion_loss(lambda z, t, c: model(z, t, c) * p, z0, k,
                                                 schedule=sched, cond=cond))(1.0, key)
    # recompute by hand with the same draws
    kt, kn = jax.random.split(key)
    t = jax.random.randint(kt, (2,), 0, 1000, dtype=jnp.int32)
    eps = jax.random.normal(kn, z0.shape)
    ab = np.asarray(sched.alphas_cumprod)[np.asarray(t)][:, None, None, None]
    zt = np.sqrt(ab) * np.asarray(z0) + np.sqrt(1 - ab) * np.asarray(eps)
    target = np.asarray(eps) if pred == "epsilon" else np.sqrt(ab) * np.asarray(eps) - np.sqrt(1 - ab) * np.asarray(z0)
    want = np.mean((np.asarray(model(jnp.asarray(zt, jnp.float32), t, cond)) - target) ** 2)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    per = S.diffusion_loss(model, z0, key, schedule=sched, cond=cond, reduction="none")
    assert per.shape == (2,)
    np.testing.assert_allclose(float(per.mean()), want, rtol=1e-5)
    # differentiable w.r.t. what the model closes over (the G-KA stages train LoRA / the metaword)
    g = jax.grad(lambda p: S.diffusion_loss(lambda z, t, c: model(z, t, c) * p, z0, key,
                                            schedule=sched, cond=cond))(1.0)
    assert np.isfinite(float(g)) and float(g) != 0.0
