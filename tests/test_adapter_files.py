"""LoRA and textual-inversion files (dekag_jax.weights.adapters) against diffusers and PEFT.

The reference is always PyTorch: a tiny random diffusers UNet with PEFT LoRA layers, whose
``get_delta_weight`` is the update the file means. Export: diffusers loads our file and gets our
updates. Import: files written by diffusers/PEFT themselves (PEFT keys), and by hand in the
diffusers (``lora.down``, ``processor.to_q_lora``) and kohya (``lora_unet_*``, ``.alpha``) styles,
which diffusers' own loader also reads, give the updates torch computes.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
peft = pytest.importorskip("peft")

from safetensors import safe_open  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

from dekag_jax.adapt.lora import LoraSpec, delta  # noqa: E402
from dekag_jax.weights import adapters as AF  # noqa: E402

# SD1 style (1x1-conv proj_in/proj_out) so that dense, 3x3-conv and 1x1-conv LoRA all occur.
TINY = dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32, attention_head_dim=2, use_linear_projection=False, norm_num_groups=8)
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "conv1", "proj_in"]


def _unet(seed=0):
    torch.manual_seed(seed)
    return diffusers.UNet2DConditionModel(**TINY).eval()


def _kernel_shapes(model) -> dict[str, tuple[int, ...]]:
    """{Flax kernel path: Flax kernel shape} of every Linear / Conv2d (what our loader would build)."""
    out = {}
    for n, mod in model.named_modules():
        if ".lora_" in n:  # PEFT's own A/B layers
            continue
        n = n.removesuffix(".base_layer")  # PEFT wraps the adapted layer
        if isinstance(mod, torch.nn.Linear):
            out[AF.kernel_path(n)] = (mod.in_features, mod.out_features)
        elif isinstance(mod, torch.nn.Conv2d):
            out[AF.kernel_path(n)] = (*mod.kernel_size, mod.in_channels, mod.out_channels)
    return out


def _torch_deltas(model) -> dict[str, np.ndarray]:
    """{Flax kernel path: PEFT's get_delta_weight in torch layout} of every LoRA layer."""
    out = {}
    for n, mod in model.named_modules():
        if hasattr(mod, "lora_A") and len(mod.lora_A):
            name = next(iter(mod.lora_A.keys()))
            out[AF.kernel_path(n.removeprefix("base_model.model."))] = mod.get_delta_weight(name).detach().numpy()
    return out


def _to_torch_layout(x):
    x = np.asarray(x)
    return x.T if x.ndim == 2 else x.transpose(3, 2, 0, 1)


def _our_deltas(imported: AF.ImportedLora) -> dict[str, np.ndarray]:
    out = {}
    for p, ad in imported.adapters.items():
        spec = LoraSpec(p, "dense" if ad["lora_A"].ndim == 2 else "conv", imported.rank[p], imported.alpha[p])
        out[p] = _to_torch_layout(delta(ad, spec))
    return out


def _assert_same(ours: dict, ref: dict):
    assert sorted(ours) == sorted(ref)
    for p in ref:
        scale = np.abs(ref[p]).max()
        assert scale > 0, p
        np.testing.assert_allclose(ours[p], ref[p], atol=1e-5 * scale, rtol=0, err_msg=p)


@pytest.fixture(scope="module")
def peft_unet():
    """A tiny UNet with PEFT LoRA (r=4, alpha=6) on attention, conv1 and proj_in, B randomised."""
    m = _unet()
    m.add_adapter(peft.LoraConfig(r=4, lora_alpha=6, target_modules=TARGETS))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return m


# ----------------------------------------------------------------------------- export

def _our_adapters(shapes, seed=0):
    """Random contract adapters on attention (rank 4, alpha 6), conv1 (rank 2, alpha 3) and proj_in
    (rank 4, alpha 1): mixed ranks and alphas exercise rank_pattern / alpha_pattern."""
    rng = np.random.default_rng(seed)
    ad, alphas = {}, {}
    for p, s in shapes.items():
        if any(f"/{t}/kernel" in p for t in ("to_q", "to_k", "to_v", "to_out.0")) and "attn" in p:
            r, a = 4, 6.0
        elif p.endswith("/conv1/kernel"):
            r, a = 2, 3.0
        elif p.endswith("/proj_in/kernel"):
            r, a = 4, 1.0
        else:
            continue
        if len(s) == 2:
            A, B = rng.normal(size=(s[0], r)), rng.normal(size=(r, s[1]))
        else:
            A, B = rng.normal(size=(*s[:3], r)), rng.normal(size=(1, 1, r, s[3]))
        ad[p] = {"lora_A": (0.2 * A).astype(np.float32), "lora_B": (0.2 * B).astype(np.float32)}
        alphas[p] = LoraSpec(p, "dense" if len(s) == 2 else "conv", r, a)
    return ad, alphas


@pytest.mark.parametrize("bake", [False, True])
def test_export_loads_in_diffusers(tmp_path, bake):
    m = _unet()
    shapes = _kernel_shapes(m)
    ad, specs = _our_adapters(shapes)
    assert {s.rank for s in specs.values()} == {2, 4} and len({s.alpha for s in specs.values()}) == 3
    path = AF.save_lora(str(tmp_path), ad, specs, bake_alpha=bake)
    assert os.path.basename(path) == "pytorch_lora_weights.safetensors"
    with safe_open(path, "np") as h:
        keys = list(h.keys())
        meta = json.loads(h.metadata()["lora_adapter_metadata"])
    assert all(k.startswith("unet.") and k.endswith((".lora_A.weight", ".lora_B.weight")) for k in keys)
    assert meta["unet.r"] == 4 and len(meta["unet.target_modules"]) == len(ad)
    # as pipe.load_lora_weights(dir) reads it (safetensors + its metadata)
    m.load_lora_adapter(str(tmp_path), prefix="unet", use_safetensors=True)
    ours = {p: _to_torch_layout(delta(ad[p], specs[p])) for p in ad}
    _assert_same(ours, _torch_deltas(m))
    # and it reads back into the same contract
    back = AF.load_lora(path, unet=shapes)["unet"]
    _assert_same(_our_deltas(back), ours)


def test_export_refuses_what_a_file_cannot_hold(tmp_path):
    shapes = _kernel_shapes(_unet())
    ad, specs = _our_adapters(shapes)
    p = next(iter(ad))
    with pytest.raises(AF.AdapterFileError, match="CALA"):
        AF.save_lora(str(tmp_path), {p: {**ad[p], "gate_kernel": np.zeros((3, 4)), "gate_bias": np.zeros(4)}}, 4.0)
    with pytest.raises(AF.AdapterFileError, match="no alpha"):
        AF.save_lora(str(tmp_path), ad, {})
    with pytest.raises(AF.AdapterFileError, match="rank 2 but lora_A has rank 4"):
        AF.save_lora(str(tmp_path), {p: ad[p]}, {p: LoraSpec(p, "dense", 2, 2.0)})


# ----------------------------------------------------------------------------- import

def test_import_peft_file_written_by_diffusers(tmp_path, peft_unet):
    sd = peft.utils.get_peft_model_state_dict(peft_unet)
    diffusers.StableDiffusionPipeline.save_lora_weights(
        str(tmp_path), unet_lora_layers=sd, unet_lora_adapter_metadata=peft_unet.peft_config["default"].to_dict(),
        safe_serialization=True)
    got = AF.load_lora(str(tmp_path), unet=_kernel_shapes(peft_unet))
    assert list(got) == ["unet"] and got["unet"].format == "peft"
    assert set(got["unet"].alpha.values()) == {6.0} and set(got["unet"].rank.values()) == {4}
    _assert_same(_our_deltas(got["unet"]), _torch_deltas(peft_unet))


def test_import_peft_save_pretrained(tmp_path):
    """PEFT's own save_pretrained: ``base_model.model.`` keys, alpha in adapter_config.json."""
    m = _unet(3)
    pm = peft.get_peft_model(m, peft.LoraConfig(r=3, lora_alpha=5, target_modules=["to_k", "conv2"]))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    pm.save_pretrained(str(tmp_path))
    f = tmp_path / "adapter_model.safetensors"
    with safe_open(str(f), "np") as h:
        assert all(k.startswith("base_model.model.") for k in h.keys())
    got = AF.load_lora(str(f), unet=_kernel_shapes(m))["unet"]
    assert set(got.alpha.values()) == {5.0}
    _assert_same(_our_deltas(got), _torch_deltas(pm))


def _rewrite(sd, style):
    """PEFT state dict (``<module>.lora_A.weight``) -> the keys another tool writes."""
    out = {}
    for k, v in sd.items():
        mod, role = k[: -len(".lora_A.weight")], "A" if k.endswith(".lora_A.weight") else "B"
        v = v.detach().numpy().copy()
        if style == "diffusers":
            proc = {".to_q": "to_q", ".to_k": "to_k", ".to_v": "to_v", ".to_out.0": "to_out"}
            tail = next((t for t in proc if mod.endswith(t) and ".attn2" in mod), None)
            if tail:  # the older attention-processor keys, for the cross-attention layers
                key = f"unet.{mod[: -len(tail)]}.processor.{proc[tail]}_lora.{'down' if role == 'A' else 'up'}.weight"
            else:
                key = f"unet.{mod}.lora.{'down' if role == 'A' else 'up'}.weight"
            out[key] = v
        else:  # kohya: module path with underscores, lora_down/lora_up, one alpha per module
            name = "lora_unet_" + mod.replace(".", "_")
            out[f"{name}.lora_{'down' if role == 'A' else 'up'}.weight"] = v
            out[f"{name}.alpha"] = np.asarray(6.0, np.float32)
    return out


@pytest.mark.parametrize("style", ["diffusers", "kohya"])
def test_import_other_styles_as_diffusers_reads_them(tmp_path, peft_unet, style):
    f = str(tmp_path / f"{style}.safetensors")
    save_file(_rewrite(peft.utils.get_peft_model_state_dict(peft_unet), style), f)
    got = AF.load_lora(f, unet=_kernel_shapes(peft_unet))["unet"]
    assert got.format == style
    # diffusers reads the same file into a fresh UNet: the reference for what the file means
    st, alphas = diffusers.StableDiffusionPipeline.lora_state_dict(f)
    ref = _unet()
    ref.load_lora_adapter(st, network_alphas=alphas, prefix="unet")
    _assert_same(_our_deltas(got), _torch_deltas(ref))
    if style == "kohya":  # and it is the update the trained PEFT model had
        _assert_same(_our_deltas(got), _torch_deltas(peft_unet))
    else:  # no alpha in the file: diffusers' alpha = rank
        assert set(got.alpha.values()) == {4.0}


def test_import_with_real_param_tree(tmp_path, peft_unet):
    """The base params may be given as our loaded params tree ({"params": ...})."""
    from dekag_jax.weights.sd import load_unet

    d = str(tmp_path / "unet")
    _unet().save_pretrained(d, safe_serialization=True)
    _, params = load_unet(d)
    sd = peft.utils.get_peft_model_state_dict(peft_unet)
    f = str(tmp_path / "lora.safetensors")
    save_file({"unet." + k: v.detach().numpy() for k, v in sd.items()}, f)
    got = AF.load_lora(f, unet={"params": params}, alpha=6.0)["unet"]
    _assert_same(_our_deltas(got), _torch_deltas(peft_unet))


def test_import_is_strict_and_lists_every_problem(tmp_path, peft_unet):
    shapes = _kernel_shapes(peft_unet)
    st = {"unet." + k: v.detach().numpy() for k, v in peft.utils.get_peft_model_state_dict(peft_unet).items()}
    qa = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight"
    kb = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k.lora_B.weight"
    st[qa] = st[qa][:, :-1]  # wrong input width
    del st[kb]  # incomplete pair
    st["unet.down_blocks.0.nonexistent.lora_A.weight"] = np.zeros((4, 8), np.float32)  # no such module
    st["unet.conv_in.lora_magnitude_vector"] = np.zeros(32, np.float32)  # DoRA: not LoRA
    f = str(tmp_path / "bad.safetensors")
    save_file(st, f)
    with pytest.raises(AF.AdapterFileError) as e:
        AF.load_lora(f, unet=shapes)
    msg = str(e.value)
    for needle in ("nonexistent", "lora_magnitude_vector", "attn1/to_k/kernel (unet): incomplete",
                   "attn1.to_q.lora_A.weight: lora_A (4, 31)"):
        assert needle in msg, (needle, msg)
    # a component not given is an error too, and so is a pickle
    with pytest.raises(AF.AdapterFileError, match="text_encoder.text_model"):
        save_file({"text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight": np.zeros((2, 8), np.float32)},
                  str(tmp_path / "te.safetensors"))
        AF.load_lora(str(tmp_path / "te.safetensors"), unet=shapes)
    with pytest.raises(AF.AdapterFileError, match="pickle"):
        AF.load_lora(str(tmp_path / "x.bin"), unet=shapes)


def test_kohya_names_resolve_against_the_model_and_ambiguity_is_an_error(tmp_path):
    shapes = {"a_b/c/kernel": (8, 8), "a/b_c/kernel": (8, 8), "d/e_f/kernel": (8, 8)}
    A, B = np.ones((2, 8), np.float32), np.ones((8, 2), np.float32)
    f = str(tmp_path / "k.safetensors")
    save_file({"lora_unet_d_e_f.lora_down.weight": A, "lora_unet_d_e_f.lora_up.weight": B}, f)
    got = AF.load_lora(f, unet=shapes)["unet"]
    assert list(got.adapters) == ["d/e_f/kernel"] and got.alpha["d/e_f/kernel"] == 2.0
    save_file({"lora_unet_a_b_c.lora_down.weight": A, "lora_unet_a_b_c.lora_up.weight": B}, f)
    with pytest.raises(AF.AdapterFileError, match="ambiguous"):
        AF.load_lora(f, unet=shapes)


def test_text_encoder_lora_both_key_generations_and_kohya(tmp_path):
    """Text-encoder LoRA: our export reads back; keys with or without transformers 4's
    ``text_model.`` (transformers 5 flattened CLIPTextModel) and kohya's ``lora_te_`` resolve."""
    shapes = {f"text_model/encoder/layers.{i}/self_attn/{n}_proj/kernel": (16, 16) for i in range(2) for n in "qkvo"}
    shapes["text_model/embeddings/token_embedding/embedding"] = (10, 16)
    rng = np.random.default_rng(0)
    ad = {p: {"lora_A": rng.normal(size=(16, 2)).astype(np.float32), "lora_B": rng.normal(size=(2, 16)).astype(np.float32)}
          for p in shapes if "/q_proj/" in p or "/v_proj/" in p}
    f = AF.save_lora(str(tmp_path / "ours.safetensors"), None, text_encoder_adapters=ad, text_encoder_alphas=1.0)
    with safe_open(f, "np") as h:
        assert all(k.startswith("text_encoder.text_model.encoder.layers.") for k in h.keys())
        meta = json.loads(h.metadata()["lora_adapter_metadata"])
    assert all(t.startswith("encoder.layers.") for t in meta["text_encoder.target_modules"])
    back = AF.load_lora(f, text_encoder=shapes)["text_encoder"]
    assert set(back.alpha.values()) == {1.0}
    for p in ad:
        np.testing.assert_array_equal(back.adapters[p]["lora_A"], ad[p]["lora_A"])
        assert back.spec_fields(p) == (p, "dense", 2, 1.0)
    p = "text_model/encoder/layers.1/self_attn/v_proj/kernel"
    A, B = ad[p]["lora_A"].T.copy(), ad[p]["lora_B"].T.copy()
    for keys in ({"text_encoder.encoder.layers.1.self_attn.v_proj.lora_A.weight": A,
                  "text_encoder.encoder.layers.1.self_attn.v_proj.lora_B.weight": B},
                 {"lora_te_text_model_encoder_layers_1_self_attn_v_proj.lora_down.weight": A,
                  "lora_te_text_model_encoder_layers_1_self_attn_v_proj.lora_up.weight": B,
                  "lora_te_text_model_encoder_layers_1_self_attn_v_proj.alpha": np.asarray(4.0, np.float32)}):
        save_file(keys, str(tmp_path / "x.safetensors"))
        got = AF.load_lora(str(tmp_path / "x.safetensors"), text_encoder=shapes)["text_encoder"]
        assert list(got.adapters) == [p]
        np.testing.assert_array_equal(got.adapters[p]["lora_B"], ad[p]["lora_B"])
        assert got.scale(p) == (2.0 if "lora_te_text_model_encoder_layers_1_self_attn_v_proj.alpha" in keys else 1.0)


# ----------------------------------------------------------------------------- the metaword

def test_textual_inversion_files(tmp_path):
    e = np.random.default_rng(0).normal(size=(1, 16)).astype(np.float32)
    p = AF.save_textual_inversion(str(tmp_path), "<mu>", e)
    assert os.path.basename(p) == "learned_embeds.safetensors"
    tok, back = AF.load_textual_inversion(str(tmp_path))
    assert tok == "<mu>" and np.array_equal(back, e)
    assert AF.load_textual_inversion(p, token="<nu>")[0] == "<nu>"
    # A1111 / kohya safetensors embeddings: emb_params, the token from metadata or the caller
    f = str(tmp_path / "a1111.safetensors")
    save_file({"emb_params": np.tile(e, (3, 1))}, f, metadata={"name": "shiba"})
    tok, emb = AF.load_textual_inversion(f)
    assert tok == "shiba" and emb.shape == (3, 16)
    assert AF.expand_tokens("shiba", 3) == ["shiba", "shiba_1", "shiba_2"]
    assert AF.expand_prompt("a shiba toy", "shiba", 3) == "a shiba shiba_1 shiba_2 toy"
    save_file({"emb_params": e}, f)
    with pytest.raises(AF.AdapterFileError, match="token"):
        AF.load_textual_inversion(f)
    save_file({"a": e, "b": e}, f)
    with pytest.raises(AF.AdapterFileError, match="not a textual-inversion file"):
        AF.load_textual_inversion(f)
    with pytest.raises(AF.AdapterFileError, match="whitespace"):
        AF.save_textual_inversion(str(tmp_path), "a b", e)
