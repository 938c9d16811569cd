"""Write ``tests/data/render_golden.json``: sha256 of renders of a fixed set of specs and seeds.

Run once with the renderer whose behaviour is the reference (the single-file ``world/render.py``
before it was split by job); ``tests/test_render_split.py`` renders the same cases again and
compares the hashes, so any byte change in the renderer is caught.

    python scripts/make_render_golden.py [--out tests/data/render_golden.json]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def golden_cases():
    """[(name, prompts, seeds, world, size, batched)]: both worlds, every category, pattern,
    accessory and background, target subjects, generic-corpus prompts, two sizes."""
    from dekag_jax.world.render import ACCESSORIES, BACKGROUNDS, CATEGORIES, PATTERNS, Spec
    from dekag_jax.world.subjects import target_subjects
    from dekag_jax.world.corpus import random_specs

    cases = []
    # every target subject of every category (cloud hidden marks are per subject)
    targets = [s.spec.prompt for s in target_subjects()]
    generic = [s.prompt for s in random_specs(7, 24)]
    # a hand-made sweep of every pattern x accessory x background per category
    sweep = []
    colors = ("red", "blue", "white", "yellow", "purple", "gray")
    for ci, cat in enumerate(CATEGORIES):
        for pi, pat in enumerate(PATTERNS):
            for ai, acc in enumerate(ACCESSORIES[cat]):
                col = colors[(ci + pi + ai) % len(colors)]
                pcol = None if pat == "plain" else ("black" if col != "black" else "white")
                acol = None if acc == "none" else ("green" if col != "green" else "pink")
                bg = BACKGROUNDS[(pi + ai + ci) % len(BACKGROUNDS)]
                sweep.append(Spec(cat, col, pat, pcol, acc, acol, bg).prompt)
    for world in ("edge", "cloud"):
        cases.append((f"targets-{world}-64", targets, [3 + i for i in range(len(targets))], world, 64, True))
        cases.append((f"generic-{world}-64", generic, [1000 + 17 * i for i in range(len(generic))], world, 64, True))
        cases.append((f"sweep-{world}-64", sweep, [i for i in range(len(sweep))], world, 64, True))
        # the same images one by one must equal the batched ones; a second size
        cases.append((f"single-{world}-64", targets[::7], [5, 6, 7, 8, 9], world, 64, False))
        cases.append((f"sweep-{world}-40", sweep[::5], [11 + i for i in range(len(sweep[::5]))], world, 40, True))
    return cases


def render_case(prompts, seeds, world, size, batched):
    import numpy as np
    from dekag_jax.world.render import render, render_batch

    if batched:
        imgs = render_batch(prompts, seeds, world, size)
    else:
        imgs = np.stack([render(p, s, world, size) for p, s in zip(prompts, seeds)])
    return imgs


def hashes():
    out = {}
    for name, prompts, seeds, world, size, batched in golden_cases():
        imgs = render_case(prompts, seeds[:len(prompts)], world, size, batched)
        out[name] = {"prompts": prompts, "seeds": list(seeds[:len(prompts)]), "world": world,
                     "size": size, "batched": batched,
                     "sha256": [hashlib.sha256(im.tobytes()).hexdigest() for im in imgs]}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "tests" / "data" / "render_golden.json"))
    args = ap.parse_args(argv)
    from dekag_jax import runtime
    runtime.setup()  # every script does (the renderer itself is numpy)
    data = hashes()
    Path(args.out).write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {sum(len(v['sha256']) for v in data.values())} hashes to {args.out}")


if __name__ == "__main__":
    main()
