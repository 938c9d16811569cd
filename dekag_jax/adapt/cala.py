"""CALA, condition-aware LoRA (paper Sec. IV-C, eq. 10).

Each rank-R LoRA update M = B A = sum_i b_i a_i (paper notation) becomes
M'(phi) = sum_i g_i(phi) b_i a_i, with a lightweight soft gate g: R^3 -> R^R per adapted matrix.
In our (Flax) layout, a Dense kernel update is ``A [in, R] @ diag(g) @ B [R, out]``: column i of
A and row i of B form the paper's rank-1 component i.

The paper specifies neither the gate's form nor the input scaling; it says only "a lightweight
soft gating function g: R^3 -> R^R" (borrowed from mixture-of-experts gating, but soft: "no
rank-1 component is explicitly excluded") and, Sec. VI-A4, about 2.4k gate parameters for its
codec's LoRA matrices at R = 16. Our readings, selectable per adapter set (``GATE_FORMS``, config
``adapter.cala_gate``), all of them starting at exactly g = 1 for every phi, so CALA starts as
plain LoRA and the training of (10) starts where LoRA's would (tested bit-identical):

* ``sigmoid2`` (default): ``g = 2·sigmoid(phi_n @ gate_kernel + gate_bias)``, ``gate_kernel
  [3, R]``, ``gate_bias [R]``: one affine map per adapted matrix, 3R + R = 64 parameters at
  R = 16. The paper's 2.4k for its codec are about 37 such maps, i.e. one per adapted matrix
  (32 matrices here at the paper's size: 1,984). Each weight lies in (0, 2): soft, no component
  is ever switched off; slope 0.5 at init.
* ``linear``: ``g = 1 + phi_n @ gate_kernel + gate_bias`` (same parameters). Unbounded (a weight
  may go negative or above 2), slope 1 at init: the plainest reading of "weighting coefficients",
  and twice sigmoid2's initial sensitivity, so the gates travel further per Adam step of the
  logits.
* ``softmax``: ``g = R·softmax(phi_n @ gate_kernel + gate_bias)`` (same parameters). The MoE
  reading: components compete for a fixed total weight sum_i g_i = R (a condition can only move
  weight between rank-1 components, never scale the whole update), which separates "which
  component for which condition" from plain rescaling.
* ``mlp``: ``g = 2·sigmoid(tanh(phi_n @ gate_hidden_kernel + gate_hidden_bias) @ gate_kernel +
  gate_bias)`` with ``GATE_HIDDEN`` = 8 hidden units: ``gate_hidden_kernel [3, 8]``,
  ``gate_hidden_bias [8]``, ``gate_kernel [8, R]``, ``gate_bias [R]``; 3·8 + 8 + 8R + R = 176
  parameters at R = 16 (5,632 for 32 matrices at the paper's size, 2.3 times the paper's 2.4k;
  the paper's "lightweight neural model" could be this). The output layer is zero-initialised
  (g = 1); the hidden layer is random (``U(-1/sqrt(3), 1/sqrt(3))``, the bias zero), otherwise no
  gradient ever reaches it (tanh' of a zero output layer's input times a zero kernel).
* ``fourier``: ``g = 2·sigmoid(f(phi_n) @ gate_kernel + gate_bias)`` with the features
  ``f = [phi_n, sin(pi k phi_n), cos(pi k phi_n)]`` for k = 1..``FOURIER_FREQS`` (= 2):
  ``gate_kernel [15, R]``, 15R + R = 256 parameters at R = 16. A gate that may be non-monotone
  in each coordinate (e.g. favour mid SNRs) at the cost of no hidden layer.

Every form's parameters carry ``gate_kernel`` and ``gate_bias`` (the output layer), which is how
``adapt.lora`` tells a CALA adapter from a plain one; sigmoid2, linear and softmax have the same
shapes, so the form itself is static configuration (``LoraSpec.gate``) that must travel with a
trained adapter (``ka.tka.save_checkpoint`` writes it, ``load_checkpoint`` checks it). Measured
(``scripts/tka_sweep.py``, README "Sweep before reporting CALA vs LoRA"): at our short depth no form
beats LoRA by more than the seed-to-seed noise, so the default stays ``sigmoid2``.

**Normalisation of phi = (tau, gamma, omega)** to O(1) inputs over the paper's grid
(tau in {1..6}/64, gamma in 0..20 dB, omega in {30, 300, 3000} ns), see ``normalise_phi``:
``tau * 64 / 6`` (in (0, 1]), ``gamma_dB / 20`` (in [0, 1]), ``log10(omega / 30 ns) / 2``
(in [0, 1]; delay spread acts on the channel correlation logarithmically, 30/300/3000 ns
become 0, 0.5, 1).

This module holds the gate maths; ``dekag_jax.adapt.lora`` applies it per sample inside the
intercepted Dense/Conv calls (``h = x A``, ``h * g(phi_b)``, then ``h B``), so a batch that
mixes conditions never materialises a weight copy per sample.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["D_PHI", "normalise_phi", "normalise_phi_array", "init_gate", "gate_values", "GATE_KEYS", "GATE_FORMS",
           "DEFAULT_GATE", "check_form", "gate_shapes", "gate_param_count", "is_gate_key"]

D_PHI = 3
GATE_KEYS = ("gate_kernel", "gate_bias")          # the output layer, present in every form
GATE_FORMS = ("sigmoid2", "linear", "softmax", "mlp", "fourier")
DEFAULT_GATE = "sigmoid2"
GATE_HIDDEN = 8          # mlp: hidden width (small: "lightweight", and 176 parameters per matrix at R = 16)
FOURIER_FREQS = 2        # fourier: sin/cos(pi k phi_n), k = 1..2 (half and full period over the [0, 1] grid)

# The paper's grid (Sec. VI-A2); the normalisation maps it onto [0, 1] per coordinate.
TAU_MAX = 6 / 64
SNR_DB_SPAN = 20.0
DELAY_SPREAD_REF_S = 30e-9
DELAY_SPREAD_DECADES = 2.0


def _f32(x) -> jax.Array:
    # Python numbers, Fractions (channel.Condition keeps tau exact) and NumPy go through float64
    return x.astype(jnp.float32) if isinstance(x, jax.Array) else jnp.asarray(np.asarray(x, np.float64), jnp.float32)


def normalise_phi(rate, snr_db, delay_spread_s) -> jax.Array:
    """phi_n ``[..., 3]`` float32 from the transmission condition phi = (tau, gamma, omega).

    rate: tau, symbols per pixel (``[...]``, e.g. 2/64, a Fraction is fine); snr_db: gamma in dB
    (``[...]``); delay_spread_s: omega in seconds (``[...]``, > 0). The three broadcast against
    each other. Returns ``stack([tau * 64/6, gamma_dB / 20, log10(omega / 30e-9) / 2], -1)``.
    """
    if not isinstance(delay_spread_s, jax.Array) and np.any(np.asarray(delay_spread_s, np.float64) <= 0):
        raise ValueError(f"delay_spread_s must be > 0 seconds, got {delay_spread_s!r}")
    tau, snr, omega = jnp.broadcast_arrays(_f32(rate), _f32(snr_db), _f32(delay_spread_s))
    return jnp.stack([tau / TAU_MAX, snr / SNR_DB_SPAN,
                      jnp.log10(omega / DELAY_SPREAD_REF_S) / DELAY_SPREAD_DECADES], axis=-1)


def normalise_phi_array(phi_raw) -> jax.Array:
    """``normalise_phi`` of a raw ``[..., 3]`` array of (tau, gamma_dB, omega_s) rows, e.g.
    ``dekag_jax.channel.condition.phi_array(conditions)``."""
    raw = phi_raw if isinstance(phi_raw, jax.Array) else np.asarray(phi_raw, np.float64)
    if raw.shape[-1:] != (3,):
        raise ValueError(f"phi_raw must be [..., 3] (tau, gamma_dB, omega_s), got shape {raw.shape}")
    return normalise_phi(raw[..., 0], raw[..., 1], raw[..., 2])


def check_form(form: str) -> str:
    """``form`` if it is one of ``GATE_FORMS``, else a one-line ValueError."""
    if form not in GATE_FORMS:
        raise ValueError(f"unknown CALA gate form {form!r}; expected one of {', '.join(GATE_FORMS)}")
    return form


def is_gate_key(name: str) -> bool:
    """Whether an adapter leaf name belongs to a gate (``gate_*``), not to A/B."""
    return name.startswith("gate_")


def _d_in(form: str, d_phi: int) -> int:
    return d_phi * (1 + 2 * FOURIER_FREQS) if form == "fourier" else d_phi


def gate_shapes(rank: int, form: str = DEFAULT_GATE, d_phi: int = D_PHI) -> dict[str, tuple[int, ...]]:
    """Leaf name -> shape of one gate of ``form`` for a rank-``rank`` adapter."""
    check_form(form)
    if form == "mlp":
        return {"gate_hidden_kernel": (d_phi, GATE_HIDDEN), "gate_hidden_bias": (GATE_HIDDEN,),
                "gate_kernel": (GATE_HIDDEN, rank), "gate_bias": (rank,)}
    return {"gate_kernel": (_d_in(form, d_phi), rank), "gate_bias": (rank,)}


def init_gate(rank: int, dtype=jnp.float32, d_phi: int = D_PHI, *, form: str = DEFAULT_GATE,
              key: jax.Array | None = None) -> dict[str, jax.Array]:
    """A gate with g(phi) = 1 exactly for every phi (so CALA starts as plain LoRA): every output
    layer zero (2·sigmoid(0) = 1, 1 + 0 = 1, R·e/(R·e) = 1). ``mlp`` needs ``key`` for its random
    hidden layer (``U(-1/sqrt(d_phi), 1/sqrt(d_phi))``, bias zero)."""
    out = {k: jnp.zeros(s, dtype) for k, s in gate_shapes(rank, form, d_phi).items()}
    if form == "mlp":
        if key is None:
            raise ValueError("the mlp CALA gate needs a key for its random hidden layer")
        bound = 1.0 / np.sqrt(d_phi)
        out["gate_hidden_kernel"] = jax.random.uniform(key, (d_phi, GATE_HIDDEN), jnp.float32, -bound,
                                                       bound).astype(dtype)
    return out


def _check_params(adapter, form: str, d_phi: int) -> None:
    want = gate_shapes(adapter["gate_bias"].shape[-1], form, d_phi)
    have = {k: tuple(v.shape) for k, v in adapter.items() if is_gate_key(k)}
    if have != want:
        raise ValueError(f"CALA gate form {form!r} needs gate parameters {want}, the adapter has {have} "
                         "(trained with another gate form?)")


def gate_values(adapter, phi_n: jax.Array, form: str = DEFAULT_GATE) -> jax.Array:
    """g(phi) ``[..., R]`` of gate ``form`` (see the module docstring), in float32.

    adapter: a dict holding the form's gate leaves (``gate_shapes``; e.g. sigmoid2: ``gate_kernel
    [3, R]``, ``gate_bias [R]``); phi_n: ``[..., 3]`` (normalised, see ``normalise_phi``). Leading
    axes of phi_n are kept (per-sample gates); every form maps each phi row on its own.
    """
    check_form(form)
    d_phi = adapter["gate_hidden_kernel"].shape[0] if form == "mlp" else adapter["gate_kernel"].shape[0] // (
        1 + 2 * FOURIER_FREQS if form == "fourier" else 1)
    _check_params(adapter, form, d_phi)
    phi_n = jnp.asarray(phi_n, jnp.float32)
    if phi_n.shape[-1:] != (d_phi,):
        raise ValueError(f"phi must be [..., {d_phi}] (normalised (tau, gamma, omega)), got shape {phi_n.shape}")
    f32 = {k: v.astype(jnp.float32) for k, v in adapter.items() if is_gate_key(k)}
    if form == "fourier":
        ks = jnp.pi * jnp.arange(1, FOURIER_FREQS + 1, dtype=jnp.float32)
        arg = (phi_n[..., None, :] * ks[:, None]).reshape(*phi_n.shape[:-1], -1)      # [..., F * d_phi]
        phi_n = jnp.concatenate([phi_n, jnp.sin(arg), jnp.cos(arg)], axis=-1)
    if form == "mlp":
        phi_n = jnp.tanh(phi_n @ f32["gate_hidden_kernel"] + f32["gate_hidden_bias"])
    z = phi_n @ f32["gate_kernel"] + f32["gate_bias"]
    if form == "linear":
        return 1.0 + z
    if form == "softmax":
        # R·e_i / sum(e) rather than R·softmax: at z = 0 this is R/R = 1 exactly for any R (1/12·12 is not)
        e = jnp.exp(z - jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True)))
        return (z.shape[-1] * e) / jnp.sum(e, axis=-1, keepdims=True)
    return 2.0 * jax.nn.sigmoid(z)


def gate_param_count(rank: int, d_phi: int = D_PHI, form: str = DEFAULT_GATE) -> int:
    """Parameters of one gate of ``form`` at ``rank``: sigmoid2/linear/softmax 4R (64 at R = 16),
    mlp 4·8 + 8R + R (176), fourier 15R + R (256)."""
    return int(sum(int(np.prod(s)) for s in gate_shapes(rank, form, d_phi).values()))
