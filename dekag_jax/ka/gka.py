"""Generation knowledge alignment (G-KA, paper Sec. IV-A eq. 6, IV-B eqs. 8-9, VI-B2): MAKD and the
baselines TI, DB, LB and UB on an edge pipeline, scored by eq. 5.

Methods (one subject; the edge UNet and text encoder are never changed, only the update is):

* **LB**: no alignment, the edge model with the plain prompt v.
* **TI** (textual inversion, [43]): eq. 8 alone, the metaword mu trained with the UNet and text
  encoder frozen, prompt "mu v". It is also MAKD's first stage (the same mu* serves both).
* **DB** (DreamBooth-LoRA, [33]): rank-R LoRA trained by eq. 9 with the metaword left at its random
  initialisation (Sec. VI-B1: "DB optimizes the LoRA matrices under the initial random embedding of
  the metaword"); the random mu is the same draw TI starts from.
* **MAKD**: eq. 8, then eq. 9 with mu* frozen. Reading: eq. 9 minimises over Delta Theta_G only and
  writes mu* (the optimum of eq. 8) as a constant, so the metaword does not train in stage 2.
* **UB**: the cloud test images against themselves without self-pairs (``metrics.consistency`` with
  no second set).

Loss (eq. 6 = 8 = 9 up to what trains): the DDPM epsilon-MSE of :func:`dekag_jax.diffusion.schedules.
diffusion_loss` on S_CG latents, t ~ U{0..T-1}, eps ~ N(0, I), fresh per step. An **epoch** is one
pass over S_CG (40 latents of the subject, shuffled; the last batch of an epoch is topped up from
the next shuffle so every step has the same batch size). Adam (no weight decay) at a constant
learning rate for both stages; the paper names no optimiser.

LoRA targets: the attention projections ``to_q/to_k/to_v/to_out.0`` of every self- and
cross-attention (``attn1``/``attn2``) of the UNet, the set diffusers' DreamBooth-LoRA script trains
(``configs/gka.py`` ``lora.targets``); the paper's "all the parameter matrices of the U-Net" matches no
published count (README, Adapters), and on the tiny world attention-only keeps DB and MAKD on the
identical, cheaper adapter set. DB has its own settings (``config.db``: epochs, batch, lr, rank, alpha,
targets; :func:`lora_settings`), equal to MAKD's ``config.lora`` by default (the paper's one recipe
for both LoRA stages); other targets or rank give DB its own adapters and specs, drawn with the same
key (``configs/gka.py:db_tuned``: DB's own study's setting). ``run_subject`` reports each LoRA's
parameter count (``lora_params``).

Multi-subject: the metaword is ``[S, n, D]`` (one per subject, picked per sample by a subject index)
and one LoRA set is shared, so ``train_stage`` runs single- and multi-subject MAKD alike.

Consistency (eq. 5): 30 edge images per subject from the ``eg_test`` seeds (initial noise
``N(0, I)`` from ``jax.random.key(seed)``, as ``world.gates.edge_samples``), DDIM with classifier-free
guidance (uncond = the empty prompt, no metaword), against the subject's 10 cloud test images, all
pairs, DINO and CLIP cosine, mean and std per subject, and their per-pair sum. FID with KID beside
it (``distribution_scores``; ``config.eval.fid``): the same 30 images against the subject's 50 cloud
images (``fid_reference``: cg_train + cg_test) over the DINO judge's features; the UB's set for them
is the cloud model sampling the eg_test seeds (``ub_cloud_images``). ``Generator.latents`` gives the
sampled z0 (what the edge sends through the codec) and ``Generator.decode`` the images. The T-KA codec is not
in the loop yet: these are the edge-generated images over an **ideal channel** (what the user
receives when the channel is perfect), labelled so in ``metrics.json``.

Entry point: ``python -m dekag_jax.ka.gka --config configs/gka.py[:variant] --workdir DIR``
(``scripts/run_gka.py`` calls the same :func:`main`), writing ``DIR/metrics.json`` and per subject
``DIR/<subject>/learned_embeds.safetensors`` (mu*) and ``pytorch_lora_weights.safetensors`` (MAKD's
LoRA, PEFT keys) via :mod:`dekag_jax.weights.adapters`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dekag_jax import parallel
from dekag_jax.adapt import lora, metaword, partition
from dekag_jax.diffusion.generate import sample_latents, vae_decode
from dekag_jax.diffusion.schedules import diffusion_loss
from dekag_jax.ka.scg import SCG, build_scg

__all__ = ["METHODS", "Data", "make_data", "make_loss", "eval_batch", "train_stage", "init_lora", "lora_settings",
           "loss_fn_jit", "Generator", "judge_feature_fns", "score_subject", "ub_subject", "fid_reference",
           "distribution_scores", "ub_cloud_images", "run_subject", "run", "main"]

METHODS = ("lb", "ti", "db", "makd", "ub")
CHANNEL_LABEL = "edge-generated, ideal channel (T-KA codec not in the loop)"


# ----------------------------------------------------------------------------- data and loss


@dataclasses.dataclass(frozen=True)
class Data:
    """Training data of one G-KA run: ``z`` ``[N, h, w, C]`` S_CG latents (all subjects), ``sid`` ``[N]``
    int32 subject index (into the metaword's first axis), ``ids`` ``[S, L]`` int32 token ids of each
    subject's prompt v (without the metaword)."""

    z: np.ndarray
    sid: np.ndarray
    ids: np.ndarray


def make_data(pipe, scgs: Sequence[SCG]) -> Data:
    """Stack one or more subjects' S_CG into one :class:`Data` (subject index = position in scgs)."""
    if not scgs:
        raise ValueError("make_data needs at least one subject's S_CG")
    z = np.concatenate([s.train_latents for s in scgs]).astype(np.float32)
    sid = np.concatenate([np.full(len(s.train_latents), i, np.int32) for i, s in enumerate(scgs)])
    ids = np.asarray(pipe.tokenize([s.prompt for s in scgs]), np.int32)
    return Data(z, sid, ids)


def _eos_id(pipe) -> int:
    eos = getattr(pipe.tokenizer, "eos_token_id", None)
    if eos is None:
        eos = pipe.text_encoder.config.eos_token_id
    return int(eos)


def _context(pipe, text_params, ids, mu):
    """Prompt embeddings ``[B, L, D]``: "mu v" when ``mu`` ``[B, n, D]`` is given, else plain v."""
    if mu is None:
        return pipe.text_encoder.apply({"params": text_params}, ids)["last_hidden_state"]
    return metaword.encode_prompt(pipe.text_encoder, text_params, ids, mu, eos_id=_eos_id(pipe))["last_hidden_state"]


def make_loss(pipe, specs: Mapping[str, lora.LoraSpec] | None) -> Callable[..., jax.Array]:
    """``loss(trainable, frozen, z0, sid, ids, t, noise) -> scalar``: eq. 6/8/9's epsilon-MSE.

    trainable / frozen: dicts whose union holds ``"unet"`` and ``"text"`` params (frozen), and
    optionally ``"metaword"`` ``[S, n, D]`` and ``"lora"`` (adapters for ``specs``); which of the two
    dicts holds the metaword and the LoRA decides what trains (eq. 8: metaword trainable; eq. 9:
    LoRA trainable, metaword frozen). z0 ``[B, h, w, C]``, sid ``[B]`` int32, ids ``[S, L]`` int32 (the
    subjects' prompts), t ``[B]`` int32, noise like z0 (given, so evaluation batches are fixed).
    """
    unet, sched = pipe.unet, pipe.schedule

    def loss_fn(trainable, frozen, z0, sid, ids, t, noise):
        p = {**frozen, **trainable}
        mu = p.get("metaword")
        ctx = _context(pipe, p["text"], ids[sid], None if mu is None else mu[sid])

        def model_fn(z, tt, c):
            if p.get("lora") is not None:
                return lora.apply(unet, p["unet"], p["lora"], specs, z, tt, c).astype(jnp.float32)
            return unet.apply({"params": p["unet"]}, z, tt, c).astype(jnp.float32)

        return diffusion_loss(model_fn, z0, jax.random.key(0), schedule=sched, cond=ctx, t=t, noise=noise)

    return loss_fn


def _draw(key, n, shape, num_train_timesteps):
    kt, kn = jax.random.split(key)
    t = jax.random.randint(kt, (n,), 0, num_train_timesteps, dtype=jnp.int32)
    return t, jax.random.normal(kn, (n, *shape), jnp.float32)


def eval_batch(data: Data, pipe, *, seed: int = 1234, repeats: int = 4):
    """A fixed evaluation batch ``(z0, sid, t, noise)``: every S_CG latent ``repeats`` times with
    its own (t, eps) from ``seed``, so loss comparisons before/after training are deterministic."""
    z = np.tile(data.z, (repeats, 1, 1, 1))
    sid = np.tile(data.sid, repeats)
    t, noise = _draw(jax.random.key(seed), len(z), z.shape[1:], pipe.schedule.num_train_timesteps)
    return jnp.asarray(z), jnp.asarray(sid), t, noise


def init_lora(pipe, key, *, rank: int, alpha: float, targets: str):
    """Zero-B LoRA on the edge UNet's kernels matching ``targets`` (one regex): ``(adapters, specs)``."""
    return lora.init(key, pipe.unet_params, [(targets, int(rank), float(alpha))])


def lora_settings(config, method: str):
    """The LoRA settings (``epochs, batch, lr, rank, alpha, targets``) of ``method`` ("db" or "makd"):
    ``config.db`` for DB, ``config.lora`` for MAKD; a config without ``db`` (written before DB had its own
    fields) gives DB ``config.lora``, what DB trained with then."""
    if method == "db" and "db" in config:
        return config.db
    if method not in ("db", "makd"):
        raise ValueError(f"lora_settings: method {method!r}; expected 'db' or 'makd'")
    return config.lora


def train_stage(pipe, data: Data, trainable: dict, frozen: dict, specs, *, epochs: int, batch: int, lr: float,
                seed: int, log: Callable[[str], None] | None = None,
                on_epoch: Callable[[int, dict], None] | None = None, mesh=None, start_epoch: int = 0,
                opt_state=None, checkpoint_every: int = 0,
                on_checkpoint: Callable[[int, dict, object, list], None] | None = None) -> tuple[dict, list[float]]:
    """Run ``epochs`` passes over ``data`` (see the module doc) with Adam(lr); returns the trained
    ``trainable`` and the mean training loss of each epoch. One jitted step (``adapt.partition.
    make_step``: gradients for ``trainable`` only, trainable and optimiser state donated, the frozen
    model an argument). ``on_epoch(epoch, trainable)`` (1-based) is called after every epoch, e.g.
    to score training depths (Fig. 8) without retraining; it must not keep the arrays (they are
    donated to the next step): copy what it needs.

    ``mesh`` (a ``jax.sharding.Mesh`` with the axis ``parallel.DATA_AXIS``): data parallelism. The
    per-sample batch (z0, sid, t, eps) is split over the axis (``parallel.data_sharding``); trainable,
    optimiser state, frozen model and the prompts' ids are replicated (``parallel.replicated_sharding``);
    the step is jitted with these explicit in/out shardings and keeps its donation. The same
    (t, eps) and sample order are drawn as without a mesh, so only the reduction order differs.
    ``batch`` must be divisible by the axis size.

    Resume (the main job's checkpoints): ``start_epoch`` epochs are taken as done; ``trainable`` and
    ``opt_state`` (None: ``tx.init``) are their state. The sample order and the (t, eps) stream are
    fast-forwarded over those epochs (replayed without steps: they depend only on ``seed``, ``n``,
    ``batch`` and the step index), so a resumed run takes exactly the steps of an uninterrupted one.
    ``on_checkpoint(epoch, trainable, opt_state, history)`` (1-based epoch; ``history`` the epoch
    losses of this call) runs after every ``checkpoint_every``-th epoch and after the last; like
    ``on_epoch`` it must copy what it keeps. The returned history covers this call's epochs only.
    A non-finite epoch loss raises :class:`dekag_jax.errors.NonFiniteLossError` (epoch named)."""
    if epochs < 0 or batch < 1 or not lr > 0 or not 0 <= start_epoch <= max(epochs, 0):
        raise ValueError(f"train_stage: epochs={epochs} must be >= 0, batch={batch} >= 1, lr={lr} > 0, "
                         f"0 <= start_epoch={start_epoch} <= epochs")
    n = len(data.z)
    tx = optax.adam(lr)
    shard_kw: dict = {}
    if mesh is not None:
        parallel.data_axis_size(mesh, "train_stage", batch)
        rep, dat = parallel.replicated_sharding(mesh), parallel.data_sharding(mesh)
        # step(trainable, opt_state, frozen, z0, sid, ids, t, noise) -> (trainable, opt_state, loss)
        shard_kw = dict(in_shardings=(rep, rep, rep, dat, dat, rep, dat, dat), out_shardings=(rep, rep, rep))
    step = _cached(pipe, ("step", _specs_key(specs), float(lr), mesh),
                   lambda: partition.make_step(make_loss(pipe, specs), tx, **shard_kw))
    # donation would delete the caller's arrays: train on a copy
    trainable = jax.tree.map(lambda x: jnp.array(x, copy=True), trainable)
    if mesh is not None:
        trainable, frozen = jax.device_put(trainable, rep), jax.device_put(frozen, rep)
    opt_state = tx.init(trainable) if opt_state is None else jax.tree.map(lambda x: jnp.array(x, copy=True),
                                                                         opt_state)
    if mesh is not None:
        opt_state = jax.device_put(opt_state, rep)
    rng = np.random.default_rng(seed)
    key = jax.random.key(seed)
    steps_per_epoch = -(-n // batch)
    order = np.empty(0, np.int64)
    if mesh is None:
        z_all, sid_all, ids = jnp.asarray(data.z), jnp.asarray(data.sid), jnp.asarray(data.ids)
    else:  # gathered on the host, then split over the mesh per step
        z_all, sid_all, ids = np.asarray(data.z), np.asarray(data.sid), jax.device_put(jnp.asarray(data.ids), rep)
    draw = jax.jit(lambda k: _draw(k, batch, data.z.shape[1:], pipe.schedule.num_train_timesteps))
    history: list[float] = []
    i = 0
    for ep in range(epochs):
        if ep < start_epoch:  # resume: replay the order draws of a finished epoch, no steps
            for _ in range(steps_per_epoch):
                while len(order) < batch:
                    order = np.concatenate([order, rng.permutation(n)])
                order = order[batch:]
                i += 1
            continue
        losses = []
        for _ in range(steps_per_epoch):
            while len(order) < batch:
                order = np.concatenate([order, rng.permutation(n)])
            idx, order = order[:batch], order[batch:]
            t, noise = draw(jax.random.fold_in(key, i))
            z0, sid = z_all[idx], sid_all[idx]
            if mesh is not None:
                z0, sid, t, noise = parallel.shard_batch((z0, sid, t, noise), mesh)
            trainable, opt_state, loss = step(trainable, opt_state, frozen, z0, sid, ids, t, noise)
            losses.append(loss)
            i += 1
        history.append(float(np.mean(jax.device_get(losses))))
        if not np.isfinite(history[-1]):
            from dekag_jax.errors import NonFiniteLossError

            raise NonFiniteLossError(f"training loss is {history[-1]} at epoch {ep + 1}/{epochs} (lr={lr})")
        if on_epoch is not None:
            on_epoch(ep + 1, trainable)
        if on_checkpoint is not None and (ep + 1 == epochs or (checkpoint_every and (ep + 1) % checkpoint_every == 0)):
            on_checkpoint(ep + 1, trainable, opt_state, history)
        if log is not None and (ep == epochs - 1 or (ep + 1) % max(1, epochs // 5) == 0):
            log(f"  epoch {ep + 1}/{epochs}: train loss {history[-1]:.4f}")
    return trainable, history


def _specs_key(specs):
    return None if specs is None else tuple(sorted(specs.items()))


def _cached(pipe, key, build):
    """One jitted function per (pipeline, key): subjects and stages of a run share compilations."""
    cache = pipe.__dict__.setdefault("_jit_cache", {})
    k = ("gka",) + tuple(key)
    if k not in cache:
        cache[k] = build()
    return cache[k]


def loss_fn_jit(pipe, specs=None):
    """The jitted eq. 6 loss of :func:`make_loss` (cached per pipeline and LoRA spec set)."""
    return _cached(pipe, ("loss", _specs_key(specs)), lambda: jax.jit(make_loss(pipe, specs)))


# ----------------------------------------------------------------------------- generation and scores


class Generator:
    """Edge images for a prompt with an optional metaword and LoRA: DDIM + guidance, decoded.

    ``latents(prompt, seeds, mu=None, adapters=None)`` -> float32 ``[len(seeds), h, w, C]``: the
    sampled z0 (what the edge feeds the JSCC codec, before decoding).
    ``__call__(prompt, seeds, mu=None, adapters=None)`` -> float32 ``[len(seeds), H, W, 3]`` in [0, 1]
    = :meth:`decode` of :meth:`latents` (the same two programs, so the numbers are identical).
    The initial noise of image j is ``N(0, I)`` from ``jax.random.key(seeds[j])`` (``world.gates``'s
    convention). mu ``[n, D]``; the LoRA is merged into the UNet (deployment form, ``lora.merge``).
    One jitted sampling program per (num_steps, metaword?, LoRA spec set) and one decoder.
    """

    def __init__(self, pipe, specs=None, *, num_steps: int = 50, guidance_scale: float = 7.5, chunk: int = 32):
        self.pipe, self.specs = pipe, specs
        self.num_steps, self.guidance_scale, self.chunk = int(num_steps), float(guidance_scale), int(chunk)
        self._fns: dict = {}
        # one decoder per pipeline, shared by every Generator (ranks and step counts differ, f_LD does not)
        self._decode = _cached(pipe, ("decode",), lambda: jax.jit(lambda vae_params, z0: vae_decode(pipe.vae,
                                                                                                     vae_params, z0)))

    def _fn(self, with_mu: bool, with_lora: bool):
        k = (with_mu, with_lora)
        if k not in self._fns:
            pipe, specs, steps = self.pipe, self.specs, self.num_steps
            use_cfg = self.guidance_scale > 1.0

            def run(text_params, unet_params, adapters, mu, ids, neg, z_T, g):
                cond = _context(pipe, text_params, ids, None if mu is None else
                                jnp.broadcast_to(mu, (ids.shape[0], *mu.shape)))
                uncond = _context(pipe, text_params, neg, None) if use_cfg else None
                up = lora.merge(unet_params, adapters, specs) if adapters is not None else unet_params
                return sample_latents(pipe.unet, up, cond, uncond, z_T, jax.random.key(0), schedule=pipe.schedule,
                                      num_steps=steps, guidance_scale=g)

            self._fns[k] = jax.jit(run)
        return self._fns[k]

    def latents(self, prompt: str, seeds: Sequence[int], mu=None, adapters=None) -> np.ndarray:
        """The sampled z0 ``[len(seeds), h, w, C]`` float32 (see the class doc)."""
        pipe = self.pipe
        ss, c = pipe.unet.config.sample_size, pipe.unet.config.in_channels
        fn = self._fn(mu is not None, adapters is not None)
        seeds = [int(s) for s in seeds]
        # one batch shape per call (min(chunk, N)): the last partial chunk is padded by repeating its
        # last seed and the padding dropped, so e.g. 100 seeds in chunks of 32 compile the sampler once
        b = min(self.chunk, len(seeds))
        out = []
        for i in range(0, len(seeds), self.chunk):
            part = seeds[i:i + self.chunk]
            n = len(part)
            part = part + [part[-1]] * (b - n)
            z_T = jnp.stack([jax.random.normal(jax.random.key(s), (ss, ss, c), jnp.float32) for s in part])
            ids = jnp.asarray(pipe.tokenize([prompt] * len(part)), jnp.int32)
            neg = jnp.asarray(pipe.tokenize([""] * len(part)), jnp.int32)
            out.append(np.asarray(fn(pipe.text_params, pipe.unet_params, adapters, mu, ids, neg, z_T,
                                     jnp.float32(self.guidance_scale)))[:n])
        if not out:
            return np.zeros((0, ss, ss, c), np.float32)
        return np.concatenate(out)

    def decode(self, z0) -> np.ndarray:
        """Images ``[N, H, W, 3]`` float32 in [0, 1] from latents ``[N, h, w, C]`` (the edge VAE, f_LD)."""
        z0 = np.asarray(z0, np.float32)
        if not len(z0):
            ss = self.pipe.unet.config.sample_size * self.pipe.vae.downsample_factor
            return np.zeros((0, ss, ss, 3), np.float32)
        b = min(self.chunk, len(z0))   # one batch shape, as in latents()
        out = []
        for i in range(0, len(z0), self.chunk):
            part = z0[i:i + self.chunk]
            pad = np.concatenate([part, np.repeat(part[-1:], b - len(part), 0)]) if len(part) < b else part
            out.append(np.asarray(self._decode(self.pipe.vae_params, jnp.asarray(pad)))[:len(part)])
        return np.concatenate(out)

    def __call__(self, prompt: str, seeds: Sequence[int], mu=None, adapters=None) -> np.ndarray:
        return self.decode(self.latents(prompt, seeds, mu, adapters))


def judge_feature_fns(judges) -> dict:
    """``{"dino": fn, "clip": fn}`` (images -> L2-normalised features) of ``world.models.Judges``."""
    from dekag_jax.models.vit import image_feature_fn

    return {"dino": image_feature_fn(judges.dino, judges.dino_params),
            "clip": image_feature_fn(judges.clip, judges.clip_params)}


def _summary(res: dict) -> dict:
    per = next(iter(res["per_subject"].values()))
    return {n: {"mean": per[n].mean, "std": per[n].std, "n_pairs": per[n].n_pairs} for n in ("dino", "clip", "total")}


def score_subject(feature_fns, edge_images, cloud_test_images) -> dict:
    """Eq. 5 for one subject: ``{"dino"|"clip"|"total": {"mean", "std", "n_pairs"}}`` over all
    (edge, cloud test) pairs (``metrics.consistency``)."""
    from dekag_jax.metrics import consistency_from_images

    a, b = np.asarray(edge_images), np.asarray(cloud_test_images)
    return _summary(consistency_from_images(feature_fns, a, np.zeros(len(a), int), b, np.zeros(len(b), int)))


def ub_subject(feature_fns, cloud_test_images) -> dict:
    """The UB: cloud test images against each other, self-pairs excluded."""
    from dekag_jax.metrics import consistency_from_images

    b = np.asarray(cloud_test_images)
    return _summary(consistency_from_images(feature_fns, b, np.zeros(len(b), int)))


FID_JUDGE = "dino"


def fid_reference(scg: SCG) -> np.ndarray:
    """The FID/KID reference set of a subject: all 50 of its cloud images (the 40 ``cg_train`` images
    of S_CG and the 10 ``cg_test`` images), uint8 ``[50, H, W, 3]``. Reading: the paper gives no
    reference for G-KA's FID; eq. 5 uses only the 10 test images, too few for a covariance, so the
    whole cloud distribution of the subject is the target (it includes S_CG, which MAKD trained on:
    FID then also rewards reproducing S_CG, which is what alignment asks for)."""
    return np.concatenate([np.asarray(scg.train_images), np.asarray(scg.test_images)])


def distribution_scores(judges_fns, images, reference, *, judge: str = FID_JUDGE, seed: int = 0) -> dict:
    """FID and KID of ``images`` ``[N, H, W, 3]`` against ``reference`` ``[M, H, W, 3]`` (uint8 or float
    in [0, 1], as the judge takes) over the ``judge`` feature function (the tiny world's DINO judge:
    L2-normalised features, D = 96; Inception needs weights we do not ship). The sets are small
    (30 vs 50), so FID is strongly biased upwards and KID (unbiased) is given beside it:
    ``{"fid": float, "kid": {"mean", "std", "subset_size", "num_subsets"}, "judge": str}``; KID over
    100 random subsets of min(N, M) rows each (``metrics.kid_from_features``)."""
    from dekag_jax.metrics.features import batched_features
    from dekag_jax.metrics.fid import fid_from_features, kid_from_features

    if judge not in judges_fns:
        raise ValueError(f"distribution_scores: judge {judge!r} not in {sorted(judges_fns)}")
    fa = batched_features(judges_fns[judge], np.asarray(images))
    fb = batched_features(judges_fns[judge], np.asarray(reference))
    k = kid_from_features(fa, fb, seed=seed)
    return {"fid": fid_from_features(fa, fb), "kid": {"mean": k.mean, "std": k.std, "subset_size": k.subset_size,
                                                         "num_subsets": k.num_subsets}, "judge": judge}


def ub_cloud_images(scg: SCG, seeds: Sequence[int]) -> np.ndarray | None:
    """The UB's generated set for FID/KID: the cloud model itself sampling the subject's prompt from
    the edge's ``eg_test`` seeds (disjoint from the reference's seeds), uint8 ``[len(seeds), H, W, 3]``
    at the edge resolution; None for a source that cannot generate (a folder of images)."""
    if scg.source != "world":
        return None
    from dekag_jax.ka.scg import _resize_uint8
    from dekag_jax.world.render import DEFAULT_SIZE
    from dekag_jax.world.splits import cloud_generate
    from dekag_jax.world.subjects import get_subject

    # rendered and resized exactly as S_CG's images (ka/scg.py cloud_images)
    return _resize_uint8(cloud_generate(get_subject(scg.subject).spec, list(seeds), DEFAULT_SIZE),
                         int(scg.test_images.shape[1]))


# ----------------------------------------------------------------------------- one subject, all methods


def run_subject(pipe, judges_fns, subject: str, config, *, workdir: str | None = None,
                log: Callable[[str], None] = print) -> dict:
    """All of ``config.methods`` for one subject: scores, eq. 6 losses on a fixed batch, times."""
    from dekag_jax.world.splits import split_seeds

    methods = [m for m in str(config.methods).split(",") if m]
    seed = int(config.seed)
    out: dict = {"times_s": {}, "eq6_loss": {}, "scores": {}}
    t0 = time.time()
    scg = build_scg(pipe, subject, source=str(config.scg.source), cache_dir=str(config.scg.cache_dir) or None)
    out["times_s"]["scg"] = round(time.time() - t0, 2)
    out["prompt"] = scg.prompt
    data = make_data(pipe, [scg])
    ev = eval_batch(data, pipe, seed=seed + 1000, repeats=int(config.eval.loss_repeats))
    loss_eval = loss_fn_jit(pipe)
    frozen = {"unet": pipe.unet_params, "text": pipe.text_params}
    gen_seeds = split_seeds(subject, "eg_test")[:int(config.eval.n_images)]
    key = jax.random.fold_in(jax.random.key(seed), 0)
    dim = pipe.text_encoder.config.hidden_size
    mu0 = metaword.init_metaword(jax.random.fold_in(key, 1), dim, int(config.metaword.n_tokens),
                                 init=str(config.metaword.init))[None]  # [S=1, n, D]
    # DB and MAKD each train their own LoRA settings (config ``db.*`` / ``lora.*``); with equal rank,
    # alpha and targets (the default) both start from the one draw, as before ``db.*`` existed
    lora_sets = {}
    for name, sub in (("db", lora_settings(config, "db")), ("makd", config.lora)):
        adapters0, specs = init_lora(pipe, jax.random.fold_in(key, 2), rank=sub.rank, alpha=sub.alpha,
                                     targets=str(sub.targets))
        lora_sets[name] = (sub, adapters0, specs)

    def generator(specs):
        return _cached(pipe, ("gen", _specs_key(specs), int(config.eval.num_steps), float(config.eval.guidance)),
                       lambda: Generator(pipe, specs, num_steps=int(config.eval.num_steps),
                                         guidance_scale=float(config.eval.guidance)))

    gen = generator(lora_sets["makd"][2])

    samples: dict = {"cloud": scg.test_images[:8].astype(np.float32) / 255.0}
    fid_on = bool(config.eval.get("fid", True))
    fid_ref = fid_reference(scg) if fid_on else None
    if fid_on:
        out["fid_reference"] = (f"{len(fid_ref)} cloud images (cg_train + cg_test), judge {FID_JUDGE!r} features; "
                                "UB: the cloud model at the eg_test seeds")

    def evaluate(name, mu=None, adapters=None, specs=None):
        t = time.time()
        g = gen if specs is None else generator(specs)
        imgs = g(scg.prompt, gen_seeds, None if mu is None else mu[0], adapters)
        samples[name] = imgs[:8]
        out["scores"][name] = score_subject(judges_fns, imgs, scg.test_images)
        if fid_on:
            out["scores"][name].update(distribution_scores(judges_fns, imgs, fid_ref, seed=seed))
        out["times_s"][f"eval_{name}"] = round(time.time() - t, 2)
        s = out["scores"][name]
        log(f"  {name}: DINO {s['dino']['mean']:.4f} CLIP {s['clip']['mean']:.4f} sum {s['total']['mean']:.4f} "
            f"(std {s['total']['std']:.4f})")
        return imgs

    out["eq6_loss"]["plain_prompt"] = float(loss_eval({}, frozen, *ev[:2], jnp.asarray(data.ids), *ev[2:]))
    out["eq6_loss"]["random_metaword"] = float(loss_eval({}, {**frozen, "metaword": mu0}, *ev[:2],
                                                         jnp.asarray(data.ids), *ev[2:]))
    if "lb" in methods:
        evaluate("lb")
    if "ub" in methods:
        out["scores"]["ub"] = ub_subject(judges_fns, scg.test_images)
        ub_imgs = ub_cloud_images(scg, gen_seeds) if fid_on else None
        if ub_imgs is not None:
            out["scores"]["ub"].update(distribution_scores(judges_fns, ub_imgs, fid_ref, seed=seed))
    mu_star = None
    if "ti" in methods or "makd" in methods:
        t = time.time()
        tr, hist = train_stage(pipe, data, {"metaword": mu0}, frozen, None, epochs=int(config.metaword.epochs),
                               batch=int(config.metaword.batch), lr=float(config.metaword.lr), seed=seed + 1, log=log)
        out["times_s"]["metaword"] = round(time.time() - t, 2)
        mu_star = tr["metaword"]
        out["eq6_loss"]["ti"] = float(loss_eval(tr, frozen, *ev[:2], jnp.asarray(data.ids), *ev[2:]))
        out["train_loss_metaword"] = hist
        if "ti" in methods:
            evaluate("ti", mu_star)
    for name, mu in (("db", mu0), ("makd", mu_star)):
        if name not in methods:
            continue
        sub, adapters0, specs = lora_sets[name]
        t = time.time()
        tr, hist = train_stage(pipe, data, {"lora": adapters0}, {**frozen, "metaword": mu}, specs,
                               epochs=int(sub.epochs), batch=int(sub.batch), lr=float(sub.lr),
                               seed=seed + 2, log=log)
        out["times_s"][f"lora_{name}"] = round(time.time() - t, 2)
        out["eq6_loss"][name] = float(loss_fn_jit(pipe, specs)(tr, {**frozen, "metaword": mu}, *ev[:2],
                                                               jnp.asarray(data.ids), *ev[2:]))
        out[f"train_loss_lora_{name}"] = hist
        out.setdefault("lora_params", {})[name] = int(sum(np.size(v) for a in tr["lora"].values()
                                                          for v in a.values()))
        evaluate(name, mu, tr["lora"], specs)
        if name == "makd" and workdir:
            from dekag_jax.weights import adapters as AF

            d = os.path.join(workdir, subject)
            os.makedirs(d, exist_ok=True)
            AF.save_textual_inversion(d, metaword.DEFAULT_TOKEN, np.asarray(mu_star[0]))
            AF.save_lora(d, jax.device_get(tr["lora"]), specs)
    if workdir:
        _save_grid(os.path.join(workdir, subject, "samples.png"), samples)
    return out


def _save_grid(path: str, rows: Mapping[str, np.ndarray]) -> None:
    """One PNG: a row of (up to 8) images per method, in the order given (cloud test first)."""
    from PIL import Image

    width = max(len(r) for r in rows.values())
    h, w = next(iter(rows.values())).shape[1:3]
    grid = np.ones((len(rows) * h, width * w, 3), np.float32)
    for i, r in enumerate(rows.values()):
        for j, im in enumerate(r):
            grid[i * h:(i + 1) * h, j * w:(j + 1) * w] = im
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray((np.clip(grid, 0, 1) * 255).round().astype(np.uint8)).save(path)


def _mean_over_subjects(per_subject: dict, method: str) -> dict | None:
    rows = [r["scores"][method] for r in per_subject.values() if method in r["scores"]]
    if not rows:
        return None
    return {n: {k: float(np.mean([r[n][k] for r in rows])) for k in ("mean", "std")} for n in ("dino", "clip", "total")}


def run(config, workdir: str | None = None, *, pipe=None, judges=None, log: Callable[[str], None] = print) -> dict:
    """The G-KA table for ``config.subjects``: per subject and method the eq. 5 scores; summaries
    as means over subjects; improvements over LB as the mean over subjects of per-subject ratios."""
    from dekag_jax.world.models import load_edge_pipeline, load_judges

    t0 = time.time()
    pipe = pipe or load_edge_pipeline()
    judges = judges or load_judges()
    fns = judge_feature_fns(judges)
    subjects = [s for s in str(config.subjects).split(",") if s]
    per: dict = {}
    for s in subjects:
        log(f"subject {s}")
        per[s] = run_subject(pipe, fns, s, config, workdir=workdir, log=log)
    methods = [m for m in METHODS if m in str(config.methods).split(",")]
    summary = {m: _mean_over_subjects(per, m) for m in methods}
    ratios = {}
    for m in methods:
        if m != "lb" and all("lb" in r["scores"] and m in r["scores"] for r in per.values()):
            ratios[m] = float(np.mean([r["scores"][m]["total"]["mean"] / r["scores"]["lb"]["total"]["mean"]
                                       for r in per.values()]))
    res = {"images": CHANNEL_LABEL, "config": json.loads(config.to_json()), "per_subject": per,
           "summary": summary, "total_ratio_over_lb": ratios,
           "epoch": "one pass over a subject's S_CG (40 latents)", "seconds": round(time.time() - t0, 1),
           "jax_backend": jax.default_backend()}
    if workdir:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "metrics.json"), "w") as f:
            json.dump(res, f, indent=1)
    return res


def format_table(res: dict) -> str:
    """Markdown table: per subject and method, DINO / CLIP / sum (mean +- std over pairs)."""
    lines = ["| subject | method | DINO | CLIP | sum (std) | FID | KID |", "|---|---|---|---|---|---|---|"]
    for s, r in res["per_subject"].items():
        for m in METHODS:
            if m in r["scores"]:
                x = r["scores"][m]
                fid = f"{x['fid']:.3f}" if "fid" in x else "-"
                kid = f"{x['kid']['mean']:.4f} ({x['kid']['std']:.4f})" if "kid" in x else "-"
                lines.append(f"| {s} | {m.upper()} | {x['dino']['mean']:.3f} | {x['clip']['mean']:.3f} | "
                             f"{x['total']['mean']:.3f} ({x['total']['std']:.3f}) | {fid} | {kid} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI


def _parse(argv):
    from dekag_jax.ka.command import parse_stage_args

    return parse_stage_args(argv, prog="gka", what="G-KA config (configs/gka.py[:variant])",
                            example="configs/gka.py:smoke", methods=METHODS)


def main(argv=None) -> int:
    """``python -m dekag_jax.ka.gka --config configs/gka.py[:variant] --workdir DIR``."""
    from dekag_jax.ka.command import run_stage

    fv, config = _parse(list(sys.argv[1:] if argv is None else argv))
    return run_stage(fv, config, run, format_table)


if __name__ == "__main__":
    from dekag_jax.errors import cli_main

    sys.exit(cli_main(main))
