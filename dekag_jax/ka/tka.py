"""T-KA: aligning the JSCC codec to the aligned edge model's latents S_EG under Phi_EU (paper Sec.
IV-A eq. 7, IV-C eq. 10, VI-A4, VI-B3): No-KA, LoRA, CALA and Full-FT.

    python -m dekag_jax.ka.tka --config configs/tka.py:all --workdir runs/tka

Pieces (each a pure function over plain pytrees, usable without the CLI):

* ``edge_latents`` (S_EG, eq. 7): z for a subject's ``eg_train`` (100) or ``eg_test`` (30) seeds from
  the edge pipeline (DDIM with classifier-free guidance, initial noise N(0, I) from
  ``jax.random.key(seed)`` as ``world.gates`` / ``ka.gka``), with x = f_LD(z); cached as npz
  because sampling is the expensive part. Until G-KA's aligned edge model is wired in, the shipped
  edge model with the plain subject prompt (no metaword, no MAKD LoRA) generates them: ``pipe``
  may be any pipeline, e.g. one with G-KA's LoRA merged.
* ``Setup`` / ``init_method``: the trainable tree of each method.
    - No-KA: nothing trains; the pretrained codec as is.
    - LoRA (R = 16): ``{"codec_lora", "dec_lora"}``, adapters on every Dense/Conv kernel of f_JE and
      the latent reconstructor and on the latent decoder's first six layers (``configs/tka.py``
      names them), B = 0 at init.
    - CALA (eq. 10): the same adapters with one gate per adapted matrix (``adapt.cala``), fed the
      normalised condition phi_n of *each sample*: a batch mixing conditions trains and evaluates
      each sample under its own gate (tested: equal to per-sample runs).
    - Full-FT: ``{"codec", "dec"}``: every parameter of f_JE and the reconstructor, and (by default,
      ``adapter.fullft_decoder``) the latent decoder. Reading: the paper fine-tunes "all parameters
      of the JSCC codec"; its codec of "approximately 50.5 million parameters" includes the shared
      latent decoder (ka/counts.py), and its update-size ratio "about 1%" (0.6 M / 50.5 M) and
      "more than two orders of magnitude" below Full-FT only hold if Full-FT updates those 50.5 M.
      The decoder fine-tuned here is the *user's* copy (the edge's generator is not touched); the
      VAE encoder (perceptual features) stays frozen in every method.
* ``make_step``: eq. 7 / eq. 10 objective = eq. 4 (``ka.objective``, the pretraining's weights) on
  S_EG pairs (z, x = f_LD(z)), each sample with its own phi = (tau, gamma, omega) drawn uniformly
  from Phi_EU inside the step. Rates: one compile serves all five rates and batches mixing them
  (``transmission.transmit_latents``'s mixed-rate layout), so no grouping by rate is needed.
  ``adapt.partition.make_step``: gradients for the trainable tree only, frozen model as argument.
* ``evaluate``: received-image PSNR against x = f_LD(z) (the original decoder's image) on the 30
  ``eg_test`` latents for every condition of the grid, the same channel draws for every method
  (a key per (latent, condition) pair), per condition and averaged over Phi_EU; ``mesh=`` shards
  the pairs over devices (same numbers). (Eq. 5's DINO/CLIP scores of the
  received images are not computed yet: ``return_images=True`` hands the images to a caller.)
* ``save_checkpoint`` / ``load_checkpoint``: the trained tree as safetensors (float32), keys
  ``<group>/<kernel path>/<lora_A|lora_B|gate_kernel|gate_bias|...>`` or ``<group>/<param path>``; CALA's
  gate form in the metadata (``cala_gate``), checked by ``load_checkpoint(path, setup)``.
* ``adapter_counts`` / ``paper_size_counts``: parameter and fp16-byte counts and the ratio to the
  codec (f_JE + reconstructor + latent decoder), on the tiny codec and at the paper's sizes.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dekag_jax.adapt import accounting, cala, lora
from dekag_jax.adapt import partition
from dekag_jax.ka.adaptive import transmit_any
from dekag_jax.ka.objective import LossWeights, eq4_loss, eq4_terms, vae_encoder_features
from dekag_jax.ka.transmission import LinkConfig, decode_latents, delay_spread_index, sample_conditions, \
    transmit_latents
from dekag_jax.channel.condition import ConditionGrid
from dekag_jax.weights.convert import flatten, unflatten

__all__ = ["METHODS", "Setup", "make_setup", "init_method", "forward", "make_loss", "make_step", "make_tx", "train",
           "evaluate", "edge_latents", "save_checkpoint", "load_checkpoint", "checkpoint_gate", "adapter_counts",
           "paper_size_counts", "grid_from_config", "run", "main", "frozen_tree", "phi_normalised",
           "cached_edge_latents", "load_codec_for", "format_table", "CODEC_TARGETS", "DECODER_FIRST_SIX"]

METHODS = ("noka", "lora", "cala", "fullft")
_LORA_GROUPS = ("codec_lora", "dec_lora")


# ----------------------------------------------------------------------------- setup


@dataclasses.dataclass(frozen=True, eq=False)
class Setup:
    """Everything static about one method: models, link, adapter specs (None for No-KA/Full-FT)."""
    method: str
    codec: Any
    vae: Any
    link: LinkConfig
    codec_specs: Mapping[str, lora.LoraSpec] | None = None
    dec_specs: Mapping[str, lora.LoraSpec] | None = None
    fullft_decoder: bool = True
    cala_phi: str = "condition"   # "constant": every sample's gate input is 0 (a condition-free control)
    cala_gate: str = cala.DEFAULT_GATE   # CALA's gate form (adapt.cala.GATE_FORMS), also in every spec's .gate


def _split_rules(targets) -> list[str]:
    if isinstance(targets, str):
        targets = [t for t in targets.split(",") if t.strip()]
    return [t.strip() for t in targets]


# Adapter targets (Sec. VI-A4); configs/tka.py repeats them (a test checks they agree).
CODEC_TARGETS = r"(jscc_encoder|latent_reconstructor)/.*kernel"
DECODER_FIRST_SIX = (r"decoder/conv_in/kernel", r"decoder/mid_block/resnets\.0/conv[12]/kernel",
                     r"decoder/mid_block/attentions\.0/to_(q|k|v)/kernel")


def make_setup(method: str, codec, codec_params, vae, vae_params, *, link: LinkConfig = LinkConfig(),
               rank: int = 16, codec_targets=CODEC_TARGETS, decoder_targets=DECODER_FIRST_SIX,
               fullft_decoder: bool = True, cala_phi: str = "condition",
               cala_gate: str = cala.DEFAULT_GATE) -> Setup:
    """A ``Setup`` for ``method``; LoRA/CALA specs from the target regexes.

    Kernels with fewer than ``rank`` outputs (f_JE's conv_out: 12, the reconstructor's conv_out: 4)
    are clamped to their full rank (alpha scaled along: alpha/r stays 1, the paper gives no alpha).
    ``cala_gate``: CALA's gate form (``adapt.cala.GATE_FORMS``; readings in ``adapt/cala.py``)."""
    if method not in METHODS:
        raise ValueError(f"unknown T-KA method {method!r}; expected one of {', '.join(METHODS)}")
    if cala_phi not in ("condition", "constant"):
        raise ValueError(f"cala_phi={cala_phi!r}; expected 'condition' or 'constant'")
    cala.check_form(cala_gate)
    if method not in ("lora", "cala"):
        return Setup(method, codec, vae, link, fullft_decoder=bool(fullft_decoder))
    cs = lora.make_specs(codec_params, [(r, rank, rank) for r in _split_rules(codec_targets)], clamp_rank=True)
    dec_rules = _split_rules(decoder_targets)
    ds = lora.make_specs(vae_params, [(r, rank, rank) for r in dec_rules], clamp_rank=True) if dec_rules else {}
    if method == "cala":   # the form is static: it rides on every spec (lora.apply reads spec.gate)
        cs = {p: dataclasses.replace(sp, gate=cala_gate) for p, sp in cs.items()}
        ds = {p: dataclasses.replace(sp, gate=cala_gate) for p, sp in ds.items()}
    return Setup(method, codec, vae, link, cs, ds, bool(fullft_decoder), cala_phi, cala_gate)


def _dec_part(vae_params) -> dict:
    """The latent decoder f_LD inside the VAE tree: ``decoder`` and diffusers' ``post_quant_conv``."""
    return {k: v for k, v in vae_params.items() if k in ("decoder", "post_quant_conv")}


def init_method(setup: Setup, key: jax.Array, codec_params, vae_params) -> dict:
    """The trainable tree of the method (``{}`` for No-KA)."""
    m = setup.method
    if m == "noka":
        return {}
    if m == "fullft":
        t = {"codec": jax.tree_util.tree_map(jnp.array, codec_params)}
        if setup.fullft_decoder:
            t["dec"] = jax.tree_util.tree_map(jnp.array, _dec_part(vae_params))
        return t
    kc, kd = jax.random.split(key)
    gates = m == "cala"
    ca, _ = lora.init(kc, codec_params, setup.codec_specs, gates=gates)
    da, _ = lora.init(kd, vae_params, setup.dec_specs, gates=gates) if setup.dec_specs else ({}, {})
    return {"codec_lora": ca, "dec_lora": da}


def frozen_tree(codec_params, vae_params) -> dict:
    """The frozen model: ``{"codec", "vae"}`` (the VAE's encoder also gives the perceptual features)."""
    return {"codec": codec_params, "vae": vae_params}


# ----------------------------------------------------------------------------- forward / loss


def phi_normalised(setup: Setup, n, snr_db, omega_index) -> jax.Array:
    """CALA's per-sample gate input ``[B, 3]`` from rate units n [B], gamma [B], omega index [B]."""
    omegas = jnp.asarray(np.asarray(setup.link.delay_spreads_s, np.float32))
    if setup.cala_phi == "constant":   # the control: same gates and training, no condition information
        return jnp.zeros((jnp.shape(n)[0], cala.D_PHI), jnp.float32)
    return cala.normalise_phi(jnp.asarray(n, jnp.float32) / 64.0, snr_db, omegas[jnp.asarray(omega_index)])


def forward(setup: Setup, trainable, frozen, z, key, n, snr_db, omega_index):
    """One transmission of latents z ``[B, h, w, 4]`` under per-sample conditions (``n`` int [B],
    ``snr_db`` float [B], ``omega_index`` int [B]) with the method's parameters (RC-JSCC / VJ-MAE:
    ``n`` is the rate budget their argmax policy chooses within, ``ka.adaptive`` "cap"):
    ``(Transmission, x_check [B, H, W, 3] in [0, 1])``. Pure; jit it with ``setup`` closed over."""
    m = setup.method
    codec_params = trainable["codec"] if m == "fullft" else frozen["codec"]
    vae_params = frozen["vae"]
    if m == "fullft" and "dec" in trainable:
        vae_params = {**vae_params, **trainable["dec"]}
    kw = dict(rate_units=n, snr_db=snr_db, omega_index=omega_index, link=setup.link)
    if m in ("lora", "cala"):
        phi = phi_normalised(setup, n, snr_db, omega_index) if m == "cala" else None
        with lora.attach(trainable["codec_lora"], setup.codec_specs, phi):
            t = transmit_any(setup.codec, codec_params, z, key, **kw)
        with lora.attach(trainable["dec_lora"], setup.dec_specs, phi):
            x_check = decode_latents(setup.vae, vae_params, t.z_check)
    else:
        t = transmit_any(setup.codec, codec_params, z, key, **kw)
        x_check = decode_latents(setup.vae, vae_params, t.z_check)
    return t, x_check


def grid_from_config(c) -> tuple[tuple[int, ...], tuple[float, ...], tuple[float, ...]]:
    """``(rate units, gamma dB, omega seconds)`` of a config's ``conditions`` (validated, one line
    each, by ``channel.condition.ConditionGrid``: the one place for rates, SNRs and delay spreads)."""
    g = ConditionGrid.from_config(c.rates, c.snrs_db, c.delay_spreads_ns)
    return g.rate_units(), g.snrs_db, g.delay_spreads_s


def make_loss(setup: Setup, weights: LossWeights, grid, *, perceptual: bool = True) -> Callable:
    """``loss_fn(trainable, frozen, z, x, key) -> (loss, metrics)``: eq. 4 on (z, x = f_LD(z)) with phi
    drawn per sample from ``grid`` = (rate units, gamma dB, omega s) (eq. 7 / eq. 10)."""
    units, snrs, omegas = grid
    widx = tuple(int(i) for i in delay_spread_index(list(omegas), setup.link))
    feat_fn = vae_encoder_features(setup.vae) if perceptual and weights.perceptual > 0 else None

    def loss_fn(trainable, frozen, z, x, key):
        kc, kt = jax.random.split(key)
        n, snr, wi = sample_conditions(kc, z.shape[0], units, snrs, widx)
        t, x_check = forward(setup, trainable, frozen, z, kt, n, snr, wi)
        feats = None if feat_fn is None else (lambda im: feat_fn(frozen["vae"], im))
        terms = eq4_terms(z=z, z_check=t.z_check, x=x, x_check=x_check, symbols=t.symbols,
                          qam_order=setup.link.qam_order, features=feats, mask=t.mask)
        return eq4_loss(terms, weights)

    return loss_fn


def make_step(setup: Setup, weights: LossWeights, grid, tx: optax.GradientTransformation, **kw):
    """Jitted ``step(trainable, opt_state, frozen, z, x, key) -> (trainable, opt_state, loss, metrics)``
    (``adapt.partition.make_step``: gradients for the trainable tree only, both donated)."""
    return partition.make_step(make_loss(setup, weights, grid, **kw), tx, has_aux=True)


def make_tx(method: str, lr: float, *, weight_decay: float = 0.0, gate_lr_mult: float = 1.0):
    """The optimiser of :func:`train`: AdamW at ``lr``; CALA's gates at ``lr * gate_lr_mult`` when it is not 1
    (a resumed run rebuilds its optimiser state's structure from this)."""
    tx = optax.adamw(lr, weight_decay=weight_decay)
    if gate_lr_mult != 1.0 and method == "cala":
        tx = partition.optimizer({"train": tx, "gate": optax.adamw(lr * gate_lr_mult, weight_decay=weight_decay)},
                                 [(r".*/gate_\w+", "gate"), (r".*", "train")])
    return tx


def train(setup: Setup, trainable, frozen, z, x, *, grid, weights: LossWeights, epochs: int, batch: int,
          lr: float, weight_decay: float = 0.0, seed: int = 0, log: Callable[[str], None] | None = None,
          log_every: int = 25, gate_lr_mult: float = 1.0, mesh=None, start_epoch: int = 0, opt_state=None,
          checkpoint_every: int = 0, on_checkpoint: Callable[[int, dict, Any, list], None] | None = None,
          on_step: Callable[[dict], None] | None = None) -> tuple[dict, list[dict]]:
    """Epochs over the S_EG pairs (z [N, h, w, 4], x [N, H, W, 3]); shuffled per epoch, the last
    partial batch dropped (one compiled shape). AdamW at ``lr`` (CALA's gates at ``lr * gate_lr_mult``:
    1 is the paper's single learning rate). Returns ``(trainable, history)``: one row per step
    (``step, loss, psnr, ...``).

    ``mesh`` (axis ``parallel.DATA_AXIS``): data parallelism as ``ka.gka.train_stage``: the batch
    (z, x) is split over the axis, trainable, optimiser state, frozen model and key replicated,
    explicit in/out shardings, donation kept; ``batch`` must be divisible by the axis size.

    Resume: ``start_epoch`` epochs are taken as done, ``trainable``/``opt_state`` (None: ``tx.init``)
    their state; the per-epoch permutations and the step keys are fast-forwarded, so a resumed run
    takes the steps of an uninterrupted one. ``on_checkpoint(epoch, trainable, opt_state, history)``
    (1-based epoch, this call's rows) after every ``checkpoint_every``-th epoch and after the last
    (it must copy what it keeps: the arrays are donated next step); ``on_step(row)`` after each step
    (progress). A non-finite loss raises :class:`dekag_jax.errors.NonFiniteLossError`."""
    if setup.method == "noka" or not jax.tree_util.tree_leaves(trainable):
        return trainable, []
    n = int(z.shape[0])
    batch = min(int(batch), n)
    tx = make_tx(setup.method, lr, weight_decay=weight_decay, gate_lr_mult=gate_lr_mult)
    if opt_state is None:
        opt_state = tx.init(trainable)
    shard_kw: dict = {}
    if mesh is not None:
        from dekag_jax import parallel

        parallel.data_axis_size(mesh, "tka.train", batch)
        rep, dat = parallel.replicated_sharding(mesh), parallel.data_sharding(mesh)
        # step(trainable, opt_state, frozen, z, x, key) -> (trainable, opt_state, loss, metrics)
        shard_kw = dict(in_shardings=(rep, rep, rep, dat, dat, rep), out_shardings=(rep, rep, rep, rep))
        trainable, opt_state, frozen = jax.device_put((trainable, opt_state, frozen), rep)
    step = partition.make_step(make_loss(setup, weights, grid), tx, has_aux=True, **shard_kw)
    rng = np.random.default_rng(seed)
    key = jax.random.key(seed)
    hist, k, t0 = [], 0, time.time()
    z, x = (jnp.asarray(z), jnp.asarray(x)) if mesh is None else (np.asarray(z), np.asarray(x))
    for ep in range(int(epochs)):
        perm = rng.permutation(n)
        if ep < start_epoch:  # resume: this epoch's permutation drawn, its steps counted, not run
            k += len(range(0, n - batch + 1, batch))
            continue
        for i in range(0, n - batch + 1, batch):
            idx = perm[i:i + batch] if mesh is not None else jnp.asarray(perm[i:i + batch])
            zb, xb = z[idx], x[idx]
            if mesh is not None:
                zb, xb = parallel.shard_batch((zb, xb), mesh)
            trainable, opt_state, loss, met = step(trainable, opt_state, frozen, zb, xb, jax.random.fold_in(key, k))
            row = {"step": k, "epoch": ep, **{kk: float(v) for kk, v in met.items()}}
            hist.append(row)
            if not np.isfinite(row["loss"]):
                from dekag_jax.errors import NonFiniteLossError

                raise NonFiniteLossError(f"training loss is {row['loss']} at step {k}, epoch {ep + 1}/{epochs} "
                                         f"(lr={lr})")
            if on_step is not None:
                on_step(row)
            if log and (k % log_every == 0):
                log(f"[{setup.method}] step {k:5d} epoch {ep:4d} loss {row['loss']:.4f} psnr {row['psnr']:.2f} "
                    f"({time.time() - t0:.0f} s)")
            k += 1
        if on_checkpoint is not None and (ep + 1 == epochs or (checkpoint_every and (ep + 1) % checkpoint_every == 0)):
            on_checkpoint(ep + 1, trainable, opt_state, hist)
    return trainable, hist


# ----------------------------------------------------------------------------- evaluation


def _eval_fn(setup: Setup, mesh):
    """The jitted evaluation chunk ``(trainable, frozen, key_data, z, x, pair, n, snr, omega_index) ->
    (psnr [B], x_check [B, H, W, 3])``, one per (setup, mesh), kept on the setup so repeated
    evaluations (methods, training depths) compile once. Each pair runs as a batch of one under
    ``vmap`` with its own key ``fold_in(key, pair)``: the channel draws of a pair do not depend on
    which other pairs share its chunk or device."""
    cache = setup.__dict__.setdefault("_eval_cache", {})
    if mesh in cache:
        return cache[mesh]

    def one(trainable, frozen, key, z, x, pair, n, s, w):
        k = jax.random.fold_in(jax.random.wrap_key_data(key), pair)
        _, xc = forward(setup, trainable, frozen, z[None], k, n[None], s[None], w[None])
        mse = jnp.mean((xc[0] - x) ** 2)
        return -10.0 * jnp.log10(jnp.maximum(mse, 1e-10)), xc[0]

    fn = jax.vmap(one, in_axes=(None, None, None, 0, 0, 0, 0, 0, 0))
    if mesh is None:
        cache[mesh] = jax.jit(fn)
    else:
        from dekag_jax import parallel
        rep, dat = parallel.replicated_sharding(mesh), parallel.data_sharding(mesh)
        cache[mesh] = jax.jit(fn, in_shardings=(rep, rep, rep) + (dat,) * 6, out_shardings=(dat, dat))
    return cache[mesh]


def evaluate(setup: Setup, trainable, frozen, z, x, *, grid, seed: int = 1234, chunk: int = 250,
             return_images: bool = False, mesh=None, conditions=None) -> dict:
    """Received-image PSNR (dB) against x = f_LD(z) for every (test latent, condition) of ``grid``.

    Returns ``{"conditions": [{"tau", "snr_db", "delay_spread_ns", "psnr", "psnr_std"}] (std over the
    test latents), "psnr_mean" (average
    over the conditions), "by_rate", "by_snr", "by_delay_spread"}`` (+ ``"images"`` [C, N, H, W, 3]
    float16 when asked). The C * N (latent, condition) pairs run in chunks of ``chunk`` pairs
    (one compiled shape; the last chunk padded). Pair p (condition-major: p = c * N + i) meets the
    channel drawn from ``fold_in(key(seed), p)``: a key per pair, so every method meets the same
    draws and the numbers do not depend on ``chunk``, the padding or the device count.

    ``mesh`` (a ``jax.sharding.Mesh`` with the axis ``parallel.DATA_AXIS``, e.g. ``parallel.
    make_mesh()``; one host or several after ``runtime.setup``): the Monte Carlo is data parallel:
    each chunk (padded to a multiple of the axis size) is split over the axis, the method's
    parameters and the frozen model are replicated, explicit in/out shardings; results are
    gathered on every process (``parallel.to_host``). Equal to the one-device result up to float
    reassociation inside the models (tests: 4 forced host devices, two ``jax.distributed``
    processes). With several processes every process must pass the same arguments.

    ``conditions``: an explicit list of ``(rate units, snr dB, omega s)`` instead of the product
    ``grid`` (e.g. a fixed-seed subset of Phi_EU); ``grid`` is then ignored (pass None)."""
    from dekag_jax import parallel
    if conditions is not None:
        conditions = [(int(u), float(s), float(w)) for u, s, w in conditions]
        if not conditions:
            raise ValueError("evaluate: conditions is empty")
        widx = delay_spread_index([w for _, _, w in conditions], setup.link)
        conds = [(u, s, w, wi) for (u, s, w), wi in zip(conditions, widx)]
    else:
        units, snrs, omegas = grid
        widx = delay_spread_index(list(omegas), setup.link)
        conds = [(u, s, w, wi) for u in units for s in snrs for w, wi in zip(omegas, widx)]
    N = int(z.shape[0])
    ci = np.repeat(np.arange(len(conds)), N)
    ii = np.tile(np.arange(N), len(conds))
    nn = np.asarray([conds[c][0] for c in ci], np.int32)
    ss = np.asarray([conds[c][1] for c in ci], np.float32)
    ww = np.asarray([conds[c][3] for c in ci], np.int32)
    total = len(ci)
    if chunk < 1:
        raise ValueError(f"evaluate: chunk={chunk} must be >= 1")
    chunk = min(int(chunk), total)
    if mesh is not None:
        chunk = parallel.pad_to_multiple(chunk, parallel.data_axis_size(mesh, "evaluate"))
    run_chunk = _eval_fn(setup, mesh)
    if mesh is not None:
        trainable, frozen = parallel.replicate(trainable, mesh), parallel.replicate(frozen, mesh)

    z, x = np.asarray(z), np.asarray(x)
    psnr = np.zeros(total, np.float64)
    imgs = [] if return_images else None
    key = jax.random.key_data(jax.random.key(seed))        # raw uint32: one compiled program for every seed
    for a in range(0, total, chunk):
        b = min(a + chunk, total)
        sl = np.arange(a, b)
        pad = chunk - (b - a)                       # pad the last chunk: one compiled shape
        sl_p = np.concatenate([sl, np.full(pad, sl[-1])]) if pad else sl
        args = (z[ii[sl_p]], x[ii[sl_p]], sl_p.astype(np.int32), nn[sl_p], ss[sl_p], ww[sl_p])
        if mesh is None:
            p, xc = run_chunk(trainable, frozen, key, *(jnp.asarray(v) for v in args))
        else:
            p, xc = run_chunk(trainable, frozen, key, *parallel.shard_batch(args, mesh))
        # gathered on every process (the images only when asked: they are the big part); without a
        # mesh the arrays are this process's own, even in a multi-process job
        host = np.asarray if mesh is None else parallel.to_host
        p, xc = jax.tree.map(host, (p, xc)) if return_images else (host(p), None)
        psnr[a:b] = p[:b - a]
        if return_images:
            imgs.append(np.asarray(xc[:b - a], np.float16))
    per = psnr.reshape(len(conds), N).mean(axis=1)
    sd = psnr.reshape(len(conds), N).std(axis=1)     # over the N images (and their channel draws)
    rows = [{"tau": f"{u}/64", "snr_db": s, "delay_spread_ns": round(w * 1e9, 3), "psnr": float(p),
             "psnr_std": float(q)} for (u, s, w, _), p, q in zip(conds, per, sd)]

    def by(key):
        vals = sorted({r[key] for r in rows}, key=lambda v: (float(v.split("/")[0]) if isinstance(v, str) else v))
        return {str(v): float(np.mean([r["psnr"] for r in rows if r[key] == v])) for v in vals}

    out = {"conditions": rows, "psnr_mean": float(np.mean(per)), "n_images": N, "n_conditions": len(conds),
           "by_rate": by("tau"), "by_snr": by("snr_db"), "by_delay_spread": by("delay_spread_ns")}
    if return_images:
        out["images"] = np.concatenate(imgs).reshape(len(conds), N, *x.shape[1:])
    return out


# ----------------------------------------------------------------------------- S_EG


def edge_latents(pipe, prompt: str, seeds: Sequence[int], *, num_steps: int = 50, guidance: float = 7.5,
                 chunk: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """``(z [N, h, w, 4] float32, x = f_LD(z) [N, H, W, 3] float32 in [0, 1])`` for one prompt: DDIM
    with guidance (uncond = ""), initial noise of sample j ``N(0, I)`` from ``jax.random.key(seeds[j])``."""
    from dekag_jax.diffusion.generate import decode_latents as pipe_decode, text_to_latents

    ss, c = pipe.unet.config.sample_size, pipe.unet.config.in_channels
    zs, xs = [], []
    for i in range(0, len(seeds), chunk):
        part = list(seeds[i:i + chunk])
        z_T = jnp.stack([jax.random.normal(jax.random.key(int(s)), (ss, ss, c), jnp.float32) for s in part])
        z = text_to_latents(pipe, [prompt] * len(part), jax.random.key(0), num_steps=int(num_steps),
                            guidance_scale=float(guidance), latents=z_T)
        zs.append(np.asarray(z, np.float32))
        xs.append(np.asarray(pipe_decode(pipe, z), np.float32))
    return np.concatenate(zs), np.concatenate(xs)


def cached_edge_latents(pipe, subject: str, split: str, n: int, *, num_steps: int, guidance: float,
                        cache_dir: str, log: Callable[[str], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``edge_latents`` for the first ``n`` seeds of a subject's split, cached in
    ``cache_dir/<subject>_<split>_n<n>_s<steps>_g<guidance>_<model>.npz`` (z, x, seeds, prompt),
    where ``<model>`` fingerprints the pipeline's UNet, text encoder and VAE: an aligned edge model
    (G-KA's merged LoRA) never reads the shipped model's latents."""
    from dekag_jax.ka.scg import params_fingerprint
    from dekag_jax.world.splits import split_seeds
    from dekag_jax.world.subjects import get_subject

    sub = get_subject(subject)
    seeds = split_seeds(sub, split)[:int(n)]
    model = params_fingerprint(pipe.unet_params, pipe.text_params, pipe.vae_params)
    path = os.path.join(cache_dir, f"{sub.id}_{split}_n{len(seeds)}_s{int(num_steps)}_g{float(guidance):g}"
                                   f"_{model}.npz")
    if os.path.isfile(path):
        d = np.load(path, allow_pickle=False)
        if list(d["seeds"]) == list(seeds):
            return d["z"], d["x"]
    t0 = time.time()
    z, x = edge_latents(pipe, sub.prompt, seeds, num_steps=num_steps, guidance=guidance)
    os.makedirs(cache_dir, exist_ok=True)
    np.savez(path, z=z, x=x, seeds=np.asarray(seeds), prompt=np.asarray(sub.prompt),
             source=np.asarray(f"edge pipeline {model}, plain subject prompt"))
    if log:
        log(f"S_EG {sub.id}/{split}: {len(seeds)} latents in {time.time() - t0:.1f} s -> {path}")
    return z, x


# ----------------------------------------------------------------------------- checkpoints, counts


def save_checkpoint(path: str, setup: Setup, trainable, *, extra: dict | None = None) -> None:
    """The trained tree as float32 safetensors (metadata: method, specs, CALA's ``cala_gate`` form,
    ``extra`` as JSON)."""
    from dekag_jax.weights.files import save_state_dict

    flat = {}
    for group, tree in trainable.items():
        if group in _LORA_GROUPS:
            for p, ad in tree.items():
                for name, v in ad.items():
                    flat[f"{group}/{p}/{name}"] = np.asarray(v, np.float32)
        else:
            for p, v in flatten(jax.device_get(tree)).items():
                flat[f"{group}/{p}"] = np.asarray(v, np.float32)
    specs = {g: {p: [s.kind, s.rank, s.alpha] for p, s in (sp or {}).items()}
             for g, sp in (("codec_lora", setup.codec_specs), ("dec_lora", setup.dec_specs))}
    meta = {"format": "dekag-tka", "method": setup.method, "specs": json.dumps(specs),
            "extra": json.dumps(extra or {})}
    if setup.method == "cala":
        meta["cala_gate"] = setup.cala_gate
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_state_dict(flat, path, metadata=meta)


def checkpoint_gate(meta: Mapping[str, str]) -> str | None:
    """CALA's gate form recorded in a checkpoint's metadata (None for other methods); CALA files
    written before the form was recorded used the only form there was, ``sigmoid2``."""
    if meta.get("method") != "cala":
        return None
    return meta.get("cala_gate", "sigmoid2")


def load_checkpoint(path: str, setup: Setup | None = None) -> tuple[str, dict]:
    """``(method, trainable)`` from :func:`save_checkpoint`'s file (safetensors only).

    With ``setup``: the file's method and CALA gate form must be the setup's (one-line ValueError
    otherwise), so gates trained in one form are never evaluated in another."""
    from safetensors import safe_open

    with safe_open(path, framework="numpy") as f:
        meta = f.metadata() or {}
        if meta.get("format") != "dekag-tka":
            raise ValueError(f"{path}: not a T-KA checkpoint (metadata format {meta.get('format')!r})")
        if setup is not None:
            if meta.get("method") != setup.method:
                raise ValueError(f"{path}: a {meta.get('method')!r} checkpoint, the setup is {setup.method!r}")
            if setup.method == "cala" and checkpoint_gate(meta) != setup.cala_gate:
                raise ValueError(f"{path}: CALA gates trained in form {checkpoint_gate(meta)!r}, the setup's "
                                 f"form is {setup.cala_gate!r} (adapter.cala_gate)")
        flat = {k: f.get_tensor(k) for k in f.keys()}
    out: dict = {}
    for k, v in flat.items():
        group, rest = k.split("/", 1)
        if group in _LORA_GROUPS:
            p, name = rest.rsplit("/", 1)
            out.setdefault(group, {}).setdefault(p, {})[name] = jnp.asarray(v)
        else:
            out.setdefault(group, {})[rest] = jnp.asarray(v)
    for g in list(out):
        if g not in _LORA_GROUPS:
            out[g] = unflatten(out[g])
    if meta.get("method") in ("lora", "cala"):
        for g in _LORA_GROUPS:
            out.setdefault(g, {})
    return meta.get("method", ""), out


def _count(tree) -> int:
    return int(sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree)))


def adapter_counts(setup: Setup, codec_params, vae_params) -> dict:
    """Update size of the method against the codec Theta_J = f_JE + reconstructor + latent decoder:
    ``{"update_params", "gate_params", "update_fp16_bytes", "codec_params", "ratio", "matrices"}``."""
    codec_total = _count(codec_params) + _count(_dec_part(vae_params))
    m = setup.method
    if m == "noka":
        upd, gates, nbytes, mats = 0, 0, 0, 0
    elif m == "fullft":
        upd = _count(codec_params) + (_count(_dec_part(vae_params)) if setup.fullft_decoder else 0)
        gates, nbytes, mats = 0, 2 * upd, 0
    else:
        g = m == "cala"
        lo = (accounting.count_specs(codec_params, setup.codec_specs)
              + accounting.count_specs(vae_params, setup.dec_specs))
        # one gate per adapted matrix, sized by its (possibly clamped) rank
        gates = sum(cala.gate_param_count(s.rank, form=s.gate) for s in (*setup.codec_specs.values(),
                                                            *setup.dec_specs.values())) if g else 0
        upd = lo + gates
        nbytes = (accounting.spec_bytes(codec_params, setup.codec_specs, gates=g)
                  + accounting.spec_bytes(vae_params, setup.dec_specs, gates=g))
        mats = len(setup.codec_specs) + len(setup.dec_specs)
    return {"method": m, "update_params": upd, "gate_params": gates, "update_fp16_bytes": nbytes,
            "codec_params": codec_total, "ratio": upd / codec_total, "matrices": mats}


def paper_size_counts(rank: int = 16, cala_gate: str = cala.DEFAULT_GATE) -> dict:
    """LoRA/CALA update size at the paper's sizes (``JSCCConfig.paper()`` on 64 x 64 x 4 latents, SD's
    VAE decoder), from abstract shapes: ``{"lora", "gates", "fp16_bytes", "codec", "ratio", "matrices"}``."""
    from dekag_jax.ka.counts import SD_VAE_CONFIG
    from dekag_jax.models.jscc import JSCCCodec, JSCCConfig
    from dekag_jax.models.vae import AutoencoderKL

    codec = JSCCCodec(config=JSCCConfig.paper())
    cp = jax.eval_shape(lambda z: codec.init(jax.random.key(0), z),
                        jax.ShapeDtypeStruct((1, 64, 64, 4), jnp.float32))["params"]
    vae = AutoencoderKL(config=SD_VAE_CONFIG)
    vp = jax.eval_shape(lambda x: vae.init(jax.random.key(0), x, jax.random.key(1)),
                        jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32))["params"]
    setup = make_setup("cala", codec, cp, vae, vp, rank=rank, cala_gate=cala_gate)
    c = adapter_counts(setup, cp, vp)
    return {"lora": c["update_params"] - c["gate_params"], "gates": c["gate_params"],
            "fp16_bytes": c["update_fp16_bytes"], "codec": c["codec_params"], "ratio": c["ratio"],
            "matrices": c["matrices"]}


# ----------------------------------------------------------------------------- the job


def load_codec_for(config, latent_hw, seed: int = 0):
    """``(codec, params, source)``: the config's ``codec`` directory (``ka.codec_io.save_codec``), or
    ``"random"`` (a random-init tiny codec, for tests and wiring)."""
    from dekag_jax.ka.codec_io import load_codec
    from dekag_jax.models.jscc import JSCCConfig, init_codec

    if str(config.codec) == "random":
        codec, params = init_codec(JSCCConfig.tiny(), jax.random.key(seed), latent_hw)
        return codec, params, "random init (tiny)"
    if not os.path.isdir(str(config.codec)):
        raise FileNotFoundError(f"codec {config.codec!r}: no such directory (run scripts/pretrain_jscc.py, or "
                                "--config.codec=random)")
    codec, params, _ = load_codec(str(config.codec), latent_hw=tuple(latent_hw))
    return codec, params, os.path.abspath(str(config.codec))


def run(config, workdir: str, *, pipe=None, log: Callable[[str], None] = print) -> dict:
    """The T-KA job: S_EG per subject, each method trained (checkpoint ``workdir/<subject>/<method>
    .safetensors``) and evaluated over the condition grid; ``workdir/metrics.json``."""
    from dekag_jax.world.models import load_edge_pipeline

    t_all = time.time()
    methods = [m for m in str(config.methods).split(",") if m]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"config.methods: unknown {bad}; known {list(METHODS)}")
    subjects = [s.strip() for s in str(config.subjects).split(",") if s.strip()]
    grid = grid_from_config(config.conditions)
    link = LinkConfig(qam_order=config.link.qam_order, quantizer=config.link.quantizer,
                      temperature=config.link.temperature, channel=config.link.channel)
    weights = LossWeights(latent=config.loss.latent, image=config.loss.image, perceptual=config.loss.perceptual,
                          constellation=config.loss.constellation)
    pipe = pipe if pipe is not None else load_edge_pipeline()
    ss = pipe.unet.config.sample_size
    codec, codec_params, source = load_codec_for(config, (ss, ss), config.seed)
    frozen = frozen_tree(codec_params, pipe.vae_params)
    res: dict = {"config": json.loads(config.to_json()), "codec_source": source, "per_subject": {}, "counts": {},
                 "machine": f"{os.cpu_count()}-core CPU ({jax.default_backend()})",
                 "load_avg_start": os.getloadavg()[0]}
    for sid in subjects:
        z_tr, x_tr = cached_edge_latents(pipe, sid, "eg_train", config.seg.n_train, num_steps=config.seg.num_steps,
                                         guidance=config.seg.guidance, cache_dir=config.seg.cache_dir, log=log)
        z_te, x_te = cached_edge_latents(pipe, sid, "eg_test", config.seg.n_test, num_steps=config.seg.num_steps,
                                         guidance=config.seg.guidance, cache_dir=config.seg.cache_dir, log=log)
        per = res["per_subject"].setdefault(sid, {})
        for m in methods:
            t0 = time.time()
            setup = make_setup(m, codec, codec_params, pipe.vae, pipe.vae_params, link=link,
                               rank=config.adapter.rank, codec_targets=config.adapter.codec_targets,
                               decoder_targets=config.adapter.decoder_targets,
                               fullft_decoder=config.adapter.fullft_decoder, cala_phi=config.adapter.cala_phi,
                               cala_gate=config.adapter.cala_gate)
            counts = adapter_counts(setup, codec_params, pipe.vae_params)
            res["counts"][m] = counts
            trainable = init_method(setup, jax.random.key(config.seed), codec_params, pipe.vae_params)
            trainable, hist = train(setup, trainable, frozen, z_tr, x_tr, grid=grid, weights=weights,
                                    epochs=config.train.epochs, batch=config.train.batch, lr=config.train.lr,
                                    weight_decay=config.train.weight_decay, seed=config.seed, log=log,
                                    log_every=config.train.log_every, gate_lr_mult=config.train.gate_lr_mult)
            t_train = time.time() - t0
            ckpt = os.path.join(workdir, sid, f"{m}.safetensors")
            if m != "noka":
                save_checkpoint(ckpt, setup, trainable, extra={"subject": sid, "codec": source})
            ev = evaluate(setup, trainable, frozen, z_te, x_te, grid=grid, seed=config.eval.seed,
                          chunk=config.eval.chunk)
            per[m] = {"psnr_mean": ev["psnr_mean"], "by_rate": ev["by_rate"], "by_snr": ev["by_snr"],
                      "by_delay_spread": ev["by_delay_spread"], "conditions": ev["conditions"],
                      "train_seconds": round(t_train, 1), "seconds": round(time.time() - t0, 1),
                      "steps": len(hist), "loss_first": hist[0]["loss"] if hist else None,
                      "loss_last": float(np.mean([h["loss"] for h in hist[-5:]])) if hist else None,
                      "checkpoint": ckpt if m != "noka" else None}
            log(f"[{sid}] {m:6s} PSNR over the grid {ev['psnr_mean']:.2f} dB | train {t_train:.0f} s, "
                f"{len(hist)} steps | update {counts['update_params']} params ({100 * counts['ratio']:.2f}% of the "
                f"codec's {counts['codec_params']})")
    res["mean_over_subjects"] = {m: float(np.mean([res["per_subject"][s][m]["psnr_mean"] for s in subjects]))
                                 for m in methods}
    res["paper_size_counts"] = paper_size_counts(int(config.adapter.rank))
    res["seconds"] = round(time.time() - t_all, 1)
    res["load_avg_end"] = os.getloadavg()[0]
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "metrics.json"), "w") as f:
        json.dump(res, f, indent=1)
    return res


def format_table(res: dict) -> str:
    """Markdown table: PSNR over Phi_EU per subject and method, update sizes."""
    subs = list(res["per_subject"])
    methods = list(res["mean_over_subjects"])
    lines = ["| method | " + " | ".join(subs) + " | mean | update params | ratio to codec | train s/subject |",
             "|---" * (len(subs) + 5) + "|"]
    for m in methods:
        c = res["counts"][m]
        ts = np.mean([res["per_subject"][s][m]["train_seconds"] for s in subs])
        lines.append(f"| {m} | " + " | ".join(f"{res['per_subject'][s][m]['psnr_mean']:.2f}" for s in subs)
                     + f" | {res['mean_over_subjects'][m]:.2f} | {c['update_params']} | {100 * c['ratio']:.2f}% "
                     f"| {ts:.0f} |")
    p = res["paper_size_counts"]
    lines.append(f"paper size (R=16): LoRA {p['lora']} + gates {p['gates']} params, {p['fp16_bytes'] / 1e6:.2f} MB "
                 f"fp16, {100 * p['ratio']:.2f}% of the {p['codec'] / 1e6:.2f} M codec ({p['matrices']} matrices)")
    return "\n".join(lines)


def _parse(argv):
    from dekag_jax.errors import UsageError
    from dekag_jax.ka.command import parse_stage_args

    fv, config = parse_stage_args(argv, prog="tka", what="T-KA config (configs/tka.py[:variant])",
                                  example="configs/tka.py:smoke", methods=METHODS)
    try:
        grid_from_config(config.conditions)
    except ValueError as e:
        raise UsageError(f"config.conditions: {e}") from None
    if str(config.codec) != "random" and not os.path.isdir(str(config.codec)):
        raise UsageError(f"config.codec {config.codec!r}: no such directory (pretrain with scripts/pretrain_jscc.py "
                         "or pass --config.codec=random)")
    return fv, config


def main(argv=None) -> int:
    """``python -m dekag_jax.ka.tka --config configs/tka.py[:variant] --workdir DIR``."""
    from dekag_jax.ka.command import run_stage

    fv, config = _parse(list(sys.argv[1:] if argv is None else argv))
    return run_stage(fv, config, run, format_table)


if __name__ == "__main__":
    from dekag_jax.errors import cli_main

    sys.exit(cli_main(main))
