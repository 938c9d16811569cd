"""G-KA (dekag_jax.ka.gka, dekag_jax.ka.scg): S_CG, the eq. 8 / eq. 9 stages of MAKD and its
baselines, on the shipped tiny edge pipeline.

All training tests share one two-subject setup (metaword [2, 1, D], one LoRA set), so the step
functions compile once: single-subject runs are its S = 1 case."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dekag_jax.adapt import metaword
from dekag_jax.ka import gka
from dekag_jax.ka import scg as S

SUBJECTS = ("animal_00", "building_00")
N_PER = 8          # S_CG latents per subject used here (of 40): the test stays fast
TARGETS = r".*/attn[12]/to_(q|k|v|out\.0)/kernel"


@pytest.fixture(scope="module")
def setup():
    from dekag_jax.world.models import load_edge_pipeline

    pipe = load_edge_pipeline()
    scgs = [S.build_scg(pipe, s) for s in SUBJECTS]
    full = gka.make_data(pipe, scgs)
    keep = np.concatenate([np.flatnonzero(full.sid == i)[:N_PER] for i in range(len(SUBJECTS))])
    data = gka.Data(full.z[keep], full.sid[keep], full.ids)
    ev = gka.eval_batch(data, pipe, seed=7, repeats=2)
    mu0 = jnp.stack([metaword.init_metaword(jax.random.key(i), pipe.text_encoder.config.hidden_size)
                     for i in range(len(SUBJECTS))])  # [S, 1, D]
    adapters0, specs = gka.init_lora(pipe, jax.random.key(5), rank=8, alpha=8.0, targets=TARGETS)
    frozen = {"unet": pipe.unet_params, "text": pipe.text_params}
    return dict(pipe=pipe, scgs=scgs, data=data, ev=ev, mu0=mu0, adapters0=adapters0, specs=specs, frozen=frozen)


def _loss(st, trainable, frozen, specs=None):
    z, sid, t, noise = st["ev"]
    return float(gka.loss_fn_jit(st["pipe"], specs)(trainable, frozen, z, sid, jnp.asarray(st["data"].ids), t, noise))


def _copy(tree):
    return jax.tree.map(lambda x: np.array(x, copy=True), tree)


def _identical(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


@pytest.fixture(scope="module")
def metaword_stage(setup):
    st = setup
    before_frozen = _copy(st["frozen"])
    tr, hist = gka.train_stage(st["pipe"], st["data"], {"metaword": st["mu0"]}, st["frozen"], None,
                               epochs=4, batch=8, lr=2e-2, seed=0)
    return tr, hist, before_frozen


def test_scg_shapes_and_cache(setup, tmp_path):
    st = setup
    s = st["scgs"][0]
    assert s.train_latents.shape == (40, 8, 8, 4) and s.train_latents.dtype == np.float32
    assert s.train_images.shape == (40, 64, 64, 3) and s.test_images.shape == (10, 64, 64, 3)
    # a folder source holding the same images (PNG, lossless) gives the same S_CG
    from PIL import Image

    for split, imgs in (("cg_train", s.train_images), ("cg_test", s.test_images)):
        d = tmp_path / "cloud" / s.subject / split
        d.mkdir(parents=True)
        for i, im in enumerate(imgs):
            Image.fromarray(im).save(d / f"{i:03d}.png")
    f = S.build_scg(st["pipe"], s.subject, source=f"folder:{tmp_path / 'cloud'}", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(f.train_images, s.train_images)
    np.testing.assert_allclose(f.train_latents, s.train_latents, atol=1e-5)
    files = list((tmp_path / "cache").glob("*.npz"))
    assert len(files) == 1
    with np.load(files[0]) as z:
        np.testing.assert_array_equal(z["train_latents"], f.train_latents)
    with pytest.raises(ValueError, match="unknown S_CG source"):
        S.cloud_images("pixart", s.subject, "cg_train", 64)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        S.build_scg(st["pipe"], s.subject, source=f"folder:{tmp_path / 'nowhere'}")


def test_metaword_stage_lowers_loss_and_changes_only_the_embedding(setup, metaword_stage):
    st = setup
    tr, hist, before_frozen = metaword_stage
    assert set(tr) == {"metaword"} and tr["metaword"].shape == st["mu0"].shape
    base = _loss(st, {}, {**st["frozen"], "metaword": st["mu0"]})
    after = _loss(st, tr, st["frozen"])
    assert after < base * 0.98, (base, after)
    # eq. 8 trains the metaword alone: UNet and text encoder bit-identical (also not donated away)
    assert _identical(st["frozen"], before_frozen)
    assert not np.array_equal(np.asarray(tr["metaword"]), np.asarray(st["mu0"]))
    assert np.all(np.isfinite(hist))


def test_lora_stage_db_lowers_loss_with_metaword_frozen(setup):
    st = setup
    frozen = {**st["frozen"], "metaword": st["mu0"]}
    before = _copy(frozen)
    base = _loss(st, {}, frozen)
    tr, _ = gka.train_stage(st["pipe"], st["data"], {"lora": st["adapters0"]}, frozen, st["specs"],
                            epochs=4, batch=8, lr=3e-3, seed=0)
    after = _loss(st, tr, frozen, st["specs"])
    assert after < base * 0.98, (base, after)
    assert _identical(frozen, before)  # metaword, UNet and text encoder untouched
    # one adapter set for both subjects: exactly the spec'd kernels, nothing per subject
    assert set(tr["lora"]) == set(st["specs"])
    assert any(np.any(np.asarray(a["lora_B"]) != 0) for a in tr["lora"].values())


def test_makd_lowers_loss_below_its_metaword_stage(setup, metaword_stage):
    st = setup
    mu_star = metaword_stage[0]["metaword"]
    frozen = {**st["frozen"], "metaword": mu_star}
    base = _loss(st, {}, {**st["frozen"], "metaword": st["mu0"]})
    stage1 = _loss(st, {}, frozen)
    tr, _ = gka.train_stage(st["pipe"], st["data"], {"lora": st["adapters0"]}, frozen, st["specs"],
                            epochs=4, batch=8, lr=3e-3, seed=0)
    after = _loss(st, tr, frozen, st["specs"])
    assert after < stage1 < base, (base, stage1, after)


def test_multi_subject_metaword_rows_are_per_subject(setup):
    """A subject without samples in the data keeps its metaword row bit for bit (one row per
    subject, picked by the sample's subject index)."""
    st = setup
    d = st["data"]
    only0 = np.flatnonzero(d.sid == 0)
    data0 = gka.Data(np.concatenate([d.z[only0]] * 2), np.zeros(2 * len(only0), np.int32), d.ids)
    tr, _ = gka.train_stage(st["pipe"], data0, {"metaword": st["mu0"]}, st["frozen"], None,
                            epochs=1, batch=8, lr=2e-2, seed=0)
    assert not np.array_equal(np.asarray(tr["metaword"][0]), np.asarray(st["mu0"][0]))
    np.testing.assert_array_equal(np.asarray(tr["metaword"][1]), np.asarray(st["mu0"][1]))


def test_train_stage_refuses_bad_settings(setup):
    st = setup
    with pytest.raises(ValueError, match="lr="):
        gka.train_stage(st["pipe"], st["data"], {"metaword": st["mu0"]}, st["frozen"], None,
                        epochs=1, batch=8, lr=0.0, seed=0)


def test_config_variants_and_cli_errors(tmp_path, capsys):
    from dekag_jax.errors import cli_main

    cfg_path = os.path.join(os.path.dirname(__file__), "..", "configs", "gka.py")
    import importlib.util

    spec = importlib.util.spec_from_file_location("gka_cfg", cfg_path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for v in ("makd", "db_tuned", "ti", "db", "smoke"):
        c = mod.get_config(v)
        assert set(c.methods.split(",")) <= set(gka.METHODS)
        with pytest.raises(AttributeError):
            c.not_a_field = 1  # locked
    with pytest.raises(ValueError, match="variant"):
        mod.get_config("dreambooth")
    assert cli_main(gka.main, ["--workdir", str(tmp_path)]) == 2
    assert "--config is required" in capsys.readouterr().err
    assert cli_main(gka.main, ["--config", cfg_path + ":smoke"]) == 2
    assert "--workdir is required" in capsys.readouterr().err
    assert cli_main(gka.main, ["--config", cfg_path + ":smoke", "--workdir", str(tmp_path),
                               "--config.methods=lb,xx"]) == 2
    assert "unknown ['xx']" in capsys.readouterr().err


def _gka_config(variant="makd"):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "gka_cfg", os.path.join(os.path.dirname(__file__), "..", "configs", "gka.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, mod.get_config(variant)


def test_run_subject_trains_and_samples_db_with_its_own_settings(setup, monkeypatch):
    """config.db routes DB's train_stage (epochs, lr, batch) and its adapters/specs (rank, targets) into
    training and sampling; MAKD keeps config.lora; equal settings (the default) share one draw."""
    st = setup
    calls, gens, seen = {}, [], {}

    def fake_train(pipe, data, trainable, frozen, specs, *, epochs, batch, lr, seed, log=print):
        if "metaword" in trainable:          # eq. 8: mu* = mu0 + 1 tells MAKD's stage from DB's below
            seen["mu0"] = np.asarray(trainable["metaword"])
            return {"metaword": trainable["metaword"] + 1.0}, []
        name = "db" if np.array_equal(np.asarray(frozen["metaword"]), seen["mu0"]) else "makd"
        calls[name] = dict(specs=specs, epochs=epochs, batch=batch, lr=lr, trainable=trainable)
        return trainable, []

    class FakeGen:
        def __init__(self, pipe, specs, **kw):
            self.specs = specs

        def __call__(self, prompt, seeds, mu=None, adapters=None):
            gens.append((self.specs, adapters))
            return np.zeros((len(seeds), 8, 8, 3), np.float32)

    score = {n: {"mean": 0.0, "std": 0.0} for n in ("dino", "clip", "total")}
    monkeypatch.setattr(gka, "build_scg", lambda pipe, subject, **kw: st["scgs"][0])
    monkeypatch.setattr(gka, "train_stage", fake_train)
    monkeypatch.setattr(gka, "Generator", FakeGen)
    monkeypatch.setattr(gka, "_cached", lambda pipe, key, build: build())   # no cached real Generator
    monkeypatch.setattr(gka, "score_subject", lambda *a: dict(score))
    monkeypatch.setattr(gka, "loss_fn_jit", lambda pipe, specs=None: lambda *a: 0.0)

    mod, c = _gka_config("db_tuned")
    c.methods, c.eval.fid, c.eval.n_images, c.eval.loss_repeats = "db,makd", False, 1, 1
    c.db.rank, c.db.alpha, c.db.epochs, c.db.batch = 4, 4.0, 3, 16
    out = gka.run_subject(st["pipe"], None, "animal_00", c, log=lambda m: None)
    db, makd = calls["db"], calls["makd"]
    assert (db["epochs"], db["batch"], db["lr"]) == (3, 16, 1e-3)
    assert (makd["epochs"], makd["batch"], makd["lr"]) == (c.lora.epochs, c.lora.batch, c.lora.lr) == (5, 8, 1e-4)
    assert any("/ff/net.2/" in k for k in db["specs"]) and not any("/ff/" in k for k in makd["specs"])
    assert set(makd["specs"]) < set(db["specs"]) and set(db["trainable"]["lora"]) == set(db["specs"])
    assert all(np.shape(a["lora_A"])[-1] == 4 for a in db["trainable"]["lora"].values())
    assert all(np.shape(a["lora_A"])[-1] == 8 for a in makd["trainable"]["lora"].values())
    # each LoRA is sampled with its own specs
    assert [g[0] for g in gens] == [db["specs"], makd["specs"]]
    n = lambda ad: sum(np.size(v) for a in ad.values() for v in a.values())  # noqa: E731
    assert out["lora_params"] == {"db": n(db["trainable"]["lora"]), "makd": n(makd["trainable"]["lora"])}

    # the default: db.* == lora.*, one adapter draw and one spec set for both (as before db.* existed)
    calls.clear()
    gens.clear()
    _, c = _gka_config("makd")
    c.methods, c.eval.fid, c.eval.n_images, c.eval.loss_repeats = "db,makd", False, 1, 1
    assert c.db.to_dict() == c.lora.to_dict()
    gka.run_subject(st["pipe"], None, "animal_00", c, log=lambda m: None)
    assert calls["db"]["specs"] == calls["makd"]["specs"]
    assert _identical(calls["db"]["trainable"], calls["makd"]["trainable"])
    assert mod.WIDE_TARGETS != mod.ATTN_TARGETS == c.lora.targets
