"""Why JSCC(AT) does not beat JSCC(MT) over Phi_EU (issue 18 item 3): small measured experiments.

    python scripts/at_vs_mt.py --steps 120 --images 32 --json dekag_jax/world/assets/training/jscc_at_vs_mt.json

1. Condition sampling: the per-sample (tau, gamma, omega) draws of the pretraining step
   (``transmission.sample_conditions`` with AT's grid) over 20,000 samples: the share of every
   value (uniform expected).
2. Where the eq. 4 loss sits: the shipped AT and MT codecs' per-sample eq. 4 loss on 64 training
   latents at each gamma of Phi_EU (tau and omega cycled over Phi_EU): the share of the batch loss
   (and so of the gradient) each SNR carries.
3. Continued training of the shipped JSCC(AT) for ``--steps`` steps under Phi_EU (batch 16, AdamW
   3e-4 with warmup + cosine, the pretraining's seeds scheme), twice: with eq. 4 as is (control:
   more training budget) and with the log-balanced objective (``codec_training.make_train_step(...,
   balance="log")``: each sample's loss divided by its own value, the gradient of mean log loss).
   With ``--mt`` also JSCC(MT) continued at its own condition (its budget control).
4. Received PSNR against x = f_LD(z) over the 75 Phi_EU conditions on ``--images`` held-out generic
   images (corpus seed 1), one channel draw per (image, condition), the same draws for every
   codec: the mean and the mean per gamma.
"""
from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pretrain_common as C  # noqa: E402


def main(argv):
    from dekag_jax.errors import ArgumentParser, UsageError

    ap = ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--mt", action="store_true", help="also continue JSCC(MT) at its own condition")
    ap.add_argument("--runs", default=None, help="comma-separated subset of jscc_at+eq4, jscc_at+log, jscc_mt+eq4")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    if a.steps < 1 or a.images < 1:
        raise UsageError("--steps and --images must be >= 1")
    C.setup_jax()

    import jax
    import jax.numpy as jnp
    import numpy as np

    from dekag_jax.channel.condition import phi_eu_grid
    from dekag_jax.diffusion.generate import decode_latents, encode_images
    from dekag_jax.ka.codec_io import load_codec
    from dekag_jax.ka.codec_training import ConditionGrid, init_state, make_train_step
    from dekag_jax.ka.objective import LossWeights, eq4_terms, vae_encoder_features
    from dekag_jax.ka.transmission import (LinkConfig, ReceiveFn, decode_latents as f_ld, delay_spread_index,
                                           sample_conditions, transmit_latents)
    from dekag_jax.world.corpus import generic_corpus
    from dekag_jax.world.models import load_edge_pipeline

    t0 = time.time()
    out = {"command": "python scripts/at_vs_mt.py " + " ".join(argv), "cpu_count": os.cpu_count(),
           "loadavg_start": C.loadavg()}
    link = LinkConfig()
    weights = LossWeights(latent=1.0, image=10.0, perceptual=0.1, constellation=0.05)   # configs/jscc_pretrain.py
    snrs, omegas, units = (0.0, 5.0, 10.0, 15.0, 20.0), (30e-9, 300e-9, 3000e-9), (2, 3, 4, 5, 6)
    widx = tuple(int(i) for i in delay_spread_index(list(omegas), link))

    # 1. condition sampling
    n, s, w = jax.jit(lambda k: sample_conditions(k, 20000, units, snrs, widx))(jax.random.key(0))
    out["sampling_shares"] = {
        "rate": {f"{u}/64": round(float(np.mean(np.asarray(n) == u)), 4) for u in units},
        "snr_db": {f"{g:g}": round(float(np.mean(np.asarray(s) == g)), 4) for g in snrs},
        "omega_index": {str(i): round(float(np.mean(np.asarray(w) == i)), 4) for i in widx}}
    print("condition shares over 20000 draws:", out["sampling_shares"], flush=True)

    pipe = load_edge_pipeline(components=("vae",))
    path = os.path.join(C.WORK, "jscc_at", "latents_n1000_s0_h64_s1.npz")
    if os.path.isfile(path):
        f = np.load(path)
        z_tr, x_tr = f["z"], f["x"]
    else:
        _, imgs = generic_corpus(1000, seed=0)
        z_tr = np.asarray(encode_images(pipe, jnp.asarray(imgs, jnp.float32) / 255.0))
        x_tr = np.asarray(decode_latents(pipe, jnp.asarray(z_tr)))
    feat = vae_encoder_features(pipe.vae)
    codecs = {name: load_codec(os.path.join(C.ASSETS, "jscc", name)) for name in ("jscc_mt", "jscc_at")}
    codec = codecs["jscc_at"][0]

    # 2. loss share per SNR
    zb, xb = jnp.asarray(z_tr[:64]), jnp.asarray(x_tr[:64])
    nb = jnp.asarray(np.resize(units, 64), jnp.int32)
    wb = jnp.asarray(np.resize(widx, 64)[::-1].copy(), jnp.int32)

    @jax.jit
    def per_sample(params, snr, key):
        t = transmit_latents(codec, params, zb, key, rate_units=nb, snr_db=snr, omega_index=wb, link=link)
        xc = f_ld(pipe.vae, pipe.vae_params, t.z_check)
        terms = eq4_terms(z=zb, z_check=t.z_check, x=xb, x_check=xc, symbols=t.symbols, qam_order=64,
                          features=lambda im: feat(pipe.vae_params, im), mask=t.mask)
        return (weights.latent * terms["latent"] + weights.image * terms["image"]
                + weights.perceptual * terms["perceptual"] + weights.constellation * terms["constellation"])

    out["loss_by_snr"] = {}
    for name, (_, params, _) in codecs.items():
        per = {f"{g:g}": float(jnp.mean(per_sample(params, jnp.float32(g), jax.random.key(3)))) for g in snrs}
        tot = sum(per.values())
        out["loss_by_snr"][name] = {"mean_loss": {k: round(v, 4) for k, v in per.items()},
                                    "share": {k: round(v / tot, 3) for k, v in per.items()}}
        print(f"{name}: eq. 4 loss per SNR {out['loss_by_snr'][name]['mean_loss']} "
              f"share {out['loss_by_snr'][name]['share']}", flush=True)

    # 3. continued training
    aux = {"vae": pipe.vae_params, "feat": pipe.vae_params}
    eu = ConditionGrid(rates=tuple(f"{u}/64" for u in units), snrs_db=snrs, delay_spreads_s=omegas)
    mt_grid = ConditionGrid(rates=tuple(f"{u}/64" for u in range(1, 7)), snrs_db=(10.0,), delay_spreads_s=(300e-9,))
    runs = [("jscc_at+eq4", "jscc_at", eu, "none"), ("jscc_at+log", "jscc_at", eu, "log")]
    if a.mt or (a.runs and "jscc_mt+eq4" in a.runs):
        runs.append(("jscc_mt+eq4", "jscc_mt", mt_grid, "none"))
    if a.runs:
        runs = [r for r in runs if r[0] in a.runs.split(",")]
    zj, xj = jnp.asarray(z_tr), jnp.asarray(x_tr)
    trained = {}
    out["continued"] = {}
    for label, src, grid, balance in runs:
        opt, _ = C.make_optimizer(3e-4, a.steps, weight_decay=1e-4)
        step_fn = make_train_step(codec, pipe.vae, opt, link=link, weights=weights, grid=grid, features=feat,
                                  balance=balance)
        state = init_state(jax.tree_util.tree_map(jnp.array, codecs[src][1]), opt)
        ts = time.time()
        hist = []
        for k in range(1, a.steps + 1):
            idx = np.random.default_rng([7, k]).choice(z_tr.shape[0], 16, replace=False)
            state, m = step_fn(state, aux, zj[idx], xj[idx], jax.random.fold_in(jax.random.key(8), k))
            if k % 20 == 0 or k == a.steps:
                hist.append({"step": k, "loss": round(float(m["loss"]), 4), "psnr": round(float(m["psnr"]), 2)})
        trained[label] = state["params"]
        out["continued"][label] = {"from": src, "balance": balance, "steps": a.steps,
                                   "seconds": round(time.time() - ts, 1), "history": hist}
        print(f"{label}: {a.steps} steps in {time.time() - ts:.0f} s, last {hist[-1]}", flush=True)

    # 4. Phi_EU evaluation
    _, imh = generic_corpus(a.images, seed=1)
    zh = encode_images(pipe, jnp.asarray(imh, jnp.float32) / 255.0)
    xh = np.asarray(decode_latents(pipe, zh))
    fn = ReceiveFn(codec, pipe.vae, link)
    grid = phi_eu_grid()
    all_params = {"jscc_mt": codecs["jscc_mt"][1], "jscc_at": codecs["jscc_at"][1], **trained}
    out["phi_eu"] = {}
    for label, params in all_params.items():
        per = {}
        for i, c in enumerate(grid):
            _, xc = fn(params, pipe.vae_params, zh, jax.random.fold_in(jax.random.key(1234), i), condition=c)
            per[(c.snr_db, c.key)] = float(np.mean(-10 * np.log10(np.mean((np.asarray(xc) - xh) ** 2,
                                                                           axis=(1, 2, 3)))))
        by_snr = {f"{g:g}": round(float(np.mean([v for (sg, _), v in per.items() if sg == g])), 3) for g in snrs}
        out["phi_eu"][label] = {"mean": round(float(np.mean(list(per.values()))), 3), "by_snr": by_snr}
        print(f"{label}: Phi_EU mean {out['phi_eu'][label]['mean']:.2f} dB, by SNR {by_snr}", flush=True)
    out["images"] = a.images
    out["wall_time_s"] = round(time.time() - t0, 1)
    out["loadavg_end"] = C.loadavg()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    from dekag_jax.errors import cli_main

    sys.exit(cli_main(main))
