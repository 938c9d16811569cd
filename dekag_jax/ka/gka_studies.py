"""G-KA studies the report plots (paper Sec. VI-B2, Figs. 7-9), on top of :mod:`dekag_jax.ka.gka`.

* :func:`run_multi` (Fig. 7, two-subject G-KA): per subject, *Per-subject MAKD* (eq. 8 then eq. 9 on
  that subject alone, exactly ``gka.run_subject``'s MAKD: same seeds), *Multi-subject LoRA* (one LoRA
  set trained by eq. 9 on the pooled S_CG of all subjects with each subject's random, untrained
  metaword: DreamBooth-style, as the paper's DB) and *Multi-subject MAKD* (the subject-specific
  metawords mu*_s of eq. 8, stacked ``[S, n, D]``, then ONE shared LoRA set trained by eq. 9 on the
  pooled S_CG). Readings: (i) eq. 8 for subject s sees only subject s's samples (a row of the
  ``[S, n, D]`` metaword gets gradients from its own subject only, ``gka.make_loss``), so the
  multi-subject metawords ARE the per-subject ones: they are trained once and shared by both
  MAKD variants, which then differ only in LoRA sharing, the comparison Fig. 7 draws; (ii) an epoch
  of the shared LoRA is one pass over the pooled S_CG (40·S latents), so every subject's images
  are seen as often as in a per-subject run (the shared set takes S times the steps).
* :func:`depth_study` (Fig. 8): eq. 5 against training depth for the metaword (eq. 8) and for the
  LoRA on top of it (eq. 9), scored at checkpoint epochs of ONE run per stage (``train_stage``'s
  ``on_epoch``, no retraining), with epoch 0 (the untrained start). Beyond the paper (which picks
  the depth by eye), an automatic pick: 8 of the 40 S_CG images are held out of training, and the
  depth maximising eq. 5's DINO + CLIP sum of the edge samples against those 8 held-out cloud images
  is chosen (the 10 cloud test images are never used for the pick). The held-out eq. 6 loss is
  recorded beside it (it keeps falling while eq. 5 falls: it does not pick the depth). The LoRA
  curve starts from the metaword at its chosen depth.
* :func:`rank_bits_study` (Fig. 9): MAKD with rank 1, 2, 4, 8 LoRA in float16 against rank-8 LoRA
  post-training quantised to 8, 4, 2 bits (``adapt.quant``, per-output-channel, float16 scales), and
  the metaword alone (rank 0). ``bytes`` = the whole G-KA update: the metaword in float16 plus the
  LoRA's exact wire bytes (``quant.fp16_bytes`` at 16 bits, ``quant.payload_bytes`` below);
  ``lora_bytes`` the LoRA alone. Reading: a rank-r LoRA keeps the config's scale alpha/r (alpha =
  r · lora.alpha / lora.rank), so ranks differ only in capacity.

Every function takes a G-KA config (``configs/gka.py``: ``seed``, ``scg``, ``metaword``, ``lora``,
``eval``) and returns the contract's piece of ``metrics.json`` (``fig7`` dict, ``fig8`` dict, ``fig9``
list); SCORE = ``{"dino"|"clip"|"total": {"mean", "std", "n_pairs"}}`` as ``gka.score_subject``.
Images are edge-generated (before any channel). CLI: ``scripts/gka_studies.py``.
"""
from __future__ import annotations

import time
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dekag_jax.adapt import metaword as MW
from dekag_jax.adapt import quant
from dekag_jax.ka import gka
from dekag_jax.ka.scg import build_scg

__all__ = ["run_multi", "depth_study", "rank_bits_study", "pick_depth", "metaword_bytes"]


def _noop(_msg: str) -> None:
    pass


def _copy(tree):
    return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


class _Subject:
    """What every study needs for one subject, initialised exactly as ``gka.run_subject`` does (so
    a study's MAKD equals the table's): S_CG, data, frozen model, mu0 ``[1, n, D]``, the LoRA init."""

    def __init__(self, pipe, subject: str, config):
        self.pipe, self.subject, self.config = pipe, subject, config
        self.scg = build_scg(pipe, subject, source=str(config.scg.source), cache_dir=str(config.scg.cache_dir) or None)
        self.data = gka.make_data(pipe, [self.scg])
        self.frozen = {"unet": pipe.unet_params, "text": pipe.text_params}
        self.seed = int(config.seed)
        key = jax.random.fold_in(jax.random.key(self.seed), 0)
        self.mu0 = MW.init_metaword(jax.random.fold_in(key, 1), pipe.text_encoder.config.hidden_size,
                                    int(config.metaword.n_tokens), init=str(config.metaword.init))[None]
        self.lora_key = jax.random.fold_in(key, 2)


def _init_lora(pipe, config, key, rank: int | None = None):
    r = int(config.lora.rank) if rank is None else int(rank)
    alpha = float(config.lora.alpha) * r / int(config.lora.rank)  # keep the config's scale alpha / r
    return gka.init_lora(pipe, key, rank=r, alpha=alpha, targets=str(config.lora.targets))


def _generator(pipe, specs, num_steps: int, guidance: float):
    return gka._cached(pipe, ("gen", gka._specs_key(specs), int(num_steps), float(guidance)),
                       lambda: gka.Generator(pipe, specs, num_steps=int(num_steps), guidance_scale=float(guidance)))


def _eval_settings(config, n_images, num_steps):
    n = int(config.eval.n_images if n_images is None else n_images)
    steps = int(config.eval.num_steps if num_steps is None else num_steps)
    return n, steps, float(config.eval.guidance)


def _train_metaword(pipe, data, mu0, frozen, config, seed, *, epochs=None, on_epoch=None, log=_noop):
    tr, _ = gka.train_stage(pipe, data, {"metaword": mu0}, frozen, None,
                            epochs=int(config.metaword.epochs if epochs is None else epochs),
                            batch=int(config.metaword.batch), lr=float(config.metaword.lr), seed=seed + 1,
                            log=log, on_epoch=on_epoch)
    return tr["metaword"]


def _train_lora(pipe, data, adapters0, specs, frozen_with_mu, config, seed, *, epochs=None, on_epoch=None,
                log=_noop):
    tr, _ = gka.train_stage(pipe, data, {"lora": adapters0}, frozen_with_mu, specs,
                            epochs=int(config.lora.epochs if epochs is None else epochs),
                            batch=int(config.lora.batch), lr=float(config.lora.lr), seed=seed + 2,
                            log=log, on_epoch=on_epoch)
    return tr["lora"]


def _score(judges_fns, imgs, ref) -> dict:
    return gka.score_subject(judges_fns, imgs, ref)


# ----------------------------------------------------------------------------- Fig. 7


def run_multi(pipe, judges_fns, subjects: Sequence[str], config, *,
              per_subject: Mapping[str, Mapping] | None = None, n_images: int | None = None,
              num_steps: int | None = None, info: dict | None = None,
              log: Callable[[str], None] = print) -> dict:
    """Fig. 7: ``{subject: {"multi_lora": SCORE, "makd": SCORE, "multi_makd": SCORE}}`` (module doc).

    ``per_subject`` (optional) ``{subject: {"metaword": [1, n, D] or [n, D], "lora": adapters}}``: a
    per-subject MAKD already trained (e.g. by the main job, same config); its metaword and LoRA are
    used instead of training them again. ``info`` (optional dict) receives the adapter sets
    (``"adapters"``: ``{"multi_lora", "multi_makd"}`` each ONE LoRA set; ``"metawords"`` ``[S, n, D]``),
    seconds per stage and the eq. 6 training losses. Scores: ``n_images`` edge images per subject
    from its ``eg_test`` seeds (default ``config.eval``) against its 10 cloud test images."""
    subjects = list(subjects)
    if len(subjects) < 2 or len(set(subjects)) != len(subjects):
        raise ValueError(f"run_multi needs two or more distinct subjects, got {subjects}")
    per_subject = dict(per_subject or {})
    info = {} if info is None else info
    times = info.setdefault("seconds", {})
    n, steps, g = _eval_settings(config, n_images, num_steps)
    subs = [_Subject(pipe, s, config) for s in subjects]
    seed = subs[0].seed
    adapters0, specs = _init_lora(pipe, config, subs[0].lora_key)
    frozen = subs[0].frozen
    mu_star, lora_single = [], {}
    for s in subs:
        given = per_subject.get(s.subject)
        if given is not None:
            mu = jnp.asarray(given["metaword"], jnp.float32)
            mu_star.append(mu if mu.ndim == 3 else mu[None])
            lora_single[s.subject] = given["lora"]
            continue
        t = time.time()
        log(f"  {s.subject}: metaword (eq. 8)")
        mu_star.append(_train_metaword(pipe, s.data, s.mu0, frozen, config, seed, log=log))
        times[f"metaword_{s.subject}"] = round(time.time() - t, 2)
        t = time.time()
        log(f"  {s.subject}: per-subject LoRA (eq. 9)")
        lora_single[s.subject] = _train_lora(pipe, s.data, adapters0, specs, {**frozen, "metaword": mu_star[-1]},
                                             config, seed, log=log)
        times[f"lora_{s.subject}"] = round(time.time() - t, 2)
    pooled = gka.make_data(pipe, [s.scg for s in subs])
    mus = {"multi_makd": jnp.concatenate(mu_star), "multi_lora": jnp.concatenate([s.mu0 for s in subs])}
    shared = {}
    for name in ("multi_lora", "multi_makd"):
        t = time.time()
        log(f"  shared LoRA {name} over {len(subs)} subjects ({len(pooled.z)} latents per epoch)")
        shared[name] = _train_lora(pipe, pooled, adapters0, specs, {**frozen, "metaword": mus[name]}, config, seed,
                                   log=log)
        times[f"lora_{name}"] = round(time.time() - t, 2)
    from dekag_jax.world.splits import split_seeds

    gen = _generator(pipe, specs, steps, g)
    out: dict = {}
    for i, s in enumerate(subs):
        seeds = split_seeds(s.subject, "eg_test")[:n]
        t = time.time()
        row = {
            "multi_lora": _score(judges_fns, gen(s.scg.prompt, seeds, mus["multi_lora"][i], shared["multi_lora"]),
                                 s.scg.test_images),
            "makd": _score(judges_fns, gen(s.scg.prompt, seeds, mu_star[i][0], lora_single[s.subject]),
                           s.scg.test_images),
            "multi_makd": _score(judges_fns, gen(s.scg.prompt, seeds, mus["multi_makd"][i], shared["multi_makd"]),
                                 s.scg.test_images),
        }
        times[f"eval_{s.subject}"] = round(time.time() - t, 2)
        out[s.subject] = row
        log(f"  {s.subject}: " + ", ".join(f"{k} {v['total']['mean']:.4f}" for k, v in row.items()))
    info["adapters"] = shared
    info["metawords"] = mus
    info["per_subject_lora"] = lora_single
    info["settings"] = {"n_images": n, "num_steps": steps, "guidance": g,
                        "epoch": f"per-subject: 40 latents; shared LoRA: {len(pooled.z)} pooled latents"}
    return out


# ----------------------------------------------------------------------------- Fig. 8


def pick_depth(rows: Sequence[Mapping], key: str = "heldout_total") -> int:
    """The epoch of the row with the largest ``key`` (ties: the shallowest, i.e. the cheaper run)."""
    if not rows:
        raise ValueError("pick_depth: no rows")
    best = max(r[key] for r in rows)
    return int(min(r["epoch"] for r in rows if r[key] == best))


def depth_study(pipe, judges_fns, subject: str, config, *, metaword_epochs: Sequence[int] = (0, 5, 15, 30, 60),
                lora_epochs: Sequence[int] = (0, 2, 5, 10, 20, 30), n_heldout: int = 8,
                n_images: int | None = None, num_steps: int | None = None, info: dict | None = None,
                log: Callable[[str], None] = print) -> dict:
    """Fig. 8 for one subject: ``{"metaword": [row], "lora": [row], "chosen": {"metaword": e, "lora": e}}``
    with row = ``{"epoch", "dino", "clip", "total", "total_std", "heldout_loss", "heldout_total",
    "heldout_dino", "heldout_clip"}``: dino/clip/total are eq. 5 means of ``n_images`` edge samples
    (``eg_test`` seeds) against the 10 cloud test images; heldout_* against the ``n_heldout``
    held-out S_CG images (the pick's signal); heldout_loss the eq. 6 loss on the held-out latents
    (4 fixed (t, eps) draws each). Training sees the other 40 - n_heldout S_CG latents; epochs count
    passes over those. ``info`` receives ``"test_best"`` (the depths eq. 5 on the test images would
    pick, for comparison only), the settings and the seconds."""
    me, le = sorted({int(e) for e in metaword_epochs}), sorted({int(e) for e in lora_epochs})
    if not me or not le or me[0] < 0 or le[0] < 0:
        raise ValueError(f"depth_study: epochs must be non-empty and >= 0, got {me}, {le}")
    info = {} if info is None else info
    n, steps, g = _eval_settings(config, n_images, num_steps)
    s = _Subject(pipe, subject, config)
    n_cg = len(s.data.z)
    if not 2 <= n_heldout <= n_cg - 1:
        raise ValueError(f"depth_study: n_heldout={n_heldout} must be in [2, {n_cg - 1}] (S_CG has {n_cg})")
    k = n_cg - n_heldout
    train = gka.Data(s.data.z[:k], s.data.sid[:k], s.data.ids)
    held = gka.Data(s.data.z[k:], s.data.sid[k:], s.data.ids)
    held_images = s.scg.train_images[k:]
    ev = gka.eval_batch(held, pipe, seed=s.seed + 1000, repeats=4)
    ids = jnp.asarray(s.data.ids)
    adapters0, specs = _init_lora(pipe, config, s.lora_key)
    gen = _generator(pipe, specs, steps, g)
    from dekag_jax.world.splits import split_seeds

    seeds = split_seeds(subject, "eg_test")[:n]
    loss0, loss1 = gka.loss_fn_jit(pipe), gka.loss_fn_jit(pipe, specs)

    def row(epoch, hl, imgs):
        a, b = _score(judges_fns, imgs, s.scg.test_images), _score(judges_fns, imgs, held_images)
        r = {"epoch": int(epoch), "dino": a["dino"]["mean"], "clip": a["clip"]["mean"], "total": a["total"]["mean"],
             "total_std": a["total"]["std"], "heldout_loss": float(hl), "heldout_dino": b["dino"]["mean"],
             "heldout_clip": b["clip"]["mean"], "heldout_total": b["total"]["mean"]}
        log(f"  epoch {epoch}: test sum {r['total']:.4f} held-out sum {r['heldout_total']:.4f} "
            f"held-out eq. 6 {r['heldout_loss']:.4f}")
        return r

    t0 = time.time()
    snaps: dict = {}

    def keep_mu(ep, tr):
        if ep in me:
            snaps[ep] = jnp.array(tr["metaword"], copy=True)

    log(f"  {subject}: metaword to {me[-1]} epochs, scored at {me}")
    if me[-1] > 0:
        _train_metaword(pipe, train, s.mu0, s.frozen, config, s.seed, epochs=me[-1], on_epoch=keep_mu)
    if 0 in me:
        snaps[0] = s.mu0
    mw_rows = []
    for ep in me:
        mu = snaps[ep]
        mw_rows.append(row(ep, loss0({"metaword": mu}, s.frozen, *ev[:2], ids, *ev[2:]),
                           gen(s.scg.prompt, seeds, mu[0])))
    chosen_mw = pick_depth(mw_rows)
    mu_star = snaps[chosen_mw]
    info.setdefault("seconds", {})["metaword"] = round(time.time() - t0, 1)

    t0 = time.time()
    lsnaps: dict = {}

    def keep_lora(ep, tr):
        if ep in le:
            lsnaps[ep] = _copy(tr["lora"])

    fr = {**s.frozen, "metaword": mu_star}
    log(f"  {subject}: LoRA on the metaword of epoch {chosen_mw}, to {le[-1]} epochs, scored at {le}")
    if le[-1] > 0:
        _train_lora(pipe, train, adapters0, specs, fr, config, s.seed, epochs=le[-1], on_epoch=keep_lora)
    if 0 in le:
        lsnaps[0] = adapters0
    lo_rows = []
    for ep in le:
        ad = lsnaps[ep]
        lo_rows.append(row(ep, loss1({"lora": ad}, fr, *ev[:2], ids, *ev[2:]), gen(s.scg.prompt, seeds, mu_star[0], ad)))
    chosen_lo = pick_depth(lo_rows)
    info["seconds"]["lora"] = round(time.time() - t0, 1)
    info["test_best"] = {"metaword": pick_depth(mw_rows, "total"), "lora": pick_depth(lo_rows, "total")}
    info["heldout_loss_pick"] = {"metaword": min(mw_rows, key=lambda r: r["heldout_loss"])["epoch"],
                                 "lora": min(lo_rows, key=lambda r: r["heldout_loss"])["epoch"]}
    info["settings"] = {"subject": subject, "n_images": n, "num_steps": steps, "guidance": g, "n_heldout": n_heldout,
                        "epoch": f"one pass over the {k} training S_CG latents"}
    return {"metaword": mw_rows, "lora": lo_rows, "chosen": {"metaword": chosen_mw, "lora": chosen_lo}}


# ----------------------------------------------------------------------------- Fig. 9


def metaword_bytes(mu) -> int:
    """Bytes of the metaword in float16 (what the cloud sends for it)."""
    return 2 * int(np.prod(np.shape(mu)))


def _fp16(tree):
    return jax.tree.map(lambda x: np.asarray(x, np.float32).astype(np.float16).astype(np.float32), tree)


def rank_bits_study(pipe, judges_fns, subject: str, config, *, ranks: Sequence[int] = (1, 2, 4, 8),
                    bits: Sequence[int] = (16, 8, 4, 2), mu_star=None, n_images: int | None = None,
                    num_steps: int | None = None, info: dict | None = None,
                    log: Callable[[str], None] = print) -> list:
    """Fig. 9 for one subject: rows ``{"rank", "bits", "bytes", "lora_bytes", "dino", "clip", "total",
    "total_std"}``: the metaword alone (rank 0, 16 bits), every rank in ``ranks`` at 16 bits (float16),
    and the largest rank quantised to every other entry of ``bits``. One metaword mu* (trained with
    the config, or ``mu_star`` ``[1, n, D]``) under every row; each rank's LoRA is trained once (config
    depth and lr) on the whole S_CG; quantisation is post-training (the paper quantises a trained
    rank-8 LoRA)."""
    ranks = sorted({int(r) for r in ranks})
    if not ranks or ranks[0] < 1:
        raise ValueError(f"rank_bits_study: ranks must be >= 1, got {ranks}")
    for b in bits:
        if int(b) not in quant.BITS:
            raise ValueError(f"rank_bits_study: bits {b} not in {quant.BITS}")
    info = {} if info is None else info
    times = info.setdefault("seconds", {})
    n, steps, g = _eval_settings(config, n_images, num_steps)
    s = _Subject(pipe, subject, config)
    from dekag_jax.world.splits import split_seeds

    seeds = split_seeds(subject, "eg_test")[:n]
    t = time.time()
    if mu_star is None:
        log(f"  {subject}: metaword (eq. 8)")
        mu_star = _train_metaword(pipe, s.data, s.mu0, s.frozen, config, s.seed, log=log)
        times["metaword"] = round(time.time() - t, 2)
    mu_star = jnp.asarray(mu_star, jnp.float32)
    mu_star = mu_star if mu_star.ndim == 3 else mu_star[None]
    mu16 = jnp.asarray(_fp16(mu_star))  # what is sent: float16
    mwb = metaword_bytes(mu_star[0])
    rows = []

    def add(rank, b, lbytes, imgs):
        sc = _score(judges_fns, imgs, s.scg.test_images)
        rows.append({"rank": int(rank), "bits": int(b), "bytes": int(mwb + lbytes), "lora_bytes": int(lbytes),
                     "dino": sc["dino"]["mean"], "clip": sc["clip"]["mean"], "total": sc["total"]["mean"],
                     "total_std": sc["total"]["std"]})
        log(f"  rank {rank} {b}-bit: {mwb + lbytes} bytes, sum {sc['total']['mean']:.4f}")

    gen0 = _generator(pipe, None, steps, g)
    add(0, 16, 0, gen0(s.scg.prompt, seeds, mu16[0]))
    for r in ranks:
        adapters0, specs = _init_lora(pipe, config, s.lora_key, rank=r)
        t = time.time()
        log(f"  {subject}: rank-{r} LoRA (eq. 9)")
        ad = jax.device_get(_train_lora(pipe, s.data, adapters0, specs, {**s.frozen, "metaword": mu_star}, config,
                                        s.seed, log=log))
        times[f"lora_rank{r}"] = round(time.time() - t, 2)
        gen = _generator(pipe, specs, steps, g)
        for b in (bits if r == ranks[-1] else (16,)):
            b = int(b)
            if b == 16:
                q, nbytes = _fp16(ad), quant.fp16_bytes(ad)
            else:
                q, nbytes = quant.decode(quant.encode(ad, b), ad, b), quant.payload_bytes(ad, b)
            add(r, b, nbytes, gen(s.scg.prompt, seeds, mu16[0], q))
    info["settings"] = {"subject": subject, "n_images": n, "num_steps": steps, "guidance": g,
                        "bytes": "metaword (float16) + LoRA wire bytes", "metaword_bytes": mwb}
    return rows


# ----------------------------------------------------------------------------- all studies from a config

STUDIES = ("fig7", "fig8", "fig9")


def _ints(s) -> list[int]:
    return [int(x) for x in str(s).split(",") if x.strip()]


def run_studies(config, studies: Sequence[str] = STUDIES, *, pipe=None, judges=None,
                log: Callable[[str], None] = print) -> dict:
    """The contract's ``fig7`` / ``fig8`` / ``fig9`` pieces from a G-KA config (``configs/gka.py``,
    its ``studies`` fields), plus ``"info"`` (per study: settings, the depths eq. 5 on the test
    images would pick, seconds; JSON-safe) and ``"seconds"``."""
    bad = [s for s in studies if s not in STUDIES]
    if bad or not studies:
        raise ValueError(f"studies: unknown {bad}; choose from {list(STUDIES)}")
    from dekag_jax.world.models import load_edge_pipeline, load_judges

    t0 = time.time()
    pipe = pipe or load_edge_pipeline()
    fns = gka.judge_feature_fns(judges or load_judges())
    st = config.studies
    kw = dict(n_images=int(st.n_images), num_steps=int(st.num_steps), log=log)
    out: dict = {"info": {}}
    if "fig8" in studies:
        log(f"Fig. 8 (depth), {st.subject}")
        info: dict = {}
        out["fig8"] = depth_study(pipe, fns, str(st.subject), config, metaword_epochs=_ints(st.metaword_epochs),
                                  lora_epochs=_ints(st.lora_epochs), n_heldout=int(st.n_heldout), info=info, **kw)
        out["info"]["fig8"] = info
    if "fig9" in studies:
        log(f"Fig. 9 (rank vs bits), {st.subject}")
        info = {}
        out["fig9"] = rank_bits_study(pipe, fns, str(st.subject), config, ranks=_ints(st.ranks), bits=_ints(st.bits),
                                      info=info, **kw)
        out["info"]["fig9"] = info
    if "fig7" in studies:
        subjects = [x for x in str(st.multi_subjects).split(",") if x]
        log(f"Fig. 7 (multi-subject), {subjects}")
        info = {}
        out["fig7"] = run_multi(pipe, fns, subjects, config, info=info, **kw)
        out["info"]["fig7"] = {k: v for k, v in info.items() if k in ("seconds", "settings")}
    out["seconds"] = round(time.time() - t0, 1)
    return out
