"""Quality gates of the tiny world's shipped models (dekag_jax/world/assets/), and gates that can fail.

Every gate is a function of images (``dekag_jax.world.gates.check_*``) returning value, threshold
and pass/fail; thresholds and the measurements they come from are in gates.py. Each gate is run
on the real images (must pass) and on uniform noise, all-grey images and the wrong subject's
images (must fail), so a gate that cannot fail is itself a failing test.
"""
import json
import os
import struct

import numpy as np
import pytest

from dekag_jax.world import gates, models
from dekag_jax.world.splits import cloud_samples
from dekag_jax.world.subjects import target_subjects

# Reduced settings for the default run (the README numbers use gates.py's defaults).
N_PER_SUBJECT, STEPS, GUIDANCE, N_PSNR = 1, 20, 5.0, 32
KINDS = ("real", "noise", "grey", "wrong")


@pytest.fixture(scope="module")
def pipe():
    return models.load_edge_pipeline()


@pytest.fixture(scope="module")
def judges():
    return models.load_judges()


@pytest.fixture(scope="module")
def data(pipe):
    from dekag_jax.diffusion.generate import decode_latents, encode_images

    subs = target_subjects()
    edge, edge_lab = gates.edge_samples(pipe, subs, n_per_subject=N_PER_SUBJECT, num_steps=STEPS,
                                        guidance_scale=GUIDANCE)
    ct = np.concatenate([cloud_samples(s, "cg_test")[:5] for s in subs])
    cr = np.concatenate([cloud_samples(s, "cg_train")[:5] for s in subs])
    lab5 = np.repeat(np.arange(len(subs)), 5)
    held = {w: gates.heldout_images(w, N_PSNR) for w in ("edge", "cloud")}
    recon = {w: np.asarray(decode_latents(pipe, encode_images(pipe, gates._as01(x))))
             for w, x in held.items()}
    return dict(edge=edge, edge_lab=edge_lab, ct=ct, cr=cr, lab5=lab5, held=held, recon=recon)


def _other_subject(images, labels):
    """Each image replaced by the image in the same slot of the next subject."""
    labels = np.asarray(labels)
    S = labels.max() + 1
    out = np.empty_like(images)
    for s in range(S):
        src = np.flatnonzero(labels == (s + 1) % S)
        dst = np.flatnonzero(labels == s)
        out[dst] = images[src[np.arange(dst.size) % src.size]]
    return out


def _variant(kind, images, labels=None, seed=0):
    x = gates._as01(images)
    if kind == "real":
        return np.asarray(x)
    if kind == "noise":
        return np.random.default_rng(seed).uniform(0, 1, x.shape).astype(np.float32)
    if kind == "grey":
        return np.full(x.shape, 0.5, np.float32)
    if labels is None:   # unlabelled sets: another image of the set (a different render)
        return np.roll(np.asarray(x), 1, axis=0)
    return _other_subject(np.asarray(x), labels)


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
    # Every shipped tensor is stored as float16 (read from the safetensors headers), and the sizes
    # stay what that storage gives: the edge world (pipeline + judges) 13.5 MB, each JSCC codec
    # 1.15 MB (RC-JSCC 1.19 MB). The bounds leave about 10% for a retrained model, not for a float32 file.
    sizes = {}
    for d, _, fs in os.walk(root):
        for f in fs:
            if f.endswith(".safetensors"):
                path = os.path.join(d, f)
                with open(path, "rb") as fh:
                    header = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))
                dtypes = {v["dtype"] for k, v in header.items() if k != "__metadata__"}
                assert dtypes == {"F16"}, f"{path}: stored as {sorted(dtypes)}, not float16"
                sizes[os.path.relpath(path, root)] = os.path.getsize(path)
    world = sum(v for k, v in sizes.items() if not k.startswith("jscc"))
    codecs = {k: v for k, v in sizes.items() if k.startswith("jscc")}
    assert world < 15e6, f"edge pipeline and judges are {world / 1e6:.1f} MB (float16 gives about 13.5 MB)"
    # JSCC(MT), JSCC(AT), RC-JSCC, VJ-MAE (RC-JSCC's modulation and policy add 21 k parameters)
    assert sorted(os.path.dirname(k) for k in codecs) == [os.path.join("jscc", n) for n in
                                                          ("jscc_at", "jscc_mt", "rc_jscc", "vj_mae")], codecs
    assert all(v < 1.3e6 for v in codecs.values()), codecs


@pytest.mark.parametrize("kind", KINDS)
def test_vae_reconstructs_both_worlds(data, kind):
    # Reconstructions replaced by noise / grey / another image must fail the gate.
    for w in ("edge", "cloud"):
        g = gates.check_vae_psnr(data["held"][w], _variant(kind, data["recon"][w]), w)
        assert g.passed == (kind == "real"), (kind, g)


@pytest.mark.parametrize("kind", KINDS)
def test_samples_match_their_prompts(data, judges, kind):
    # Top-1 among the 30 target prompts by the CLIP judge; chance = 1/30 = 3.3%.
    g = gates.check_prompt_top1(judges, _variant(kind, data["edge"], data["edge_lab"]),
                                data["edge_lab"], "edge")
    assert g.passed == (kind == "real"), (kind, g)
    g = gates.check_prompt_top1(judges, _variant(kind, data["ct"], data["lab5"]), data["lab5"], "cloud")
    assert g.passed == (kind == "real"), (kind, g)


@pytest.mark.parametrize("kind", KINDS)
def test_judges_separate_subjects(data, judges, kind):
    # Separation does not change when subjects are consistently relabelled (as it should not):
    # "wrong subject" here means each image swapped with one of ANOTHER subject chosen per image
    # (a fixed permutation of all images), so each label's group mixes subjects.
    x = data["ct"]
    if kind == "wrong":
        x = x[np.random.default_rng(1).permutation(len(x))]
    else:
        x = _variant(kind, x, data["lab5"])
    for name in ("dino", "clip"):
        g = gates.check_subject_separation(judges, x, data["lab5"], name)
        assert g.passed == (kind == "real"), (kind, g)


@pytest.mark.parametrize("kind", KINDS)
def test_alignment_gap_exists(data, judges, kind):
    # eq. 5 (DINO-score + CLIP-score): edge-model samples vs cloud test images is clearly below
    # cloud vs cloud, so G-KA has a gap to close; and the samples are of their own subject.
    g = gates.check_alignment_gap(judges, _variant(kind, data["edge"], data["edge_lab"]),
                                  data["edge_lab"], data["ct"], data["lab5"], data["cr"], data["lab5"])
    assert g.passed == (kind == "real"), (kind, g)
    if kind == "real":
        ec, cc = g.detail["edge_vs_cloud"], g.detail["cloud_vs_cloud"]
        assert cc["dino"] > ec["dino"] and cc["clip"] > ec["clip"], (ec, cc)
    else:
        assert not g.detail["own_subject_ok"], g   # noise has a gap too: the subject check fails it


def test_separation_and_top1_on_hand_made_features():
    # Unit vectors (scaled: the statistic normalises), labels [0, 0, 1, 1]. Same-subject pairs
    # (i != j): cos = 0.6 each; different-subject pairs: 0, 0.8, 0.8, 0.96 -> mean 0.64.
    f = np.array([[1, 0], [0.6, 0.8], [0, 1], [0.8, 0.6]]) * np.array([[2.0], [1.0], [3.0], [0.5]])
    same, diff = gates.subject_separation(f, [0, 0, 1, 1])
    assert abs(same - 0.6) < 1e-6 and abs(diff - 0.64) < 1e-6, (same, diff)
    # Top-1: image i's nearest prompt; prompts are the two axes.
    prompts = np.eye(2)
    assert gates.prompt_top1(f, np.array([0, 1, 1, 1]), prompts) == 0.75  # the last is wrong
