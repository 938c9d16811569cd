"""Quality gates of the tiny world's pretrained models (tests/test_world_gates.py, README numbers).

Measurements (all deterministic, all on images at the world's size, uint8 or float in [0, 1]):

* :func:`vae_psnr`: reconstruction PSNR of the edge VAE (posterior mean) on held-out renders of
  one world (cloud: the subjects' ``cg_test`` images, which become S_CG-style latents).
* :func:`edge_samples`: the edge-GAI's DDIM samples for the 30 target prompts, initial noise from
  the subjects' ``eg_test`` seeds.
* :func:`prompt_top1`: fraction of images whose CLIP image feature is closest to the text
  feature of their own prompt among the 30 target prompts (chance 1/30).
* :func:`subject_separation`: mean cosine of same-subject vs different-subject feature pairs.
* :func:`consistency`: eq. 5's DINO-score + CLIP-score between two image sets, per subject
  (mean over all cross pairs of the same subject), averaged over subjects.
* :func:`interaction_variants` / :func:`interaction_top1` (world version 2 only): does the
  semantic judge tell which interaction phrase (none, "next to a red ball", "holding a red
  balloon") an image of a target subject shows, among that subject's variants (chance 1/3, 1/2
  for buildings; 80 images: every variant of every subject); measured on the edge model's
  samples of the target subjects' prompts and their EXTENDED prompts (never in S_CG or the
  corpus) and, as the judge's own reference, on edge renders of them.
* :func:`measure_all`: all of the above as one dict (``python -m dekag_jax.world.gates``).
* ``check_*``: the quality gates as functions of images returning a :class:`Gate` (value,
  threshold, pass/fail), thresholds set from measurements (see the constants).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dekag_jax.world.corpus import random_specs
from dekag_jax.world.render import DEFAULT_SIZE, render_batch
from dekag_jax.world.splits import cloud_samples, split_seeds
from dekag_jax.world.subjects import target_subjects

__all__ = ["vae_psnr", "heldout_images", "edge_samples", "judge_features", "text_features", "prompt_top1",
           "subject_separation", "consistency", "measure_all", "Gate", "check_vae_psnr", "check_prompt_top1",
           "check_subject_separation", "check_alignment_gap", "interaction_variants", "interaction_top1",
           "tokenizer_version"]

HELDOUT_SEED = 20261122  # disjoint from every stream scripts/pretrain_*.py draws from


def _as01(images) -> jax.Array:
    x = jnp.asarray(images)
    return x.astype(jnp.float32) / 255.0 if x.dtype == jnp.uint8 else x.astype(jnp.float32)


def heldout_images(world: str, n: int = 64, size: int = DEFAULT_SIZE) -> np.ndarray:
    """Held-out renders uint8 [n, S, S, 3]: edge = random prompts (targets included) with
    render seeds from HELDOUT_SEED; cloud = the subjects' ``cg_test`` images (cycled)."""
    if world == "edge":
        specs = random_specs(HELDOUT_SEED, n, include_targets=True)
        seeds = np.random.default_rng(HELDOUT_SEED).integers(0, 2**31 - 1, size=n).tolist()
        return render_batch(specs, seeds, "edge", size)
    if world == "cloud":
        subs = target_subjects()
        per = -(-n // len(subs))
        imgs = np.concatenate([cloud_samples(s, "cg_test", size)[:per] for s in subs])
        order = np.arange(len(subs) * per).reshape(len(subs), per).T.reshape(-1)  # round-robin over subjects
        return imgs[order[:n]]
    raise ValueError(f"world must be 'edge' or 'cloud', got {world!r}")


def vae_psnr(pipe, images) -> float:
    """Mean PSNR (dB) of ``decode(encode(x))`` (posterior mean) over images uint8/[0,1] [N, H, W, 3]."""
    from dekag_jax.diffusion.generate import decode_latents, encode_images
    from dekag_jax.metrics import psnr

    x = _as01(images)
    y = decode_latents(pipe, encode_images(pipe, x))
    return float(jnp.mean(psnr(y, x)))


def edge_samples(pipe, subjects=None, *, n_per_subject: int = 2, num_steps: int = 25, guidance_scale: float = 5.0):
    """DDIM samples of the edge pipeline for the subjects' prompts (default: all 30).

    Initial noise of sample j of subject s: ``N(0, I)`` from ``jax.random.key(split_seeds(s,
    "eg_test")[j])``. Returns (images float32 [S*n, H, W, 3] in [0, 1], labels int [S*n]: index
    into ``subjects``).
    """
    from dekag_jax.diffusion.generate import decode_latents, text_to_latents

    subjects = list(subjects or target_subjects())
    ss = pipe.unet.config.sample_size
    shape = (ss, ss, pipe.unet.config.in_channels)
    prompts, z, labels = [], [], []
    for i, s in enumerate(subjects):
        for seed in split_seeds(s, "eg_test")[:n_per_subject]:
            prompts.append(s.prompt)
            z.append(jax.random.normal(jax.random.key(seed), shape, jnp.float32))
            labels.append(i)
    lat = text_to_latents(pipe, prompts, jax.random.key(0), num_steps=num_steps, guidance_scale=guidance_scale,
                          latents=jnp.stack(z))
    return np.asarray(decode_latents(pipe, lat)), np.asarray(labels)


def _jit(judges, name, fn):
    c = judges._jit_cache
    if name not in c:
        c[name] = jax.jit(fn)
    return c[name]


def judge_features(judges, images, batch: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(DINO features [N, D], CLIP image features [N, P]), both L2-normalised, for images
    uint8/[0, 1] [N, H, W, 3] (resized to each judge's image_size, normalised per family):
    :func:`dekag_jax.models.vit.image_feature_fn` run by :func:`dekag_jax.metrics.batched_features`."""
    from dekag_jax.metrics import batched_features
    from dekag_jax.models.vit import image_feature_fn

    c = judges._jit_cache
    if "feature_fns" not in c:
        c["feature_fns"] = (image_feature_fn(judges.dino, judges.dino_params),
                            image_feature_fn(judges.clip, judges.clip_params))
    fd, fc = c["feature_fns"]
    x = _as01(images)
    return batched_features(fd, x, batch), batched_features(fc, x, batch)


def text_features(judges, prompts: Sequence[str]) -> np.ndarray:
    """CLIP text features [N, P] (L2-normalised) of prompts, tokenised to 77 like the pipeline."""
    from dekag_jax.models.vit import CLIPModel, l2_normalize

    tok = judges.tokenizer
    ids = np.asarray(tok(list(prompts), padding="max_length", max_length=tok.model_max_length,
                         truncation=True)["input_ids"], np.int32)
    ft = _jit(judges, "text", lambda p, i: l2_normalize(judges.clip.apply({"params": p}, i,
                                                                           method=CLIPModel.get_text_features)))
    return np.asarray(ft(judges.clip_params, jnp.asarray(ids)))


def prompt_top1(clip_image_feats: np.ndarray, labels: np.ndarray, prompt_feats: np.ndarray) -> float:
    """Fraction of images whose nearest prompt (cosine) is their own (labels index prompt_feats)."""
    sims = clip_image_feats @ prompt_feats.T
    return float(np.mean(np.argmax(sims, -1) == np.asarray(labels)))


def subject_separation(feats: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(mean cosine over same-subject pairs (i != j), mean over different-subject pairs)."""
    f = feats / np.linalg.norm(feats, axis=-1, keepdims=True)
    s = f @ f.T
    lab = np.asarray(labels)
    same = lab[:, None] == lab[None, :]
    off = ~np.eye(len(lab), dtype=bool)
    return float(s[same & off].mean()), float(s[~same].mean())


def consistency(feats_a: tuple[np.ndarray, np.ndarray], labels_a, feats_b: tuple[np.ndarray, np.ndarray],
                labels_b) -> dict[str, float]:
    """Eq. 5 between image sets A and B (:func:`dekag_jax.metrics.consistency`): for each subject,
    mean cosine over all (a, b) pairs of that subject, for DINO and CLIP features; averaged over the
    subjects present in both. ``feats_*`` = (dino [N, D], clip [N, P]) from :func:`judge_features`.
    Returns the means only: ``{"dino", "clip", "total"}``."""
    from dekag_jax.metrics import consistency as eq5

    res = eq5({"dino": feats_a[0], "clip": feats_a[1]}, labels_a, {"dino": feats_b[0], "clip": feats_b[1]}, labels_b)
    return {k: res[k]["mean"] for k in ("dino", "clip", "total")}


# ----------------------------------------------------------------------------- gates
# Each gate is a function of IMAGES returning a Gate (value, threshold, passed), so that the
# gate itself can be shown to fail (tests/test_world_gates.py feeds it uniform noise, all-grey
# images and the wrong subject's images). Thresholds come from measurements on the shipped
# models at the test settings (1 sample per subject, 20 DDIM steps, guidance 5, 32 PSNR images;
# 2-core CPU, 2026-11-30), with the margins stated; the garbage values are the largest of noise,
# grey and wrong-subject inputs, measured the same day.

#: PSNR (dB) of VAE reconstructions. Measured edge 20.95 / cloud 18.36; garbage <= 10.9.
VAE_PSNR_MIN = {"edge": 19.5, "cloud": 17.0}
#: CLIP top-1 among the 30 target prompts. Measured edge 0.833 (25/30) / cloud 1.0; garbage
#: <= 0.033 (chance 1/30). Edge bound 0.6 = 18x chance, 7 samples below the measured value.
PROMPT_TOP1_MIN = {"edge": 0.6, "cloud": 0.9}
#: Same-subject minus different-subject mean cosine on the cloud test images. Measured DINO
#: 0.720, CLIP 0.912; garbage <= 0.028 (a random-init judge gives DINO 0.48, CLIP 0.31).
SEPARATION_MIN = {"dino": 0.65, "clip": 0.7}
#: Alignment gap: eq. 5 total of cloud-vs-cloud minus edge-vs-cloud. Measured 0.593 (1.859 vs
#: 1.266). A gap alone is met by ANY bad edge sample (noise gives a larger gap), so the gate
#: also requires the edge samples to be of their subject: ...
GAP_MIN = 0.45
#: ... own-subject minus other-subject eq. 5 total of the edge samples against the cloud test
#: images. Measured 1.140 (1.266 vs 0.126); garbage <= 0.032 (noise 0.258 vs 0.226, grey
#: 0.244 vs 0.244, wrong subject 0.141 vs 0.165). Bound 0.6: about half the measured value.
OWN_SUBJECT_MARGIN_MIN = 0.6


@dataclasses.dataclass(frozen=True)
class Gate:
    """One quality gate's outcome: ``passed`` iff ``value`` clears ``threshold`` (and every
    further condition in ``detail`` named ``*_ok``)."""

    name: str
    value: float
    threshold: float
    passed: bool
    detail: dict = dataclasses.field(default_factory=dict)


def check_vae_psnr(originals, reconstructions, world: str) -> Gate:
    """VAE gate: mean PSNR of ``reconstructions`` against ``originals`` (uint8/[0, 1]
    ``[N, H, W, 3]``), threshold per ``world`` ("edge" | "cloud")."""
    from dekag_jax.metrics import psnr

    v = float(jnp.mean(psnr(_as01(reconstructions), _as01(originals))))
    t = VAE_PSNR_MIN[world]
    return Gate(f"vae_psnr_{world}", v, t, v > t)


def check_prompt_top1(judges, images, labels, world: str, subjects=None) -> Gate:
    """Prompt gate: CLIP top-1 of ``images`` (labels index ``subjects``, default the 30 targets)
    among the subjects' prompts."""
    subjects = list(subjects or target_subjects())
    pf = text_features(judges, [s.prompt for s in subjects])
    v = prompt_top1(judge_features(judges, images)[1], labels, pf)
    t = PROMPT_TOP1_MIN[world]
    return Gate(f"prompt_top1_{world}", v, t, v >= t)


def check_subject_separation(judges, images, labels, judge: str) -> Gate:
    """Judge gate: same-subject minus different-subject mean cosine of ``judge``'s features
    ("dino" | "clip"). Invariant under a consistent relabelling of subjects, as it should be."""
    f = judge_features(judges, images)[{"dino": 0, "clip": 1}[judge]]
    same, diff = subject_separation(f, labels)
    t = SEPARATION_MIN[judge]
    return Gate(f"separation_{judge}", same - diff, t, same - diff > t,
                {"same": same, "different": diff})


def check_alignment_gap(judges, edge_images, edge_labels, cloud_test, cloud_test_labels,
                        cloud_train, cloud_train_labels) -> Gate:
    """Alignment-gap gate (eq. 5): value = cloud-vs-cloud minus edge-vs-cloud total; passes iff
    the gap exceeds ``GAP_MIN`` AND the edge samples are of their subject: their total against
    the cloud test images of their own subject exceeds the mean against the other subjects'
    images by ``OWN_SUBJECT_MARGIN_MIN`` (else noise, grey or wrong-subject samples would
    "have a gap")."""
    f_e, f_ct = judge_features(judges, edge_images), judge_features(judges, cloud_test)
    f_cr = judge_features(judges, cloud_train)
    lab_e, lab_ct = np.asarray(edge_labels), np.asarray(cloud_test_labels)
    ec = consistency(f_e, lab_e, f_ct, lab_ct)
    cc = consistency(f_cr, cloud_train_labels, f_ct, lab_ct)
    # Other-subject mean: relabel the cloud images by every non-zero shift of the subject
    # index (each shift pairs every subject with a different one; their mean covers all).
    subj = np.unique(lab_ct)
    pos = {s: i for i, s in enumerate(subj)}
    idx = np.array([pos[s] for s in lab_ct])
    other = float(np.mean([consistency(f_e, lab_e, f_ct, subj[(idx + r) % len(subj)])["total"]
                           for r in range(1, len(subj))]))
    gap = cc["total"] - ec["total"]
    margin = ec["total"] - other
    detail = {"edge_vs_cloud": ec, "cloud_vs_cloud": cc, "edge_vs_other_subjects": other,
              "own_subject_margin": margin, "gap_ok": gap > GAP_MIN,
              "own_subject_ok": margin > OWN_SUBJECT_MARGIN_MIN}
    return Gate("alignment_gap", gap, GAP_MIN, bool(detail["gap_ok"] and detail["own_subject_ok"]),
                detail)


def tokenizer_version(tokenizer) -> int:
    """The tiny-world version whose words the tokenizer has as single tokens (1 or 2)."""
    from dekag_jax.world.spec import WORLD_VERSIONS, prompt_words

    vocab = tokenizer.get_vocab()
    return max(v for v in WORLD_VERSIONS if all(w + "</w>" in vocab for w in prompt_words(v)))


def interaction_variants(subjects=None, color: str = "red"):
    """Per target subject, its prompt variants: the plain prompt and one per interaction it allows
    (object colour ``color``). Returns (variants: list of lists of Specs, one list per subject)."""
    from dekag_jax.world.spec import INTERACTIONS

    subjects = list(subjects or target_subjects())
    return [[s.spec] + [s.spec.replace(interaction=i, interaction_color=color)
                        for i in INTERACTIONS[s.category] if i != "none"] for s in subjects]


def interaction_top1(judges, images, subject_idx, variant_idx, variants) -> float:
    """Fraction of images whose CLIP feature is closest to their own variant's prompt among their
    subject's variants (:func:`interaction_variants`); ``subject_idx``/``variant_idx`` [N] index it."""
    fc = judge_features(judges, images)[1]
    hits = []
    for i, (s, v) in enumerate(zip(np.asarray(subject_idx), np.asarray(variant_idx))):
        tf = text_features(judges, [sp.prompt for sp in variants[s]])
        hits.append(int(np.argmax(tf @ fc[i])) == int(v))
    return float(np.mean(hits))


def _interaction_measures(pipe, judges, *, num_steps: int, guidance_scale: float) -> dict:
    """World version 2: interaction top-1 of edge-model samples and edge renders of the target
    subjects' prompt variants (one sample per subject and variant, the plain prompt included so
    that every candidate is right for some image: a judge biased to one phrase scores chance;
    noise and render seed from the subject's first ``eg_test`` seed)."""
    from dekag_jax.diffusion.generate import decode_latents, text_to_latents

    subs = target_subjects()
    variants = interaction_variants(subs)
    specs, sidx, vidx, seeds = [], [], [], []
    for i, (s, var) in enumerate(zip(subs, variants)):
        for j, sp in enumerate(var):   # the plain prompt too: a judge that never picks it is not rewarded
            specs.append(sp), sidx.append(i), vidx.append(j), seeds.append(split_seeds(s, "eg_test")[0])
    ss = pipe.unet.config.sample_size
    z = jnp.stack([jax.random.normal(jax.random.key(sd), (ss, ss, pipe.unet.config.in_channels), jnp.float32)
                   for sd in seeds])
    lat = text_to_latents(pipe, [sp.prompt for sp in specs], jax.random.key(0), num_steps=num_steps,
                          guidance_scale=guidance_scale, latents=z)
    samples = np.asarray(decode_latents(pipe, lat))
    renders = render_batch(specs, seeds, "edge", version=2)
    return {"edge_model": round(interaction_top1(judges, samples, sidx, vidx, variants), 4),
            "edge_renders": round(interaction_top1(judges, renders, sidx, vidx, variants), 4),
            "n_images": len(specs), "object_color": "red"}


def measure_all(pipe=None, judges=None, *, n_per_subject: int = 2, num_steps: int = 25,
                guidance_scale: float = 5.0, n_psnr: int = 64, assets=None) -> dict:
    """Every gate value (see the module docstring), plus the seconds it took. Models not given
    are loaded from ``assets`` (default: the shipped ones)."""
    from dekag_jax.world.models import load_edge_pipeline, load_judges

    t0 = time.time()
    pipe = pipe or load_edge_pipeline(assets=assets)
    judges = judges or load_judges(assets=assets)
    subs = target_subjects()
    res: dict = {}
    res["vae_psnr_db"] = {w: round(vae_psnr(pipe, heldout_images(w, n_psnr)), 2) for w in ("edge", "cloud")}
    edge, edge_lab = edge_samples(pipe, subs, n_per_subject=n_per_subject, num_steps=num_steps,
                                  guidance_scale=guidance_scale)
    cloud_test = np.concatenate([cloud_samples(s, "cg_test")[:5] for s in subs])
    cloud_test_lab = np.repeat(np.arange(len(subs)), 5)
    cloud_train = np.concatenate([cloud_samples(s, "cg_train")[:5] for s in subs])
    f_edge = judge_features(judges, edge)
    f_ct = judge_features(judges, cloud_test)
    f_cr = judge_features(judges, cloud_train)
    pf = text_features(judges, [s.prompt for s in subs])
    res["edge_prompt_top1"] = round(prompt_top1(f_edge[1], edge_lab, pf), 4)
    res["cloud_prompt_top1"] = round(prompt_top1(f_ct[1], cloud_test_lab, pf), 4)
    for name, i in (("dino", 0), ("clip", 1)):
        same, diff = subject_separation(f_ct[i], cloud_test_lab)
        res[f"{name}_separation_cloud"] = {"same": round(same, 4), "different": round(diff, 4)}
    res["consistency_edge_vs_cloud"] = {k: round(v, 4) for k, v in consistency(f_edge, edge_lab, f_ct,
                                                                               cloud_test_lab).items()}
    res["consistency_cloud_vs_cloud"] = {k: round(v, 4) for k, v in consistency(f_cr, cloud_test_lab, f_ct,
                                                                                cloud_test_lab).items()}
    if (getattr(pipe, "tokenizer", None) is not None and tokenizer_version(judges.tokenizer) >= 2
            and tokenizer_version(pipe.tokenizer) >= 2):   # a world-version-2 model and judge
        res["interaction_top1"] = _interaction_measures(pipe, judges, num_steps=num_steps,
                                                        guidance_scale=guidance_scale)
    res["settings"] = {"n_per_subject": n_per_subject, "num_steps": num_steps, "guidance_scale": guidance_scale,
                       "n_psnr": n_psnr, "cloud_images_per_subject": 5}
    res["seconds"] = round(time.time() - t0, 1)
    return res


def main(argv=None) -> int:
    """``python -m dekag_jax.world.gates``: validates, sets up the runtime, prints the JSON."""
    from dekag_jax.errors import ArgumentParser, UsageError

    ap = ArgumentParser(prog="python -m dekag_jax.world.gates",
                        description="Measure the tiny world's quality gates (prints JSON).")
    ap.add_argument("--n-per-subject", type=int, default=2)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--n-psnr", type=int, default=64, help="held-out images per world for the VAE PSNR")
    ap.add_argument("--assets", default=None,
                    help="a directory laid out like dekag_jax/world/assets (e.g. a retrained world); default the shipped one")
    a = ap.parse_args(argv)
    if a.n_per_subject < 1:
        raise UsageError(f"--n-per-subject={a.n_per_subject} must be >= 1")
    if a.steps < 1:
        raise UsageError(f"--steps={a.steps} must be >= 1")
    if not np.isfinite(a.guidance):
        raise UsageError(f"--guidance={a.guidance} must be finite")
    if a.n_psnr < 1:
        raise UsageError(f"--n-psnr={a.n_psnr} must be >= 1")
    if a.assets is not None and not os.path.isdir(os.path.join(a.assets, "edge_pipeline")):
        raise UsageError(f"--assets {a.assets}: no edge_pipeline/ folder there")
    from dekag_jax import runtime
    runtime.setup()  # after validation: bad input never touches caches
    print(json.dumps(measure_all(n_per_subject=a.n_per_subject, num_steps=a.steps, guidance_scale=a.guidance,
                                 n_psnr=a.n_psnr, assets=a.assets), indent=1))
    return 0


if __name__ == "__main__":
    from dekag_jax.errors import cli_main
    sys.exit(cli_main(main))
