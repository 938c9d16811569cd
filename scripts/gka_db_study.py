"""DreamBooth-LoRA (DB) tuned on its own, and why it falls below LB (issue 19 item 7).

    python scripts/gka_db_study.py --subjects human_00,building_00 --out runs/gka_db_study/study.json
    python scripts/gka_db_study.py --subjects building_00 --ti-subjects building_00 --out ...

The table's DB (``ka/gka.py``) is a rank-8 LoRA trained by eq. 9 under the *random, untrained*
metaword, at MAKD's LoRA depth (5 epochs at 1e-4: picked for a LoRA on top of a trained mu*). This
script measures DB at its own settings, on each subject, with the Fig. 8 protocol
(``ka/gka_studies.depth_study``): 32 S_CG latents train, 8 are held out; every point is eq. 5
(DINO + CLIP) of ``--n-images`` edge samples (``eg_test`` seeds, DDIM ``--steps``, guidance
``--guidance``) against the 10 cloud test images, and, for the automatic pick, against the 8
held-out S_CG images (the test images are never used for a pick). Phases per subject:

* **A (depth x lr)**: the table's DB (random metaword at the config's init, attention targets),
  LoRA trained to ``--epochs`` at each of ``--lrs``, scored at ``--checkpoints`` (one run per lr).
* **B (the random word's scale)**: the same normal draw as the table's mu0 scaled to std
  sqrt(0.02) ("paper", the variance reading), 0.02 ("hf"), and ``"matched"``: norm equal to the mean
  row norm of the text encoder's token-embedding table (std = mean norm / sqrt(D)); ``"none"`` is
  DB without a metaword (the plain prompt v, the LoRA alone). Epoch 0 of each is the random word
  alone (no LoRA): how much the word by itself changes the prompt. Each init is then trained at the
  phase-A held-out pick's lr to ``--epochs``.
* **C (targets)**: attention + feed-forward + proj_in/out (``--wide-targets``) at the held-out
  pick's init and lr so far, to ``--epochs``.
* **W** (``--word-draws N``): N other draws of the random word alone (no LoRA) at each of
  ``--word-scales``: how much the single draw of the table decides DB's (and TI's) start.
* ``--extra INIT:LR:attn|wide,...``: more DB runs (e.g. the table's init with the wide targets).
* **T** (``--ti-subjects``): TI (eq. 8, config lr) to ``--epochs``, scored at the checkpoints, and
  MAKD (the config's LoRA depth and lr on mu* of the last checkpoint), for the same protocol's
  reference; ``--ti-inits`` starts the metaword from other inits (labels ``ti_<init>``).

Inits: ``paper`` / ``hf`` / ``matched`` (scales of one draw, above), ``none`` (no metaword) and
``mustar`` (the subject's TI mu* of phase T, for ``--extra``: MAKD at DB's settings),
``token:WORD`` (the embedding of WORD's first token: textual inversion's own practice of starting
from a descriptive word, beyond the paper's Gaussian).

Output JSON (rewritten after every run; a rerun with the same ``--out`` skips finished runs):
``{"settings", "subjects": {s: {"lb": row0, "runs": {label: [row]}, "pick": {...}}}}`` with row =
``{"epoch", "dino", "clip", "total", "total_std", "heldout_dino", "heldout_clip", "heldout_total",
"mu_norm"}``. Images (uint8) of every scored point go to ``<out dir>/<subject>_images.npz``
(key ``<label>@<epoch>``) and a ``<subject>_samples.png`` grid of the rows named in the JSON's
``pick``.
"""
import argparse
import json
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

ATTN = r".*/attn[12]/to_(q|k|v|out\.0)/kernel"
WIDE = r".*/(attn[12]/to_(q|k|v|out\.0)|ff/net\.(0/proj|2)|proj_(in|out))/kernel"


def _floats(s):
    return [float(x) for x in s.split(",") if x]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subjects", default="human_00,building_00")
    ap.add_argument("--out", required=True)
    ap.add_argument("--lrs", default="1e-4,5e-4,1e-3")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--checkpoints", default="5,15,30,60")
    ap.add_argument("--inits", default="hf,matched,none", help="phase B (besides the config's init)")
    ap.add_argument("--wide-targets", default=WIDE)
    ap.add_argument("--phases", default="A,B,C")
    ap.add_argument("--extra", default="", help="more DB runs, comma list of INIT:LR:attn|wide")
    ap.add_argument("--word-draws", type=int, default=0, help="phase W: score N other random-word draws alone")
    ap.add_argument("--word-scales", default="paper,hf")
    ap.add_argument("--ti-subjects", default="")
    ap.add_argument("--ti-inits", default="", help="TI/MAKD metaword inits (default: the config's)")
    ap.add_argument("--n-images", type=int, default=10)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--n-heldout", type=int, default=8)
    a = ap.parse_args(argv)
    cps = sorted({int(c) for c in a.checkpoints.split(",") if c})
    if not cps or cps[0] < 1 or cps[-1] > a.epochs:
        ap.error(f"--checkpoints must lie in 1..{a.epochs}")
    phases = {p for p in a.phases.split(",") if p}  # "" = no DB phase (e.g. TI alone)
    if phases - {"A", "B", "C"}:
        ap.error(f"--phases: unknown {sorted(phases - {'A', 'B', 'C'})}; use A, B, C")

    from dekag_jax import runtime

    runtime.setup()
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "gka_config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "gka.py"))
    cfg_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cfg_mod)
    get_config = cfg_mod.get_config
    from dekag_jax.adapt import metaword
    from dekag_jax.adapt.rules import params_dict
    from dekag_jax.ka import gka
    from dekag_jax.ka.scg import build_scg
    from dekag_jax.weights.convert import flatten
    from dekag_jax.world.models import load_edge_pipeline, load_judges
    from dekag_jax.world.splits import split_seeds

    c = get_config("makd")
    out_dir = os.path.dirname(os.path.abspath(a.out))
    os.makedirs(out_dir, exist_ok=True)
    res = {"settings": vars(a), "subjects": {}}
    if os.path.exists(a.out):
        with open(a.out) as f:
            old = json.load(f)
        res["subjects"] = old.get("subjects", {})
    pipe = load_edge_pipeline()
    fns = gka.judge_feature_fns(load_judges())
    table = np.asarray(flatten(params_dict(pipe.text_params))[metaword.TOKEN_EMBEDDING_PATH])
    dim = table.shape[1]
    row_norm = float(np.linalg.norm(table, axis=1).mean())
    stds = {"paper": metaword.PAPER_STD, "hf": metaword.HF_STD, "matched": row_norm / math.sqrt(dim)}
    res["token_embedding"] = {"dim": dim, "mean_row_norm": row_norm, "element_std": float(table.std()),
                              "init_std": stds, "init_expected_norm": {k: v * math.sqrt(dim) for k, v in stds.items()}}
    frozen = {"unet": pipe.unet_params, "text": pipe.text_params}
    seed = int(c.seed)
    key = jax.random.fold_in(jax.random.key(seed), 0)
    # the table's mu0 draw (ka/gka.run_subject), rescaled: the inits differ only in scale
    z = metaword.init_metaword(jax.random.fold_in(key, 1), dim, int(c.metaword.n_tokens), init="paper")[None]
    z = z / metaword.PAPER_STD
    spec_sets = {}

    def lora_for(targets):
        if targets not in spec_sets:
            spec_sets[targets] = gka.init_lora(pipe, jax.random.fold_in(key, 2), rank=c.lora.rank,
                                               alpha=c.lora.alpha, targets=targets)
        return spec_sets[targets]

    def save():
        with open(a.out + ".tmp", "w") as f:
            json.dump(res, f, indent=1)
        os.replace(a.out + ".tmp", a.out)

    t_all = time.time()
    for subject in [s for s in a.subjects.split(",") if s]:
        sres = res["subjects"].setdefault(subject, {"runs": {}})
        scg = build_scg(pipe, subject)
        sres["prompt"] = scg.prompt
        full = gka.make_data(pipe, [scg])
        k = len(full.z) - a.n_heldout
        train = gka.Data(full.z[:k], full.sid[:k], full.ids)
        held_images = scg.train_images[k:]
        seeds = split_seeds(subject, "eg_test")[:a.n_images]
        img_path = os.path.join(out_dir, f"{subject}_images.npz")
        images = {}
        if os.path.exists(img_path):
            with np.load(img_path) as d:
                images = {kk: d[kk] for kk in d.files}

        def score(label, ep, mu, ad=None, specs=None):
            gen = gka._cached(pipe, ("gen", gka._specs_key(specs), a.steps, a.guidance),
                              lambda: gka.Generator(pipe, specs, num_steps=a.steps, guidance_scale=a.guidance))
            imgs = gen(scg.prompt, seeds, None if mu is None else mu[0], ad)
            images[f"{label}@{ep}"] = (np.clip(imgs, 0, 1) * 255).round().astype(np.uint8)
            s, h = gka.score_subject(fns, imgs, scg.test_images), gka.score_subject(fns, imgs, held_images)
            r = {"epoch": int(ep), **{n: s[n]["mean"] for n in ("dino", "clip", "total")},
                 "total_std": s["total"]["std"], **{f"heldout_{n}": h[n]["mean"] for n in ("dino", "clip", "total")},
                 "mu_norm": None if mu is None else float(jnp.linalg.norm(mu))}
            print(f"[{subject}] {label} epoch {ep}: DINO {r['dino']:.4f} CLIP {r['clip']:.4f} sum {r['total']:.4f} "
                  f"| held-out sum {r['heldout_total']:.4f}  ({time.time() - t_all:.0f} s, load "
                  f"{os.getloadavg()[0]:.1f})", flush=True)
            return r

        def flush_images():
            np.savez_compressed(img_path, **images)

        if "lb" not in sres:
            sres["lb"] = score("lb", 0, None)
            flush_images()
            save()

        def mu_of(init):
            if init == "none":
                return None
            if init == "mustar":  # the subject's TI mu* saved by phase T: MAKD with DB's settings
                for f_ in (f"{subject}_ti_mu_star.npy", f"{subject}_mu_star.npy"):
                    if os.path.exists(os.path.join(out_dir, f_)):
                        return jnp.asarray(np.load(os.path.join(out_dir, f_)))
                raise SystemExit(f"init mustar: no {subject}_ti_mu_star.npy in {out_dir} (run --ti-subjects first)")
            if init.startswith("token:"):  # textual inversion's practice: start from a real word's embedding
                tid = int(np.asarray(pipe.tokenize([init[6:]]))[0, 1])
                return jnp.asarray(table[tid])[None, None].repeat(int(c.metaword.n_tokens), 1)
            return z * stds[init]

        def lora_run(label, init, lr, targets):
            """Train a DB LoRA under the random word ``init`` to --epochs, score at every checkpoint."""
            if label in sres["runs"]:
                return
            mu = mu_of(init)
            ad0, specs = lora_for(targets)
            snaps = {}

            def cb(ep, tr):
                if ep in cps:
                    snaps[ep] = jax.tree.map(lambda x: jnp.array(x, copy=True), tr["lora"])

            fr = dict(frozen) if mu is None else {**frozen, "metaword": mu}
            t = time.time()
            gka.train_stage(pipe, train, {"lora": ad0}, fr, specs, epochs=a.epochs, batch=int(c.lora.batch), lr=lr,
                            seed=seed + 2, on_epoch=cb)
            train_s = time.time() - t
            rows = [score(label, ep, mu, snaps[ep], specs) for ep in cps]
            rows[0]["train_seconds"] = round(train_s, 1)
            sres["runs"][label] = rows
            flush_images()
            save()

        def best(labels):
            """Held-out pick over the runs ``labels`` (epoch 0 rows of phase B included)."""
            cands = [(r["heldout_total"], -r["epoch"], lab, r["epoch"]) for lab in labels if lab in sres["runs"]
                     for r in sres["runs"][lab]]
            if not cands:
                return None
            _, _, lab, ep = max(cands)
            row = next(r for r in sres["runs"][lab] if r["epoch"] == ep)
            return {"run": lab, "epoch": ep, "test_total": row["total"], "heldout_total": row["heldout_total"]}

        init0 = str(c.metaword.init)
        a_labels = [f"db_{init0}_lr{lr:g}" for lr in _floats(a.lrs)]
        if "A" in phases:
            if f"word_{init0}" not in sres["runs"]:
                sres["runs"][f"word_{init0}"] = [score(f"word_{init0}", 0, mu_of(init0))]
                save()
            for lr, lab in zip(_floats(a.lrs), a_labels):
                lora_run(lab, init0, lr, ATTN)
        pick_a = best(a_labels)
        lr_b = float(pick_a["run"].rsplit("_lr", 1)[1]) if pick_a else float(c.lora.lr)
        b_labels = []
        if "B" in phases:
            for init in [i for i in a.inits.split(",") if i]:
                if init not in stds and init != "none" and not init.startswith("token:"):
                    raise SystemExit(f"--inits: unknown {init!r}; use paper, hf, matched, none, token:WORD")
                if f"word_{init}" not in sres["runs"]:
                    sres["runs"][f"word_{init}"] = [score(f"word_{init}", 0, mu_of(init))]
                    save()
                lab = f"db_{init}_lr{lr_b:g}"
                b_labels.append(lab)
                lora_run(lab, init, lr_b, ATTN)
        pick_ab = best(a_labels + b_labels)
        if "C" in phases and pick_ab:
            init_c = pick_ab["run"].split("_")[1]
            lr_c = float(pick_ab["run"].rsplit("_lr", 1)[1])
            lab = f"dbwide_{init_c}_lr{lr_c:g}"
            lora_run(lab, init_c, lr_c, a.wide_targets)
        for scale in [x for x in a.word_scales.split(",") if x] if a.word_draws else []:
            lab = f"word_draws_{scale}"  # phase W: other draws of the random word alone (no LoRA)
            if lab not in sres["runs"]:
                rows = []
                for k_ in range(a.word_draws):
                    zk = jax.random.normal(jax.random.fold_in(jax.random.key(seed), 10_000 + k_), z.shape)
                    rows.append({**score(f"{lab}_{k_}", 0, zk * stds[scale]), "draw": k_})
                sres["runs"][lab] = rows
                save()
        for spec_ in [e for e in a.extra.split(",") if e]:  # INIT:LR:attn|wide, e.g. paper:1e-4:wide
            init, lr, tg = spec_.rsplit(":", 2)
            if tg not in ("attn", "wide"):
                raise SystemExit(f"--extra {spec_!r}: targets must be attn or wide")
            lora_run(f"db{'wide' if tg == 'wide' else ''}_{init}_lr{float(lr):g}", init, float(lr),
                     a.wide_targets if tg == "wide" else ATTN)
        if subject in a.ti_subjects.split(","):
            for init in [i for i in a.ti_inits.split(",") if i] or [init0]:
                tl, ml = ("ti", "makd") if init == init0 else (f"ti_{init}", f"makd_{init}")
                if tl in sres["runs"]:
                    continue
                snaps = {}

                def cb(ep, tr):
                    if ep in cps:
                        snaps[ep] = jnp.array(tr["metaword"], copy=True)

                gka.train_stage(pipe, train, {"metaword": mu_of(init)}, frozen, None, epochs=a.epochs,
                                batch=int(c.metaword.batch), lr=float(c.metaword.lr), seed=seed + 1, on_epoch=cb)
                sres["runs"][tl] = [score(tl, ep, snaps[ep]) for ep in cps]
                mu_star = snaps[cps[-1]]
                np.save(os.path.join(out_dir, f"{subject}_{tl}_mu_star.npy"), np.asarray(mu_star))
                ad0, specs = lora_for(ATTN)
                snaps_l = {}

                def cbl(ep, tr):
                    snaps_l[ep] = jax.tree.map(lambda x: jnp.array(x, copy=True), tr["lora"])

                # MAKD as the table: LoRA at the config's depth and lr on mu* of the last checkpoint
                gka.train_stage(pipe, train, {"lora": ad0}, {**frozen, "metaword": mu_star}, specs,
                                epochs=int(c.lora.epochs), batch=int(c.lora.batch), lr=float(c.lora.lr),
                                seed=seed + 2, on_epoch=cbl)
                sres["runs"][ml] = [score(ml, int(c.lora.epochs), mu_star, snaps_l[int(c.lora.epochs)], specs)]
                flush_images()
                save()
        all_db = [lab for lab in sres["runs"] if lab.startswith("db") and "_mustar_" not in lab]  # DB only
        sres["pick"] = {"phase_a": pick_a, "all_db": best(all_db),
                        "table_db": _row_pick(sres, f"db_{init0}_lr{float(c.lora.lr):g}", int(c.lora.epochs))}
        save()
        _grid(os.path.join(out_dir, f"{subject}_samples.png"), scg.test_images[:8], images, sres)
    res["seconds"] = round(time.time() - t_all, 1)
    save()
    print(f"wrote {a.out} ({res['seconds']} s)")
    return 0


def _row_pick(sres, label, epoch):
    row = next((r for r in sres["runs"].get(label, []) if r["epoch"] == epoch), None)
    return None if row is None else {"run": label, "epoch": epoch, "test_total": row["total"],
                                     "heldout_total": row["heldout_total"]}


def _grid(path, cloud, images, sres):
    """Rows: cloud test, LB, the random word alone, table DB (5 epochs), the held-out pick, TI/MAKD."""
    from PIL import Image

    keys = ["lb@0"] + [k for k in images if k.startswith("word_") and not k.startswith("word_draws")]
    p = sres.get("pick", {})
    for name in ("table_db", "all_db"):
        if p.get(name):
            keys.append(f"{p[name]['run']}@{p[name]['epoch']}")
    keys += [k for k in images if k.startswith(("ti", "makd"))]
    rows = [np.asarray(cloud)[:8]] + [images[k][:8] for k in dict.fromkeys(keys) if k in images]
    h, w = rows[0].shape[1:3]
    g = np.full((len(rows) * h, 8 * w, 3), 255, np.uint8)
    for i, r in enumerate(rows):
        for j, im in enumerate(r):
            g[i * h:(i + 1) * h, j * w:(j + 1) * w] = im
    Image.fromarray(g).save(path)
    with open(path[:-4] + "_rows.txt", "w") as f:
        f.write("\n".join(["cloud_test"] + [k for k in dict.fromkeys(keys) if k in images]) + "\n")


if __name__ == "__main__":
    sys.exit(main())
