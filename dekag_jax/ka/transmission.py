"""The JSCC codec over the link (paper Sec. II-B eq. 2-3, Sec. V-B): one transmission of latents.

Chain, per sample b of a batch (shapes for latents z [B, h, w, 4], code width 12, rate n / 64):

    z [B, h, w, 4]  --f_JE-->  code [B, h, w, 12] (real)
      --truncate to 2n channels (first n real, last n imaginary)-->  s [B, K] complex, K = h w n
      --power normalisation (mean |s_k|^2 = 1 over the K symbols of each sample)-->  s
      --64-QAM quantiser (nearest point forward; soft-to-hard gradient, DeepJSCC-Q [27])-->  s_q
      --OFDM link: block-fading correlated Rayleigh over J = 120 sub-channels (eq. 2-3), AWGN at
        gamma_b, delay spread omega_b, MMSE equalisation with perfect CSI-->  s_check [B, K]
      --concat(real, imag) and zero-pad back to 12 channels-->  [B, h, w, 12]
      --latent reconstructor-->  z_check [B, h, w, 4]  --f_LD (the edge VAE decoder)-->  x_check
         [B, 8h, 8w, 3] in [0, 1].

Conditions phi = (tau, gamma, omega) (Sec. II-B)
    * tau may differ per sample and costs no recompilation: ``transmit_latents`` sends every sample
      in K_max = h w n_max symbol slots of which the first K_b = h w n_b are used (the mixed-rate
      layout, see its docstring), so one compiled program serves all six rates and batches mixing
      them (as CALA's per-sample conditions need). ``transmit_latents_fixed_rate`` is the literal
      K-symbol path (one compile per rate, since K is a shape); tests check they agree.
    * gamma (dB) is a float array broadcastable to [B]: any value, traced; each sample has its own.
    * omega must lie on ``link.ofdm.delay_spread_grid_s`` (paper: 30, 300, 3000 ns). It is turned
      into a grid index on the host (``condition_arrays``: an off-grid value raises one line naming
      it), and the traced index picks the precomputed float64 channel factor of that sample, so a
      jitted step never sees an off-grid omega (the channel's own traced look-up would give NaN).
    Inside a jitted training step, conditions can also be sampled per sample from static grids
    (``sample_conditions``).

Readings
    * Power normalisation is per sample over its K symbols, before quantisation, so the QAM grid
      (unit average energy) and gamma = P_h / P_delta (eq. 2) refer to the same power.
    * The equaliser's MMSE output (biased towards 0 at low SNR) goes to the reconstructor as is:
      the paper says only that the user "applies equalization"; the codec learns the bias.
    * ``link.channel = "none"`` bypasses the link (s_check = s_q): the pre-channel path, used as
      the reference of the ideal-channel test and for debugging.

Dtypes: latents float32; symbols complex64; everything differentiable w.r.t. the codec
parameters (and the latent decoder's) through the quantiser and the channel.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dekag_jax.channel import ofdm as _ofdm
from dekag_jax.channel import qam as _qam
from dekag_jax.channel.condition import PHI_EU_DELAY_SPREADS_S, PHI_EU_SNRS_DB, PHI_EU_TAUS, SNR_DB_RANGE, \
    Condition, delay_spread_unit_hint
from dekag_jax.channel.condition import RATES as ALL_RATES
from dekag_jax.models.jscc import JSCCCodec, pad_from_symbols, rate_units, truncate_to_symbols

__all__ = ["LinkConfig", "Transmission", "PHI_EU_RATES", "PHI_EU_SNRS_DB", "PHI_EU_DELAY_SPREADS_S",
           "ALL_RATES", "check_snr_db", "rate_unit_array", "delay_spread_index", "condition_arrays", "sample_conditions",
           "transmit_latents", "transmit_latents_fixed_rate", "decode_latents", "ReceiveFn"]

# Phi_EU of Sec. VI-A2 (edge-to-user conditions), as the channel's condition type defines it.
PHI_EU_RATES = PHI_EU_TAUS

LINK_CHANNELS = ("ofdm", "iid", "awgn", "none")


@dataclasses.dataclass(frozen=True)
class LinkConfig:
    """Static link configuration (hashable: safe as a jit static argument).

    Attributes:
      qam_order: M of the square QAM the symbols are quantised to (paper: 64, Sec. VI-A2).
      quantizer: ``channel.qam.quantize`` method: "soft" (soft-to-hard, default), "ste", "none"
        (hard, no gradient) or "off" (no quantisation: analog symbols).
      temperature: soft-to-hard temperature (in units of d_min^2; smaller = harder).
      channel: "ofdm" (eq. 2-3, default), "iid", "awgn", or "none" (bypass: the pre-channel path).
      ofdm: the channel's ``OFDMConfig`` (J = 120, Delta_f = 30 kHz, MMSE, perfect CSI); its
        ``channel`` field is overridden by ``channel`` above.
    """
    qam_order: int = 64
    quantizer: str = "soft"
    temperature: float = 0.5
    channel: str = "ofdm"
    ofdm: _ofdm.OFDMConfig = _ofdm.OFDMConfig()

    def __post_init__(self):
        _qam.check_m(self.qam_order)
        if self.quantizer not in ("soft", "ste", "none", "off"):
            raise ValueError(f"LinkConfig: quantizer={self.quantizer!r}; expected 'soft', 'ste', 'none' or 'off'")
        if not self.temperature > 0:
            raise ValueError(f"LinkConfig: temperature={self.temperature!r} must be > 0")
        if self.channel not in LINK_CHANNELS:
            raise ValueError(f"LinkConfig: channel={self.channel!r}; expected one of {LINK_CHANNELS}")
        if self.channel != "none" and self.ofdm.channel != self.channel:
            object.__setattr__(self, "ofdm", dataclasses.replace(self.ofdm, channel=self.channel))

    @property
    def delay_spreads_s(self) -> tuple:
        return self.ofdm.delay_spread_grid_s


class Transmission(NamedTuple):
    """One pass through the chain (all arrays batch-first).

    code      [B, h, w, 12] float32: f_JE output before truncation.
    symbols   [B, K] complex64: truncated, power-normalised symbols (before quantisation; eq. 4 iv
              is measured on these).
    sent      [B, K] complex64: quantised QAM symbols put on the channel.
    received  [B, K] complex64: equalised received symbols s_check.
    mask      [B, K] bool: which symbol slots are used (mixed-rate layout: the first K_b = h w n_b
              slots of sample b; all True on the fixed-rate path).
    z_check   [B, h, w, 4] float32: reconstructed latents.

    On the mixed-rate path K = K_max = h w n_max and unused slots are 0.
    """
    code: jax.Array
    symbols: jax.Array
    sent: jax.Array
    received: jax.Array
    mask: jax.Array
    z_check: jax.Array


# ----------------------------------------------------------------------------- host-side validation


def check_snr_db(snr_db, batch: int | None = None) -> np.ndarray:
    """gamma in dB -> float32 numpy ``[B]`` (or scalar shape when ``batch`` is None).

    Raises ValueError with one line for a non-numeric, non-finite or implausible value
    (outside [-50, 200] dB: probably a linear SNR or another unit), or a shape that does not
    broadcast to [batch]."""
    snr_db = getattr(snr_db, "snr_db", snr_db)
    try:
        a = np.asarray(snr_db, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"SNR {snr_db!r} is not a number of dB") from None
    if not np.all(np.isfinite(a)):
        raise ValueError(f"SNR {snr_db!r} dB is not finite")
    lo, hi = SNR_DB_RANGE  # beyond it a value is a unit mistake (a linear SNR, or Hz)
    if np.any(a < lo) or np.any(a > hi):
        raise ValueError(f"SNR {snr_db!r} dB is outside [{lo:g}, {hi:g}] dB (is it a linear ratio?)")
    if batch is not None:
        try:
            a = np.broadcast_to(a, (batch,))
        except ValueError:
            raise ValueError(f"SNR of shape {a.shape} does not broadcast to the batch [{batch}]") from None
    return a.astype(np.float32)


def delay_spread_index(delay_spread_s, link: LinkConfig = LinkConfig(), batch: int | None = None) -> np.ndarray:
    """omega (seconds) -> int32 index into ``link.delay_spreads_s`` (within 0.1%).

    Raises ValueError with one line naming the value for a non-positive, non-finite or off-grid
    delay spread (with a hint when the number looks like nanoseconds)."""
    delay_spread_s = getattr(delay_spread_s, "delay_spread_s", delay_spread_s)
    try:
        a = np.asarray(delay_spread_s, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"delay spread {delay_spread_s!r} is not a number of seconds") from None
    big = np.isfinite(a) & (a >= 1e-3)
    if np.any(big):  # no channel has a millisecond delay spread: a number meant as nanoseconds
        v = float(a[big].flat[0])
        raise ValueError(f"delay spread {v:g} s is not on the cached factor grid; {delay_spread_unit_hint(v)}")
    # The channel's own host check: finite, > 0, on the grid of cached factors (within 0.1%).
    idx = _ofdm.check_on_grid(a, link.ofdm)
    if batch is not None:
        try:
            idx = np.broadcast_to(idx, (batch,))
        except ValueError:
            raise ValueError(f"delay spread of shape {a.shape} does not broadcast to the batch [{batch}]") from None
    return idx.astype(np.int32)


def condition_arrays(batch: int, snr_db, delay_spread_s, link: LinkConfig = LinkConfig()):
    """Host validation of per-sample (gamma, omega): ``(snr_db float32 [B], omega_index int32 [B])``."""
    return check_snr_db(snr_db, batch), delay_spread_index(delay_spread_s, link, batch)


def sample_conditions(key, batch: int, rate_units: Sequence[int], snrs_db: Sequence[float],
                      omega_indices: Sequence[int]):
    """Per-sample tau, gamma and omega drawn uniformly and independently from static grids, inside
    jit: ``(rate_units int32 [B], snr_db float32 [B], omega_index int32 [B])``."""
    kr, ks, kw = jax.random.split(key, 3)

    def draw(k, values, dtype):
        v = jnp.asarray(np.asarray(values, dtype))
        return v[jax.random.randint(k, (batch,), 0, v.shape[0])]

    return (draw(kr, rate_units, np.int32), draw(ks, snrs_db, np.float32), draw(kw, omega_indices, np.int32))


# ----------------------------------------------------------------------------- the chain (pure)


def _quantize(s, link: LinkConfig):
    if link.quantizer == "off":
        return s
    return _qam.quantize(s, link.qam_order, method=link.quantizer, temperature=link.temperature)


@functools.lru_cache(maxsize=32)
def _layout(h: int, w: int, code_channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index tables of the mixed-rate layout: for n = 1..n_max, symbol k < K_n = h w n of a rate-n
    transmission takes its real part from flat code entry re[n-1, k] and its imaginary part from
    im[n-1, k] (flat index cell * code_channels + channel, cell = k // n, channel = k % n (+ n));
    ``mask[n-1, k] = k < K_n``. Shapes [n_max, h w n_max]."""
    n_max = code_channels // 2
    kmax = h * w * n_max
    re = np.zeros((n_max, kmax), np.int32)
    im = np.zeros((n_max, kmax), np.int32)
    mask = np.zeros((n_max, kmax), bool)
    for n in range(1, n_max + 1):
        k = np.arange(h * w * n)
        cell, c = k // n, k % n
        re[n - 1, :k.size] = cell * code_channels + c
        im[n - 1, :k.size] = cell * code_channels + n + c
        mask[n - 1, :k.size] = True
    for a in (re, im, mask):
        a.setflags(write=False)
    return re, im, mask


def transmit_latents(codec: JSCCCodec, codec_params: Any, z: jax.Array, key: jax.Array, *, rate_units: jax.Array,
                     snr_db: jax.Array, omega_index: jax.Array, link: LinkConfig = LinkConfig(),
                     apply_fn=None) -> Transmission:
    """Latents z [B, h, w, C] through encoder, link and reconstructor; pure, one compile for all
    rates (jit with ``link`` static).

    Per sample b: ``rate_units[b]`` = 64 tau_b in {1..6} (int [B] or scalar, may be traced),
    ``snr_db[b]`` gamma in dB (float), ``omega_index[b]`` into ``link.delay_spreads_s`` (int).
    Validate host values with ``condition_arrays`` / ``models.jscc.rate_units`` first: traced
    values cannot raise.

    Mixed-rate layout (why one compile suffices): every sample is sent as K_max = h w n_max symbol
    slots, the first K_b = h w n_b holding exactly the symbols that ``models.jscc.truncate_to_symbols``
    gives for its rate, in the same order, and the rest zero. Symbol k meets sub-channel k mod J
    and noise independent of the other slots (block fading, eq. 2), so the first K_b received
    symbols have the law of a K_b-symbol transmission; the unused slots are dropped at the
    receiver, which rebuilds exactly ``pad_from_symbols``'s zero-padded code (a test checks both
    against the per-rate path). Power normalisation and eq. 4 (iv) run over the K_b used slots.

    ``apply_fn(params, x, method)`` replaces ``codec.apply`` (an adapter's forward, e.g. LoRA-merged
    or condition-aware parameters); default ``codec.apply({"params": params}, x, method=...)``.
    """
    if z.ndim != 4:
        raise ValueError(f"transmit_latents: latents must be [B, h, w, C], got {z.shape}")
    if apply_fn is None:
        def apply_fn(p, x, method):
            return codec.apply({"params": p}, x, method=method)
    B, h, w = z.shape[:3]
    cc = codec.config.code_channels
    re_t, im_t, mask_t = (jnp.asarray(a) for a in _layout(h, w, cc))
    n = jnp.broadcast_to(jnp.asarray(rate_units, jnp.int32), (B,))
    re_i, im_i, mask = re_t[n - 1], im_t[n - 1], mask_t[n - 1]            # [B, K_max]

    code = apply_fn(codec_params, z, JSCCCodec.encode)                     # [B, h, w, cc]
    flat = code.reshape(B, -1).astype(jnp.float32)
    s = jax.lax.complex(jnp.take_along_axis(flat, re_i, axis=1), jnp.take_along_axis(flat, im_i, axis=1))
    s = jnp.where(mask, s, 0)
    k_used = (h * w * n).astype(jnp.float32)                               # K_b
    p = jnp.sum(jnp.real(s) ** 2 + jnp.imag(s) ** 2, axis=1) / k_used
    s = s * jax.lax.rsqrt(jnp.maximum(p, 1e-12))[:, None].astype(s.dtype)  # mean |s_k|^2 = 1 over K_b
    sent = jnp.where(mask, _quantize(s, link), 0)
    if link.channel == "none":
        received = sent
    else:
        snr = jnp.broadcast_to(jnp.asarray(snr_db, jnp.float32), (B,))
        factor = None
        if link.channel == "ofdm":
            table = jnp.asarray(_ofdm.factor_table(link.delay_spreads_s, link.ofdm), sent.dtype)  # [W, J, J]
            factor = table[jnp.broadcast_to(jnp.asarray(omega_index, jnp.int32), (B,))]       # [B, J, J]
        received, _ = _ofdm.transmit(key, sent, snr, cfg=link.ofdm, factor=factor)
    received = jnp.where(mask, received, 0)
    # Receiver: scatter real and imaginary parts back to their code channels; unused channels stay 0
    # (the zero-padding of Sec. V-B). Masked slots add 0 at index 0.
    def scatter(re_b, im_b, r_b):
        out = jnp.zeros((h * w * cc,), jnp.float32)
        return out.at[re_b].add(jnp.real(r_b)).at[im_b].add(jnp.imag(r_b))
    padded = jax.vmap(scatter)(re_i, im_i, received).reshape(B, h, w, cc)
    z_check = apply_fn(codec_params, padded, JSCCCodec.reconstruct)
    return Transmission(code=code, symbols=s, sent=sent, received=received, mask=mask, z_check=z_check)


def transmit_latents_fixed_rate(codec: JSCCCodec, codec_params: Any, z: jax.Array, key: jax.Array, *, rate,
                                snr_db: jax.Array, omega_index: jax.Array, link: LinkConfig = LinkConfig(),
                                apply_fn=None) -> Transmission:
    """The same chain with exactly K = h w n symbols (``rate`` static: one compile per rate), written
    with ``models.jscc.truncate_to_symbols`` / ``pad_from_symbols``: the reference the mixed-rate
    ``transmit_latents`` is tested against. ``mask`` is all True [B, K]."""
    n = rate_units(rate, codec.config.max_rate_units)
    if apply_fn is None:
        def apply_fn(p, x, method):
            return codec.apply({"params": p}, x, method=method)
    B, h, w = z.shape[:3]
    code = apply_fn(codec_params, z, JSCCCodec.encode)
    s = _qam.normalize_power(truncate_to_symbols(code, f"{n}/64"), axis=-1)
    sent = _quantize(s, link)
    if link.channel == "none":
        received = sent
    else:
        snr = jnp.broadcast_to(jnp.asarray(snr_db, jnp.float32), (B,))
        factor = None
        if link.channel == "ofdm":
            table = jnp.asarray(_ofdm.factor_table(link.delay_spreads_s, link.ofdm), sent.dtype)
            factor = table[jnp.broadcast_to(jnp.asarray(omega_index, jnp.int32), (B,))]
        received, _ = _ofdm.transmit(key, sent, snr, cfg=link.ofdm, factor=factor)
    z_check = apply_fn(codec_params, pad_from_symbols(received, (h, w), codec.config.code_channels),
                       JSCCCodec.reconstruct)
    return Transmission(code=code, symbols=s, sent=sent, received=received, mask=jnp.ones(s.shape, bool),
                        z_check=z_check)


def decode_latents(vae, vae_params, z: jax.Array) -> jax.Array:
    """f_LD: diffusion latents [B, h, w, 4] -> images [B, 8h, 8w, 3] float32 in [0, 1], differentiable
    (clipping as the pipelines do; the clip's zero gradient outside [0, 1] is what they see too)."""
    from dekag_jax.diffusion.generate import vae_decode

    return vae_decode(vae, vae_params, z)


class ReceiveFn:
    """Jitted inference over the link with host validation: ``fn(codec_params, vae_params, z, key,
    rate=, snr_db=, delay_spread_s=) -> (z_check [B, h, w, 4], x_check [B, H, W, 3])``.

    ``rate``, ``snr_db``, ``delay_spread_s``: scalars or per-sample sequences of length B (rates as
    "2/64" strings or Fractions). All are validated on the host, so bad values raise one clear
    line before anything is traced; one compile serves every condition (mixed-rate layout).
    """

    def __init__(self, codec: JSCCCodec, vae, link: LinkConfig = LinkConfig(), rate_mode: str = "cap"):
        # RC-JSCC / VJ-MAE (ka.adaptive): their policy picks the rate; ``rate`` is then the budget
        # (rate_mode "cap"), the exact rate ("force") or ignored ("free").
        from dekag_jax.ka.adaptive import RATE_MODES, transmit_any

        if rate_mode not in RATE_MODES:
            raise ValueError(f"rate_mode={rate_mode!r}; expected one of {', '.join(RATE_MODES)}")
        self.codec, self.vae, self.link, self.rate_mode = codec, vae, link, rate_mode

        def run(codec_params, vae_params, z, key, n, snr, widx):
            t = transmit_any(codec, codec_params, z, key, rate_units=n, snr_db=snr, omega_index=widx, link=link,
                             rate_mode=rate_mode)
            return t.z_check, decode_latents(vae, vae_params, t.z_check)

        self._run = jax.jit(run)

    def __call__(self, codec_params, vae_params, z, key, *, rate=None, snr_db=None, delay_spread_s=None,
                 condition=None):
        """Either ``rate``/``snr_db``/``delay_spread_s`` (scalars or per-sample sequences) or
        ``condition``: one ``channel.condition.Condition`` for the batch or a sequence of B."""
        z = jnp.asarray(z)
        if condition is not None:
            if rate is not None or snr_db is not None or delay_spread_s is not None:
                raise ValueError("give either condition= or rate/snr_db/delay_spread_s, not both")
            conds = [condition] if isinstance(condition, Condition) else list(condition)
            rate = [c.tau for c in conds] if len(conds) > 1 else conds[0].tau
            snr_db = [c.snr_db for c in conds] if len(conds) > 1 else conds[0].snr_db
            delay_spread_s = [c.delay_spread_s for c in conds] if len(conds) > 1 else conds[0].delay_spread_s
        if rate is None or snr_db is None or delay_spread_s is None:
            raise ValueError("ReceiveFn needs rate, snr_db and delay_spread_s (or condition=)")
        n = rate_unit_array(rate, z.shape[0], self.codec.config.max_rate_units)
        base = getattr(self.codec.config, "base_units", 1)
        if self.rate_mode != "free" and np.any(n < base):
            raise ValueError(f"rate {int(n.min())}/64 is below this codec's always-sent {base}/64")
        snr, widx = condition_arrays(z.shape[0], snr_db, delay_spread_s, self.link)
        return self._run(codec_params, vae_params, z, key, jnp.asarray(n), jnp.asarray(snr), jnp.asarray(widx))


def rate_unit_array(rate, batch: int, max_units: int = 6) -> np.ndarray:
    """tau (scalar or per-sample sequence) -> int32 [B] of n = 64 tau, validated (one-line errors)."""
    rate = getattr(rate, "rate", rate)
    if isinstance(rate, (list, tuple, np.ndarray)):
        n = np.asarray([rate_units(r, max_units) for r in np.asarray(rate, object).reshape(-1)], np.int32)
        if n.size != batch:
            raise ValueError(f"{n.size} rates given for a batch of {batch}")
        return n
    return np.full((batch,), rate_units(rate, max_units), np.int32)
