"""The renderer split by job (spec / raster / scenery / figures / render) draws the same bytes as
the single-file renderer it replaced.

``tests/data/render_golden.json`` holds sha256 hashes of 310 renders (both worlds, every category,
pattern, accessory and background, the 30 target subjects, generic-corpus prompts, single vs
batched, two sizes) made with the original ``world/render.py`` by ``scripts/make_render_golden.py``.
"""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from dekag_jax.world import render as R

GOLDEN = json.loads((Path(__file__).parent / "data" / "render_golden.json").read_text())


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_render_bytes_match_golden(name):
    case = GOLDEN[name]
    if case["batched"]:
        imgs = R.render_batch(case["prompts"], case["seeds"], case["world"], case["size"])
    else:
        imgs = np.stack([R.render(p, s, case["world"], case["size"])
                         for p, s in zip(case["prompts"], case["seeds"])])
    assert imgs.shape == (len(case["prompts"]), case["size"], case["size"], 3)
    got = [hashlib.sha256(im.tobytes()).hexdigest() for im in imgs]
    bad = [case["prompts"][i] for i, (a, b) in enumerate(zip(got, case["sha256"])) if a != b]
    assert not bad, f"{name}: {len(bad)} of {len(got)} renders changed, e.g. {bad[:3]}"


def test_golden_covers_every_category_pattern_accessory_background():
    specs = [R.parse_prompt(p) for c in GOLDEN.values() for p in c["prompts"]]
    worlds = {c["world"] for c in GOLDEN.values()}
    assert worlds == set(R.WORLDS)
    assert {s.category for s in specs} == set(R.CATEGORIES)
    assert {s.pattern for s in specs} == set(R.PATTERNS)
    assert {s.background for s in specs} == set(R.BACKGROUNDS)
    for cat, accs in R.ACCESSORIES.items():
        assert {s.accessory for s in specs if s.category == cat} == set(accs)


def test_public_names_still_importable_from_render():
    for name in R.__all__ + ["SpecLike", "prompt_words", "FUNCTION_WORDS"]:
        assert hasattr(R, name), name
    from dekag_jax.world import spec, raster, scenery, figures  # noqa: F401  the split modules
    assert R.Spec is spec.Spec and R.parse_prompt is spec.parse_prompt
