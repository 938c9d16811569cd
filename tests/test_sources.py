"""Model sources (ka/sources.py) and S_CG from a diffusers text-to-image pipeline (ka/scg.py).

The test writes tiny random models with the reference libraries, as a user's real directories are
laid out: an SD2.1-base-style pipeline as the edge (diffusers ``StableDiffusionPipeline``), a
PixArt-Sigma pipeline as the cloud (``PixArtSigmaPipeline``: ``PixArtTransformer2DModel``, a tiny T5
encoder and tokenizer, a VAE with the SDXL scaling factor 0.13025, at 32 x 32, the edge 64 x 64),
and DINO (``ViTModel``) / CLIP (``CLIPModel``) judges at 32 x 32. ``tests/test_sd21.py`` reuses them.
"""
import json
import os
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

import jax.numpy as jnp  # noqa: E402

from dekag_jax.diffusion.generate import encode_images  # noqa: E402
from dekag_jax.ka import scg as scg_mod  # noqa: E402
from dekag_jax.ka import sources  # noqa: E402
from dekag_jax.weights.files import CheckpointError  # noqa: E402
from test_pipeline import write_tiny_tokenizer  # noqa: E402

CLOUD = {"steps": 1, "guidance": 4.5}
PROMPT = "a red cat on snow"


def write_tiny_edge(root: str) -> str:
    """A tiny SD2.1-base-style pipeline directory (linear projections, no upcast attention, gelu CLIP,
    '!' pad, epsilon): 8 x 8 x 4 latents and, as SD, a VAE downsampling 8x, so 64 x 64 images (the
    size of the tiny world's; below that an image holds no LDPC codeword at tau = 1/32)."""
    torch.manual_seed(0)
    tok_dir = os.path.join(str(root), "tok_src")
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
        upcast_attention=False)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(8, 8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=8, sample_size=64)
    with torch.no_grad():  # away from zero-inits, so every weight matters
        for m in (te, unet, vae):
            for p in m.parameters():
                p.add_(0.05 * torch.randn_like(p))
    sched = diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                    clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                                    prediction_type="epsilon")
    pipe = diffusers.StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sched,
                                             safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    out = os.path.join(str(root), "tiny_sd21_base")
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def write_tiny_pixart(root: str, sample_size: int = 16) -> str:
    """A tiny random PixArt-Sigma pipeline directory (images 2 * sample_size square)."""
    torch.manual_seed(1)
    words = "a the cat dog photo of red blue person creature building with on in scarf snow".split()
    vocab = ([("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("\u2581" + w, -float(i + 1)) for i, w in enumerate(words)]
             + [(c, -50.0) for c in "abcdefghijklmnopqrstuvwxyz_0123456789"])
    tok = transformers.T5Tokenizer(vocab=vocab, extra_ids=0)
    te = transformers.T5EncoderModel(transformers.T5Config(
        vocab_size=len(vocab), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    tr = diffusers.PixArtTransformer2DModel(
        sample_size=sample_size, num_layers=2, patch_size=2, attention_head_dim=8, num_attention_heads=3,
        caption_channels=32, in_channels=4, cross_attention_dim=24, out_channels=8, attention_bias=True,
        activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
        norm_elementwise_affine=False, norm_eps=1e-6)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8, sample_size=32,
        scaling_factor=0.13025)  # the SDXL VAE's, as PixArt-Sigma ships
    with torch.no_grad():
        for m in (te, tr, vae):
            for p in m.parameters():
                p.add_(0.05 * torch.randn_like(p))
    pipe = diffusers.PixArtSigmaPipeline(tokenizer=tok, text_encoder=te, vae=vae, transformer=tr,
                                         scheduler=diffusers.DDIMScheduler())
    out = os.path.join(str(root), "tiny_pixart")
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def write_tiny_judges(root: str) -> tuple[str, str]:
    """``(dino_dir, clip_dir)``: a ViTModel and a CLIPModel at 32 x 32 (safetensors)."""
    torch.manual_seed(2)
    tiny = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8)
    dino = transformers.ViTModel(transformers.ViTConfig(intermediate_size=48, **tiny), add_pooling_layer=False)
    clip = transformers.CLIPModel(transformers.CLIPConfig(
        text_config=dict(vocab_size=99, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, eos_token_id=3, hidden_act="gelu"),
        vision_config=dict(intermediate_size=48, hidden_act="gelu", **tiny), projection_dim=24))
    d, c = os.path.join(str(root), "dino"), os.path.join(str(root), "clip")
    dino.save_pretrained(d, safe_serialization=True)
    clip.save_pretrained(c, safe_serialization=True)
    return d, c


def fake_hf_cache(src: str, cache: str, repo: str, commit: str = "0123456789abcdef0123456789abcdef01234567") -> None:
    """Lay ``src`` out as the snapshot of ``repo`` in a Hugging Face hub cache folder."""
    repo_dir = os.path.join(cache, "models--" + repo.replace("/", "--"))
    shutil.copytree(src, os.path.join(repo_dir, "snapshots", commit))
    os.makedirs(os.path.join(repo_dir, "refs"), exist_ok=True)
    with open(os.path.join(repo_dir, "refs", "main"), "w") as f:
        f.write(commit)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    dino, clip = write_tiny_judges(root / "judges")
    return {"edge": write_tiny_edge(root / "edge"), "cloud": write_tiny_pixart(root / "cloud"),
            "dino": dino, "clip": clip, "root": root}


@pytest.fixture(scope="module")
def edge(tiny):
    return sources.load_edge(tiny["edge"])


_REF: dict = {}


def _reference_image(cloud_dir: str, seed: int, steps: int, guidance: float) -> np.ndarray:
    """One image straight from diffusers, one call per seed (what the cloud would produce alone)."""
    if cloud_dir not in _REF:
        _REF[cloud_dir] = diffusers.PixArtSigmaPipeline.from_pretrained(cloud_dir, dtype=torch.float32)
        _REF[cloud_dir].set_progress_bar_config(disable=True)
    pipe = _REF[cloud_dir]
    with torch.no_grad():
        x = pipe(PROMPT, num_inference_steps=steps, guidance_scale=guidance, output_type="np",
                 generator=torch.Generator("cpu").manual_seed(seed), use_resolution_binning=False,
                 clean_caption=False).images[0]
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def test_scg_from_diffusers_pixart(tiny, edge, tmp_path, monkeypatch):
    """S_CG from a diffusers PixArt-Sigma pipeline: the cloud's images for the subject's fixed seeds,
    resized to the edge resolution and encoded by the edge's f_LE (not the cloud's 0.13025 latents);
    cached on disk, the cache key following the cloud options."""
    scg_mod._MEMORY.clear()
    src = "diffusers:" + tiny["cloud"]
    s = scg_mod.build_scg(edge, "shiba", source=src, prompt=PROMPT, cache_dir=str(tmp_path), cloud=CLOUD)
    assert s.train_images.shape == (40, 64, 64, 3) and s.test_images.shape == (10, 64, 64, 3)
    assert s.train_latents.shape == (40, 8, 8, 4) and s.train_images.dtype == np.uint8
    assert s.train_images.std() > 1.0  # not a constant image

    # image i of the train split = the cloud's image of seed i, alone, resized 32 -> 64
    seeds = scg_mod.subject_seeds("shiba", "cg_train")
    for i in (0, 13):
        ref = _reference_image(tiny["cloud"], seeds[i], CLOUD["steps"], CLOUD["guidance"])
        assert ref.shape == (32, 32, 3)  # the cloud's own resolution
        want = scg_mod._resize_uint8(ref[None], 64)[0]
        assert np.abs(want.astype(int) - s.train_images[i].astype(int)).max() <= 1
    te_seeds = scg_mod.subject_seeds("shiba", "cg_test")
    assert not set(te_seeds) & set(seeds)
    ref = _reference_image(tiny["cloud"], te_seeds[3], CLOUD["steps"], CLOUD["guidance"])
    assert np.abs(scg_mod._resize_uint8(ref[None], 64)[0].astype(int) - s.test_images[3].astype(int)).max() <= 1

    # latents: the edge's encoder and scaling factor on those images
    want_z = np.asarray(encode_images(edge, jnp.asarray(s.train_images, jnp.float32) / 255.0))
    np.testing.assert_allclose(s.train_latents, want_z, rtol=1e-5, atol=1e-5)

    # disk cache: a fresh process reads the npz; other cloud options are another entry
    files = sorted(os.listdir(tmp_path))
    assert len(files) == 1 and files[0].startswith("scg_shiba_")
    scg_mod._MEMORY.clear()
    scg_mod._CLOUD.clear()
    again = scg_mod.build_scg(edge, "shiba", source=src, prompt=PROMPT, cache_dir=str(tmp_path), cloud=CLOUD)
    assert not scg_mod._CLOUD  # served from the cache: the cloud pipeline was not even loaded
    np.testing.assert_array_equal(again.train_latents, s.train_latents)
    calls = []

    def fake(target, prompt, seeds, **kw):  # generating again would cost another 50 images
        calls.append((prompt, kw))
        return np.zeros((len(seeds), 32, 32, 3), np.uint8)

    monkeypatch.setattr(scg_mod, "diffusers_images", fake)
    for change in ({"cloud": {**CLOUD, "steps": 2}}, {"cloud": {**CLOUD, "guidance": 7.5}}, {"prompt": "a dog"}):
        kw = {"prompt": PROMPT, "cloud": CLOUD, **change}
        scg_mod.build_scg(edge, "shiba", source=src, cache_dir=str(tmp_path), **kw)
    assert len(calls) == 6 and len(os.listdir(tmp_path)) == 4  # each change missed the cache (2 splits each)
    assert calls[0][1]["steps"] == 2 and calls[2][1]["guidance"] == 7.5 and calls[4][0] == "a dog"
    scg_mod._MEMORY.clear()
    scg_mod.build_scg(edge, "shiba", source=src, prompt=PROMPT, cache_dir=str(tmp_path),
                      cloud={**CLOUD, "device": "cpu"})  # where it runs is not part of the key
    assert len(calls) == 6


def test_scg_diffusers_from_hf_cache_and_errors(tiny, edge, tmp_path, monkeypatch):
    cache = str(tmp_path / "hub")
    fake_hf_cache(tiny["cloud"], cache, "tiny-org/tiny-pixart")
    monkeypatch.setenv("HF_HUB_CACHE", cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    scg_mod._MEMORY.clear()
    imgs = scg_mod.cloud_images("diffusers:hf:tiny-org/tiny-pixart", "animal_00", "cg_test", 24, prompt=PROMPT,
                                cloud=CLOUD)
    assert imgs.shape == (10, 24, 24, 3)
    # a tiny-world id keeps its world seeds
    from dekag_jax.world.splits import split_seeds
    assert scg_mod.subject_seeds("animal_00", "cg_test") == split_seeds("animal_00", "cg_test")
    with pytest.raises(CheckpointError, match="not in the local Hugging Face cache"):
        scg_mod.cloud_images("diffusers:hf:tiny-org/absent", "animal_00", "cg_test", 16, cloud=CLOUD)
    with pytest.raises(ValueError, match="unknown S_CG source"):
        scg_mod.build_scg(edge, "animal_00", source="pixart:/x")
    with pytest.raises(ValueError, match="nothing after"):
        scg_mod.check_source("diffusers:")
    with pytest.raises(ValueError, match="not a tiny-world subject: pass its prompt"):
        scg_mod.build_scg(edge, "shiba", source="diffusers:" + tiny["cloud"])
    # pickle-only weights are refused, never unpickled
    bad = tmp_path / "pickled"
    shutil.copytree(tiny["cloud"], bad)
    for f in (bad / "transformer").iterdir():
        if f.suffix == ".safetensors":
            f.rename(f.with_suffix(".bin"))
    scg_mod._CLOUD.clear()
    with pytest.raises(Exception, match="safetensors"):
        scg_mod.diffusers_images(str(bad), PROMPT, [1], steps=1)


def test_load_edge_dir_and_hf(tiny, edge, tmp_path, monkeypatch):
    assert edge.unet.config.sample_size == 8 and edge.prediction_type == "epsilon"
    assert scg_mod.edge_resolution(edge) == 64
    cache = str(tmp_path / "hub")
    fake_hf_cache(tiny["edge"], cache, "tiny-org/tiny-sd")
    monkeypatch.setenv("HF_HUB_CACHE", cache)
    p = sources.load_edge("hf:tiny-org/tiny-sd", components=("unet",))
    a, b = (jnp.concatenate([x.ravel() for x in __import__("jax").tree.leaves(q.unet_params)]) for q in (p, edge))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(FileNotFoundError, match="edge '/nonexistent/sd': no such directory"):
        sources.load_edge("/nonexistent/sd")
    with pytest.raises(CheckpointError, match="^edge: 'tiny-org/absent'"):
        sources.load_edge("hf:tiny-org/absent")


def test_load_judges_from_dirs(tiny):
    from dekag_jax.ka.gka import judge_feature_fns

    j = sources.load_judges(f"dino={tiny['dino']},clip={tiny['clip']}")
    assert j.tokenizer is None  # the tiny CLIP dir has no tokenizer files
    fns = judge_feature_fns(j)
    imgs = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), np.uint8)  # edge-sized: resized to 32
    for name, dim in (("dino", 32), ("clip", 24)):
        f = np.asarray(fns[name](imgs))
        assert f.shape == (3, dim) and np.allclose(np.linalg.norm(f, axis=-1), 1, atol=1e-5)
    for bad, msg in (("dino=/x", "missing \\['clip'\\]"), ("clip=/a,vit=/b", "expected 'world' or"),
                     (f"dino={tiny['dino']},clip=/nonexistent", "judges clip '/nonexistent': no such directory")):
        with pytest.raises((ValueError, FileNotFoundError), match=msg):
            sources.load_judges(bad)


def test_subject_prompts_and_codec(tmp_path):
    world = sources.subject_prompts("human_00,animal_00")
    assert list(world) == ["human_00", "animal_00"] and "person" in world["human_00"]
    assert len(sources.subject_prompts("all")) == 30
    mixed = sources.subject_prompts("human_00,shiba", "shiba=a Shiba plush toy")
    assert mixed["shiba"] == "a Shiba plush toy" and mixed["human_00"] == world["human_00"]
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"castle": "a stone castle", "human_00": "an old fisherman"}))
    assert sources.subject_prompts("castle,human_00", str(f)) == {"castle": "a stone castle",
                                                                    "human_00": "an old fisherman"}
    for subjects, prompts, msg in (("shiba", "", "has no prompt"), ("human_00", "shibe=x", "not among the subjects"),
                                   ("a,a", "a=x", "more than once"), ("a b", "a b=x", "letters, digits"),
                                   ("", "", "empty"), ("a", "a", "is not 'name=prompt'"),
                                   ("a", str(tmp_path / "no.json"), "does not exist")):
        with pytest.raises((ValueError, FileNotFoundError), match=msg):
            sources.subject_prompts(subjects, prompts)
    s1, s2 = sources.subject_seeds("castle", "eg_train"), sources.subject_seeds("castle", "eg_test")
    assert len(s1) == 100 and len(s2) == 30 and not set(s1) & set(s2) and max(s1 + s2) < 2 ** 31
    assert s1 == sources.subject_seeds("castle", "eg_train") != sources.subject_seeds("tower", "eg_train")

    _, _, what2 = sources.load_codec("world", (8, 8))
    assert what2.endswith("jscc_mt")
    with pytest.raises(ValueError, match="init:paper"):
        sources.load_codec("init:huge", (8, 8))
    with pytest.raises(FileNotFoundError, match="no such directory"):
        sources.load_codec("/nonexistent/codec", (8, 8))


@pytest.mark.slow
def test_paper_size_codec():
    """``init:paper``: f_JE + reconstructor of about 1 M parameters at SD2.1-base's 64 x 64 latents
    (a codec init takes ~20 s on the shared 2-core CPU, so slow); ``random`` = ``init:tiny``."""
    import jax

    assert "random init (tiny" in sources.load_codec("random", (8, 8))[2]

    codec, params, what = sources.load_codec("init:paper", (64, 64))
    n = sum(np.size(x) for x in jax.tree.leaves(params))
    assert "random init (paper" in what and 0.8e6 < n < 1.2e6
