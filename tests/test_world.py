"""Tests of the tiny world: renderer, prompts, subjects, splits, corpus, tokenizer."""
import colorsys
import json

import numpy as np
import pytest

from dekag_jax.world import (ACCESSORIES, BACKGROUNDS, COLORS, PATTERNS, SPLIT_SIZES, SPLITS, Spec,
                             cloud_generate, cloud_samples, generic_corpus, hidden_details,
                             parse_prompt, prompt_words, random_specs, render_batch,
                             split_seeds, target_specs, target_subjects, training_batch)
from dekag_jax.world.render import render
from dekag_jax.world import vocab as V


# --- renderer ---------------------------------------------------------------------------------
def test_deterministic_and_dtype():
    p = "a blue and white striped creature with a red scarf on snow"
    for w in ("edge", "cloud"):
        a, b = render(p, 7, w), render(p, 7, w)
        assert a.dtype == np.uint8 and a.shape == (64, 64, 3)
        np.testing.assert_array_equal(a, b)
    assert render(p, 7, size=128).shape == (128, 128, 3)


def test_batch_equals_single():
    specs = random_specs(3, 12, include_targets=True)
    for w in ("edge", "cloud"):
        batch = render_batch(specs, list(range(12)), w)
        single = np.stack([render(s, i, w) for i, s in enumerate(specs)])
        np.testing.assert_array_equal(batch, single)


def test_distinct_seeds_distinct_images():
    p = "a red and yellow dotted person with a blue hat on grass"
    for w in ("edge", "cloud"):
        imgs = render_batch([p] * 8, list(range(8)), w).astype(np.int16)
        for i in range(8):
            for j in range(i + 1, 8):
                assert np.abs(imgs[i] - imgs[j]).mean() > 3.0


def test_edge_and_cloud_differ():
    for s in target_subjects()[::5]:
        e = render(s.spec, 11, "edge").astype(np.int16)
        c = render(s.spec, 11, "cloud").astype(np.int16)
        assert np.abs(e - c).mean() > 15.0, s.prompt


def _body_mask(spec_a, spec_b, seed, world):
    """Pixels where two specs that differ only in the body colour differ: the body region."""
    a = render(spec_a, seed, world).astype(np.int16)
    b = render(spec_b, seed, world).astype(np.int16)
    return np.abs(a - b).sum(-1) > 60, a


def _mean_hue_deg(pixels):
    hues = np.asarray([colorsys.rgb_to_hsv(*(p / 255.0))[0] for p in pixels])
    ang = hues * 2 * np.pi
    return np.degrees(np.arctan2(np.sin(ang).mean(), np.cos(ang).mean())) % 360


def test_colour_word_read_differently():
    """The cloud's "blue" is a teal: body-region hue differs by > 25 degrees, and lies near the
    edge world's "teal" (the prompt-interpretation gap a metaword can close)."""
    hues = {}
    for w in ("edge", "cloud"):
        for col in ("blue", "teal"):
            spec = Spec("building", col, background="snow")
            ref = spec.replace(color="red")
            m, img = _body_mask(spec, ref, 5, w)
            assert m.sum() > 200
            hues[w, col] = _mean_hue_deg(img[m])
    assert abs(hues["edge", "blue"] - hues["cloud", "blue"]) > 25
    assert abs(hues["cloud", "blue"] - hues["edge", "teal"]) < 15
    assert 200 < hues["edge", "blue"] < 250


def test_stripe_geometry_differs():
    """Edge stripes are horizontal; cloud stripes are diagonal."""
    ratios = {}
    for w in ("edge", "cloud"):
        plain = Spec("building", "white", background="grass")
        striped = Spec("building", "white", "striped", "black", background="grass")
        a = render(plain, 3, w).astype(np.float32).mean(-1)
        b = render(striped, 3, w).astype(np.float32).mean(-1)
        m = (np.abs(a - b) > 60).astype(np.float32)
        dx = np.abs(np.diff(m, axis=1)).sum()
        dy = np.abs(np.diff(m, axis=0)).sum()
        ratios[w] = dx / dy
    assert ratios["edge"] < 0.5      # only the wall's vertical sides cross stripes along x
    assert 0.7 < ratios["cloud"] < 1.5


def test_hidden_details_deterministic_and_varied():
    subs = target_subjects()
    for s in subs:
        assert hidden_details(s.spec) == hidden_details(s.prompt)
        c = hidden_details(s.spec)
        assert all(v not in (s.spec.color, s.spec.pattern_color) for k, v in c.items() if k.endswith("color"))
    for cat, keys in (("human", ("emblem", "hair")), ("animal", ("ears", "tail")),
                      ("building", ("windows", "door"))):
        hs = [hidden_details(s.spec) for s in subs if s.category == cat]
        for k in keys:
            assert len({h[k] for h in hs}) >= 3, (cat, k)
        assert len({tuple((k, h[k]) for k in keys) for h in hs}) == 10   # shapes alone differ
    # non-target prompts: hashed, deterministic, varied
    hs = [hidden_details(sp) for sp in random_specs(5, 60) if sp.category == "animal"]
    assert len({h["ears"] for h in hs}) == 4 and hidden_details(random_specs(5, 1)[0]) == \
        hidden_details(random_specs(5, 1)[0])


# --- prompts ----------------------------------------------------------------------------------
def test_prompt_round_trip():
    for s in target_subjects():
        assert parse_prompt(s.prompt) == s.spec
        assert s.spec.prompt == s.prompt
    for sp in random_specs(1, 300, include_targets=True):
        assert parse_prompt(sp.prompt) == sp
    assert parse_prompt("A Blue creature with glasses on snow") == Spec(
        "animal", "blue", accessory="glasses", accessory_color="black", background="snow")
    assert parse_prompt("an orange person with red glasses by a lake").prompt == \
        "an orange person with red glasses by a lake"


def test_unknown_word_error_names_it():
    with pytest.raises(ValueError, match="'dragon'"):
        parse_prompt("a blue dragon on snow")
    with pytest.raises(ValueError, match="background"):
        parse_prompt("a blue creature")
    with pytest.raises(ValueError, match="accessory"):
        Spec("building", "blue", accessory="scarf", accessory_color="red")
    with pytest.raises(ValueError, match="world"):
        render("a blue creature on snow", 0, "moon")


# --- subjects, splits, corpus -----------------------------------------------------------------
def test_subjects_and_splits():
    subs = target_subjects()
    assert len(subs) == 30 and len({s.prompt for s in subs}) == 30
    assert [sum(s.category == c for s in subs) for c in ("human", "animal", "building")] == [10, 10, 10]
    # no single word identifies a subject: every content word occurs in >= 2 subjects
    counts = {}
    for s in subs:
        for w in set(s.prompt.split()):
            counts[w] = counts.get(w, 0) + 1
    assert min(counts.values()) >= 2, [w for w, c in counts.items() if c < 2]
    assert SPLIT_SIZES == {"cg_train": 40, "cg_test": 10, "eg_train": 100, "eg_test": 30}
    for s in subs:
        seen = set()
        for sp in SPLITS:
            seeds = split_seeds(s.id, sp)
            assert len(seeds) == SPLIT_SIZES[sp] == len(set(seeds))
            assert not seen & set(seeds)
            seen |= set(seeds)
    with pytest.raises(ValueError):
        split_seeds("human_00", "train")
    with pytest.raises(KeyError):
        split_seeds("dragon_00", "cg_train")


def test_cloud_samples():
    s = target_subjects()[13]
    x = cloud_samples(s.id, "cg_test")
    assert x.shape == (10, 64, 64, 3) and x.dtype == np.uint8
    np.testing.assert_array_equal(x[:2], cloud_generate(s.prompt, split_seeds(s, "cg_test")[:2]))
    with pytest.raises(ValueError):
        cloud_samples(s.id, "eg_train")


def test_generic_corpus_excludes_targets_and_is_deterministic():
    prompts, imgs = generic_corpus(n=40, seed=0)
    assert imgs.shape == (40, 64, 64, 3) and imgs.dtype == np.uint8
    targets = {s.prompt for s in target_subjects()}
    assert not targets & set(prompts)
    p2, i2 = generic_corpus(n=40, seed=0)
    assert p2 == prompts
    np.testing.assert_array_equal(i2, imgs)
    specs = random_specs(0, 3000, include_targets=False)
    assert not set(specs) & target_specs()
    # all attribute values occur
    assert {s.pattern for s in specs} == set(PATTERNS)
    assert {s.background for s in specs} == set(BACKGROUNDS)
    assert {s.color for s in specs} == set(COLORS)
    assert {s.accessory for s in specs} == {a for v in ACCESSORIES.values() for a in v}


def test_training_batch_pure():
    p1, x1 = training_batch(0, 3, 4)
    p2, x2 = training_batch(0, 3, 4)
    p3, _ = training_batch(0, 4, 4)
    assert p1 == p2 and p1 != p3
    np.testing.assert_array_equal(x1, x2)


def test_random_specs_accepts_jax_key():
    jax = pytest.importorskip("jax")
    assert random_specs(jax.random.PRNGKey(3), 5) == random_specs(jax.random.key(3), 5)
    assert random_specs(jax.random.PRNGKey(3), 5) != random_specs(jax.random.PRNGKey(4), 5)


# --- tokenizer --------------------------------------------------------------------------------
def test_tokenizer_single_tokens_and_round_trip(tmp_path):
    d = V.write_tokenizer(tmp_path / "tok")
    for f in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        assert (d / f).read_bytes() == (V.TOKENIZER_DIR / f).read_bytes(), f"shipped {f} is stale"
    tok = V.load_tokenizer(d)
    assert len(tok) == V.vocab_size()
    assert tok.model_max_length == 77
    assert tok.pad_token == "!" and tok.pad_token_id == 0
    assert tok.bos_token == "<|startoftext|>" and tok.eos_token == "<|endoftext|>"
    vocab = json.loads((d / "vocab.json").read_text())
    ids = set()
    for w in prompt_words():
        t = tok(w, add_special_tokens=False).input_ids
        assert len(t) == 1, (w, t)
        assert t[0] == vocab[w + "</w>"]
        ids.add(t[0])
    assert len(ids) == len(prompt_words())
    for s in target_subjects():
        enc = tok(s.prompt, padding="max_length", max_length=77)
        n_words = len(s.prompt.split())
        assert enc.input_ids[0] == tok.bos_token_id and enc.input_ids[n_words + 1] == tok.eos_token_id
        assert enc.input_ids[n_words + 2:] == [0] * (77 - n_words - 2)
        assert tok.decode(enc.input_ids, skip_special_tokens=True) == s.prompt


def test_picture_without_model(tmp_path, capsys):
    from dekag_jax.world.picture import write_pictures
    paths = write_pictures(tmp_path, n=1, model=tmp_path / "no_model", categories=("building",))
    assert [p.name for p in paths] == ["world_building.png"] and paths[0].stat().st_size > 10_000
    assert "MISSING" in capsys.readouterr().err
