"""RC-JSCC [55] and VJ-MAE [56] over the link (``models.adaptive_jscc``): their rate policies, one
transmission, and their pretraining step (paper Fig. 10's other codecs).

``transmit_adaptive(codec, params, z, key, rate_units=, snr_db=, omega_index=, link=, mode=)``
    The policy picks n = 64 tau per sample, then the chain is exactly JSCC(MT/AT)'s
    (``transmission.transmit_latents``: truncation to the first 2n code channels, power
    normalisation over the K = h w n used symbols, 64-QAM, OFDM with per-sample gamma / omega,
    MMSE equalisation, zero padding, reconstructor), one compile for all rates. ``rate_units``
    [B] (int, 64 tau) is read according to ``mode``:

    * ``"cap"`` (default; T-KA under Phi_EU and ``ReceiveFn``): the condition's tau is the budget
      the link offers; the policy chooses within it (RC-JSCC: choices above it are removed before
      the argmax; VJ-MAE: n = min(n_H, budget)). Our reading of "their own rate policies deciding
      the rate" under a grid that names tau.
    * ``"force"``: exactly the given rate (the policy is overridden): the per-rate PSNR gates.
    * ``"free"``: no budget (n_max = 6): the policy alone decides (pretraining).

    Returns ``(Transmission, AdaptiveInfo)``: ``units`` int32 [B] the n actually sent (K = h w n),
    ``rate_cost`` float32 [B] the groups sent n (RC-JSCC training: straight-through, forward the
    hard count, gradient of the relaxed thermometer), ``probs`` [B, G + 1] the policy's
    distribution over k = n - n_base (VJ-MAE: one-hot).

Gradients to RC-JSCC's policy (training, ``policy_key`` given)
    The chosen one-hot y is Gumbel-softmax straight-through; the thermometer group mask m = T(y)
    multiplies the code channels before truncation, so a *sent* group gets dL/dm_g = <dL/dcode_g,
    code_g> through the link. An *unsent* group never reaches the receiver (its slots are dropped),
    which would give it no gradient; so the receiver adds (m_g - stop_gradient(m_g)) * v_g to its
    zero-padded channels, v_g = stop_gradient(code_g scaled by the sample's power normalisation):
    zero in the forward pass, and the first-order effect of turning the group on in the backward
    pass (as if it arrived clean). Inference (``policy_key=None``) is the argmax, deterministic.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dekag_jax.ka.objective import LossWeights, eq4_loss, eq4_terms
from dekag_jax.ka.transmission import LinkConfig, Transmission, decode_latents, sample_conditions, transmit_latents
from dekag_jax.models.adaptive_jscc import (RCJSCCCodec, VJMAECodec, allowed_choices, channel_mask,
                                            entropy_rate_units, greedy_choice, gumbel_choice, thermometer)
from dekag_jax.models.jscc import JSCCCodec

__all__ = ["RATE_MODES", "AdaptiveInfo", "is_adaptive", "transmit_adaptive", "transmit_any",
           "make_adaptive_train_step", "temperature_at", "units_histogram"]

RATE_MODES = ("cap", "force", "free")


class AdaptiveInfo(NamedTuple):
    units: jax.Array       # int32 [B]: n = 64 tau sent
    rate_cost: jax.Array   # float32 [B]: groups sent (ST for RC-JSCC training)
    probs: jax.Array       # float32 [B, G + 1]: policy distribution over k = n - n_base


def is_adaptive(codec) -> bool:
    return isinstance(codec, (RCJSCCCodec, VJMAECodec))


def _budget(codec, rate_units, B: int, mode: str) -> jax.Array:
    if mode not in RATE_MODES:
        raise ValueError(f"rate mode {mode!r}; expected one of {', '.join(RATE_MODES)}")
    if mode == "free":
        return jnp.full((B,), codec.config.max_rate_units, jnp.int32)
    return jnp.broadcast_to(jnp.asarray(rate_units, jnp.int32), (B,))


def transmit_adaptive(codec, params: Any, z: jax.Array, key: jax.Array, *, rate_units, snr_db, omega_index,
                      link: LinkConfig = LinkConfig(), mode: str = "cap", policy_key: jax.Array | None = None,
                      temperature=1.0, explore_units: jax.Array | None = None) -> tuple[Transmission, AdaptiveInfo]:
    """One transmission of latents z [B, h, w, 4] with the codec's own rate policy (module doc).

    ``explore_units`` (RC-JSCC training only): int [B], 0 = the policy's choice, else the n sent
    for that sample instead (exploration; no gradient reaches the policy from it)."""
    if z.ndim != 4:
        raise ValueError(f"transmit_adaptive: latents must be [B, h, w, C], got {z.shape}")
    B, h, w = z.shape[:3]
    cfg = codec.config
    budget = _budget(codec, rate_units, B, mode)
    snr = jnp.broadcast_to(jnp.asarray(snr_db, jnp.float32), (B,))
    if isinstance(codec, VJMAECodec):
        n_h = entropy_rate_units(z, cfg)
        n = budget if mode == "force" else jnp.minimum(n_h, budget)
        n = jnp.clip(n, cfg.base_units, cfg.max_rate_units).astype(jnp.int32)
        t = transmit_latents(codec, params, z, key, rate_units=n, snr_db=snr, omega_index=omega_index, link=link)
        probs = jax.nn.one_hot(n - cfg.base_units, cfg.max_rate_units - cfg.base_units + 1, dtype=jnp.float32)
        return t, AdaptiveInfo(n, n.astype(jnp.float32), probs)
    if not isinstance(codec, RCJSCCCodec):
        raise TypeError(f"transmit_adaptive: {type(codec).__name__} has no rate policy (use transmit_latents)")

    var = {"params": params}
    code, pooled = codec.apply(var, z, snr, method=RCJSCCCodec.encode)
    logits = codec.apply(var, pooled, snr, method=RCJSCCCodec.select)
    allowed = allowed_choices(budget, cfg.base_units, cfg.num_choices, force=(mode == "force"))
    logits = jnp.where(allowed, logits, -1e9)
    y = greedy_choice(logits) if policy_key is None else gumbel_choice(policy_key, logits, temperature)
    if explore_units is not None:
        ex = jnp.asarray(explore_units, jnp.int32)
        forced = jax.nn.one_hot(jnp.clip(ex - cfg.base_units, 0, cfg.num_choices - 1), cfg.num_choices,
                                dtype=jnp.float32)
        y = jnp.where((ex > 0)[:, None], forced, y)
    gm = thermometer(y)                                                     # [B, G], forward exactly 0/1
    n = (cfg.base_units + jnp.argmax(y, axis=-1)).astype(jnp.int32)
    chm = channel_mask(gm, cfg.base_units, cfg.code_channels)               # [B, 12]
    sent = jax.lax.stop_gradient(chm)
    code_m = code * chm[:, None, None, :]
    # The power normalisation transmit_latents applies (mean |s|^2 = 1 over the K = h w n used symbols).
    pw = jnp.sum((code * sent[:, None, None, :]).astype(jnp.float32) ** 2, axis=(1, 2, 3)) / (h * w * n)
    v = jax.lax.stop_gradient(code * jax.lax.rsqrt(jnp.maximum(pw, 1e-12))[:, None, None, None])
    surrogate = ((chm - sent) * (1.0 - sent))[:, None, None, :] * v         # 0 forward (module doc)

    def apply_fn(p, x, method):
        if method is JSCCCodec.encode:
            return code_m
        return codec.apply({"params": p}, x + surrogate, snr, method=RCJSCCCodec.reconstruct)

    t = transmit_latents(codec, params, z, key, rate_units=n, snr_db=snr, omega_index=omega_index, link=link,
                         apply_fn=apply_fn)
    return t, AdaptiveInfo(n, cfg.base_units + jnp.sum(gm, axis=-1), jax.nn.softmax(logits, axis=-1))


def transmit_any(codec, params: Any, z: jax.Array, key: jax.Array, *, rate_units, snr_db, omega_index,
                 link: LinkConfig = LinkConfig(), rate_mode: str = "cap") -> Transmission:
    """``transmit_latents`` for JSCC(MT/AT) (rate = the condition's), ``transmit_adaptive`` (inference:
    argmax policy, ``rate_mode``) for RC-JSCC and VJ-MAE. The T-KA forward uses this."""
    if is_adaptive(codec):
        return transmit_adaptive(codec, params, z, key, rate_units=rate_units, snr_db=snr_db,
                                 omega_index=omega_index, link=link, mode=rate_mode)[0]
    return transmit_latents(codec, params, z, key, rate_units=rate_units, snr_db=snr_db, omega_index=omega_index,
                            link=link)


def temperature_at(step, steps: int, start: float, end: float):
    """Gumbel temperature annealed exponentially from ``start`` (step 0) to ``end`` (step ``steps``)."""
    frac = jnp.clip(jnp.asarray(step, jnp.float32) / max(int(steps), 1), 0.0, 1.0)
    return start * (end / start) ** frac


def make_adaptive_train_step(codec, vae, optimizer, *, link: LinkConfig, weights: LossWeights, grid,
                             features=None, rate_weight: float = 0.0, mae_random_prob: float = 0.5,
                             explore_prob: float = 0.0):
    """Pretraining step of RC-JSCC / VJ-MAE: ``step(state, aux, z, x, key, temperature) -> (state,
    metrics)``, jitted, ``state`` donated (``codec_training.init_state``'s layout).

    gamma and omega per sample from ``grid`` (a ``codec_training.ConditionGrid``; its rates are
    not used: the policy decides). RC-JSCC: Gumbel choice at ``temperature``, no budget, loss =
    eq. 4 + ``rate_weight`` * mean groups sent. VJ-MAE: the entropy policy's rate, except for a
    share ``mae_random_prob`` of samples that get a uniform rate in [n_base, n_max] (MAE-style
    random masking, module doc of ``models.adaptive_jscc``); no rate term (its policy has no
    parameters). RC-JSCC with ``explore_prob`` > 0: that share of samples gets a uniform random n
    instead of the policy's (exploration, no policy gradient from them) so the codec keeps learning
    every rate: without it the codec co-adapts to the policy's current choice, the rates it leaves
    get worse, and the policy never comes back to them (our first 383-step run: 6/64 always).
    Metrics add ``units`` (mean n the policy chose, explored samples excluded) and ``rate_cost``."""
    from dekag_jax.ka.codec_training import ConditionGrid  # noqa: F401  (type of ``grid``)

    if not is_adaptive(codec):
        raise TypeError(f"make_adaptive_train_step: {type(codec).__name__} has no rate policy")
    if not 0.0 <= mae_random_prob <= 1.0:
        raise ValueError(f"mae_random_prob={mae_random_prob} must be in [0, 1]")
    if not 0.0 <= explore_prob < 1.0:
        raise ValueError(f"explore_prob={explore_prob} must be in [0, 1)")
    omega_idx = grid.omega_indices(link)
    snrs = grid.snrs_db
    cfg = codec.config

    def loss_fn(params, aux, z, x, key, temperature):
        B = z.shape[0]
        kc, kt, kp, kr, kb = jax.random.split(key, 5)
        _, snr, widx = sample_conditions(kc, B, (cfg.max_rate_units,), snrs, omega_idx)
        if isinstance(codec, RCJSCCCodec):
            explore = None
            policy_share = jnp.ones((B,), jnp.float32)
            if explore_prob > 0:
                rnd = jax.random.randint(kr, (B,), cfg.base_units, cfg.max_rate_units + 1)
                on = jax.random.bernoulli(kb, explore_prob, (B,))
                explore = jnp.where(on, rnd, 0)
                policy_share = 1.0 - on.astype(jnp.float32)
            t, info = transmit_adaptive(codec, params, z, kt, rate_units=cfg.max_rate_units, snr_db=snr,
                                        omega_index=widx, link=link, mode="free", policy_key=kp,
                                        temperature=temperature, explore_units=explore)
        else:
            n_h = entropy_rate_units(z, cfg)
            rnd = jax.random.randint(kr, (B,), cfg.base_units, cfg.max_rate_units + 1)
            n = jnp.where(jax.random.bernoulli(kb, mae_random_prob, (B,)), rnd, n_h)
            t, info = transmit_adaptive(codec, params, z, kt, rate_units=n, snr_db=snr, omega_index=widx,
                                        link=link, mode="force")
            policy_share = jnp.ones((B,), jnp.float32)
        x_check = decode_latents(vae, aux["vae"], t.z_check)
        feat = None if features is None else (lambda im: features(aux["feat"], im))
        terms = eq4_terms(z=z, z_check=t.z_check, x=x, x_check=x_check, symbols=t.symbols,
                          qam_order=link.qam_order, features=feat, mask=t.mask)
        loss, metrics = eq4_loss(terms, weights)
        rate = jnp.mean(info.rate_cost)
        loss = loss + rate_weight * rate
        units = jnp.sum(info.units.astype(jnp.float32) * policy_share) / jnp.maximum(jnp.sum(policy_share), 1.0)
        metrics.update(loss=loss, rate_cost=rate, units=units)
        return loss, metrics

    def step(state, aux, z, x, key, temperature):
        import optax

        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], aux, z, x, key,
                                                                        temperature)
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        metrics["grad_norm"] = optax.global_norm(grads)
        return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, metrics

    return jax.jit(step, donate_argnums=(0,))


def units_histogram(units) -> dict:
    """{"n/64": share} of an int array of n (for logs)."""
    u = np.asarray(units).reshape(-1)
    return {f"{n}/64": round(float(np.mean(u == n)), 4) for n in range(1, 7) if np.any(u == n)}
