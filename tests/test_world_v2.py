"""Tiny world version 2: the extended prompts of the paper's Fig. 6 (interaction phrases appended to
a subject's prompt), behind an explicit world version so that version 1 (the default) is unchanged.

Version 1's renders are pinned by tests/test_render_split.py's golden hashes; here: its vocabulary
and tokenizer, the v2 grammar, vocabulary and tokenizer, the two worlds' different drawings of
the new words, and that no target subject's prompt (S_CG) or corpus subject carries them.
"""
import filecmp

import numpy as np
import pytest

from dekag_jax.world import render as R
from dekag_jax.world import vocab as V
from dekag_jax.world.corpus import generic_corpus, random_specs, training_batch
from dekag_jax.world.spec import INTERACTION_PHRASES, INTERACTIONS, Spec, hidden_details, parse_prompt
from dekag_jax.world.subjects import target_specs, target_subjects

NEW_WORDS = {"next", "to", "holding", "ball", "balloon"}


def test_version1_vocabulary_and_tokenizer_unchanged(tmp_path):
    assert V.words() == V.words(version=1) == R.prompt_words()
    assert not NEW_WORDS & set(V.words(1))
    assert set(V.words(2)) == set(V.words(1)) | NEW_WORDS
    for v in (1, 2):   # the shipped copies are what write_tokenizer makes
        d = V.write_tokenizer(tmp_path / f"v{v}", version=v)
        for f in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
            assert filecmp.cmp(d / f, V.TOKENIZER_DIRS[v] / f, shallow=False), (v, f)
    assert V.TOKENIZER_DIRS[1] == V.TOKENIZER_DIR
    assert V.vocab_size(2) > V.vocab_size(1)   # new words and the merges that build them
    with pytest.raises(ValueError, match="world version 3"):
        V.write_tokenizer(tmp_path / "v3", version=3)


def test_v2_tokenizer_one_token_per_word():
    tok = V.load_tokenizer(version=2)
    for w in V.words(2):
        assert tok.tokenize(w) == [w + "</w>"], w
    p = "an orange and black striped creature with a red hat by a lake next to a blue ball"
    assert len(tok(p)["input_ids"]) == len(p.split()) + 2


def test_v2_prompts_round_trip_and_version1_refuses():
    specs = random_specs(3, 400, include_targets=True, version=2)
    seen = {(s.category, s.interaction) for s in specs}
    assert seen == {(c, i) for c, opts in INTERACTIONS.items() for i in opts}
    for sp in specs:
        assert parse_prompt(sp.prompt, version=2) == sp
        assert sp.prompt.startswith(sp.base.prompt)       # appended after the background phrase
        assert sp.version == (1 if sp.interaction == "none" else 2)
        if sp.interaction == "none":
            assert "interaction" not in sp.to_dict() and Spec.from_dict(sp.to_dict()) == sp
        else:
            assert Spec.from_dict(sp.to_dict()) == sp
            with pytest.raises(ValueError, match="version 2"):
                parse_prompt(sp.prompt)                     # version 1 is the default
    sp = parse_prompt("a green person in a city holding a yellow balloon", version=2)
    assert (sp.interaction, sp.interaction_color, sp.background) == ("balloon", "yellow", "city")
    assert parse_prompt("a red creature on snow next to ball", version=2).interaction_color == "red"
    assert parse_prompt("a red creature on snow next to an orange ball", version=2).prompt == \
        "a red creature on snow next to an orange ball"


@pytest.mark.parametrize("prompt, match", [
    ("a gray building on snow holding a red balloon", "building cannot be holding"),
    ("a red person on snow holding a red ball", "balloon"),
    ("a red person on snow next a red ball", "next to"),
    ("a red person next to a red ball", "background"),
    ("a red person on snow next to a red ball by a lake", "at the end"),
])
def test_v2_bad_prompts_say_what_is_wrong(prompt, match):
    with pytest.raises(ValueError, match=match):
        parse_prompt(prompt, version=2)


def test_spec_validation_and_version_checks():
    with pytest.raises(ValueError, match="not available for category 'building'"):
        Spec("building", "red", interaction="balloon", interaction_color="red")
    with pytest.raises(ValueError, match="interaction_color"):
        Spec("human", "red", interaction="ball")
    v2 = Spec("human", "red", interaction="ball", interaction_color="blue")
    with pytest.raises(ValueError, match="pass version=2"):
        R.render_batch([v2], [0])                           # a version-1 pipeline refuses it
    with pytest.raises(ValueError, match="unknown world version"):
        R.render(v2, 0, version=3)
    assert R.render(v2, 0, version=2).shape == (64, 64, 3)


def test_interaction_changes_only_the_object_and_keeps_hidden_marks():
    """Same seed with and without the phrase: only the object's pixels change (the seed's other
    draws are untouched); a Spec without interaction renders the same bytes under both versions;
    a target subject keeps its stored hidden marks when extended."""
    for subj in (target_subjects()[0], target_subjects()[10], target_subjects()[20]):
        base = subj.spec
        assert subj.prompt == base.prompt and base.version == 1
        ext = base.replace(interaction="ball", interaction_color="red")
        assert hidden_details(ext) == hidden_details(base)
        assert hidden_details(ext.prompt) == hidden_details(base)
        for world in R.WORLDS:
            a = R.render_batch([base] * 3, [5, 6, 7], world)
            assert np.array_equal(a, R.render_batch([base] * 3, [5, 6, 7], world, version=2))
            b = R.render_batch([ext] * 3, [5, 6, 7], world, version=2)
            changed = (np.abs(a.astype(int) - b.astype(int)).max(-1) > 24).mean(axis=(1, 2))
            assert (changed > 0.008).all() and (changed < 0.12).all(), (subj.id, world, changed)


def _object_pixels(spec, seeds, world):
    """Pixels (RGB float [k, 3]) and their (row, col) where the interaction changed the image."""
    a = R.render_batch([spec.base] * len(seeds), seeds, world).astype(np.float32) / 255
    b = R.render_batch([spec] * len(seeds), seeds, world, version=2).astype(np.float32) / 255
    m = np.abs(a - b).max(-1) > 0.1
    return b[m], np.argwhere(m)


def test_edge_and_cloud_draw_the_new_words_differently():
    # ball: plain with a small highlight (edge) vs a beach ball with a white band and cap (cloud)
    ball = parse_prompt("a blue person on grass next to a red ball", version=2)
    white = {}
    for world in R.WORLDS:
        px, _ = _object_pixels(ball, list(range(20)), world)
        white[world] = float(np.mean(px.min(-1) > 0.8))
    assert white["cloud"] > 2 * white["edge"] and white["cloud"] > 0.08, white
    # balloon: round (edge) vs taller oval (cloud): height/width of the balloon-coloured pixels
    balloon = parse_prompt("a blue person on grass holding a yellow balloon", version=2)
    aspect = {}
    for world in R.WORLDS:
        ratios = []
        for seed in range(8):
            px, rc = _object_pixels(balloon, [seed], world)
            col = R.color_rgb("yellow", world)
            sel = rc[np.abs(px - col).max(-1) < 0.2]
            ratios.append((np.ptp(sel[:, 1]) + 1) / (np.ptp(sel[:, 2]) + 1))
        aspect[world] = float(np.median(ratios))
    assert aspect["cloud"] > 1.15 * aspect["edge"], aspect
    # the colour words keep their two readings (the palettes)
    assert not np.allclose(R.color_rgb("red", "edge"), R.color_rgb("red", "cloud"))


def test_no_target_prompt_or_corpus_subject_carries_an_interaction():
    targets = target_specs()
    for s in target_subjects():
        assert not NEW_WORDS & set(s.prompt.split()) and s.spec.interaction == "none"
    specs = random_specs(11, 3000, include_targets=False, version=2)
    assert all(sp.base not in targets for sp in specs)
    assert 0.3 < np.mean([sp.interaction != "none" for sp in specs]) < 0.75
    prompts, imgs = generic_corpus(24, seed=1, version=2)
    assert imgs.shape == (24, 64, 64, 3) and any(set(p.split()) & NEW_WORDS for p in prompts)
    assert all(parse_prompt(p, version=2).base not in targets for p in prompts)
    p1, i1 = training_batch(0, 3, 6)
    p2, i2 = training_batch(0, 3, 6, version=1)
    assert p1 == p2 and np.array_equal(i1, i2) and not any(set(p.split()) & NEW_WORDS for p in p1)
    assert INTERACTION_PHRASES["ball"] == ("next", "to")
