"""DDIM full trajectories against diffusers' DDIMScheduler where the chain ends exactly at t = 0.

For every spacing, step counts (and, for "leading", a ``steps_offset``) are chosen so that the
last update's previous timestep t - T // n is exactly 0: that update must use abar_0, not
``final_alpha_cumprod`` (which only applies when the previous timestep is negative), and
``set_alpha_to_one`` must then make no difference to it. "linspace" always ends with the
update AT t = 0 (its previous timestep is negative by construction): covered as that case.
Every intermediate latent and predicted x0 is compared, with both ``set_alpha_to_one``.
"""
import numpy as np
import pytest

import jax
import jax.numpy as jnp

from dekag_jax.diffusion import ddim, schedules as S

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

BASE = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
            num_train_timesteps=1000, clip_sample=False)

# (spacing, n, steps_offset, prev timestep of the last update)
_slow = pytest.mark.slow  # more of the same; each case costs a compile
CASES = [
    ("leading", 3, 333, 0),     # timesteps 999, 666, 333
    pytest.param("leading", 7, 142, 0, marks=_slow),     # 994 ... 142
    ("trailing", 6, 0, 0),      # round(1000/6) - 1 = 166 = 1000 // 6
    pytest.param("trailing", 11, 0, 0, marks=_slow),     # 90 = 1000 // 11
    ("linspace", 4, 0, -250),   # last update at t = 0
    pytest.param("linspace", 10, 0, -100, marks=_slow),
]


def _model(seed=1, C=4):
    rng = np.random.default_rng(seed)
    A = (rng.standard_normal((C, C)) * 0.4).astype(np.float32)
    b = rng.standard_normal((C,)).astype(np.float32)

    def f(z, t, cond):  # a stand-in noise predictor, identical for both libraries
        return z @ A + (t.astype(z.dtype) / 1000.0)[:, None, None, None] * b + cond
    return f


_normal = jax.jit(lambda k, shape: jax.random.normal(k, shape, jnp.float32), static_argnums=1)


@pytest.mark.parametrize("set_alpha_to_one", [True, False])
@pytest.mark.parametrize("spacing,n,offset,last_prev", CASES)
def test_trajectory_matches_diffusers_to_t0(spacing, n, offset, last_prev, set_alpha_to_one):
    pred = "v_prediction" if n % 2 else "epsilon"
    # One case with eta > 0 (the variance term at prev = 0); each such case costs ~4 s of
    # compiling the PRNG here, so only one.
    eta = 0.5 if (spacing, n, set_alpha_to_one) == ("trailing", 6, True) else 0.0
    cfg = dict(BASE, timestep_spacing=spacing, steps_offset=offset, prediction_type=pred,
               set_alpha_to_one=set_alpha_to_one)
    ref = diffusers.DDIMScheduler(**cfg)
    ref.set_timesteps(n)
    sched = S.from_scheduler_config(ref.config)
    ts, prev = ddim.ddim_timesteps(sched, n), ddim.ddim_prev_timesteps(sched, n)
    np.testing.assert_array_equal(ts, ref.timesteps.numpy())
    assert prev[-1] == last_prev == int(ref.timesteps[-1]) - 1000 // n

    f = jax.jit(_model())
    rng = np.random.default_rng(3)
    zT = rng.standard_normal((2, 4, 4, 4)).astype(np.float32)
    cond = (0.3 * rng.standard_normal((2, 1, 1, 4))).astype(np.float32)
    key = jax.random.key(5)
    keys = jax.random.split(key, n)
    step = jax.jit(lambda o, t, tp, z, k: ddim.ddim_step(sched, o, t, tp, z, eta=eta,
                                                         key=k if eta > 0 else None))
    z_ours, z_ref = jnp.asarray(zT), torch.from_numpy(zT)
    for i, t in enumerate(ts):
        out = f(z_ours, jnp.full((2,), int(t)), cond)
        z_ours, x0_ours = step(out, int(t), int(prev[i]), z_ours, keys[i])
        out_ref = torch.from_numpy(np.array(f(jnp.asarray(z_ref.numpy()), jnp.full((2,), int(t)), cond)))
        noise = None
        if eta > 0:
            noise = torch.from_numpy(np.array(_normal(keys[i], zT.shape)))
        r = ref.step(out_ref, int(t), z_ref, eta=eta, variance_noise=noise)
        z_ref = r.prev_sample
        np.testing.assert_allclose(np.asarray(x0_ours), r.pred_original_sample.numpy(), rtol=1e-4,
                                   atol=1e-4, err_msg=f"x0 at step {i} (t={t})")
        np.testing.assert_allclose(np.asarray(z_ours), z_ref.numpy(), rtol=1e-4, atol=1e-4,
                                   err_msg=f"z at step {i} (t={t}, prev={prev[i]})")
    # The scanned sampler ends at the same z_0.
    z0 = ddim.ddim_sample(f, jnp.asarray(zT), jnp.asarray(cond), schedule=sched, num_steps=n,
                          guidance_scale=1.0, eta=eta, key=key if eta > 0 else None)
    np.testing.assert_allclose(np.asarray(z0), z_ref.numpy(), rtol=1e-4, atol=1e-4)


def test_last_update_at_prev_zero_uses_alpha_bar_zero():
    """Direct check of the boundary: prev = 0 takes abar_0 whatever set_alpha_to_one says;
    prev = -1 takes final_alpha_cumprod (1 with set_alpha_to_one)."""
    cfg = dict(BASE, timestep_spacing="trailing", set_alpha_to_one=True, prediction_type="epsilon")
    sched = S.from_scheduler_config(cfg)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((1, 2, 2, 4)).astype(np.float32)
    eps = rng.standard_normal(z.shape).astype(np.float32)
    t = 166
    ac = np.asarray(sched.alphas_cumprod, np.float64)
    x0 = (z - np.sqrt(1 - ac[t]) * eps) / np.sqrt(ac[t])
    for tp, a_prev in ((0, ac[0]), (-1, 1.0)):
        got, _ = ddim.ddim_step(sched, jnp.asarray(eps), t, tp, jnp.asarray(z))
        want = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5, err_msg=f"prev={tp}")
