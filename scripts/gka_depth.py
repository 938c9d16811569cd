"""G-KA depth and learning-rate sweep on one subject (the paper's Fig. 8, and the check the issue
asks for before reporting a negative MAKD result).

    python scripts/gka_depth.py --subject human_00 --out runs/gka_depth.json \
        --mw-lrs 5e-4,2e-3,5e-3 --lora-lrs 1e-4,1e-3 --epochs 60 --checkpoints 5,15,30,60

Stage 1 (eq. 8, metaword) is trained once per learning rate, scored at every checkpoint depth
without retraining (``train_stage``'s ``on_epoch``); stage 2 (eq. 9, LoRA with mu* frozen) starts
from the stage-1 metaword with the lowest held-out loss and is scored the same way. Depth selection
beyond the paper: 8 of the 40 S_CG latents are held out of training, and the eq. 6 loss on them
(fixed t, eps) is recorded at each checkpoint next to the eq. 5 scores, so one can see whether the
held-out loss picks the depth the scores would. Scores here use fewer images and DDIM steps than
the table (``--n-images``, ``--steps``), stated in the output.
"""
import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from dekag_jax import runtime
from dekag_jax.adapt import metaword
from dekag_jax.ka import gka
from dekag_jax.ka.scg import build_scg


def _floats(s):
    return [float(x) for x in s.split(",") if x]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subject", default="human_00")
    ap.add_argument("--out", required=True)
    ap.add_argument("--mw-lrs", default="5e-4,2e-3,5e-3")
    ap.add_argument("--lora-lrs", default="1e-4,1e-3")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--checkpoints", default="5,15,30,60")
    ap.add_argument("--n-images", type=int, default=10)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--mu-pick", default="heldout",
                    help="stage-2 metaword: 'heldout' (lowest held-out loss) or 'LR:EPOCH' of a stage-1 run")
    a = ap.parse_args(argv)
    checkpoints = sorted({int(c) for c in a.checkpoints.split(",") if c})
    if not checkpoints or checkpoints[-1] > a.epochs or checkpoints[0] < 1:
        ap.error(f"--checkpoints must lie in 1..{a.epochs}")
    runtime.setup()
    from dekag_jax.world.models import load_edge_pipeline, load_judges
    from dekag_jax.world.splits import split_seeds

    pipe = load_edge_pipeline()
    fns = gka.judge_feature_fns(load_judges())
    scg = build_scg(pipe, a.subject)
    full = gka.make_data(pipe, [scg])
    train = gka.Data(full.z[:32], full.sid[:32], full.ids)
    held = gka.Data(full.z[32:], full.sid[32:], full.ids)
    ev = gka.eval_batch(held, pipe, seed=99, repeats=8)
    ids = jnp.asarray(full.ids)
    frozen = {"unet": pipe.unet_params, "text": pipe.text_params}
    key = jax.random.key(0)
    mu0 = metaword.init_metaword(jax.random.fold_in(key, 1), pipe.text_encoder.config.hidden_size)[None]
    adapters0, specs = gka.init_lora(pipe, jax.random.fold_in(key, 2), rank=8, alpha=8.0,
                                     targets=r".*/attn[12]/to_(q|k|v|out\.0)/kernel")
    gen = gka.Generator(pipe, specs, num_steps=a.steps, guidance_scale=a.guidance)
    seeds = split_seeds(a.subject, "eg_test")[:a.n_images]
    loss0, loss1 = gka.loss_fn_jit(pipe), gka.loss_fn_jit(pipe, specs)
    res = {"subject": a.subject, "settings": vars(a), "held_out": "S_CG latents 32..39 (trained on 0..31)",
           "metaword": {}, "lora": {}}

    def score(mu, ad=None):
        return gka.score_subject(fns, gen(scg.prompt, seeds, mu[0], ad), scg.test_images)

    t0 = time.time()
    res["lb"] = gka.score_subject(fns, gen(scg.prompt, seeds), scg.test_images)
    res["held_loss_random_metaword"] = float(loss0({}, {**frozen, "metaword": mu0}, *ev[:2], ids, *ev[2:]))
    best = (np.inf, None, None)
    for lr in [float(x) for x in a.mw_lrs.split(",") if x]:
        rows, snaps = [], {}

        def cb(ep, tr):
            if ep in checkpoints:
                snaps[ep] = jnp.array(tr["metaword"], copy=True)

        gka.train_stage(pipe, train, {"metaword": mu0}, frozen, None, epochs=a.epochs, batch=a.batch, lr=lr,
                        seed=1, on_epoch=cb)
        for ep, mu in sorted(snaps.items()):
            hl = float(loss0({"metaword": mu}, frozen, *ev[:2], ids, *ev[2:]))
            s = score(mu)
            rows.append({"epoch": ep, "held_loss": hl, "mu_norm": float(jnp.linalg.norm(mu)),
                         **{k: s[k]["mean"] for k in ("dino", "clip", "total")}, "total_std": s["total"]["std"]})
            print(f"metaword lr {lr:g} epoch {ep}: {rows[-1]}", flush=True)
            pick = a.mu_pick == "heldout" and hl < best[0]
            if a.mu_pick != "heldout":
                plr, pep = a.mu_pick.split(":")
                pick = float(plr) == lr and int(pep) == ep
            if pick:
                best = (hl, mu, f"lr {lr:g} epoch {ep}")
        res["metaword"][f"{lr:g}"] = rows
    if best[1] is None:
        raise SystemExit(f"--mu-pick {a.mu_pick}: no such stage-1 run (lr in --mw-lrs, epoch in --checkpoints)")
    res["lora_from_metaword"] = best[2]
    mu_star = best[1]
    for lr in [float(x) for x in a.lora_lrs.split(",") if x]:
        rows, snaps = [], {}

        def cb(ep, tr):
            if ep in checkpoints:
                snaps[ep] = jax.tree.map(lambda x: jnp.array(x, copy=True), tr["lora"])

        fr = {**frozen, "metaword": mu_star}
        gka.train_stage(pipe, train, {"lora": adapters0}, fr, specs, epochs=a.epochs, batch=a.batch, lr=lr, seed=2,
                        on_epoch=cb)
        for ep, ad in sorted(snaps.items()):
            hl = float(loss1({"lora": ad}, fr, *ev[:2], ids, *ev[2:]))
            s = score(mu_star, ad)
            rows.append({"epoch": ep, "held_loss": hl, **{k: s[k]["mean"] for k in ("dino", "clip", "total")},
                         "total_std": s["total"]["std"]})
            print(f"lora lr {lr:g} epoch {ep}: {rows[-1]}", flush=True)
        res["lora"][f"{lr:g}"] = rows
    res["seconds"] = round(time.time() - t0, 1)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"wrote {a.out} ({res['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
