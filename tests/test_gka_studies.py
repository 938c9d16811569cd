"""G-KA generation and studies: ``gka.Generator`` (latents z0 and their decoding), FID/KID of the
G-KA table, and ``ka/gka_studies`` (Fig. 7 multi-subject, Fig. 8 depth, Fig. 9 rank vs bits) at a tiny
scale (1-2 epochs, 2 images, 2 DDIM steps: wiring and bookkeeping, not the numbers)."""
import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dekag_jax.adapt import metaword
from dekag_jax.ka import gka
from dekag_jax.ka import gka_studies as GS



ROOT = os.path.join(os.path.dirname(__file__), "..")


def _config(variant="smoke", **over):
    spec = importlib.util.spec_from_file_location("gka_cfg", os.path.join(ROOT, "configs", "gka.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config(variant)
    c.metaword.epochs, c.lora.epochs, c.db.epochs, c.eval.n_images, c.eval.num_steps = 1, 1, 1, 2, 2
    for k, v in over.items():
        sec, f = k.split("__")
        setattr(c[sec], f, v)
    return c


@pytest.fixture(scope="module")
def pipe():
    from dekag_jax.world.models import load_edge_pipeline

    return load_edge_pipeline()


@pytest.fixture(scope="module")
def fns():
    from dekag_jax.world.models import load_judges

    return gka.judge_feature_fns(load_judges())


@pytest.fixture(scope="module")
def gen(pipe):
    # the studies' own cached generator for the test config (its LoRA specs, 2 steps, guidance
    # 7.5), so the multi-subject test below reuses these compilations
    c = _config()
    _, specs = GS._init_lora(pipe, c, jax.random.key(1))
    return GS._generator(pipe, specs, c.eval.num_steps, c.eval.guidance)


def test_latents_then_decode_equals_call_and_a_direct_ddim(pipe, gen):
    from dekag_jax.diffusion.generate import sample_latents, vae_decode

    seeds, prompt = [11, 12, 13], "a photo"
    z0 = gen.latents(prompt, seeds)
    ss, c = pipe.unet.config.sample_size, pipe.unet.config.in_channels
    assert z0.shape == (3, ss, ss, c) and z0.dtype == np.float32
    imgs = gen(prompt, seeds)
    np.testing.assert_array_equal(imgs, gen.decode(z0))  # __call__ = decode(latents), bit for bit
    assert imgs.shape == (3, ss * pipe.vae.downsample_factor, ss * pipe.vae.downsample_factor, 3)
    # against an independent DDIM program from the same noise (chunking must not change anything)
    z_T = jnp.stack([jax.random.normal(jax.random.key(s), (ss, ss, c), jnp.float32) for s in seeds])
    enc = lambda p: pipe.text_encoder.apply({"params": pipe.text_params},  # noqa: E731
                                            jnp.asarray(pipe.tokenize([p] * 3), jnp.int32))["last_hidden_state"]
    ref = jax.jit(lambda ctx, unc, z: sample_latents(pipe.unet, pipe.unet_params, ctx, unc, z, jax.random.key(0),
                                                     schedule=pipe.schedule, num_steps=2, guidance_scale=7.5))(
        enc(prompt), enc(""), z_T)
    np.testing.assert_allclose(z0, np.asarray(ref), atol=2e-4 * float(np.abs(ref).max()))
    np.testing.assert_allclose(imgs, np.asarray(vae_decode(pipe.vae, pipe.vae_params, ref)), atol=2e-3)
    assert gen.latents(prompt, []).shape == (0, ss, ss, c) and gen.decode(z0[:0]).shape[0] == 0


def test_latents_with_metaword_and_lora_differ_and_decode(pipe, gen):
    adapters, _ = GS._init_lora(pipe, _config(), jax.random.key(1))
    adapters = jax.tree.map(lambda x: x + 0.05, adapters)  # a nonzero B, so the LoRA changes the model
    mu = metaword.init_metaword(jax.random.key(2), pipe.text_encoder.config.hidden_size)
    plain = gen.latents("a photo", [1, 2])
    both = gen.latents("a photo", [1, 2], mu, adapters)
    assert np.abs(plain - both).max() > 1e-3
    np.testing.assert_array_equal(gen("a photo", [1, 2], mu, adapters), gen.decode(both))


def _score_keys(sc):
    assert set(sc) >= {"dino", "clip", "total"}
    for k in ("dino", "clip", "total"):
        assert np.isfinite(sc[k]["mean"]) and sc[k]["std"] >= 0


def test_fid_kid_of_the_table_and_the_ub_cloud_set(pipe, fns):
    from dekag_jax.ka.scg import build_scg
    from dekag_jax.metrics import fid_from_features, kid_from_features
    from dekag_jax.world.splits import split_seeds

    scg = build_scg(pipe, "animal_00")
    ref = gka.fid_reference(scg)
    assert ref.shape == (50, 64, 64, 3) and ref.dtype == np.uint8
    # the UB's cloud images are rendered exactly as S_CG's: at the cg_test seeds they ARE the test set
    np.testing.assert_array_equal(gka.ub_cloud_images(scg, split_seeds("animal_00", "cg_test")), scg.test_images)
    ub = gka.ub_cloud_images(scg, split_seeds("animal_00", "eg_test")[:12])
    d = gka.distribution_scores(fns, ub, ref, seed=3)
    fa, fb = np.asarray(fns["dino"](ub)), np.asarray(fns["dino"](ref))
    assert d["fid"] == pytest.approx(fid_from_features(fa, fb), rel=1e-6)
    k = kid_from_features(fa, fb, seed=3)
    assert d["kid"]["mean"] == pytest.approx(k.mean, rel=1e-6, abs=1e-9) and d["kid"]["subset_size"] == 12
    # a different distribution (another subject's cloud images) is farther than the subject's own
    other = gka.fid_reference(build_scg(pipe, "building_00"))[:12]
    assert gka.distribution_scores(fns, other, ref)["fid"] > d["fid"]
    with pytest.raises(ValueError, match="judge 'inception'"):
        gka.distribution_scores(fns, ub, ref, judge="inception")
    folder = gka.SCG("x", "p", "folder:/nowhere", scg.train_latents, scg.train_images, scg.test_images)
    assert gka.ub_cloud_images(folder, [1, 2]) is None


def _check_multi(pipe, c, out, info):
    assert set(out) == {"human_00", "animal_00"}
    for row in out.values():
        assert set(row) == {"multi_lora", "makd", "multi_makd"}
        for sc in row.values():
            _score_keys(sc)
    _, specs = GS._init_lora(pipe, c, jax.random.key(0))
    for name in ("multi_lora", "multi_makd"):
        ad = info["adapters"][name]  # exactly one LoRA set, the single-subject structure
        assert set(ad) == set(specs)
        assert all(np.asarray(a["lora_A"]).shape[-1] == c.lora.rank for a in ad.values())
        assert any(np.any(np.asarray(a["lora_B"]) != 0) for a in ad.values())
    mus = info["metawords"]
    assert mus["multi_makd"].shape == mus["multi_lora"].shape == (2, 1, pipe.text_encoder.config.hidden_size)
    json.dumps(out)  # the contract piece is JSON-safe


def test_run_multi_holds_one_adapter_set_and_s_metawords(pipe, fns, gen):
    """Per-subject MAKD handed in (as the main job would): only the two shared LoRA sets train."""
    c = _config("multi")
    dim = pipe.text_encoder.config.hidden_size
    ad, _ = GS._init_lora(pipe, c, jax.random.key(3))
    ad = jax.tree.map(lambda x: np.asarray(x) + 0.01, ad)
    given = {s: {"metaword": np.asarray(metaword.init_metaword(jax.random.key(10 + i), dim)), "lora": ad}
             for i, s in enumerate(("human_00", "animal_00"))}
    info = {}
    out = GS.run_multi(pipe, fns, ["human_00", "animal_00"], c, per_subject=given, info=info, log=lambda m: None)
    _check_multi(pipe, c, out, info)
    assert not any(k.startswith(("metaword_", "lora_human", "lora_animal")) for k in info["seconds"])
    # multi-subject MAKD uses the subject-specific metawords as given, row by row; DB-style keeps the random init
    for i, s in enumerate(("human_00", "animal_00")):
        np.testing.assert_array_equal(np.asarray(info["metawords"]["multi_makd"][i]), given[s]["metaword"])
    assert not np.allclose(np.asarray(info["metawords"]["multi_makd"]), np.asarray(info["metawords"]["multi_lora"]))
    with pytest.raises(ValueError, match="two or more distinct"):
        GS.run_multi(pipe, fns, ["human_00", "human_00"], c)


@pytest.mark.slow
def test_run_multi_trains_everything(pipe, fns):
    c = _config("multi")
    info = {}
    out = GS.run_multi(pipe, fns, ["human_00", "animal_00"], c, info=info, log=lambda m: None)
    _check_multi(pipe, c, out, info)
    assert {"metaword_human_00", "lora_animal_00", "lora_multi_makd"} <= set(info["seconds"])
    # the per-subject MAKD is run_subject's: the same seeds give the same metaword as a direct eq. 8 run
    s = GS._Subject(pipe, "animal_00", c)
    mu = GS._train_metaword(pipe, s.data, s.mu0, s.frozen, c, s.seed)
    np.testing.assert_allclose(np.asarray(info["metawords"]["multi_makd"][1]), np.asarray(mu[0]), atol=1e-6)


@pytest.mark.slow
def test_depth_study_scores_checkpoints_and_picks_from_held_out_images(pipe, fns):
    c = _config()
    info = {}
    d = GS.depth_study(pipe, fns, "animal_00", c, metaword_epochs=(0, 1, 2), lora_epochs=(0, 1), n_heldout=8,
                       info=info, log=lambda m: None)
    assert [r["epoch"] for r in d["metaword"]] == [0, 1, 2] and [r["epoch"] for r in d["lora"]] == [0, 1]
    for rows in (d["metaword"], d["lora"]):
        for r in rows:
            assert {"epoch", "dino", "clip", "total", "heldout_loss", "heldout_total"} <= set(r)
            assert r["total"] == pytest.approx(r["dino"] + r["clip"], rel=1e-5)
    assert d["chosen"]["metaword"] == GS.pick_depth(d["metaword"])
    assert d["chosen"]["lora"] == GS.pick_depth(d["lora"])
    # the metaword trains: its held-out eq. 6 loss falls from the random start (epoch 0)
    assert d["metaword"][-1]["heldout_loss"] < d["metaword"][0]["heldout_loss"]
    # the LoRA's epoch 0 is the chosen metaword alone (B = 0): the same images, the same scores
    mw = next(r for r in d["metaword"] if r["epoch"] == d["chosen"]["metaword"])
    assert d["lora"][0]["total"] == pytest.approx(mw["total"], rel=1e-4)
    assert set(info["test_best"]) == {"metaword", "lora"}
    json.dumps(d)


def test_pick_depth():
    rows = [{"epoch": 0, "heldout_total": 1.0}, {"epoch": 5, "heldout_total": 1.2}, {"epoch": 9, "heldout_total": 1.2}]
    assert GS.pick_depth(rows) == 5
    with pytest.raises(ValueError, match="no rows"):
        GS.pick_depth([])


@pytest.mark.slow
def test_rank_bits_study_rows_and_bytes(pipe, fns):
    from dekag_jax.adapt import quant

    c = _config()
    rows = GS.rank_bits_study(pipe, fns, "animal_00", c, ranks=(1, 2), bits=(16, 2), log=lambda m: None)
    assert [(r["rank"], r["bits"]) for r in rows] == [(0, 16), (1, 16), (2, 16), (2, 2)]
    mwb = 2 * pipe.text_encoder.config.hidden_size
    assert rows[0]["bytes"] == mwb and rows[0]["lora_bytes"] == 0
    ad, _ = GS._init_lora(pipe, c, jax.random.key(0), rank=2)
    assert rows[2]["lora_bytes"] == quant.fp16_bytes(ad) and rows[3]["lora_bytes"] == quant.payload_bytes(ad, 2)
    assert rows[1]["lora_bytes"] * 2 == rows[2]["lora_bytes"]  # rank 1 = half of rank 2 in float16
    assert all(r["bytes"] == mwb + r["lora_bytes"] for r in rows)
    assert rows[3]["bytes"] < rows[2]["bytes"]
    for r in rows:
        assert np.isfinite(r["total"])
    with pytest.raises(ValueError, match="bits 3"):
        GS.rank_bits_study(pipe, fns, "animal_00", c, bits=(3,))


def test_studies_cli_errors(tmp_path, capsys):
    from dekag_jax.errors import cli_main

    spec = importlib.util.spec_from_file_location("gka_studies_cli", os.path.join(ROOT, "scripts", "gka_studies.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = os.path.join(ROOT, "configs", "gka.py")
    assert cli_main(mod.main, ["--config", cfg]) == 2
    assert "--out is required" in capsys.readouterr().err
    assert cli_main(mod.main, ["--config", cfg, "--out", str(tmp_path / "x.json"), "--study", "fig7,fig6"]) == 2
    assert "unknown ['fig6']" in capsys.readouterr().err
    assert cli_main(mod.main, ["--config", cfg + ":nope", "--out", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists()


@pytest.mark.slow
def test_gka_table_has_fid_and_kid_for_every_method(tmp_path):
    c = _config("smoke")
    res = gka.run(c, str(tmp_path), log=lambda m: None)
    sc = res["per_subject"]["animal_00"]["scores"]
    assert set(sc) == set(gka.METHODS)
    for m, x in sc.items():
        assert np.isfinite(x["fid"]) and x["fid"] >= 0 and np.isfinite(x["kid"]["mean"]), m
        assert x["kid"]["subset_size"] == 2 and x["judge"] == "dino"
    assert "| FID | KID |" in gka.format_table(res)
