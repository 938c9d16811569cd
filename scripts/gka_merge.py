"""Merge G-KA runs made one subject per process into one table (issue 19: the 30-subject table).

    for s in human_00 human_01 ...; do
        python -m dekag_jax.ka.gka --config configs/gka.py --config.subjects=$s --workdir runs/gka30/$s
    done
    python scripts/gka_merge.py runs/gka30/*/ --out runs/gka30/table.md

Running subjects in separate processes keeps a long sweep resumable (a finished subject's
``metrics.json`` is kept) where one ``--config.subjects=all`` process writes only at the end.
The runs must share one config apart from ``subjects`` (checked; the differing fields are named).

Summaries, as the paper reports them (Sec. VI-B2): per method the mean over subjects of DINO, CLIP
and their per-pair sum (eq. 5), the mean over subjects of the per-subject std over pairs; the
improvement over LB as the mean over subjects of per-subject ratios of the sum; MAKD's std against
TI's as the mean over subjects of per-subject std ratios; per category (human / animal / building);
and how many subjects keep each ordering (MAKD > TI, MAKD > LB, TI > LB, DB > LB).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

METHODS = ("lb", "ti", "db", "makd", "ub")


def load_runs(dirs: list[str]) -> tuple[dict, dict]:
    """``(per_subject, config)`` from G-KA ``metrics.json`` files (one or more subjects each)."""
    per, config, first = {}, None, None
    for d in dirs:
        path = os.path.join(d, "metrics.json") if os.path.isdir(d) else d
        if not os.path.isfile(path):
            raise SystemExit(f"error: {path} is missing (an unfinished subject?)")
        with open(path) as f:
            r = json.load(f)
        c = dict(r["config"])
        c.pop("subjects", None)
        if config is None:
            config, first = c, path
        elif c != config:
            diff = sorted(k for k in set(c) | set(config) if c.get(k) != config.get(k))
            raise SystemExit(f"error: {path} was run with another config than {first}: {', '.join(diff)}")
        for s, v in r["per_subject"].items():
            if s in per:
                raise SystemExit(f"error: subject {s} appears twice (second time in {path})")
            per[s] = v
    return per, config


def summarise(per: dict) -> dict:
    """Means over subjects, ratios over LB, std ratios MAKD / TI, ordering counts, per category."""
    subjects = sorted(per)
    methods = [m for m in METHODS if all(m in per[s]["scores"] for s in subjects)]

    def stat(m, subs, metric, key):
        return float(np.mean([per[s]["scores"][m][metric][key] for s in subs]))

    groups = {"all": subjects}
    for cat in ("human", "animal", "building"):
        g = [s for s in subjects if s.startswith(cat)]
        if g:
            groups[cat] = g
    out = {"n_subjects": len(subjects), "subjects": subjects, "groups": {}}
    for name, subs in groups.items():
        rows = {}
        for m in methods:
            row = {f"{metric}_{key}": stat(m, subs, metric, key) for metric in ("dino", "clip", "total")
                   for key in ("mean", "std")}
            if "fid" in per[subs[0]]["scores"][m]:
                row["fid"] = float(np.mean([per[s]["scores"][m]["fid"] for s in subs]))
                row["kid"] = float(np.mean([per[s]["scores"][m]["kid"]["mean"] for s in subs]))
            if m != "lb" and "lb" in methods:
                row["ratio_over_lb"] = float(np.mean([per[s]["scores"][m]["total"]["mean"]
                                                      / per[s]["scores"]["lb"]["total"]["mean"] for s in subs]))
            rows[m] = row
        out["groups"][name] = {"n": len(subs), "methods": rows}

    def count(a, b):
        return int(sum(per[s]["scores"][a]["total"]["mean"] > per[s]["scores"][b]["total"]["mean"] for s in subjects))

    pairs = [(a, b) for a, b in (("makd", "ti"), ("makd", "lb"), ("ti", "lb"), ("db", "lb"), ("makd", "db"))
             if a in methods and b in methods]
    out["wins"] = {f"{a}>{b}": count(a, b) for a, b in pairs}
    if "makd" in methods and "ti" in methods:
        out["makd_over_ti"] = float(np.mean([per[s]["scores"]["makd"]["total"]["mean"]
                                             / per[s]["scores"]["ti"]["total"]["mean"] for s in subjects]))
        out["std_ratio_makd_ti"] = {metric: float(np.mean([per[s]["scores"]["makd"][metric]["std"]
                                                           / per[s]["scores"]["ti"][metric]["std"] for s in subjects]))
                                    for metric in ("dino", "clip", "total")}
    return out


def format_markdown(per: dict, summary: dict) -> str:
    lines = [f"G-KA over {summary['n_subjects']} subjects (eq. 5 on edge images; mean over subjects, "
             "std = mean over subjects of the per-subject std over pairs)", ""]
    lines += ["| group | method | DINO (std) | CLIP (std) | sum (std) | sum / LB | FID | KID |",
              "|---|---|---|---|---|---|---|---|"]
    for g, block in summary["groups"].items():
        for m, r in block["methods"].items():
            ratio = f"{r['ratio_over_lb']:.3f}" if "ratio_over_lb" in r else "-"
            fid = f"{r['fid']:.3f}" if "fid" in r else "-"
            kid = f"{r['kid']:.4f}" if "kid" in r else "-"
            lines.append(f"| {g} ({block['n']}) | {m.upper()} | {r['dino_mean']:.3f} ({r['dino_std']:.3f}) | "
                         f"{r['clip_mean']:.3f} ({r['clip_std']:.3f}) | {r['total_mean']:.3f} ({r['total_std']:.3f}) "
                         f"| {ratio} | {fid} | {kid} |")
    lines += ["", "Subjects keeping each ordering (sum of eq. 5): "
              + ", ".join(f"{k}: {v}/{summary['n_subjects']}" for k, v in summary["wins"].items())]
    if "makd_over_ti" in summary:
        sr = summary["std_ratio_makd_ti"]
        lines.append(f"MAKD / TI (mean of per-subject ratios): sum {summary['makd_over_ti']:.3f}; "
                     f"std DINO {sr['dino']:.3f}, CLIP {sr['clip']:.3f}, sum {sr['total']:.3f}")
    lines += ["", "| subject | " + " | ".join(m.upper() for m in METHODS if m in summary["groups"]["all"]["methods"]) + " |",
              "|---|" + "---|" * len(summary["groups"]["all"]["methods"])]
    for s in summary["subjects"]:
        cells = [f"{per[s]['scores'][m]['total']['mean']:.3f} ({per[s]['scores'][m]['total']['std']:.3f})"
                 for m in summary["groups"]["all"]["methods"]]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="G-KA work folders (or their metrics.json)")
    ap.add_argument("--out", default="", help="write the markdown table here (and <out>.json)")
    a = ap.parse_args(argv)
    per, config = load_runs(a.runs)
    summary = summarise(per)
    md = format_markdown(per, summary)
    print(md)
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            f.write(md)
        with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
            json.dump({"config": config, "summary": summary, "per_subject": per}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
