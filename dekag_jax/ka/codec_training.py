"""One training step of the JSCC codec under eq. 4 (pretraining) or eq. 7 (T-KA, same objective on
S_EG under Phi_EU): pure, jitted once per rate, state donated.

The shared latent decoder f_LD (the edge VAE decoder) is frozen: the paper reuses the generation
module's decoder (Sec. V-B), so training it here would change the edge-GAI; gradients still flow
through it into the codec. Conditions: tau, gamma and omega are drawn per sample inside the step from
static grids (``ConditionGrid``, built on ``channel.condition``; one
compile serves every rate: the mixed-rate layout of ``transmission.transmit_latents``).
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from dekag_jax.channel import condition as _condition
from dekag_jax.ka.objective import LossWeights, eq4_loss, eq4_terms
from dekag_jax.ka.transmission import LinkConfig, decode_latents, delay_spread_index, sample_conditions, \
    transmit_latents
from dekag_jax.models.jscc import JSCCCodec

__all__ = ["ConditionGrid", "init_state", "make_train_step"]


class ConditionGrid(_condition.ConditionGrid):
    """A distribution Phi of phi = (tau, gamma, omega), uniform over each grid independently:
    :class:`dekag_jax.channel.condition.ConditionGrid` (the one place that holds and validates
    rates, SNRs and delay spreads; same fields, ``rates``/``snrs_db``/``delay_spreads_s``) plus the
    indices of its omegas on a link's grid of precomputed channel factors (what a jitted step takes)."""

    def omega_indices(self, link: LinkConfig) -> tuple:
        return tuple(int(i) for i in delay_spread_index(list(self.delay_spreads_s), link))


def init_state(params: Any, optimizer: optax.GradientTransformation) -> dict:
    """The training state, a plain pytree: ``{"params", "opt_state", "step"}``."""
    return {"params": params, "opt_state": optimizer.init(params), "step": jnp.zeros((), jnp.int32)}


def make_train_step(codec: JSCCCodec, vae, optimizer: optax.GradientTransformation, *, link: LinkConfig,
                    weights: LossWeights, grid: ConditionGrid, features: Callable | None = None,
                    balance: str = "none"):
    """``step(state, aux, z, x, key) -> (state, metrics)`` jitted, ``state`` donated; each sample gets
    its own phi drawn from ``grid``. ``aux = {"vae": vae_params, "feat": feature_params}``; ``z`` [B, h, w, 4]
    latents, ``x`` [B, H, W, 3] their target images in [0, 1]; ``features(feat_params, images)`` the
    perceptual network (None: no term (iii)).

    ``balance``: "none" = eq. 4 averaged over the batch (the paper's objective); "log" = each
    sample's eq. 4 loss weighted by 1 / stop_gradient(itself), i.e. the gradient of the mean of
    log(loss): a condition mix (0..20 dB) then weighs each sample's *relative* improvement, as an
    average of PSNRs in dB does, instead of letting the low-SNR samples' large MSE dominate
    (scripts/at_vs_mt.py measures the difference)."""
    if balance not in ("none", "log"):
        raise ValueError(f"balance={balance!r}; expected 'none' or 'log'")
    omega_idx = grid.omega_indices(link)
    snrs, units = grid.snrs_db, grid.rate_units()

    def loss_fn(params, aux, z, x, key):
        kc, kt = jax.random.split(key)
        n, snr, widx = sample_conditions(kc, z.shape[0], units, snrs, omega_idx)
        t = transmit_latents(codec, params, z, kt, rate_units=n, snr_db=snr, omega_index=widx, link=link)
        x_check = decode_latents(vae, aux["vae"], t.z_check)
        feat = None if features is None else (lambda im: features(aux["feat"], im))
        terms = eq4_terms(z=z, z_check=t.z_check, x=x, x_check=x_check, symbols=t.symbols,
                          qam_order=link.qam_order, features=feat, mask=t.mask)
        if balance == "none":
            return eq4_loss(terms, weights)
        per = (weights.latent * terms["latent"] + weights.image * terms["image"]
               + weights.perceptual * terms["perceptual"] + weights.constellation * terms["constellation"])
        return eq4_loss(terms, weights, sample_weights=1.0 / jax.lax.stop_gradient(jnp.maximum(per, 1e-8)))

    def step(state, aux, z, x, key):
        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], aux, z, x, key)
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        metrics["grad_norm"] = optax.global_norm(grads)
        return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, metrics

    return jax.jit(step, donate_argnums=(0,))
