"""T-KA studies (dekag_jax/ka/tka_studies.py) and the Figs. 10-13 command (dekag_jax/evaluate.py)."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dekag_jax.ka import tka
from dekag_jax.ka import tka_studies as ts
from dekag_jax.ka.objective import LossWeights
from dekag_jax.ka.transmission import LinkConfig, decode_latents
from dekag_jax.models.jscc import JSCCCodec, JSCCConfig
from dekag_jax.models.vae import AutoencoderKL, VAEConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRID = ((2, 6), (0.0, 20.0), (30e-9,))
LIGHT = LossWeights(latent=1.0, image=10.0, perceptual=0.0, constellation=0.05)


def _feat_a(images):     # a hand-checkable "judge": mean colour plus one pixel, [b, 4]
    im = np.asarray(images, np.float64)
    return np.concatenate([im.mean(axis=(1, 2)), im[:, :1, :1, 0].reshape(len(im), 1) + 0.1], axis=1)


def _feat_b(images):
    im = np.asarray(images, np.float64)
    return im[:, 0, :, 1] + 0.05          # first row's green channel, [b, W]


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_received_scores_equal_hand_computed_cosines():
    rng = np.random.default_rng(0)
    rx = rng.random((2, 3, 4, 4, 3)).astype(np.float16)          # C = 2 conditions, N = 3 images
    cloud = (rng.random((2, 4, 4, 3)) * 255).astype(np.uint8)   # M = 2
    cl = cloud.astype(np.float64)        # the toy judges see uint8 as given
    fns = {"dino": _feat_a, "clip": _feat_b}
    score, per = ts.received_scores(fns, rx, cloud, per_condition=True)
    pairs = {n: np.array([[[_cos(fn(rx[c, i:i + 1].astype(np.float32))[0], fn(cl[j:j + 1])[0]) for j in range(2)]
                           for i in range(3)] for c in range(2)]) for n, fn in fns.items()}   # [C, N, M]
    tot = pairs["dino"] + pairs["clip"]
    for n, v in (("dino", pairs["dino"]), ("clip", pairs["clip"]), ("total", tot)):
        assert score[n]["mean"] == pytest.approx(v.mean(), abs=1e-12)
        assert score[n]["std"] == pytest.approx(v.std(), abs=1e-12)
        assert score[n]["n_pairs"] == 12
        for c in range(2):
            assert per[c][n]["mean"] == pytest.approx(v[c].mean(), abs=1e-12)
            assert per[c][n]["std"] == pytest.approx(v[c].std(), abs=1e-12)
    one = ts.received_scores(fns, rx[1], cloud)                  # [N, H, W, 3]: one condition
    assert one["total"]["mean"] == pytest.approx(tot[1].mean(), abs=1e-12)
    with pytest.raises(ValueError, match="received images"):
        ts.received_scores(fns, rx[0, 0], cloud)


def test_fit_slopes_recovers_a_known_line_and_bpp():
    assert ts.bpp_of("2/64") == pytest.approx(0.1875) and ts.bpp_of(6 / 64) == pytest.approx(0.5625)
    pts = []
    for tau, icpt in (("2/64", 20.0), ("4/64", 23.0), ("6/64", 24.5)):     # rate shifts the line: fixed effects
        for snr in (0.0, 5.0, 10.0, 15.0, 20.0):
            pts.append({"scheme": "cala", "snr_db": snr, "bpp": ts.bpp_of(tau), "psnr": icpt + 0.34 * snr,
                        "fid": (40.0 - 5 * icpt / 20) * 1.09 ** (-snr)})
    pts.append({"scheme": "noka", "snr_db": 0.0, "bpp": 0.1875, "psnr": 99.0, "fid": 1.0})   # other scheme ignored
    s = ts.fit_slopes(pts, "cala")
    assert s["psnr_db_per_db"] == pytest.approx(0.34, abs=1e-9)
    assert s["fid_pct_per_db"] == pytest.approx(9.0, abs=1e-6)
    with pytest.raises(ValueError, match="two or more SNRs"):
        ts.fit_slopes([p for p in pts if p["snr_db"] == 0.0])


@pytest.fixture(scope="module")
def tiny():
    codec = JSCCCodec(config=JSCCConfig(block_out_channels=(16,), norm_num_groups=4))
    cp = jax.jit(codec.init)(jax.random.key(0), jnp.zeros((1, 4, 4, 4)))["params"]
    vae = AutoencoderKL(config=VAEConfig(down_block_types=("DownEncoderBlock2D",) * 2,
                                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
                                         norm_num_groups=4, scaling_factor=0.5, sample_size=8))
    vp = jax.jit(vae.init)(jax.random.key(1), jnp.zeros((1, 8, 8, 3)), jax.random.key(2))["params"]
    z = jax.random.normal(jax.random.key(3), (4, 4, 4, 4))
    x = jax.jit(lambda p, z: decode_latents(vae, p, z))(vp, z)
    return codec, cp, vae, vp, np.asarray(z), np.asarray(x)


@pytest.mark.slow   # two training-step compiles (about 35 s of CPU here)
def test_fig11_flops_ratios_fullft_is_one_and_lora_below(tiny):
    codec, cp, vae, vp, z, x = tiny
    tcfg = {"epochs": 1, "batch": 2, "lr": 1e-3}
    rows = ts.fig11_data(codec, cp, vae, vp, z, x, z, x, grid=GRID, eval_grid=GRID, weights=LIGHT, tcfg=tcfg,
                         link=LinkConfig(), ranks=(1,), methods=("lora",), train=False)
    got = {r["method"]: r for r in rows}
    assert set(got) == {"lora", "fullft"} and all(r["rank"] == 1 for r in rows)
    assert got["fullft"]["flops_ratio"] == 1.0 and got["fullft"]["update_ratio"] == 1.0
    assert 0 < got["lora"]["flops_ratio"] < 1 and 0 < got["lora"]["update_ratio"] < 1
    for r in rows:   # XLA's compiled count and the jaxpr count (matmul + conv + elementwise) agree on CPU
        assert r["flops_jaxpr"] < r["flops"]
        assert r["flops_jaxpr_xla_like"] == pytest.approx(r["flops"], rel=0.2)
    # Full-FT's ratio is its own compiled step counted twice: exactly 1, and lower ranks cost less
    assert got["fullft"]["flops"] > got["lora"]["flops"] > 0


def test_fig12_points_from_an_evaluation(tiny):
    codec, cp, vae, vp, z, x = tiny
    s = tka.make_setup("noka", codec, cp, vae, vp)
    grid = ((2, 6), (0.0, 20.0), (30e-9, 3000e-9))
    ev = tka.evaluate(s, {}, tka.frozen_tree(cp, vp), z, x, grid=grid, chunk=8, return_images=True)
    d = ts.fig12_data({"noka": ev}, x, feature_fn=_feat_a, slope_scheme="noka", kid_subsets=5)
    pts = d["points"]
    assert [(p["snr_db"], p["bpp"]) for p in pts] == [(0.0, 0.1875), (0.0, 0.5625), (20.0, 0.1875), (20.0, 0.5625)]
    for p in pts:
        assert p["n"] == 2 * len(z) and p["fid"] >= 0 and np.isfinite(p["kid"])   # both delay spreads pooled
    # a point's PSNR is the mean over its delay spreads of tka.evaluate's per-condition PSNR
    want = np.mean([c["psnr"] for c in ev["conditions"] if c["snr_db"] == 20.0 and c["tau"] == "6/64"])
    assert pts[-1]["psnr"] == pytest.approx(want)
    # per-image PSNRs from the float16 images average to evaluate's float32 PSNR within 1e-2 dB
    ps = ts.psnr_per_image(ev["images"], x[None])
    assert ps.shape == (8, len(z))
    assert np.allclose(ps.mean(axis=1), [c["psnr"] for c in ev["conditions"]], atol=1e-2)
    assert set(d["slopes"]) >= {"psnr_db_per_db", "fid_pct_per_db"}


def test_received_subset_is_the_main_jobs_draw():
    grid = ((2, 3, 4, 5, 6), (0.0, 5.0, 10.0, 15.0, 20.0), (30e-9, 300e-9, 3000e-9))
    conds = [(u, s, w) for u in grid[0] for s in grid[1] for w in grid[2]]
    got = ts.received_subset(grid, 5, 1234)
    # dekag_jax.train's draw: default_rng(eval.seed).choice(C, K, replace=False), sorted
    want = [conds[i] for i in sorted(np.random.default_rng(1234).choice(75, 5, replace=False).tolist())]
    assert got == want and len(set(got)) == 5
    assert ts.received_subset(grid, 0, 1234) == conds and ts.received_subset(grid, 99, 1) == conds


def test_fig10_eq5_on_a_subset_and_a_rerun_reuses_the_cells(tiny, tmp_path):
    """No-KA cells (no training): eq. 5 on K = 2 of 4 conditions; the second call reads every cell back
    from its entry file (no evaluation) with the same numbers; other test latents re-evaluate."""
    codec, cp, vae, vp, z, x = tiny
    cloud = (np.random.default_rng(0).random((2, 8, 8, 3)) * 255).astype(np.uint8)
    data = {"s": {"z_train": z, "x_train": x, "z_test": z, "x_test": x, "cloud_test": cloud}}
    rx = ts.received_subset(GRID, 2, 0)
    kw = dict(methods=("noka",), vae=vae, vae_params=vp, grid=GRID, weights=LIGHT, tcfg={"epochs": 1, "batch": 2,
              "lr": 1e-3}, link=LinkConfig(), feature_fns={"dino": _feat_a, "clip": _feat_b}, chunk=8,
              ckpt_dir=str(tmp_path), received_conditions=rx)
    out, _ = ts.fig10_data({"c": (codec, cp, "src@1")}, data, **kw)
    e = out["c"]["s"]["noka"]
    assert e["received_conditions"] == 2 and e["scores"]["dino"]["n_pairs"] == 2 * len(z) * len(cloud)
    assert e["n_conditions"] == 4 and "evaluation_reused" not in e      # PSNR over the whole grid
    again, _ = ts.fig10_data({"c": (codec, cp, "src@1")}, data, **kw)
    a = again["c"]["s"]["noka"]
    assert a["evaluation_reused"] and a["psnr"] == e["psnr"] and a["dino"] == e["dino"]
    other = {"s": {**data["s"], "z_test": z[:2], "x_test": x[:2]}}
    b = ts.fig10_data({"c": (codec, cp, "src@1")}, other, **kw)[0]["c"]["s"]["noka"]
    assert "evaluation_reused" not in b and b["scores"]["dino"]["n_pairs"] == 2 * 2 * len(cloud)


@pytest.mark.slow   # the codec's evaluation and the LDPC decoder compile (about 25 s of CPU here)
def test_fig13_two_images_one_condition_schema():
    from dekag_jax.ka.codec_io import load_codec
    from dekag_jax.world.models import load_edge_pipeline

    pipe = load_edge_pipeline(components=("vae",))
    codec, cp, _ = load_codec(os.path.join(ROOT, "dekag_jax/world/assets/jscc/jscc_mt"))
    z = np.asarray(jax.random.normal(jax.random.key(5), (2, 8, 8, 4)) * 0.8)
    x = np.asarray(jax.jit(lambda p, z: decode_latents(pipe.vae, p, z))(pipe.vae_params, z))
    setup = tka.make_setup("cala", codec, cp, pipe.vae, pipe.vae_params)
    trainable = tka.init_method(setup, jax.random.key(0), cp, pipe.vae_params)    # zero-init CALA = the codec
    rows = ts.fig13_data(setup, trainable, tka.frozen_tree(cp, pipe.vae_params), z, x, snrs_db=(20.0,),
                         delay_spreads_ns=(30.0,), rates=("6/64",), seed=0)
    assert [r["scheme"] for r in rows] == ["cala", "jpeg_ldpc", "latent_ldpc"]
    for r in rows:
        assert set(r) >= {"scheme", "snr_db", "delay_spread_ns", "spp", "psnr_mean", "psnr_std", "n"}
        assert r["snr_db"] == 20.0 and r["delay_spread_ns"] == 30.0 and r["spp"] == pytest.approx(6 / 64)
        assert r["n"] == 2 and 5.0 < r["psnr_mean"] < 60.0 and r["psnr_std"] >= 0
    json.dumps(rows)
    with pytest.raises(ValueError, match="unknown schemes"):
        ts.fig13_data(setup, trainable, {}, z, x, schemes=("jpeg",))


def test_evaluate_cli_refuses_bad_config(tmp_path, capsys):
    from dekag_jax import evaluate
    from dekag_jax.errors import cli_main

    cfg = os.path.join(ROOT, "configs/tka_figures.py:smoke")
    for extra, msg in ((["--config.figures=fig10,fig99"], "fig99"), (["--config.subjects=nobody"], "nobody"),
                       (["--config.codecs=/nonexistent"], "no directory"), (["--config.methods=noka,lora"], "cala"),
                       (["--config.fig13.rates=9/64"], "9/64")):
        rc = cli_main(evaluate.main, ["--config", cfg, "--workdir", str(tmp_path / "w"), *extra])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.startswith("error:") and msg in err and "\n" not in err, (extra, err)
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_smoke_command_writes_json_tables_and_pngs(tmp_path):
    """The whole command at the smoke variant (minutes on the 2-core CPU: S_EG, three trainings and
    their compiles, LDPC decoders)."""
    from dekag_jax import evaluate
    from dekag_jax.errors import cli_main

    wd = tmp_path / "run"
    rc = cli_main(evaluate.main, ["--config", os.path.join(ROOT, "configs/tka_figures.py:smoke"), "--workdir", str(wd)])
    assert rc == 0
    res = json.loads((wd / "tka_figures.json").read_text())
    cells = res["tka"]["jscc_mt"]["human_00"]
    assert set(cells) == {"noka", "cala"}
    for e in cells.values():
        assert {"psnr", "dino", "clip", "by_snr", "by_rate", "by_delay_spread", "update_params", "update_bytes",
                "ratio"} <= set(e) and e["dino"] is not None
    assert {r["method"] for r in res["fig11"]} == {"cala", "fullft"}
    assert res["fig12"]["points"] and "psnr_db_per_db" in res["fig12"]["slopes"]
    assert {r["scheme"] for r in res["fig13"]["human_00"]} == set(ts.SCHEMES)
    assert "Fig. 10" in (wd / "tka_figures.md").read_text()
    for f in ("fig10", "fig11", "fig12", "fig13"):
        assert (wd / "figures" / f"{f}.png").stat().st_size > 1000
    # a second run reuses the trained checkpoints
    rc = cli_main(evaluate.main, ["--config", os.path.join(ROOT, "configs/tka_figures.py:smoke"), "--workdir", str(wd),
                                  "--config.figures=fig10"])
    assert rc == 0
    again = json.loads((wd / "tka_figures.json").read_text())["tka"]["jscc_mt"]["human_00"]["cala"]
    assert again["train"]["reused"] and again["psnr"] == pytest.approx(cells["cala"]["psnr"], abs=1e-6)
