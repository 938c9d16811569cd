"""Quality gates of the tiny world's shipped models (dekag_jax/world/assets/).

One measurement pass (dekag_jax.world.gates.measure_all, reduced sample counts) feeds every test.
Thresholds sit below the values measured when the models were trained (see
assets/training/gates.json and the README), with margins for the reduced sample counts here;
each gate fails for an untrained model (random-init values noted per test where they are close).
"""
import json
import os

import pytest

from dekag_jax.world import gates, models

# Reduced settings for the default run (the README numbers use gates.py's defaults).
N_PER_SUBJECT, STEPS, GUIDANCE, N_PSNR = 1, 20, 5.0, 32

# Thresholds, against the values measured at these settings on the shipped models (2-core CPU,
# 2026-11-23): PSNR edge 20.95 / cloud 18.36 dB; top-1 edge 0.833 (25/30) / cloud 1.0; separation
# (same - different) DINO 0.720, CLIP 0.912; consistency edge-vs-cloud 1.266 vs cloud-vs-cloud
# 1.859 (gap 0.593). Random-init models give ~8-9 dB, top-1 near chance (1/30), DINO separation
# 0.48 and CLIP separation 0.31 (measured with the same architectures).
VAE_PSNR_MIN = {"edge": 19.5, "cloud": 17.0}
EDGE_TOP1_MIN = 0.6       # 18x chance (1/30)
CLOUD_TOP1_MIN = 0.9
SEPARATION_MIN = {"dino": 0.65, "clip": 0.7}
GAP_MIN = 0.45


@pytest.fixture(scope="module")
def pipe():
    return models.load_edge_pipeline()


@pytest.fixture(scope="module")
def judges():
    return models.load_judges()


@pytest.fixture(scope="module")
def measured(pipe, judges):
    return gates.measure_all(pipe, judges, n_per_subject=N_PER_SUBJECT, num_steps=STEPS, guidance_scale=GUIDANCE,
                             n_psnr=N_PSNR)


def test_assets_layout():
    root = models.ASSETS_DIR
    pipe_dir = root / "edge_pipeline"
    idx = json.loads((pipe_dir / "model_index.json").read_text())
    assert idx["_class_name"] == "StableDiffusionPipeline"
    for comp, f in (("unet", "diffusion_pytorch_model.safetensors"), ("vae", "diffusion_pytorch_model.safetensors"),
                    ("text_encoder", "model.safetensors"), ("tokenizer", "vocab.json"),
                    ("scheduler", "scheduler_config.json")):
        assert (pipe_dir / comp / f).is_file(), f"{comp}/{f} missing"
    sched = json.loads((pipe_dir / "scheduler" / "scheduler_config.json").read_text())
    assert sched["_class_name"] == "DDIMScheduler"
    assert (sched["steps_offset"], sched["set_alpha_to_one"], sched["clip_sample"]) == (1, False, False)
    assert (sched["beta_schedule"], sched["timestep_spacing"], sched["prediction_type"]) == \
        ("scaled_linear", "leading", "epsilon")
    unet_cfg = json.loads((pipe_dir / "unet" / "config.json").read_text())
    assert unet_cfg["use_linear_projection"] is True and isinstance(unet_cfg["attention_head_dim"], list)
    te_cfg = json.loads((pipe_dir / "text_encoder" / "config.json").read_text())
    assert te_cfg["hidden_act"] == "gelu" and te_cfg["max_position_embeddings"] == 77
    assert unet_cfg["cross_attention_dim"] == te_cfg["hidden_size"]
    for j in ("dino", "clip"):
        assert (root / "judges" / j / "model.safetensors").is_file()
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs
                if f.endswith(".safetensors"))
    assert total < 15e6, f"shipped weights are {total / 1e6:.1f} MB (float16 storage gives about 13 MB)"


def test_vae_reconstructs_both_worlds(measured):
    # Measured at training time (64 held-out images per world): see assets/training/gates.json.
    psnr = measured["vae_psnr_db"]
    assert psnr["edge"] > VAE_PSNR_MIN["edge"], psnr
    assert psnr["cloud"] > VAE_PSNR_MIN["cloud"], psnr


def test_edge_samples_match_their_prompts(measured):
    # Top-1 among the 30 target prompts by the CLIP judge; chance = 1/30 = 3.3%.
    assert measured["edge_prompt_top1"] >= EDGE_TOP1_MIN, measured["edge_prompt_top1"]
    assert measured["cloud_prompt_top1"] >= CLOUD_TOP1_MIN, measured["cloud_prompt_top1"]


def test_judges_separate_subjects(measured):
    for name in ("dino", "clip"):
        sep = measured[f"{name}_separation_cloud"]
        assert sep["same"] - sep["different"] > SEPARATION_MIN[name], (name, sep)


def test_alignment_gap_exists(measured):
    # eq. 5 (DINO-score + CLIP-score): edge-model samples vs cloud test images is clearly below
    # cloud vs cloud, so G-KA has a gap to close.
    ec = measured["consistency_edge_vs_cloud"]
    cc = measured["consistency_cloud_vs_cloud"]
    assert cc["total"] - ec["total"] > GAP_MIN, (ec, cc)
    assert cc["dino"] > ec["dino"] and cc["clip"] > ec["clip"], (ec, cc)

