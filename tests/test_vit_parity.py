"""Parity of the ViT judges (CLIP vision, CLIPModel, DINO v1 ViTModel, DINOv2) with transformers."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from dekag_jax.errors import UnsupportedConfigError  # noqa: E402
from dekag_jax.models.vit import (  # noqa: E402
    NORMALIZATION, CLIPModel, CLIPVisionModel, ViTConfig, ViTModel, bicubic_matrix, clip_image_features,
    cosine_similarity, dino_features, interpolate_pos_embed, preprocess,
)
from dekag_jax.weights.convert import ConversionError  # noqa: E402
from dekag_jax.weights.files import read_state_dict, save_state_dict  # noqa: E402
from dekag_jax.weights.hf import (  # noqa: E402
    load_clip_model, load_clip_vision, load_dino, save_clip_model, save_clip_vision, save_dino,
)

FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8)


def _perturb(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def _close(ours, ref, what):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
    err = np.max(np.abs(ours - ref)) / max(np.max(np.abs(ref)), 1e-12)
    assert err <= 1e-4, f"{what}: relative max abs error {err:.2e}"


def _images(h, w, seed=0):
    return np.random.default_rng(seed).normal(size=(2, h, w, 3)).astype(np.float32)


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def _fast(fn, *args):
    """jit with cheap XLA optimisation (compile time dominates these tiny models; eager flax
    would compile every op separately)."""
    return jax.jit(fn).lower(*args).compile(FAST_COMPILE)(*args)


def _run(module, params, *args, **kw):
    return _fast(lambda p, *a: module.apply({"params": p}, *a, **kw), params, *args)


def _np(t):
    return t.detach().numpy()


# ----------------------------------------------------------------------------- interpolation


@pytest.mark.parametrize("n_in,n_out", [(4, 4), (4, 7), (4, 3), (5, 9), (37, 16), (2, 5)])
def test_bicubic_matches_torch(n_in, n_out):
    x = np.random.default_rng(0).normal(size=(1, 3, n_in, n_in)).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=(n_out, n_out + 1), mode="bicubic",
                                          align_corners=False).numpy()
    ours = np.einsum("hi,wj,cij->chw", bicubic_matrix(n_in, n_out), bicubic_matrix(n_in, n_out + 1), x[0])
    np.testing.assert_allclose(ours, ref[0], atol=1e-5, rtol=1e-5)
    pos = jnp.asarray(np.random.default_rng(1).normal(size=(1 + n_in * n_in, 6)).astype(np.float32))
    assert interpolate_pos_embed(pos, (n_in, n_in)) is pos  # unchanged grid: untouched


# ----------------------------------------------------------------------------- CLIP vision


@pytest.fixture(scope="module")
def clip_vision(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.CLIPVisionConfig(intermediate_size=48, projection_dim=24, hidden_act="quick_gelu", **TINY)
    model = _perturb(transformers.CLIPVisionModelWithProjection(cfg))
    d = str(tmp_path_factory.mktemp("clip_vision"))
    model.save_pretrained(d, safe_serialization=True)
    module, params = load_clip_vision(d)
    return model, d, module, params


@pytest.mark.parametrize("size", [32, 48])
def test_clip_vision_parity(clip_vision, size):
    model, _, module, params = clip_vision
    assert isinstance(module, CLIPVisionModel) and module.with_projection
    x = _images(size, size)
    with torch.no_grad():
        ref = model(_nchw(x), interpolate_pos_encoding=size != 32)
    out, feats = _fast(lambda p, a: (module.apply({"params": p}, a, interpolate_pos_encoding=size != 32),
                                     clip_image_features(module, p, a, interpolate_pos_encoding=size != 32)),
                       params, jnp.asarray(x))
    _close(out["last_hidden_state"], _np(ref.last_hidden_state), "last_hidden_state")
    _close(out["image_embeds"], _np(ref.image_embeds), "image_embeds")
    _close(feats, _np(ref.image_embeds), "clip_image_features")
    if size != 32:
        with pytest.raises(ValueError, match="interpolate_pos_encoding"):
            module.apply({"params": params}, jnp.asarray(x))


def test_clip_vision_plain_and_round_trip(clip_vision, tmp_path):
    model, _, module, params = clip_vision
    save_clip_vision(str(tmp_path / "ours"), module, params)
    assert all(k.startswith(("vision_model.", "visual_projection.")) for k in read_state_dict(str(tmp_path / "ours")))
    back = transformers.CLIPVisionModelWithProjection.from_pretrained(str(tmp_path / "ours")).eval()
    x = _images(32, 32, seed=3)
    with torch.no_grad():  # ours == model is test_clip_vision_parity; so compare back with model
        _close(_np(back(_nchw(x)).image_embeds), _np(model(_nchw(x)).image_embeds), "round trip image_embeds")
    # a bare CLIPVisionModel (transformers 5 writes it without the vision_model. prefix)
    plain = transformers.CLIPVisionModel(model.config)
    plain.load_state_dict(model.vision_model.state_dict())
    plain.save_pretrained(str(tmp_path / "plain"), safe_serialization=True)
    m2, p2 = load_clip_vision(str(tmp_path / "plain"))
    assert not m2.with_projection
    with torch.no_grad():
        ref2 = plain.eval()(_nchw(x))
    _close(_run(m2, p2, jnp.asarray(x))["pooler_output"], _np(ref2.pooler_output), "plain pooler_output")
    with pytest.raises(ValueError, match="projected"):
        clip_image_features(m2, p2, jnp.asarray(x))  # raises before any computation


# ----------------------------------------------------------------------------- CLIPModel


def test_clip_model_parity_and_round_trip(tmp_path):
    torch.manual_seed(2)
    cfg = transformers.CLIPConfig(
        text_config=dict(vocab_size=99, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, eos_token_id=3, hidden_act="gelu"),
        vision_config=dict(intermediate_size=48, hidden_act="gelu", **TINY), projection_dim=24)
    model = _perturb(transformers.CLIPModel(cfg), seed=2)
    model.save_pretrained(str(tmp_path / "ref"), safe_serialization=True)
    module, params = load_clip_model(str(tmp_path / "ref"))
    assert isinstance(module, CLIPModel)
    ids = np.random.default_rng(0).integers(4, 97, size=(3, 10))
    ids[:, 6:] = 3  # EOS (not the largest id) then EOS-padding
    x = _images(32, 32, seed=4)
    with torch.no_grad():
        ref = model(input_ids=torch.from_numpy(ids), pixel_values=_nchw(x))
    out, feats = _fast(lambda p, t, a: (module.apply({"params": p}, t, a),
                                        clip_image_features(module, p, a, normalize=True)),
                       params, jnp.asarray(ids, jnp.int32), jnp.asarray(x))
    _close(out["logits_per_image"], _np(ref.logits_per_image), "logits_per_image")
    _close(out["text_embeds"], _np(ref.text_embeds), "text_embeds")
    _close(out["image_embeds"], _np(ref.image_embeds), "image_embeds")
    _close(feats, _np(ref.image_embeds), "clip_image_features(CLIPModel)")
    save_clip_model(str(tmp_path / "ours"), module, params)
    back = transformers.CLIPModel.from_pretrained(str(tmp_path / "ours")).eval()
    with torch.no_grad():
        ref2 = back(input_ids=torch.from_numpy(ids), pixel_values=_nchw(x))
    _close(out["logits_per_text"], _np(ref2.logits_per_text), "round trip logits_per_text")
    assert back.logit_scale.item() == pytest.approx(model.logit_scale.item())


# ----------------------------------------------------------------------------- DINO v1 / DINOv2


def _dino(kind, tmp_path_factory, pooler=False):
    torch.manual_seed(3)
    if kind == "vit":
        model = transformers.ViTModel(transformers.ViTConfig(intermediate_size=48, **TINY), add_pooling_layer=pooler)
    else:
        model = transformers.Dinov2Model(transformers.Dinov2Config(mlp_ratio=2, **TINY))
    model = _perturb(model, seed=3)
    d = str(tmp_path_factory.mktemp(f"dino_{kind}"))
    model.save_pretrained(d, safe_serialization=True)
    return model, d


@pytest.fixture(scope="module", params=["vit", "dinov2"])
def dino(request, tmp_path_factory):
    model, d = _dino(request.param, tmp_path_factory, pooler=request.param == "vit")  # ViT: pooler is ignored
    module, params = load_dino(d)
    return request.param, model, d, module, params


@pytest.mark.parametrize("hw", [(32, 32), (40, 56)])
def test_dino_parity(dino, hw):
    kind, model, _, module, params = dino
    assert isinstance(module, ViTModel) and module.config.dinov2 == (kind == "dinov2")
    x = _images(*hw, seed=5)
    interp = hw != (32, 32)
    with torch.no_grad():
        ref = model(_nchw(x), interpolate_pos_encoding=interp) if kind == "vit" else model(_nchw(x))
    out, f, fn = _fast(lambda p, a: (module.apply({"params": p}, a, interpolate_pos_encoding=interp),
                                     dino_features(module, p, a, interpolate_pos_encoding=interp),
                                     dino_features(module, p, a, interpolate_pos_encoding=interp, normalize=True)),
                       params, jnp.asarray(x))
    _close(out["last_hidden_state"], _np(ref.last_hidden_state), f"{kind} last_hidden_state {hw}")
    _close(out["pooler_output"], _np(ref.last_hidden_state[:, 0]), f"{kind} CLS {hw}")
    _close(f, _np(ref.last_hidden_state[:, 0]), f"{kind} dino_features {hw}")
    np.testing.assert_allclose(np.linalg.norm(np.asarray(fn), axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(cosine_similarity(f, fn)), 1.0, rtol=1e-5)
    if interp and kind == "vit":
        with pytest.raises(ValueError, match="interpolate_pos_encoding"):
            module.apply({"params": params}, jnp.asarray(x))


def test_dino_round_trip(dino, tmp_path):
    kind, model, _, module, params = dino
    save_dino(str(tmp_path), module, params)
    if kind == "vit":
        back = transformers.ViTModel.from_pretrained(str(tmp_path), add_pooling_layer=False)
    else:
        back = transformers.Dinov2Model.from_pretrained(str(tmp_path))
    x = _images(32, 32, seed=6)
    with torch.no_grad():  # ours == model is test_dino_parity; so compare back with model
        _close(_np(back.eval()(_nchw(x)).last_hidden_state), _np(model(_nchw(x)).last_hidden_state),
               f"{kind} round trip last_hidden_state")
    m2, p2 = load_dino(str(tmp_path))
    assert m2.config == module.config
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(p2), jax.tree.leaves(params)))
    with pytest.raises(TypeError, match="ViTModel"):
        dino_features(object(), params, jnp.asarray(x))


# ----------------------------------------------------------------------------- errors


def _rewrite(src, dst, edit_state=None, edit_config=None):
    os.makedirs(dst, exist_ok=True)
    state = {k: np.asarray(v) for k, v in read_state_dict(src).items()}
    if edit_state:
        edit_state(state)
    save_state_dict(state, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    if edit_config:
        edit_config(cfg)
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f)
    return dst


def test_errors(dino, tmp_path):
    kind, _, d, _, _ = dino
    extra = _rewrite(d, str(tmp_path / "extra"), lambda s: s.__setitem__("embeddings.extra_token", np.zeros(3, np.float32)))
    with pytest.raises(ConversionError, match="embeddings.extra_token"):
        load_dino(extra)
    shape = _rewrite(d, str(tmp_path / "shape"),
                     lambda s: s.__setitem__("embeddings.position_embeddings", np.zeros((1, 5, 32), np.float32)))
    with pytest.raises(ConversionError, match=r"position_embeddings.*\(1, 5, 32\).*\(1, 17, 32\)"):
        load_dino(shape)
    missing = _rewrite(d, str(tmp_path / "missing"), lambda s: s.pop("embeddings.cls_token"))
    with pytest.raises(ConversionError, match="embeddings/cls_token"):
        load_dino(missing)
    weird = _rewrite(d, str(tmp_path / "weird"), edit_config=lambda c: c.__setitem__("fancy_rope", True))
    with pytest.raises(UnsupportedConfigError, match="fancy_rope"):
        load_dino(weird)


@pytest.mark.parametrize("model_type,field,value", [
    ("dinov2", "use_swiglu_ffn", True), ("dinov2", "drop_path_rate", 0.1), ("vit", "hidden_act", "swish"),
    ("vit", "image_size", [32, 48]), ("beit", "model_type", "beit")])
def test_unsupported_config(model_type, field, value):
    cfg = {"model_type": model_type, **TINY}
    cfg[field] = value
    with pytest.raises(UnsupportedConfigError, match=field):
        ViTConfig.from_hf(cfg)


# ----------------------------------------------------------------------------- preprocessing


def test_preprocess():
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, size=(2, 40, 60, 3), dtype=np.uint8)
    a, b = _fast(lambda u, f: (preprocess(u, "clip", size=32), preprocess(f, "clip", size=32)),
                 u8, u8.astype(np.float32) / 255.0)
    assert a.shape == (2, 32, 32, 3) and a.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    const = np.full((1, 32, 32, 3), 0.5, np.float32)
    mean, std = NORMALIZATION["dino"]
    np.testing.assert_allclose(np.asarray(preprocess(const, "dino", size=32))[0, 0, 0],  # no resize: cheap
                               (0.5 - np.array(mean)) / np.array(std), rtol=1e-5)
    with pytest.raises(ValueError, match="family"):
        preprocess(const, "siglip")
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        preprocess(const[0], "clip")
    with pytest.raises(ValueError, match="uint8"):
        preprocess(const.astype(np.int32), "clip")
