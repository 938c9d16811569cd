"""A compact, documented T-KA sweep on one subject: is CALA's tie with LoRA a matter of depth,
learning rate, gate learning rate or gate form (issue 18 item 6)?

    nice -n 5 python scripts/tka_sweep.py --out runs/tka_sweep                  # the whole grid
    nice -n 5 python scripts/tka_sweep.py --out runs/tka_sweep --only lora_lr1e-3,cala_lr1e-3
    nice -n 5 python scripts/tka_sweep.py --out runs/tka_sweep_gates --codec /tmp/codec_mt700 \
        --only lora_lr3e-3,cala_lr3e-3,cala_lr3e-3_linear,cala_lr3e-3_softmax,cala_lr3e-3_mlp

Every setting is ``configs/tka.py:<method>`` with a few overrides, run through ``tka.run`` in one
process (the edge pipeline loaded once) with the config's standard evaluation (PSNR over the 75
conditions of Phi_EU on the 30 eg_test latents, the same channel draws for every setting). Swept:
the learning rate and depth of both adapters, the gates' learning rate (``train.gate_lr_mult``) and
the gate *form* (``adapter.cala_gate``: sigmoid2 (default), linear, softmax, mlp, fourier; readings
in ``adapt/cala.py``; settings ``cala_lr3e-3_<form>[_g10|_const|_ep90]``); the condition-free control
(``adapter.cala_phi=constant``: same gates, phi = 0) says whether the condition information, rather
than the extra per-rank scales, is what the gates use. ``--codec`` overrides ``config.codec`` (a
frozen copy keeps a sweep comparable while the shipped codec is retrained); the codec used is
recorded per setting.

Per CALA setting the trained gates are read back from the checkpoint and summarised over the 75
conditions: ``gate_dev`` = mean |g(phi) - 1| (how far the gates moved from their init g = 1) and
``gate_spread`` = mean over gate entries of the std of g(phi) across conditions (how much they
depend on the condition); ``z_abs_max`` = the largest |logit| (= how far a logit travelled from its
init 0; sigmoid2/linear/softmax/fourier) and ``param_abs_max`` the largest |gate parameter| of the
output layer. Per setting the 75 per-condition PSNRs are kept (``conditions``) for the analysis
(``--analyse``: CALA − LoRA per condition against gamma, tau, omega and the distance of phi_n from
the grid's centre). Resumable: settings already in ``results.json`` are skipped.
Writes ``<out>/results.json`` and ``<out>/results.md`` after every setting.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# name -> (method, overrides); order = priority (a cut-short sweep still has the matched pairs first)
GRID = {
    "lora_lr1e-3": ("lora", {}),
    "cala_lr1e-3": ("cala", {}),
    "lora_lr3e-3": ("lora", {"train.lr": 3e-3}),
    "cala_lr3e-3": ("cala", {"train.lr": 3e-3}),
    "cala_lr1e-3_g100": ("cala", {"train.gate_lr_mult": 100.0}),
    "cala_lr1e-3_g100_const": ("cala", {"train.gate_lr_mult": 100.0, "adapter.cala_phi": "constant"}),
    "lora_lr3e-4": ("lora", {"train.lr": 3e-4}),
    "cala_lr3e-4": ("cala", {"train.lr": 3e-4}),
    "lora_lr1e-3_ep90": ("lora", {"train.epochs": 90}),
    "cala_lr1e-3_ep90": ("cala", {"train.epochs": 90}),
    "cala_lr3e-3_const": ("cala", {"train.lr": 3e-3, "adapter.cala_phi": "constant"}),
    "cala_lr3e-3_g10": ("cala", {"train.lr": 3e-3, "train.gate_lr_mult": 10.0}),
    "cala_lr3e-3_g10_const": ("cala", {"train.lr": 3e-3, "train.gate_lr_mult": 10.0, "adapter.cala_phi": "constant"}),
}
# Gate forms (adapt/cala.py) at lr 3e-3, 150 steps (where sigmoid2 gained +0.20 dB): each at gate lr x1, and
# the x10 / phi = 0 / 450-step variants to run for the best forms (--only picks them).
GATE_FORMS_SWEPT = ("linear", "softmax", "mlp", "fourier", "sigmoid2")
for _f in GATE_FORMS_SWEPT:
    _o = {"train.lr": 3e-3, "adapter.cala_gate": _f}
    if _f != "sigmoid2":   # sigmoid2 x1, x10 and its control are the entries above
        GRID[f"cala_lr3e-3_{_f}"] = ("cala", _o)
        GRID[f"cala_lr3e-3_{_f}_g10"] = ("cala", {**_o, "train.gate_lr_mult": 10.0})
        GRID[f"cala_lr3e-3_{_f}_const"] = ("cala", {**_o, "adapter.cala_phi": "constant"})
    GRID[f"cala_lr3e-3_{_f}_ep90"] = ("cala", {**_o, "train.epochs": 90})
GRID["lora_lr3e-3_ep90"] = ("lora", {"train.lr": 3e-3, "train.epochs": 90})
# seed repeats (init of A, the gates' mlp layer, batch order and the training's channel draws; the
# evaluation's draws stay fixed): the run-to-run noise a CALA - LoRA difference must exceed
for _s in (1, 2):
    GRID[f"lora_lr3e-3_seed{_s}"] = ("lora", {"train.lr": 3e-3, "seed": _s})
    for _f in GATE_FORMS_SWEPT:
        GRID[f"cala_lr3e-3_{_f}_seed{_s}"] = ("cala", {"train.lr": 3e-3, "adapter.cala_gate": _f, "seed": _s})


def _set(c, dotted: str, value) -> None:
    *path, leaf = dotted.split(".")
    for p in path:
        c = c[p]
    c[leaf] = value


def gate_stats(ckpt: str, grid) -> dict:
    """Trained CALA gates over the condition grid: mean |g - 1| and mean std across conditions."""
    import jax.numpy as jnp

    from dekag_jax.adapt import cala
    from dekag_jax.ka import tka

    from safetensors import safe_open

    with safe_open(ckpt, framework="numpy") as f:
        form = tka.checkpoint_gate(f.metadata() or {})
    _, tr = tka.load_checkpoint(ckpt)
    units, snrs, omegas = grid
    rows = np.asarray([(u / 64.0, s, w) for u in units for s in snrs for w in omegas], np.float32)
    phi = cala.normalise_phi(jnp.asarray(rows[:, 0]), jnp.asarray(rows[:, 1]), jnp.asarray(rows[:, 2]))
    ads = [ad for grp in tr.values() for ad in grp.values() if "gate_kernel" in ad]
    g = np.concatenate([np.asarray(cala.gate_values(ad, phi, form)) for ad in ads], axis=1)  # [conditions, entries]
    out = {"form": form, "gate_dev": float(np.mean(np.abs(g - 1.0))), "gate_spread": float(np.mean(g.std(axis=0))),
           "gate_min": float(g.min()), "gate_max": float(g.max()),
           "param_abs_max": float(max(np.abs(np.asarray(ad[k])).max() for ad in ads for k in cala.GATE_KEYS)),
           "gate_mean_by_condition": [float(v) for v in g.mean(axis=1)]}
    if form != "mlp":   # the logits z = f(phi_n) K + b, all 0 at init
        feats = phi if form != "fourier" else None
        zs = []
        for ad in ads:
            k, b = np.asarray(ad["gate_kernel"]), np.asarray(ad["gate_bias"])
            f_ = np.asarray(feats) if feats is not None else _fourier(np.asarray(phi))
            zs.append(f_ @ k + b)
        z = np.concatenate(zs, axis=1)
        out.update(z_abs_max=float(np.abs(z).max()), z_abs_mean=float(np.abs(z).mean()))
    return out


def _fourier(phi: np.ndarray) -> np.ndarray:
    from dekag_jax.adapt import cala

    ks = np.pi * np.arange(1, cala.FOURIER_FREQS + 1)
    arg = (phi[..., None, :] * ks[:, None]).reshape(*phi.shape[:-1], -1)
    return np.concatenate([phi, np.sin(arg), np.cos(arg)], axis=-1)


def table(results: dict) -> str:
    lines = ["| setting | method | gate form | lr | steps | gate lr × | phi | PSNR Φ_EU (dB) | CALA − LoRA (dB) | "
             "mean abs(g−1) | gate std over Φ | max abs(z) | train s | load |", "|---" * 14 + "|"]
    for name, r in results.items():
        cal = r["method"] == "cala"
        lora_name = r.get("matched_lora")
        d = f"{r['psnr'] - results[lora_name]['psnr']:+.2f}" if cal and lora_name in results else ""
        g = r.get("gates") or {}
        gs = (f"{g['gate_dev']:.4f} | {g['gate_spread']:.4f} | "
              + (f"{g['z_abs_max']:.3f}" if "z_abs_max" in g else "")) if g else " | | "
        lines.append(f"| {name} | {r['method']} | {r.get('cala_gate', 'sigmoid2') if cal else ''} | {r['lr']:g} | "
                     f"{r['steps']} | {r['gate_lr_mult'] if cal else ''} | {r['cala_phi'] if cal else ''} | "
                     f"{r['psnr']:.2f} | {d} | {gs} | {r['train_seconds']:.0f} | "
                     f"{r['load_avg_start']:.1f}–{r['load_avg_end']:.1f} |")
    return "\n".join(lines)


def _phi_n(row: dict) -> np.ndarray:
    from fractions import Fraction

    from dekag_jax.adapt import cala

    return np.asarray(cala.normalise_phi(Fraction(row["tau"]), row["snr_db"], row["delay_spread_ns"] * 1e-9))


def analyse(results: dict) -> str:
    """Per-condition CALA − LoRA of every CALA setting against its matched LoRA: mean, min, max,
    the share of the 75 conditions with a gain, the gain by gamma / tau / omega, and its correlation
    with the distance of phi_n from the grid's centre; plus each setting's PSNR spread over omega."""
    out = []
    for name, r in results.items():
        ln = r.get("matched_lora")
        if r["method"] != "cala" or ln not in results or "conditions" not in r or "conditions" not in results[ln]:
            continue
        key = lambda c: (c["tau"], c["snr_db"], c["delay_spread_ns"])   # noqa: E731
        lo = {key(c): c["psnr"] for c in results[ln]["conditions"]}
        rows = [(c, c["psnr"] - lo[key(c)]) for c in r["conditions"] if key(c) in lo]
        d = np.asarray([x for _, x in rows])
        phis = np.stack([_phi_n(c) for c, _ in rows])
        centre = (phis.min(0) + phis.max(0)) / 2
        dist = np.linalg.norm(phis - centre, axis=1)
        corr = float(np.corrcoef(dist, d)[0, 1]) if d.std() > 0 else float("nan")

        def by(field):
            vals = sorted({c[field] for c, _ in rows}, key=lambda v: float(eval(str(v))) if isinstance(v, str) else v)
            return ", ".join(f"{v}: {np.mean([x for c, x in rows if c[field] == v]):+.3f}" for v in vals)

        out.append(f"{name} vs {ln}: mean {d.mean():+.3f} dB, min {d.min():+.3f}, max {d.max():+.3f}, gain in "
                   f"{int((d > 0).sum())}/{len(d)} conditions; corr(gain, |phi_n - centre|) {corr:+.2f}\n"
                   f"  by gamma dB {{{by('snr_db')}}}\n  by tau {{{by('tau')}}}\n"
                   f"  by omega ns {{{by('delay_spread_ns')}}}")
    for name, r in results.items():
        if "conditions" not in r:
            continue
        # spread over the conditions at each omega: does a smaller omega give a larger spread?
        sp = {w: float(np.std([c["psnr"] for c in r["conditions"] if c["delay_spread_ns"] == w]))
              for w in sorted({c["delay_spread_ns"] for c in r["conditions"]})}
        line = f"{name}: PSNR std over (tau, gamma) per omega ns " + ", ".join(f"{w:g}: {v:.3f}" for w, v in sp.items())
        if all("psnr_std" in c for c in r["conditions"]):   # the paper's Fig. 13 spread: over images and draws
            si = {w: float(np.mean([c["psnr_std"] for c in r["conditions"] if c["delay_spread_ns"] == w])) for w in sp}
            line += "; mean per-image std per omega ns " + ", ".join(f"{w:g}: {v:.3f}" for w, v in si.items())
        out.append(line)
    return "\n".join(out)


def _config(name: str, args):
    from configs.tka import get_config

    method, over = GRID[name]
    c = get_config(method)
    c.subjects = args.subject
    if args.codec:
        c.codec = args.codec
    for k, v in over.items():
        _set(c, k, v)
    return method, over, c


def reevaluate(results: dict, name: str, args, pipe) -> None:
    """The standard evaluation again from the setting's checkpoint (same draws: the PSNRs must
    reproduce), keeping the per-condition rows with their per-image std."""
    from dekag_jax.ka import tka
    from dekag_jax.ka.transmission import LinkConfig

    method, _, c = _config(name, args)
    ss = pipe.unet.config.sample_size
    codec, cp, _ = tka.load_codec_for(c, (ss, ss), c.seed)
    link = LinkConfig(qam_order=c.link.qam_order, quantizer=c.link.quantizer, temperature=c.link.temperature,
                      channel=c.link.channel)
    setup = tka.make_setup(method, codec, cp, pipe.vae, pipe.vae_params, link=link, rank=c.adapter.rank,
                           codec_targets=c.adapter.codec_targets, decoder_targets=c.adapter.decoder_targets,
                           fullft_decoder=c.adapter.fullft_decoder, cala_phi=c.adapter.cala_phi,
                           cala_gate=c.adapter.cala_gate)
    _, tr = tka.load_checkpoint(os.path.join(args.out, name, args.subject, f"{method}.safetensors"), setup)
    z, x = tka.cached_edge_latents(pipe, args.subject, "eg_test", c.seg.n_test, num_steps=c.seg.num_steps,
                                   guidance=c.seg.guidance, cache_dir=c.seg.cache_dir)
    ev = tka.evaluate(setup, tr, tka.frozen_tree(cp, pipe.vae_params), z, x, grid=tka.grid_from_config(c.conditions),
                      seed=c.eval.seed, chunk=c.eval.chunk)
    print(f"{name}: re-evaluated {ev['psnr_mean']:.4f} dB (sweep: {results[name]['psnr']:.4f})", flush=True)
    results[name]["conditions"] = ev["conditions"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/tka_sweep")
    ap.add_argument("--only", default="", help="comma-separated setting names (default: the whole grid, in order)")
    ap.add_argument("--subject", default="human_00")
    ap.add_argument("--codec", default="", help="a save_codec directory overriding config.codec")
    ap.add_argument("--analyse", action="store_true", help="only print the per-condition analysis of <out>")
    ap.add_argument("--reeval", action="store_true",
                    help="re-evaluate the --only settings from their checkpoints (adds per-image psnr_std)")
    args = ap.parse_args(argv)
    if args.analyse:
        print(analyse(json.load(open(os.path.join(args.out, "results.json")))))
        return 0
    if args.codec and not os.path.isdir(args.codec):
        print(f"error: --codec {args.codec!r}: no such directory", file=sys.stderr)
        return 2
    names = [n for n in args.only.split(",") if n] or list(GRID)
    bad = [n for n in names if n not in GRID]
    if bad:
        print(f"error: unknown setting(s) {bad}; known: {', '.join(GRID)}", file=sys.stderr)
        return 2

    from dekag_jax import runtime

    runtime.setup()
    from dekag_jax.ka import tka
    from dekag_jax.world.models import load_edge_pipeline

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "results.json")
    results = json.load(open(path)) if os.path.isfile(path) else {}
    pipe = load_edge_pipeline()
    if args.reeval:
        for name in names:
            reevaluate(results, name, args, pipe)
            with open(path, "w") as f:
                json.dump(results, f, indent=1)
        return 0
    for name in names:
        if name in results:
            print(f"{name}: done already ({results[name]['psnr']:.2f} dB)", flush=True)
            continue
        method, over, c = _config(name, args)
        load0 = os.getloadavg()[0]
        res = tka.run(c, os.path.join(args.out, name), pipe=pipe, log=lambda m: print(m, flush=True))
        per = res["per_subject"][args.subject][method]
        r = {"method": method, "overrides": over, "seed": int(c.seed), "lr": float(c.train.lr),
             "epochs": int(c.train.epochs),
             "steps": per["steps"], "gate_lr_mult": float(c.train.gate_lr_mult), "cala_phi": str(c.adapter.cala_phi),
             "psnr": per["psnr_mean"], "by_rate": per["by_rate"], "by_snr": per["by_snr"],
             "by_delay_spread": per["by_delay_spread"], "loss_first": per["loss_first"],
             "loss_last": per["loss_last"], "train_seconds": per["train_seconds"], "seconds": per["seconds"],
             "load_avg_start": load0, "load_avg_end": os.getloadavg()[0], "machine": res["machine"],
             "matched_lora": None, "codec": res["codec_source"], "cala_gate": str(c.adapter.cala_gate),
             "conditions": per["conditions"]}
        if method == "cala":
            # the LoRA run at the same lr and depth (gate knobs do not exist for LoRA)
            r["matched_lora"] = next((n for n, (m, o) in GRID.items() if m == "lora" and
                                      o.get("train.lr") == over.get("train.lr") and
                                      o.get("train.epochs") == over.get("train.epochs") and
                                      o.get("seed") == over.get("seed")), None)
            r["gates"] = gate_stats(per["checkpoint"], tka.grid_from_config(c.conditions))
        results[name] = r
        with open(path, "w") as f:
            json.dump(results, f, indent=1)
        with open(os.path.join(args.out, "results.md"), "w") as f:
            f.write(table(results) + "\n")
        print(f"== {name}: {r['psnr']:.2f} dB ({r['seconds']:.0f} s)", flush=True)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
