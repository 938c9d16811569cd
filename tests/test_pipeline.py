"""load_pipeline / save_pipeline / text_to_latents against diffusers' StableDiffusionPipeline.

A tiny random SD2-style pipeline (v_prediction, linear-projection attention with upcast, gelu
CLIP, "!" pad token) is built with diffusers/transformers, perturbed away from its zero-inits and
saved with ``save_pretrained(safe_serialization=True)``; everything is compared from the same
initial noise.
"""
import json
import os
import shutil

import numpy as np
import pytest

import jax

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from dekag_jax.diffusion.generate import decode_latents, encode_images, text_to_latents  # noqa: E402
from dekag_jax.errors import UnsupportedConfigError  # noqa: E402
from dekag_jax.weights.files import CheckpointError  # noqa: E402
from dekag_jax.weights.pipeline import load_pipeline, save_pipeline  # noqa: E402
from transformers.convert_slow_tokenizer import bytes_to_unicode  # noqa: E402

PROMPTS = ["the cat", "a dog"]
STEPS = 5
GUIDANCE = 7.5


def write_tiny_tokenizer(d, pad_token="!"):
    """A CLIP BPE tokenizer folder (vocab.json, merges.txt, configs) with a 521-token vocab."""
    os.makedirs(d, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    merges = [("t", "h"), ("th", "e</w>"), ("a", "t</w>"), ("c", "at</w>"), ("o", "g</w>"), ("d", "og</w>")]
    vocab = chars + [c + "</w>" for c in chars] + [a + b for a, b in merges] + ["<|startoftext|>", "<|endoftext|>"]
    with open(os.path.join(d, "vocab.json"), "w") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f)
    with open(os.path.join(d, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": pad_token}
    with open(os.path.join(d, "special_tokens_map.json"), "w") as f:
        json.dump(special, f)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({**special, "model_max_length": 77, "tokenizer_class": "CLIPTokenizer", "do_lower_case": True}, f)
    return len(vocab)


def build_tiny_pipeline(root, prediction_type="v_prediction"):
    torch.manual_seed(0)
    tok_dir = os.path.join(root, "tok_src")
    n_vocab = write_tiny_tokenizer(tok_dir)
    tok = transformers.CLIPTokenizer.from_pretrained(tok_dir)
    te = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=n_vocab, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, hidden_act="gelu", projection_dim=32, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=(2, 4), use_linear_projection=True, norm_num_groups=8,
        upcast_attention=True)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8, sample_size=16)
    with torch.no_grad():  # away from zero-inits, so every weight matters
        for m in (te, unet, vae):
            for p in m.parameters():
                p.add_(0.05 * torch.randn_like(p))
    sched = diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                    clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                                    prediction_type=prediction_type)
    pipe = diffusers.StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sched,
                                             safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    out = os.path.join(root, "tiny_sd")
    pipe.save_pretrained(out, safe_serialization=True)
    return pipe, out


def run_diffusers(pipe, latents_nchw, output_type):
    with torch.no_grad():
        return pipe(PROMPTS, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                    latents=torch.from_numpy(latents_nchw), output_type=output_type).images


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("sd"))
    ref, path = build_tiny_pipeline(root)
    lat = np.random.default_rng(0).standard_normal((2, 4, 8, 8)).astype(np.float32)
    want = run_diffusers(ref, lat, "latent").numpy()
    want_img = run_diffusers(ref, lat, "np")
    ours = load_pipeline(path)
    got = np.asarray(text_to_latents(ours, PROMPTS, jax.random.key(0), num_steps=STEPS, guidance_scale=GUIDANCE,
                                     latents=lat.transpose(0, 2, 3, 1)))
    return dict(root=root, path=path, ref=ref, lat=lat, want=want, want_img=want_img, ours=ours, got=got)


def test_text_to_latents_matches_diffusers(world):
    got, want = world["got"].transpose(0, 3, 1, 2), world["want"]
    assert np.abs(want).max() > 1.0  # a real signal, not ~0
    np.testing.assert_allclose(got, want, atol=2e-4, rtol=1e-4)


def test_decode_and_encode_match_diffusers(world):
    ours, ref = world["ours"], world["ref"]
    img = np.asarray(decode_latents(ours, world["got"]))
    assert img.shape == (2, 16, 16, 3) and img.min() >= 0 and img.max() <= 1
    np.testing.assert_allclose(img, world["want_img"], atol=1e-4)
    z = np.asarray(encode_images(ours, img))
    with torch.no_grad():
        want = ref.vae.encode(torch.from_numpy(img.transpose(0, 3, 1, 2) * 2 - 1)).latent_dist.mean.numpy()
    np.testing.assert_allclose(z.transpose(0, 3, 1, 2), want * ref.vae.config.scaling_factor, atol=1e-5)
    zs = np.asarray(encode_images(ours, img, key=jax.random.key(1)))
    assert zs.shape == z.shape and 0 < np.abs(zs - z).max()


def test_text_to_latents_defaults_and_ids(world):
    ours = world["ours"]
    ids = ours.tokenizer(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="np").input_ids
    a = text_to_latents(ours, ids, jax.random.key(0), num_steps=STEPS, latents=world["lat"].transpose(0, 2, 3, 1))
    np.testing.assert_allclose(np.asarray(a), world["got"], atol=1e-6)  # same compiled function, same numbers
    with pytest.raises(ValueError, match="latents"):
        text_to_latents(ours, PROMPTS, jax.random.key(0), num_steps=STEPS, latents=np.zeros((2, 4, 8, 8)))


def test_save_pipeline_loads_in_diffusers(world, tmp_path):
    out = str(tmp_path / "saved")
    save_pipeline(world["ours"], out)
    index = json.load(open(os.path.join(out, "model_index.json")))
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert index["tokenizer"] == ["transformers", "CLIPTokenizer"]
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"]
    assert index["safety_checker"] == [None, None] and index["requires_safety_checker"] is False
    for f in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        assert os.path.isfile(os.path.join(out, "tokenizer", f)), f
    reloaded = diffusers.StableDiffusionPipeline.from_pretrained(out)
    reloaded.set_progress_bar_config(disable=True)
    np.testing.assert_allclose(run_diffusers(reloaded, world["lat"], "latent").numpy(), world["want"],
                               atol=1e-5, rtol=1e-5)
    # the classic vocab.json + merges.txt alone give the same tokens (older transformers read only these)
    classic = str(tmp_path / "classic_tok")
    shutil.copytree(os.path.join(out, "tokenizer"), classic, ignore=shutil.ignore_patterns("tokenizer.json"))
    t2 = transformers.CLIPTokenizer.from_pretrained(classic)
    assert t2(PROMPTS).input_ids == world["ours"].tokenizer(PROMPTS).input_ids
    assert t2.pad_token == "!"


def _fake_hf_cache(world, cache, repo="tiny-org/tiny-sd", commit="0123456789abcdef0123456789abcdef01234567"):
    repo_dir = os.path.join(cache, "models--" + repo.replace("/", "--"))
    shutil.copytree(world["path"], os.path.join(repo_dir, "snapshots", commit))
    os.makedirs(os.path.join(repo_dir, "refs"))
    with open(os.path.join(repo_dir, "refs", "main"), "w") as f:
        f.write(commit)
    return repo


def test_repo_id_resolves_offline_in_hf_cache(world, tmp_path, monkeypatch):
    cache = str(tmp_path / "hub")
    repo = _fake_hf_cache(world, cache)
    monkeypatch.setenv("HF_HUB_CACHE", cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    p = load_pipeline(repo, components=("unet",))
    assert p.vae is None and p.tokenizer is None
    assert p.source.startswith(cache)
    a = jax.tree.leaves(p.unet_params)
    b = jax.tree.leaves(world["ours"].unet_params)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    with pytest.raises(CheckpointError, match="not in the local Hugging Face cache"):
        load_pipeline("tiny-org/absent-model")


def _copy(world, tmp_path, name):
    d = str(tmp_path / name)
    shutil.copytree(world["path"], d)
    return d


def test_error_missing_component(world, tmp_path):
    d = _copy(world, tmp_path, "no_unet")
    shutil.rmtree(os.path.join(d, "unet"))
    with pytest.raises(CheckpointError, match="unet/"):
        load_pipeline(d)
    os.remove(os.path.join(d, "model_index.json"))
    with pytest.raises(CheckpointError, match="model_index.json"):
        load_pipeline(d)
    with pytest.raises(CheckpointError, match="no such directory"):
        load_pipeline(str(tmp_path / "nowhere" / "x"))


def test_error_pickle_only(world, tmp_path):
    d = _copy(world, tmp_path, "bin_only")
    os.remove(os.path.join(d, "vae", "diffusion_pytorch_model.safetensors"))
    with open(os.path.join(d, "vae", "diffusion_pytorch_model.bin"), "wb") as f:
        f.write(b"not unpickled")
    with pytest.raises(CheckpointError, match="pickle"):
        load_pipeline(d, components=("vae",))


def test_error_unsupported_config_names_component_and_field(world, tmp_path):
    d = _copy(world, tmp_path, "bad_cfg")
    cfg_path = os.path.join(d, "unet", "config.json")
    cfg = json.load(open(cfg_path))
    cfg["class_embed_type"] = "timestep"
    json.dump(cfg, open(cfg_path, "w"))
    with pytest.raises(UnsupportedConfigError, match=r"unet: .*class_embed_type"):
        load_pipeline(d, components=("unet",))
    sched_path = os.path.join(d, "scheduler", "scheduler_config.json")
    s = json.load(open(sched_path))
    s["prediction_type"] = "flow"
    json.dump(s, open(sched_path, "w"))
    with pytest.raises(UnsupportedConfigError, match=r"scheduler: .*prediction_type"):
        load_pipeline(d, components=())
    idx_path = os.path.join(d, "model_index.json")
    idx = json.load(open(idx_path))
    idx["text_encoder_2"] = ["transformers", "CLIPTextModelWithProjection"]
    json.dump(idx, open(idx_path, "w"))
    with pytest.raises(UnsupportedConfigError, match="text_encoder_2"):
        load_pipeline(d, components=())


def test_variant_files(world, tmp_path):
    d = str(tmp_path / "variant")
    world["ref"].save_pretrained(d, safe_serialization=True, variant="fp16")  # names only: weights stay fp32
    assert os.path.isfile(os.path.join(d, "unet", "diffusion_pytorch_model.fp16.safetensors"))
    p = load_pipeline(d, variant="fp16", components=("unet", "text_encoder"))
    for a, b in ((p.unet_params, world["ours"].unet_params), (p.text_params, world["ours"].text_params)):
        assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    with pytest.raises(CheckpointError, match="variant"):
        load_pipeline(world["path"], variant="fp16", components=("unet",))


@pytest.mark.slow
def test_epsilon_trailing_no_guidance_matches_diffusers(tmp_path):
    ref, path = build_tiny_pipeline(str(tmp_path), prediction_type="epsilon")
    ref.scheduler = diffusers.DDIMScheduler.from_config(ref.scheduler.config, timestep_spacing="trailing")
    ref.scheduler.save_pretrained(os.path.join(path, "scheduler"))
    lat = np.random.default_rng(3).standard_normal((2, 4, 8, 8)).astype(np.float32)
    with torch.no_grad():
        want = ref(PROMPTS, num_inference_steps=4, guidance_scale=1.0, latents=torch.from_numpy(lat),
                   output_type="latent").images.numpy()
    ours = load_pipeline(path)
    got = text_to_latents(ours, PROMPTS, jax.random.key(0), num_steps=4, guidance_scale=1.0,
                          latents=lat.transpose(0, 2, 3, 1))
    np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), want, atol=2e-4, rtol=1e-4)
    # default size: unet sample_size (8) * vae_scale_factor (2) = 16 px -> 8x8 latents
    z = text_to_latents(ours, PROMPTS, jax.random.key(1), num_steps=2, guidance_scale=1.0)
    assert z.shape == (2, 8, 8, 4) and np.isfinite(np.asarray(z)).all()
