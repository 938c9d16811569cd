"""CALA, condition-aware LoRA (paper Sec. IV-C, eq. 10).

Each rank-R LoRA update M = B A = sum_i b_i a_i (paper notation) becomes
M'(phi) = sum_i g_i(phi) b_i a_i, with a lightweight soft gate g: R^3 -> R^R per adapted matrix.
In our (Flax) layout, a Dense kernel update is ``A [in, R] @ diag(g) @ B [R, out]``: column i of
A and row i of B form the paper's rank-1 component i.

Our readings of the paper (it specifies neither the gate's form nor the input scaling):

* **One affine map per adapted matrix**, ``z = phi_n @ gate_kernel + gate_bias`` with
  ``gate_kernel [3, R]``, ``gate_bias [R]``: 3R + R = 64 parameters at R = 16. The paper's 2.4k
  gate parameters for its codec's LoRA matrices at R = 16 (Sec. VI-A4) are about 37 such maps,
  i.e. one per adapted matrix; a hidden layer would cost several times more.
* **Output non-linearity 2·sigmoid(z)**: each component's weight lies in (0, 2), soft (no
  component is ever switched off, as the paper insists: "no rank-1 component is explicitly
  excluded"), and with a zero kernel and zero bias every g_i = 1, so CALA starts exactly as plain
  LoRA and the training of (10) starts where LoRA's would.
* **Normalisation of phi = (tau, gamma, omega)** to O(1) inputs over the paper's grid
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

__all__ = ["D_PHI", "normalise_phi", "normalise_phi_array", "init_gate", "gate_values", "GATE_KEYS"]

D_PHI = 3
GATE_KEYS = ("gate_kernel", "gate_bias")

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


def init_gate(rank: int, dtype=jnp.float32, d_phi: int = D_PHI) -> dict[str, jax.Array]:
    """``{"gate_kernel": zeros [d_phi, rank], "gate_bias": zeros [rank]}``: g(phi) = 1 for every phi
    (2·sigmoid(0) = 1), so CALA starts as plain LoRA."""
    return {"gate_kernel": jnp.zeros((d_phi, rank), dtype), "gate_bias": jnp.zeros((rank,), dtype)}


def gate_values(adapter, phi_n: jax.Array) -> jax.Array:
    """g(phi) ``[..., R]`` = 2·sigmoid(phi_n @ gate_kernel + gate_bias), in float32.

    adapter: a dict holding ``gate_kernel [d_phi, R]`` and ``gate_bias [R]``; phi_n: ``[..., d_phi]``
    (normalised, see ``normalise_phi``). Leading axes of phi_n are kept (per-sample gates).
    """
    k, b = adapter["gate_kernel"], adapter["gate_bias"]
    phi_n = jnp.asarray(phi_n, jnp.float32)
    if phi_n.shape[-1:] != k.shape[:1]:
        raise ValueError(f"phi must be [..., {k.shape[0]}] (normalised (tau, gamma, omega)), got shape {phi_n.shape}")
    z = phi_n @ k.astype(jnp.float32) + b.astype(jnp.float32)
    return 2.0 * jax.nn.sigmoid(z)


def gate_param_count(rank: int, d_phi: int = D_PHI) -> int:
    """Parameters of one gate (affine d_phi -> rank)."""
    return d_phi * rank + rank

