"""Single-file checkpoints in the original Stable Diffusion layout (weights/single_file.py).

The test writes a tiny random pipeline in the original LDM layout itself (the inverse mapping
below, diffusers -> LDM, written here independently of the loader), checks that diffusers' own
``from_single_file(path, config=<the tiny pipeline directory>)`` reads it back to the very same
weights (so the file really is in the layout diffusers knows), then that ours gives the same
parameters as the diffusers directory and the same DDIM latents as diffusers' pipeline. Both
SD1 style (CLIP text tower, quick_gelu, conv projections, epsilon) and SD2 style (OpenCLIP fused
in_proj, gelu, an extra last resblock for the penultimate-layer convention, linear projections,
v-prediction).
"""
import os
import re

import numpy as np
import pytest

import jax

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from test_pipeline import write_tiny_tokenizer  # noqa: E402

from dekag_jax.diffusion.generate import encode_prompt, text_to_latents  # noqa: E402
from dekag_jax.errors import UnsupportedConfigError  # noqa: E402
from dekag_jax.weights.convert import ConversionError  # noqa: E402
from dekag_jax.weights.files import CheckpointError, LazyStateDict  # noqa: E402
from dekag_jax.weights.pipeline import load_pipeline  # noqa: E402
from dekag_jax.weights.sd import load_unet  # noqa: E402
from dekag_jax.weights.single_file import load_single_file, recognise, standard_config  # noqa: E402

PROMPTS = ["the cat", "a dog"]

# ----------------------------------------------------------------------------- diffusers -> LDM (test side)
RESNET_TO_LDM = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                 "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def unet_to_ldm(sd, config):
    lpb = config["layers_per_block"]
    fixed = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
             "time_embedding.linear_2": "time_embed.2", "conv_norm_out": "out.0", "conv_out": "out.2"}
    up_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    out = {}
    for k, v in sd.items():
        mod, leaf = k.rsplit(".", 1)
        if mod in fixed:
            new = fixed[mod]
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)", mod):
            new = f"input_blocks.{1 + int(m[1]) * (lpb + 1) + int(m[2])}.0.{RESNET_TO_LDM[m[3]]}"
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", mod):
            new = f"input_blocks.{1 + int(m[1]) * (lpb + 1) + int(m[2])}.1.{m[3]}"
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv", mod):
            new = f"input_blocks.{1 + int(m[1]) * (lpb + 1) + lpb}.0.op"
        elif m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(\w+)", mod):
            new = f"middle_block.{2 * int(m[1])}.{RESNET_TO_LDM[m[2]]}"
        elif m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", mod):
            new = f"middle_block.1.{m[1]}"
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)", mod):
            new = f"output_blocks.{int(m[1]) * (lpb + 1) + int(m[2])}.0.{RESNET_TO_LDM[m[3]]}"
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", mod):
            new = f"output_blocks.{int(m[1]) * (lpb + 1) + int(m[2])}.1.{m[3]}"
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv", mod):
            b = int(m[1])
            new = f"output_blocks.{b * (lpb + 1) + lpb}.{2 if up_attn[b] else 1}.conv"
        else:
            raise KeyError(k)
        out[f"model.diffusion_model.{new}.{leaf}"] = v
    return out


def vae_to_ldm(sd, config):
    n = len(config["up_block_types"])
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    res = {"conv_shortcut": "nin_shortcut"}
    out = {}
    for k, v in sd.items():
        mod, leaf = k.rsplit(".", 1)
        if re.fullmatch(r"(encoder|decoder)\.(conv_in|conv_out)|quant_conv|post_quant_conv", mod):
            new = mod
        elif m := re.fullmatch(r"(encoder|decoder)\.conv_norm_out", mod):
            new = f"{m[1]}.norm_out"
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)", mod):
            new = f"encoder.down.{m[1]}.block.{m[2]}.{res.get(m[3], m[3])}"
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv", mod):
            new = f"encoder.down.{m[1]}.downsample.conv"
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)", mod):
            new = f"decoder.up.{n - 1 - int(m[1])}.block.{m[2]}.{res.get(m[3], m[3])}"
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv", mod):
            new = f"decoder.up.{n - 1 - int(m[1])}.upsample.conv"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(\w+)", mod):
            new = f"{m[1]}.mid.block_{int(m[2]) + 1}.{res.get(m[3], m[3])}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", mod):
            new = f"{m[1]}.mid.attn_1.{attn[m[2]]}"
            if leaf == "weight" and m[2] != "group_norm":  # LDM's AttnBlock uses 1x1 convs
                v = v[:, :, None, None]
        else:
            raise KeyError(k)
        out[f"first_stage_model.{new}.{leaf}"] = v
    return out


def clip_to_ldm(sd):
    """SD1: the transformers CLIPTextModel under ``cond_stage_model.transformer.text_model.``."""
    return {"cond_stage_model.transformer.text_model." + k.removeprefix("text_model."): v for k, v in sd.items()}


def clip_to_open_clip(sd, n_layers, width, gen):
    """SD2: OpenCLIP's text tower, plus one more random resblock (skipped by the penultimate-layer
    convention), a text_projection and a logit_scale (unused by SD)."""
    sd = {k.removeprefix("text_model."): v for k, v in sd.items()}
    P = "cond_stage_model.model."
    out = {P + "token_embedding.weight": sd["embeddings.token_embedding.weight"],
           P + "positional_embedding": sd["embeddings.position_embedding.weight"],
           P + "ln_final.weight": sd["final_layer_norm.weight"], P + "ln_final.bias": sd["final_layer_norm.bias"],
           P + "text_projection": torch.randn(width, 16, generator=gen), P + "logit_scale": torch.tensor(4.6052)}
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}
    for i in range(n_layers + 1):
        R, L = f"{P}transformer.resblocks.{i}.", f"encoder.layers.{min(i, n_layers - 1)}."
        for a, b in names.items():
            for leaf in ("weight", "bias"):
                out[R + f"{b}.{leaf}"] = sd[L + f"{a}.{leaf}"]
        for leaf in ("weight", "bias"):
            out[R + f"attn.in_proj_{leaf}"] = torch.cat([sd[L + f"self_attn.{q}_proj.{leaf}"] for q in "qkv"])
        if i == n_layers:  # the extra last layer: other values, so that using it would show
            out = {k: (v + torch.randn(v.shape, generator=gen) if k.startswith(R) else v) for k, v in out.items()}
    return out


# ----------------------------------------------------------------------------- the tiny pipelines

def build(root, style):
    sd2 = style == "sd2"
    torch.manual_seed(0 if sd2 else 1)
    tok_dir = os.path.join(root, "tok_src")
    n_vocab = write_tiny_tokenizer(tok_dir, pad_token="!" if sd2 else "<|endoftext|>")
    tok = transformers.CLIPTokenizer.from_pretrained(tok_dir)
    te = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=n_vocab, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, hidden_act="gelu" if sd2 else "quick_gelu", bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    # SD1 style: SD's own block pattern (last down block and first up block without attention) with
    # 2 layers per block, so that LDM's running block numbering is tested beyond the trivial case
    blocks = dict(block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=(2, 4),
                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")) if sd2 else \
        dict(block_out_channels=(16, 32, 32), layers_per_block=2,
             down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
             up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=8)
    unet = diffusers.UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, cross_attention_dim=32,
                                          use_linear_projection=sd2, norm_num_groups=8, upcast_attention=sd2, **blocks)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8, sample_size=16)
    with torch.no_grad():  # away from zero-inits, so every weight matters
        for m in (te, unet, vae):
            for p in m.parameters():
                p.add_(0.05 * torch.randn_like(p))
    sched = diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                    clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                                    prediction_type="v_prediction" if sd2 else "epsilon")
    pipe = diffusers.StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sched,
                                             safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    cfg_dir = os.path.join(root, "config")
    pipe.save_pretrained(cfg_dir)
    gen = torch.Generator().manual_seed(2)
    unet_ldm = unet_to_ldm(unet.state_dict(), unet.config)
    state = {**unet_ldm, **vae_to_ldm(vae.state_dict(), vae.config),
             **(clip_to_open_clip(te.state_dict(), 2, 32, gen) if sd2 else clip_to_ldm(te.state_dict()))}
    # an EMA copy of the UNet under LitEma's dot-free names, with other values
    ema = {k: v + 0.01 * torch.randn(v.shape, generator=gen) for k, v in unet_ldm.items()}
    state.update({"model_ema." + k.split(".", 1)[1].replace(".", ""): v for k, v in ema.items()})
    state.update({"model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(1000),
                  "alphas_cumprod": sched.alphas_cumprod, "betas": sched.betas, "logvar": torch.zeros(1000)})
    path = os.path.join(root, f"tiny-{style}.safetensors")
    save(state, path)
    ema_unet = diffusers.UNet2DConditionModel.from_config(unet.config)
    ema_unet.load_state_dict({k: ema[v] for k, v in zip(unet.state_dict(), unet_ldm)})
    return dict(root=root, pipe=pipe, cfg=cfg_dir, path=path, state=state, ema_unet=ema_unet)


def save(state, path):
    safetensors_torch.save_file({k: v.contiguous() for k, v in state.items()}, path)


@pytest.fixture(scope="module", params=["sd1", "sd2"])
def tiny(request, tmp_path_factory):
    return build(str(tmp_path_factory.mktemp(request.param)), request.param) | {"style": request.param}


def _same(a, b):
    fa, fb = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree_util.tree_flatten_with_path(b)[0]
    assert [p for p, _ in fa] == [p for p, _ in fb]
    for (path, x), (_, y) in zip(fa, fb):
        assert np.array_equal(np.asarray(x), np.asarray(y)), jax.tree_util.keystr(path)


def test_diffusers_reads_the_test_file_back(tiny):
    """The file is in the layout diffusers' from_single_file knows: same weights back."""
    back = diffusers.StableDiffusionPipeline.from_single_file(tiny["path"], config=tiny["cfg"], local_files_only=True,
                                                              safety_checker=None)
    for name in ("unet", "vae", "text_encoder"):
        want, got = getattr(tiny["pipe"], name).state_dict(), getattr(back, name).state_dict()
        assert set(want) <= set(got), name
        bad = [k for k in want if not torch.equal(want[k], got[k])]
        assert not bad, (name, bad[:5])
    tiny["diffusers_back"] = back  # reused below


def test_ours_equals_the_directory_load(tiny):
    ours = load_single_file(tiny["path"], config=tiny["cfg"])
    ref = load_pipeline(tiny["cfg"])
    for a, b in (("unet_params", "unet_params"), ("vae_params", "vae_params"), ("text_params", "text_params")):
        _same(getattr(ours, a), getattr(ref, b))
    assert ours.prediction_type == ("v_prediction" if tiny["style"] == "sd2" else "epsilon")
    assert ours.tokenizer.pad_token == ("!" if tiny["style"] == "sd2" else "<|endoftext|>")
    tiny["ours"] = ours


def _diffusers_back(tiny):
    if "diffusers_back" not in tiny:
        tiny["diffusers_back"] = diffusers.StableDiffusionPipeline.from_single_file(
            tiny["path"], config=tiny["cfg"], local_files_only=True, safety_checker=None)
    return tiny["diffusers_back"]


def test_text_hidden_states_match_diffusers_from_single_file(tiny):
    """The intricate part of the mapping (SD2: fused qkv split, the penultimate layer) in outputs."""
    back = _diffusers_back(tiny)
    ours = tiny.get("ours") or load_single_file(tiny["path"], config=tiny["cfg"],
                                                components=("text_encoder", "tokenizer"))
    ids = ours.tokenizer(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="np").input_ids
    got = encode_prompt(ours.text_encoder, ours.text_params, ids)
    with torch.no_grad():
        want = back.text_encoder(torch.from_numpy(ids)).last_hidden_state.numpy()
    assert np.abs(want).max() > 0.5
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_same_latents_as_diffusers_from_single_file(tiny):
    back = _diffusers_back(tiny)
    back.set_progress_bar_config(disable=True)
    ours = tiny.get("ours") or load_single_file(tiny["path"], config=tiny["cfg"])
    lat = np.random.default_rng(0).standard_normal((2, 4, 8, 8)).astype(np.float32)
    with torch.no_grad():
        want = back(PROMPTS, num_inference_steps=3, guidance_scale=7.5, latents=torch.from_numpy(lat),
                    output_type="latent").images.numpy()
    got = text_to_latents(ours, PROMPTS, jax.random.key(0), num_steps=3, guidance_scale=7.5,
                          latents=lat.transpose(0, 2, 3, 1))
    assert np.abs(want).max() > 0.5
    np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), want, atol=2e-4, rtol=1e-4)


def test_ema_and_load_pipeline_dispatch(tiny, tmp_path):
    # load_pipeline(file, ...) is load_single_file; ema=True reads the UNet's model_ema copy
    ours = load_pipeline(tiny["path"], config=tiny["cfg"], ema=True, components=("unet",))
    tiny["ema_unet"].save_pretrained(str(tmp_path / "ema_unet"))
    _same(ours.unet_params, load_unet(str(tmp_path / "ema_unet"))[1])
    assert ours.vae is None and ours.tokenizer is None
    if tiny["style"] == "sd1":  # diffusers' own extract_ema agrees
        ref = diffusers.UNet2DConditionModel.from_single_file(tiny["path"], config=tiny["cfg"], subfolder="unet",
                                                              local_files_only=True, extract_ema=True)
        want = tiny["ema_unet"].state_dict()
        assert all(torch.equal(ref.state_dict()[k], want[k]) for k in want)
    no_ema = {k: v for k, v in tiny["state"].items() if not k.startswith("model_ema")}
    save(no_ema, str(tmp_path / "no_ema.safetensors"))
    with pytest.raises(CheckpointError, match="no model_ema"):
        load_single_file(str(tmp_path / "no_ema.safetensors"), config=tiny["cfg"], ema=True, components=("unet",))
    with pytest.raises(TypeError, match="single-file"):
        load_pipeline(tiny["cfg"], ema=True)


def test_strict_one_error_lists_every_problem(tiny, tmp_path):
    state = dict(tiny["state"])
    gone = "first_stage_model.decoder.up.0.block.0.conv1.weight"
    del state[gone]
    state["model.diffusion_model.input_blocks.1.0.bogus.weight"] = torch.zeros(3)
    text_extra = ("cond_stage_model.model.transformer.resblocks.0.attn.bogus" if tiny["style"] == "sd2"
                  else "cond_stage_model.transformer.text_model.bogus")
    state[text_extra] = torch.zeros(3)
    state["some_other_model.weight"] = torch.zeros(3)
    p = str(tmp_path / "broken.safetensors")
    save(state, p)
    with pytest.raises(ConversionError) as e:
        load_single_file(p, config=tiny["cfg"])
    msg = str(e.value)
    for needle in ("model.diffusion_model.input_blocks.1.0.bogus.weight", text_extra, "some_other_model.weight",
                   "decoder/up_blocks.1/resnets.0/conv1/kernel"):
        assert needle in msg, (needle, msg)


def test_config_sources_and_refusals(tiny, tmp_path):
    # no config: the tiny file's shapes are no standard model
    with pytest.raises(CheckpointError, match="pass config="):
        load_single_file(tiny["path"])
    # a config directory without a tokenizer: the single file has none either
    import shutil

    cfg = str(tmp_path / "cfg")
    shutil.copytree(tiny["cfg"], cfg, ignore=shutil.ignore_patterns("tokenizer"))
    with pytest.raises(CheckpointError, match="holds no tokenizer"):
        load_single_file(tiny["path"], config=cfg)
    p = load_single_file(tiny["path"], config=cfg, tokenizer=os.path.join(tiny["cfg"], "tokenizer"),
                         prediction_type="v_prediction", components=("text_encoder", "tokenizer"))
    assert p.prediction_type == "v_prediction" and p.tokenizer is not None and p.unet is None
    # the file's training schedule must be the scheduler's
    state = dict(tiny["state"])
    state["alphas_cumprod"] = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)
    save(state, str(tmp_path / "other_schedule.safetensors"))
    with pytest.raises(UnsupportedConfigError, match="alphas_cumprod"):
        load_single_file(str(tmp_path / "other_schedule.safetensors"), config=tiny["cfg"], components=("unet",))


def _probe_file(path, cross_dim, in_ch=4, extra=()):
    state = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, in_ch, 3, 3),
             "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight":
                 torch.zeros(320, cross_dim)}
    state.update({k: torch.zeros(1) for k in extra})
    save(state, path)
    return LazyStateDict([path])


def test_recognise_standard_models(tmp_path):
    p = str(tmp_path / "x.safetensors")
    assert recognise(_probe_file(p, 768)) == "sd15"
    assert recognise(_probe_file(p, 1024)) == "sd21"  # SD2.1-base has the same shapes: model_type= picks it
    with pytest.raises(UnsupportedConfigError, match="input channels"):
        recognise(_probe_file(p, 1024, in_ch=9))
    with pytest.raises(UnsupportedConfigError, match="SDXL"):
        recognise(_probe_file(p, 2048, extra=["conditioner.embedders.0.transformer.text_model.x"]))
    with pytest.raises(CheckpointError, match="matches no standard model"):
        recognise(_probe_file(p, 512))
    c = standard_config("sd21-base")
    assert c["scheduler"]["prediction_type"] == "epsilon" and c["unet"]["upcast_attention"] is False
    c = standard_config("sd21")
    assert c["scheduler"]["prediction_type"] == "v_prediction" and c["text_encoder"]["num_hidden_layers"] == 23
    assert standard_config("sd15")["text_encoder"]["hidden_act"] == "quick_gelu"


def _torch_names(abstract):
    """diffusers/transformers key names of an abstract Flax tree (values: placeholders)."""
    from dekag_jax.weights.convert import flatten, flax_module_to_torch

    leaf = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}
    out = {}
    for path in flatten(abstract):
        module, _, name = path.rpartition("/")
        out[f"{flax_module_to_torch(module)}.{leaf.get(name, name)}"] = np.zeros((1, 1))
    return out


@pytest.mark.slow
def test_standard_configs_sizes_and_full_size_key_maps():
    """The shipped configs have the published models' parameter counts (SD1.5 UNet 859.52 M,
    SD2.x UNet 865.91 M, VAE 83.65 M, CLIP ViT-L text 123.06 M, OpenCLIP ViT-H text without its
    last layer 340.39 M), and at full size the original key names (facts: the downsamplers at
    input_blocks 3/6/9, the upsamplers at output_blocks.2.1 / 5.2 / 8.2, diffusers' own probe keys,
    the decoder's reversed up.N, SD2's 24th resblock) map back to exactly the model's keys."""
    from dekag_jax.models.clip_text import CLIPTextConfig, CLIPTextModel
    from dekag_jax.models.unet import UNet2DConditionModel, UNetConfig
    from dekag_jax.models.vae import AutoencoderKL, VAEConfig
    from dekag_jax.weights.abstract import abstract_params
    from dekag_jax.weights.single_file import _split, open_clip_entries, unet_table, vae_table

    def count(tree):
        return round(sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree)) / 1e6, 2)

    want = {"sd15": (859.52, 83.65, 123.06), "sd21": (865.91, 83.65, 340.39), "sd21-base": (865.91, 83.65, 340.39)}
    for name, (u, v, t) in want.items():
        c = standard_config(name)
        ucfg, vcfg = UNetConfig.from_hf(c["unet"]), VAEConfig.from_hf(c["vae"])
        unet, vae = UNet2DConditionModel(ucfg), AutoencoderKL(vcfg)
        te = CLIPTextModel(CLIPTextConfig.from_hf(c["text_encoder"]))
        ua, va = abstract_params(unet, *unet.dummy_inputs()), abstract_params(vae, *vae.dummy_inputs())
        ta = abstract_params(te, np.zeros((1, 1), np.int32))
        assert (count(ua), count(va), count(ta)) == (u, v, t), name
        # UNet
        names = _torch_names(ua)
        ldm = unet_to_ldm(names, c["unet"])
        P = "model.diffusion_model."
        for fact in ("input_blocks.3.0.op.weight", "input_blocks.9.0.op.weight", "output_blocks.2.1.conv.weight",
                     "output_blocks.5.2.conv.weight", "output_blocks.8.2.conv.weight",
                     "output_blocks.11.0.skip_connection.weight",
                     "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight",
                     "middle_block.1.proj_in.weight", "time_embed.2.bias", "out.2.weight"):
            assert P + fact in ldm, fact
        assert not any(k.startswith(P + "input_blocks.12") or k.startswith(P + "output_blocks.12") for k in ldm)
        table = unet_table(ucfg)
        assert sorted(_split(k[len(P):], table) for k in ldm) == sorted(names)
        # VAE
        names = _torch_names(va)
        ldm = vae_to_ldm(names, c["vae"])
        F = "first_stage_model."
        for fact in ("decoder.up.3.upsample.conv.weight", "decoder.up.0.block.2.conv1.weight",
                     "encoder.down.2.downsample.conv.weight", "encoder.mid.attn_1.q.weight", "decoder.norm_out.bias",
                     "encoder.down.1.block.0.nin_shortcut.weight", "decoder.up.1.block.0.nin_shortcut.weight"):
            assert F + fact in ldm, fact
        assert F + "decoder.up.0.upsample.conv.weight" not in ldm
        assert F + "encoder.down.3.downsample.conv.weight" not in ldm
        table = vae_table(vcfg)
        assert sorted(_split(k[len(F):], table) for k in ldm) == sorted(names)
        # text: SD2 files carry 24 resblocks, the config 23
        names = sorted(_torch_names(ta))
        if name == "sd15":
            assert names[0].startswith("text_model.") and len(names) == 196
            continue
        O = "cond_stage_model.model."
        keys = [O + k for k in ("token_embedding.weight", "positional_embedding", "ln_final.weight", "ln_final.bias")]
        keys += [f"{O}transformer.resblocks.{i}.{m}.{leaf}" for i in range(24) for leaf in ("weight", "bias")
                 for m in ("ln_1", "ln_2", "attn.out_proj", "mlp.c_fc", "mlp.c_proj")]
        keys += [f"{O}transformer.resblocks.{i}.attn.in_proj_{leaf}" for i in range(24) for leaf in ("weight", "bias")]
        entries, dropped = open_clip_entries(keys, c["text_encoder"]["num_hidden_layers"])
        assert sorted(entries) == names
        assert len(dropped) == 12 and all(".resblocks.23." in k for k in dropped)


def test_pickle_refused_with_a_working_recipe(tmp_path):
    ckpt = str(tmp_path / "model.ckpt")
    torch.save({"state_dict": {"a.weight": torch.arange(6.0).reshape(2, 3)}, "global_step": 10}, ckpt)
    for load in (load_single_file, load_pipeline):
        with pytest.raises(CheckpointError, match=r"(?s)pickle.*weights_only=True.*save_file") as e:
            load(ckpt)
    # the recipe in the message runs as printed (the user's own trusted torch) and gives safetensors
    code = "\n".join(line[4:] for line in str(e.value).splitlines() if line.startswith("    "))
    exec(compile(code, "recipe", "exec"), {})
    out = LazyStateDict([str(tmp_path / "model.safetensors")])
    np.testing.assert_array_equal(out["a.weight"], np.arange(6.0).reshape(2, 3))
