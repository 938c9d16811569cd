"""A compact, documented T-KA sweep on one subject: is CALA's tie with LoRA a matter of depth,
learning rate or gate learning rate (issue 18 item 6)?

    nice -n 5 python scripts/tka_sweep.py --out runs/tka_sweep                  # the whole grid
    nice -n 5 python scripts/tka_sweep.py --out runs/tka_sweep --only lora_lr1e-3,cala_lr1e-3

Every setting is ``configs/tka.py:<method>`` with a few overrides, run through ``tka.run`` in one
process (the edge pipeline loaded once) with the config's standard evaluation (PSNR over the 75
conditions of Phi_EU on the 30 eg_test latents, the same channel draws for every setting). The gate
*form* (2·sigmoid of an affine map of phi, ``adapt/cala.py``) lives in ``adapt/``, which this sweep
does not change; the gate's learning rate (``train.gate_lr_mult``) is swept instead, and the
condition-free control (``adapter.cala_phi=constant``: same gates, phi = 0) says whether the
condition information, rather than the extra per-rank scales, is what the gates use.

Per CALA setting the trained gates are read back from the checkpoint and summarised over the 75
conditions: ``gate_dev`` = mean |g(phi) - 1| (how far the gates moved from their init g = 1) and
``gate_spread`` = mean over gate entries of the std of g(phi) across conditions (how much they
depend on the condition). Resumable: settings already in ``results.json`` are skipped.
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

    _, tr = tka.load_checkpoint(ckpt)
    units, snrs, omegas = grid
    rows = np.asarray([(u / 64.0, s, w) for u in units for s in snrs for w in omegas], np.float32)
    phi = cala.normalise_phi(jnp.asarray(rows[:, 0]), jnp.asarray(rows[:, 1]), jnp.asarray(rows[:, 2]))
    g = np.concatenate([np.asarray(cala.gate_values(ad, phi)) for grp in tr.values() for ad in grp.values()
                        if "gate_kernel" in ad], axis=1)            # [conditions, all gate entries]
    return {"gate_dev": float(np.mean(np.abs(g - 1.0))), "gate_spread": float(np.mean(g.std(axis=0))),
            "gate_min": float(g.min()), "gate_max": float(g.max())}


def table(results: dict) -> str:
    lines = ["| setting | method | lr | steps | gate lr × | phi | PSNR Φ_EU (dB) | CALA − LoRA (dB) | "
             "mean abs(g−1) | gate std over Φ | train s |", "|---" * 11 + "|"]
    for name, r in results.items():
        lora_name = r.get("matched_lora")
        d = ""
        if r["method"] == "cala" and lora_name in results:
            d = f"{r['psnr'] - results[lora_name]['psnr']:+.2f}"
        g = r.get("gates") or {}
        lines.append(f"| {name} | {r['method']} | {r['lr']:g} | {r['steps']} | "
                     f"{r['gate_lr_mult'] if r['method'] == 'cala' else ''} | "
                     f"{r['cala_phi'] if r['method'] == 'cala' else ''} | {r['psnr']:.2f} | {d} | "
                     f"{g.get('gate_dev', float('nan')):.4f} | {g.get('gate_spread', float('nan')):.4f} | "
                     f"{r['train_seconds']:.0f} |" if g else
                     f"| {name} | {r['method']} | {r['lr']:g} | {r['steps']} | "
                     f"{r['gate_lr_mult'] if r['method'] == 'cala' else ''} | "
                     f"{r['cala_phi'] if r['method'] == 'cala' else ''} | {r['psnr']:.2f} | {d} | | | "
                     f"{r['train_seconds']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/tka_sweep")
    ap.add_argument("--only", default="", help="comma-separated setting names (default: the whole grid, in order)")
    ap.add_argument("--subject", default="human_00")
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(GRID)
    bad = [n for n in names if n not in GRID]
    if bad:
        print(f"error: unknown setting(s) {bad}; known: {', '.join(GRID)}", file=sys.stderr)
        return 2

    from dekag_jax import runtime

    runtime.setup()
    from configs.tka import get_config
    from dekag_jax.ka import tka
    from dekag_jax.world.models import load_edge_pipeline

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "results.json")
    results = json.load(open(path)) if os.path.isfile(path) else {}
    pipe = load_edge_pipeline()
    for name in names:
        if name in results:
            print(f"{name}: done already ({results[name]['psnr']:.2f} dB)", flush=True)
            continue
        method, over = GRID[name]
        c = get_config(method)
        c.subjects = args.subject
        for k, v in over.items():
            _set(c, k, v)
        load0 = os.getloadavg()[0]
        res = tka.run(c, os.path.join(args.out, name), pipe=pipe, log=lambda m: print(m, flush=True))
        per = res["per_subject"][args.subject][method]
        r = {"method": method, "overrides": over, "lr": float(c.train.lr), "epochs": int(c.train.epochs),
             "steps": per["steps"], "gate_lr_mult": float(c.train.gate_lr_mult), "cala_phi": str(c.adapter.cala_phi),
             "psnr": per["psnr_mean"], "by_rate": per["by_rate"], "by_snr": per["by_snr"],
             "by_delay_spread": per["by_delay_spread"], "loss_first": per["loss_first"],
             "loss_last": per["loss_last"], "train_seconds": per["train_seconds"], "seconds": per["seconds"],
             "load_avg_start": load0, "load_avg_end": os.getloadavg()[0], "machine": res["machine"],
             "matched_lora": None}
        if method == "cala":
            # the LoRA run at the same lr and depth (gate knobs do not exist for LoRA)
            r["matched_lora"] = next((n for n, (m, o) in GRID.items() if m == "lora" and
                                      o.get("train.lr") == over.get("train.lr") and
                                      o.get("train.epochs") == over.get("train.epochs")), None)
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
