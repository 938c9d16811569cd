"""Parity of dekag_jax's CLIP text encoder with transformers (tiny random, perturbed models)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from dekag_jax.models.clip_text import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection  # noqa: E402
from dekag_jax.errors import UnsupportedConfigError  # noqa: E402
from dekag_jax.weights.convert import ConversionError  # noqa: E402
from dekag_jax.weights.files import read_state_dict, save_state_dict  # noqa: E402
from dekag_jax.weights.hf import load_text_encoder, save_text_encoder  # noqa: E402

VOCAB, LEN = 99, 12
# (hidden_act, eos_token_id): SD1 = quick_gelu with the legacy eos id 2 (argmax pooling), SD2 =
# gelu with a configured eos id (first-occurrence pooling). The configured eos (3) is deliberately
# not the largest id, so the two pooling rules pick different positions.
EOS = 3
CASES = {"quick_gelu": ("quick_gelu", 2), "gelu": ("gelu", EOS)}


def _tiny_config(act: str, eos: int, **kw):
    return transformers.CLIPTextConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=16, hidden_act=act, eos_token_id=eos, bos_token_id=VOCAB - 2, pad_token_id=0,
        layer_norm_eps=1e-5, projection_dim=24, **kw)


def _perturb(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def _ids(eos: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    ids = rng.integers(4, VOCAB - 3, size=(3, LEN)).astype(np.int64)
    ids[:, 0] = VOCAB - 2  # BOS
    for row, n in enumerate((4, 7, LEN - 1)):
        ids[row, n:] = eos if eos != 2 else 0  # EOS, then padding (SD1 pads with the EOS itself)
        ids[row, n] = eos if eos != 2 else VOCAB - 1  # legacy rule: EOS is the largest id
    return ids


def _close(ours, ref, what):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
    err = np.max(np.abs(ours - ref)) / max(np.max(np.abs(ref)), 1e-12)
    assert err <= 1e-4, f"{what}: relative max abs error {err:.2e}"


def _t(x):
    return x.detach().numpy()


# Low XLA optimisation: compiling dominates these tiny tests (eager flax would compile every op).
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _jit(module):
    """One compiled forward per (module, input structure)."""
    f = jax.jit(lambda p, ids, e: module.apply({"params": p}, ids, inputs_embeds=e, output_hidden_states=True))
    cache = {}

    def call(params, ids, embeds=None):
        args = (params, jnp.asarray(ids, jnp.int32), embeds)
        key = (args[1].shape, None if embeds is None else embeds.shape)
        if key not in cache:
            cache[key] = f.lower(*args).compile(FAST_COMPILE)
        return cache[key](*args)

    return call


@pytest.fixture(scope="module", params=sorted(CASES))
def saved(request, tmp_path_factory):
    act, eos = CASES[request.param]
    torch.manual_seed(0)
    model = _perturb(transformers.CLIPTextModel(_tiny_config(act, eos)))
    d = str(tmp_path_factory.mktemp(f"clip_text_{act}"))
    model.save_pretrained(d, safe_serialization=True)  # transformers 5: bare keys, no text_model. prefix
    module, params = load_text_encoder(d)
    return model, d, eos, module, params, _jit(module)


def test_text_parity(saved):
    model, d, eos, module, params, fwd = saved
    assert isinstance(module, CLIPTextModel)
    ids = _ids(eos)
    with torch.no_grad():
        ref = model(torch.from_numpy(ids), output_hidden_states=True)
    out = fwd(params, ids)
    _close(out["last_hidden_state"], _t(ref.last_hidden_state), "last_hidden_state")
    _close(out["pooler_output"], _t(ref.pooler_output), "pooler_output")
    assert len(out["hidden_states"]) == len(ref.hidden_states) == 3
    for i, (a, b) in enumerate(zip(out["hidden_states"], ref.hidden_states)):
        _close(a, _t(b), f"hidden_states[{i}]")


def test_text_parity_inputs_embeds(saved):
    """inputs_embeds replaces the token lookup; reference: a forward hook on token_embedding."""
    model, d, eos, module, params, fwd = saved
    ids = _ids(eos)
    embeds = np.random.default_rng(2).normal(size=(*ids.shape, 32)).astype(np.float32)
    hook = model.embeddings.token_embedding.register_forward_hook(lambda m, i, o: torch.from_numpy(embeds))
    try:
        with torch.no_grad():
            ref = model(torch.from_numpy(ids))
    finally:
        hook.remove()
    out = fwd(params, ids, jnp.asarray(embeds))
    _close(out["last_hidden_state"], _t(ref.last_hidden_state), "last_hidden_state (inputs_embeds)")
    _close(out["pooler_output"], _t(ref.pooler_output), "pooler_output (inputs_embeds)")
    plain = fwd(params, ids)
    assert np.max(np.abs(np.asarray(plain["last_hidden_state"]) - np.asarray(out["last_hidden_state"]))) > 1e-2


def test_text_round_trip(saved, tmp_path):
    """ours -> save_text_encoder (prefixed published layout) -> transformers -> same outputs; and back."""
    _, d, eos, module, params, fwd = saved
    save_text_encoder(str(tmp_path), module, params)
    assert all(k.startswith("text_model.") for k in read_state_dict(str(tmp_path)))
    back = transformers.CLIPTextModel.from_pretrained(str(tmp_path)).eval()
    ids = _ids(eos)
    with torch.no_grad():
        ref = back(torch.from_numpy(ids))
    out = fwd(params, ids)
    _close(out["last_hidden_state"], _t(ref.last_hidden_state), "round trip last_hidden_state")
    _close(out["pooler_output"], _t(ref.pooler_output), "round trip pooler_output")
    module2, params2 = load_text_encoder(str(tmp_path))
    assert module2.config == module.config


def test_text_with_projection(tmp_path):
    torch.manual_seed(1)
    model = _perturb(transformers.CLIPTextModelWithProjection(_tiny_config("gelu", EOS)), seed=1)
    model.save_pretrained(str(tmp_path / "a"), safe_serialization=True)
    module, params = load_text_encoder(str(tmp_path / "a"))
    assert isinstance(module, CLIPTextModelWithProjection)
    ids = _ids(EOS)
    with torch.no_grad():
        ref = model(torch.from_numpy(ids))
    out = _jit(module)(params, ids)
    _close(out["text_embeds"], _t(ref.text_embeds), "text_embeds")
    _close(out["last_hidden_state"], _t(ref.last_hidden_state), "last_hidden_state")
    save_text_encoder(str(tmp_path / "b"), module, params)
    back = transformers.CLIPTextModelWithProjection.from_pretrained(str(tmp_path / "b")).eval()
    with torch.no_grad():
        _close(out["text_embeds"], _t(back(torch.from_numpy(ids)).text_embeds), "round trip text_embeds")


def test_text_bf16_load(saved):
    _, d, eos, ref_module, ref_params, ref_fwd = saved
    if eos == 2:
        pytest.skip("one activation suffices for the dtype path")
    module, params = load_text_encoder(d, dtype=jnp.bfloat16)
    assert all(v.dtype == jnp.bfloat16 for v in jax.tree.leaves(params))
    ids = jnp.asarray(_ids(eos), jnp.int32)
    # tracing (no compile) checks the bf16 path is dtype-consistent end to end
    out = jax.eval_shape(lambda p: module.apply({"params": p}, ids), params)
    assert out["last_hidden_state"].dtype == jnp.bfloat16 and out["pooler_output"].shape == (ids.shape[0], 32)
    assert all(jax.tree.leaves(jax.tree.map(lambda a, b: a.shape == b.shape, params, ref_params)))


# ----------------------------------------------------------------------------- errors


def _copy_with(src: str, dst: str, state: dict, config: dict | None = None):
    os.makedirs(dst, exist_ok=True)
    save_state_dict(state, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    cfg.update(config or {})
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f)


def test_error_unknown_key(saved, tmp_path):
    d = saved[1]
    state = {k: np.asarray(v) for k, v in read_state_dict(d).items()}
    state["encoder.layers.0.self_attn.extra_proj.weight"] = np.zeros((32, 32), np.float32)
    _copy_with(d, str(tmp_path), state)
    with pytest.raises(ConversionError, match="extra_proj"):
        load_text_encoder(str(tmp_path))


def test_error_missing_key(saved, tmp_path):
    d = saved[1]
    state = {k: np.asarray(v) for k, v in read_state_dict(d).items() if "final_layer_norm.bias" not in k}
    _copy_with(d, str(tmp_path), state)
    with pytest.raises(ConversionError, match="final_layer_norm/bias"):
        load_text_encoder(str(tmp_path))


def test_error_wrong_shape(saved, tmp_path):
    d = saved[1]
    state = {k: np.asarray(v) for k, v in read_state_dict(d).items()}
    state["encoder.layers.1.mlp.fc1.weight"] = np.zeros((40, 32), np.float32)
    _copy_with(d, str(tmp_path), state)
    with pytest.raises(ConversionError, match=r"fc1.*\(32, 40\).*\(32, 48\)"):
        load_text_encoder(str(tmp_path))


@pytest.mark.parametrize("field,value", [("hidden_act", "relu"), ("some_new_field", 3), ("attention_dropout", 0.1),
                                         ("eos_token_id", [2, 3])])
def test_error_unsupported_config(field, value):
    cfg = _tiny_config("gelu", EOS).to_dict()
    cfg[field] = value
    with pytest.raises(UnsupportedConfigError, match=field):
        CLIPTextConfig.from_hf(cfg)


def test_error_bad_inputs(saved):
    module, params = saved[3], saved[4]
    with pytest.raises(ValueError, match="max_position_embeddings"):
        module.apply({"params": params}, jnp.zeros((1, 17), jnp.int32))
    with pytest.raises(ValueError, match="integer"):
        module.apply({"params": params}, jnp.zeros((1, 5), jnp.float32))
    with pytest.raises(ValueError, match="inputs_embeds"):
        module.apply({"params": params}, jnp.zeros((1, 5), jnp.int32), inputs_embeds=jnp.zeros((1, 5, 7)))
