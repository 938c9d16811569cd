"""DDIM sampler vs diffusers' DDIMScheduler: timesteps, single updates, whole guided loops."""
import numpy as np
import pytest

import jax
import jax.numpy as jnp

from dekag_jax.diffusion import ddim, schedules as S

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

SD = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000,
          clip_sample=False, set_alpha_to_one=False, steps_offset=1)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("n", [1, 7, 10, 50, 999])
def test_timesteps_match(spacing, n):
    ref = diffusers.DDIMScheduler(**SD, timestep_spacing=spacing)
    ref.set_timesteps(n)
    got = ddim.ddim_timesteps(S.from_scheduler_config(ref.config), n)
    np.testing.assert_array_equal(got, ref.timesteps.numpy())


def test_bad_num_steps():
    with pytest.raises(ValueError, match="num_steps"):
        ddim.ddim_timesteps(S.SchedulerConfig(), 1001)


def _step_ref(cfg, n, i, out, x, eta, noise):
    ref = diffusers.DDIMScheduler(**cfg)
    ref.set_timesteps(n)
    t = int(ref.timesteps[i])
    r = ref.step(torch.from_numpy(out), t, torch.from_numpy(x), eta=eta,
                 variance_noise=None if noise is None else torch.from_numpy(noise))
    return ref, t, r.prev_sample.numpy(), r.pred_original_sample.numpy()


@pytest.mark.parametrize("pred", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("eta", [0.0, 0.7])
@pytest.mark.parametrize("extra", [{}, {"clip_sample": True}, {"thresholding": True, "sample_max_value": 3.0},
                                   {"set_alpha_to_one": True, "timestep_spacing": "trailing"}])
def test_single_step_matches(pred, eta, extra):
    cfg = {**SD, "prediction_type": pred, **extra}
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 8, 8, 4)) * 2).astype(np.float32)
    out = rng.standard_normal(x.shape).astype(np.float32)
    noise = rng.standard_normal(x.shape).astype(np.float32) if eta > 0 else None
    sched = S.from_scheduler_config(cfg)
    n = 10
    prev_ts = ddim.ddim_prev_timesteps(sched, n)
    step = jax.jit(lambda o, tt, tp, xx, nz: ddim.ddim_step(sched, o, tt, tp, xx, eta=eta, variance_noise=nz))
    for i in (0, 4, n - 1):  # first, middle, last (prev_t < 0 -> final_alpha_cumprod)
        ref, t, want_prev, want_x0 = _step_ref(cfg, n, i, out, x, eta, noise)
        got_prev, got_x0 = step(out, t, int(prev_ts[i]), x, noise)
        np.testing.assert_allclose(np.asarray(got_x0), want_x0, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(got_prev), want_prev, rtol=1e-5, atol=1e-5)


def _linear_model(seed, C=4, D=6):
    """Stand-in noise predictor: out = z @ A + t/1000 * b + mean(cond) @ M (same in numpy)."""
    rng = np.random.default_rng(seed)
    A = (rng.standard_normal((C, C)) * 0.4).astype(np.float32)
    b = rng.standard_normal((C,)).astype(np.float32)
    M = (rng.standard_normal((D, C)) * 0.5).astype(np.float32)

    def f(z, t, cond):  # z [N,h,w,C], t [N], cond [N,L,D]
        t = t.astype(z.dtype) / 1000.0
        return z @ A + t[:, None, None, None] * b + (cond.mean(1) @ M)[:, None, None, :]
    return f


@pytest.mark.parametrize("pred,eta,spacing,g", [
    ("epsilon", 0.0, "leading", 7.5),
    ("v_prediction", 0.0, "trailing", 3.0),
    ("epsilon", 0.0, "linspace", 1.0),
    ("v_prediction", 0.5, "leading", 7.5),
])
def test_loop_matches_diffusers(pred, eta, spacing, g):
    n = 10
    cfg = {**SD, "prediction_type": pred, "timestep_spacing": spacing}
    sched = S.from_scheduler_config(cfg)
    f = _linear_model(1)
    rng = np.random.default_rng(2)
    B = 2
    zT = rng.standard_normal((B, 4, 4, 4)).astype(np.float32)
    cond = rng.standard_normal((B, 3, 6)).astype(np.float32)
    uncond = rng.standard_normal((B, 3, 6)).astype(np.float32)
    use_cfg = g > 1.0
    key = jax.random.key(7)

    got = jax.jit(lambda z, c, u, k: ddim.ddim_sample(f, z, c, u if use_cfg else None, schedule=sched,
                                                       num_steps=n, guidance_scale=g, eta=eta, key=k))(
        zT, cond, uncond, key)

    # diffusers' StableDiffusionPipeline loop, with the same per-step noise (eta > 0)
    keys = jax.random.split(key, n)
    ref = diffusers.DDIMScheduler(**cfg)
    ref.set_timesteps(n)
    z = torch.from_numpy(zT)
    ctx = np.concatenate([uncond, cond]) if use_cfg else cond
    for i, t in enumerate(ref.timesteps):
        zin = torch.cat([z] * 2) if use_cfg else z
        out = torch.from_numpy(np.array(f(jnp.asarray(zin.numpy()), jnp.full((zin.shape[0],), int(t)), ctx)))
        if use_cfg:
            u, c = out.chunk(2)
            out = u + g * (c - u)
        noise = None
        if eta > 0:
            noise = torch.from_numpy(np.array(jax.random.normal(keys[i], zT.shape, jnp.float32)))
        z = ref.step(out, t, z, eta=eta, variance_noise=noise).prev_sample
    np.testing.assert_allclose(np.asarray(got), z.numpy(), rtol=1e-4, atol=1e-4)
    assert np.abs(z.numpy() - zT).max() > 0.1  # the loop did something


def test_eta_needs_key():
    sched = S.stable_diffusion_schedule()
    with pytest.raises(ValueError, match="key"):
        ddim.ddim_sample(_linear_model(0), jnp.zeros((1, 2, 2, 4)), jnp.zeros((1, 3, 6)), schedule=sched,
                         num_steps=2, eta=1.0)
