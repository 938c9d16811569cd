"""Parity of our Flax UNet (dekag_jax.models.unet + weights.sd loader) with diffusers' PyTorch
UNet2DConditionModel, on tiny random models whose weights are all perturbed away from their
(zero) inits so that zero-initialised proj_out/conv_out cannot hide bugs."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

from dekag_jax.errors import UnsupportedConfigError  # noqa: E402
from dekag_jax.models.unet import UNetConfig  # noqa: E402
from dekag_jax.weights.convert import ConversionError  # noqa: E402
from dekag_jax.weights.sd import WEIGHTS_NAME, load_unet, save_unet  # noqa: E402

TOL = 1e-4  # max abs error relative to max |reference|

SD1_TINY = dict(  # SD1.x style: 1x1-conv projections, int attention_head_dim (= heads)
    sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32, attention_head_dim=2, use_linear_projection=False, norm_num_groups=8,
)
SD2_TINY = dict(  # SD2.x style: linear projections, per-block head counts, upcast attention
    sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=24, attention_head_dim=[2, 4], use_linear_projection=True, upcast_attention=True,
    norm_num_groups=8, transformer_layers_per_block=2, flip_sin_to_cos=False, freq_shift=1,
)


def _make(cfg, tmp_path_factory, seed):
    """Tiny diffusers UNet with every parameter perturbed, saved; plus our loaded model and one
    jitted forward (compiled once per fixture: compiles dominate this file's run time)."""
    torch.manual_seed(seed)
    m = diffusers.UNet2DConditionModel(**cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    d = str(tmp_path_factory.mktemp("unet"))
    m.save_pretrained(d, safe_serialization=True)
    module, params = load_unet(d)
    fwd = jax.jit(lambda p, x, t, c: module.apply({"params": p}, x, t, c))
    return m, d, module, params, fwd


@pytest.fixture(scope="module")
def sd1(tmp_path_factory):
    return _make(SD1_TINY, tmp_path_factory, 0)


@pytest.fixture(scope="module")
def sd2(tmp_path_factory):
    return _make(SD2_TINY, tmp_path_factory, 1)


def _inputs(cross_dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 16, 16, generator=g)
    c = torch.randn(2, 7, cross_dim, generator=g)
    return x, c


def _ours(fwd, params, x, t, c):
    t_j = jnp.asarray(t.numpy()) if isinstance(t, torch.Tensor) else t
    out = fwd(params, jnp.asarray(x.numpy().transpose(0, 2, 3, 1)), t_j, jnp.asarray(c.numpy()))
    return np.asarray(out, np.float32).transpose(0, 3, 1, 2)


def _ref(m, x, t, c):
    with torch.no_grad():
        return m(x, t, c).sample.numpy()


def _check(ours, ref, tol=TOL):
    scale = np.abs(ref).max()
    err = np.abs(ours - ref).max()
    assert err <= tol * scale, f"max abs err {err:.3g} > {tol} * {scale:.3g}"


def test_unet_parity_sd1_int_timesteps(sd1):
    """SD1 style (conv projections, int head count), int timesteps [B]."""
    m, d, module, params, fwd = sd1
    x, c = _inputs(32)
    t = torch.tensor([10, 500])
    _check(_ours(fwd, params, x, t, c), _ref(m, x, t, c))


def test_unet_parity_sd2_float_scalar_timestep(sd2):
    """SD2 style (linear projections, per-block head counts, upcast, 2 transformer layers,
    flip_sin_to_cos=False, freq_shift=1), one float timestep broadcast over the batch of 2."""
    m, d, module, params, fwd = sd2
    x, c = _inputs(24)
    _check(_ours(fwd, params, x, 321.5, c), _ref(m, x, torch.tensor(321.5), c))


@pytest.mark.parametrize("flip,shift", [(True, 0), (False, 1)])
def test_timestep_embedding_int_and_float(flip, shift):
    """Our sinusoidal embedding equals diffusers' for int and fractional timesteps."""
    from diffusers.models.embeddings import get_timestep_embedding as ref_emb

    from dekag_jax.models.layers import get_timestep_embedding

    for t in (np.array([0, 10, 999]), np.array([0.5, 321.25, 998.75], np.float32)):
        ref = ref_emb(torch.from_numpy(t), 33, flip_sin_to_cos=flip, downscale_freq_shift=shift).numpy()
        ours = np.asarray(get_timestep_embedding(jnp.asarray(t), 33, flip_sin_to_cos=flip,
                                                 downscale_freq_shift=shift))
        # fp32 arguments up to ~1000 rad: one ulp of the frequency moves sin by ~6e-5
        np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_attention_impls_and_low_precision():
    """chunked (one and several chunks), einsum and jax.nn.dot_product_attention paths agree; bf16
    (fp32 softmax) stays close."""
    from dekag_jax.models.layers import attention

    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal((2, n, 12)), jnp.float32) for n in (20, 9, 9))

    @jax.jit  # one compile instead of many eager primitive compiles
    def all_variants(q, k, v):
        lo = [x.astype(jnp.bfloat16) for x in (q, k, v)]
        return (attention(q, k, v, 3, impl="einsum"), attention(q, k, v, 3, impl="jax"),
                attention(q, k, v, 3, impl="chunked"),
                attention(q, k, v, 3, impl="chunked", chunk_elements=2 * 3 * 5 * 9),  # 4 chunks of 5 queries
                attention(*lo, 3, upcast=False), attention(*lo, 3, upcast=True))

    ref, *same, lo, lo_up = all_variants(q, k, v)
    for x in same:
        np.testing.assert_allclose(np.asarray(x), np.asarray(ref), atol=1e-5)
    for x in (lo, lo_up):
        assert x.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(x, np.float32), np.asarray(ref), atol=5e-2)
    with pytest.raises(ValueError, match="divisible"):
        attention(q, k, v, 5)


def test_chunked_attention_custom_vjp_gradients():
    """The FlashAttention-style custom VJP of the chunked path equals autodiff of the plain path."""
    from dekag_jax.models.layers import attention

    rng = np.random.default_rng(1)
    q, k, v = (jnp.asarray(rng.standard_normal((2, n, 12)), jnp.float32) for n in (20, 9, 9))

    @jax.jit
    def grads(q, k, v):
        def g(**kw):
            return jax.grad(lambda *a: jnp.sum(jnp.sin(attention(*a, 3, **kw))), argnums=(0, 1, 2))(q, k, v)
        return g(impl="einsum"), g(impl="chunked"), g(impl="chunked", chunk_elements=2 * 3 * 5 * 9)

    ref, one, several = grads(q, k, v)
    for got in (one, several):
        for a, b in zip(got, ref):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_unet_config_heads_quirk(sd2):
    m, d, module, params, _ = sd2
    cfg = UNetConfig.from_hf(m.config)
    assert cfg.heads == (2, 4)  # SD2 attention_head_dim lists are head counts
    q = params["down_blocks.1"]["attentions.0"]["transformer_blocks.1"]["attn1"]["to_q"]["kernel"]
    assert q.shape == (64, 64)
    # num_attention_heads, when given, wins over attention_head_dim (diffusers semantics)
    cfg2 = UNetConfig.from_hf({**dict(m.config), "num_attention_heads": [4, 8]})
    assert cfg2.heads == (4, 8)
    assert cfg2.to_hf()["attention_head_dim"] == [4, 8] and cfg2.to_hf()["num_attention_heads"] is None


@pytest.mark.slow
def test_unet_bf16_runs(sd2):
    m, d, *_ = sd2
    module, params = load_unet(d, dtype=jnp.bfloat16)
    assert jax.tree.leaves(params)[0].dtype == jnp.bfloat16
    x, c = _inputs(24)
    t = torch.tensor([10, 500])
    fwd = jax.jit(lambda p, x, t, c: module.apply({"params": p}, x, t, c))
    _check(_ours(fwd, params, x, t, c), _ref(m, x, t, c), tol=5e-2)


@pytest.mark.slow
def test_unet_grad_subset_with_checkpointing(sd1):
    """value_and_grad over attention kernels only (the LoRA use case), with and without
    gradient checkpointing: same loss and gradients, all nonzero."""
    import re

    from dekag_jax.weights.convert import flatten, unflatten

    m, d, module, params, _ = sd1
    flat = flatten(params)
    pat = re.compile(r".*/attn[12]/to_(q|k|v|out\.0)/kernel$")
    train = {k: v for k, v in flat.items() if pat.match(k)}
    frozen = {k: v for k, v in flat.items() if k not in train}
    assert len(train) == 6 * 2 * 4  # 6 transformers (2 down, 1 mid, 3 up) x attn1/attn2 x q/k/v/out
    x = jnp.ones((1, 16, 16, 4))
    c = jnp.ones((1, 3, 32))
    results = []
    for gc in (False, True):
        mod = module.clone(gradient_checkpointing=gc)

        def loss(tp):
            out = mod.apply({"params": unflatten({**frozen, **tp})}, x, 5, c)
            return jnp.mean(out ** 2)

        results.append(jax.jit(jax.value_and_grad(loss))(train))
    (v0, g0), (v1, g1) = results
    np.testing.assert_allclose(float(v0), float(v1), rtol=1e-5)
    for k in g0:
        assert float(jnp.abs(g0[k]).max()) > 0, k
        np.testing.assert_allclose(np.asarray(g1[k]), np.asarray(g0[k]), rtol=1e-4, atol=1e-6)


def test_unet_round_trip(sd1, tmp_path):
    m, d, module, params, fwd = sd1
    out_dir = str(tmp_path / "unet_rt")
    save_unet(module, params, out_dir)
    cfg = json.load(open(os.path.join(out_dir, "config.json")))
    assert cfg["_class_name"] == "UNet2DConditionModel" and "_diffusers_version" in cfg
    m2 = diffusers.UNet2DConditionModel.from_pretrained(out_dir).eval()
    x, c = _inputs(32, seed=3)
    t = torch.tensor([1, 999])
    _check(_ref(m2, x, t, c), _ours(fwd, params, x, t, c))
    # and exactly the original weights
    a, b = m.state_dict(), m2.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _copy_dir(d, tmp_path, mutate_state=None, mutate_cfg=None):
    out = tmp_path / "mut"
    out.mkdir()
    cfg = json.load(open(os.path.join(d, "config.json")))
    if mutate_cfg:
        mutate_cfg(cfg)
    json.dump(cfg, open(out / "config.json", "w"))
    state = load_file(os.path.join(d, WEIGHTS_NAME))
    if mutate_state:
        mutate_state(state)
    save_file(state, str(out / WEIGHTS_NAME))
    return str(out)


def test_unet_wrong_shape_named(sd1, tmp_path):
    key = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"

    def mut(s):
        s[key] = np.zeros((64, 32), np.float32)

    d = _copy_dir(sd1[1], tmp_path, mutate_state=mut)
    with pytest.raises(ConversionError, match=r"attn2\.to_k\.weight.*\(32, 64\) vs model \(32, 32\)"):
        load_unet(d)


def test_unet_unknown_and_missing_key_named(sd1, tmp_path):
    def mut(s):
        s["down_blocks.0.resnets.0.extra_thing.weight"] = np.zeros((3,), np.float32)
        del s["conv_out.bias"]

    d = _copy_dir(sd1[1], tmp_path, mutate_state=mut)
    with pytest.raises(ConversionError) as e:
        load_unet(d)
    assert "extra_thing" in str(e.value) and "conv_out/bias" in str(e.value)


@pytest.mark.parametrize("field,value", [("class_embed_type", "timestep"), ("addition_embed_type", "text"),
                                         ("only_cross_attention", True), ("time_cond_proj_dim", 8),
                                         ("down_block_types", ["SimpleCrossAttnDownBlock2D", "DownBlock2D"]),
                                         ("some_future_field", 1)])
def test_unet_unsupported_config_named(sd1, field, value):
    cfg = {**dict(sd1[0].config), field: value}
    with pytest.raises(UnsupportedConfigError, match=field if field != "down_block_types" else "SimpleCrossAttn"):
        UNetConfig.from_hf(cfg)


def test_unet_bad_input_shape_named(sd1):
    module, params = sd1[2], sd1[3]
    with pytest.raises(ValueError, match="NHWC"):
        module.apply({"params": params}, jnp.zeros((1, 4, 16, 16)), 1, jnp.zeros((1, 3, 32)))
