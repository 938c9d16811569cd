"""Attention implementation chosen by backend ("auto"), explicit choices still honoured."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dekag_jax.models import DEFAULT_ATTENTION, UNet2DConditionModel, UNetConfig, resolve_attention_impl
from dekag_jax.models.layers import Attention, VAEAttention, attention


def test_auto_resolution_by_backend():
    assert DEFAULT_ATTENTION == "auto"
    assert resolve_attention_impl("auto", "cpu") == "chunked"
    for b in ("gpu", "cuda", "rocm", "tpu", "GPU"):
        assert resolve_attention_impl("auto", b) == "jax", b
    assert resolve_attention_impl("auto", "some_new_backend") == "chunked"  # the safe, memory-lean path
    for impl in ("chunked", "einsum", "jax"):  # explicit choices win on every backend
        assert resolve_attention_impl(impl, "gpu") == impl == resolve_attention_impl(impl, "cpu")
    assert resolve_attention_impl() == ("chunked" if jax.default_backend() == "cpu" else "jax")
    with pytest.raises(ValueError, match="unknown attention impl 'flash'"):
        resolve_attention_impl("flash")


def test_auto_and_both_backend_choices_agree():
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal((2, n, 16)), jnp.float32) for n in (24, 7, 7))
    impls = ("einsum", "auto", "chunked", "jax")
    outs = jax.jit(lambda q, k, v: [attention(q, k, v, 4, impl=i) for i in impls])(q, k, v)  # one compile
    for impl, o in zip(impls[1:], outs[1:]):
        np.testing.assert_allclose(np.asarray(o), np.asarray(outs[0]), atol=1e-5, err_msg=impl)


def test_modules_default_to_auto_and_explicit_choices_match():
    cfg = UNetConfig.from_hf(dict(sample_size=8, block_out_channels=(16, 32), norm_num_groups=8,
                                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                  cross_attention_dim=16, attention_head_dim=4))
    assert UNet2DConditionModel(config=cfg).attention_impl == "auto"  # the model-wide default
    assert VAEAttention(attention_head_dim=8).attention_impl == "auto"
    x = jax.random.normal(jax.random.key(0), (2, 6, 16))
    ctx = jax.random.normal(jax.random.key(1), (2, 5, 12))
    params = jax.jit(Attention(heads=4, dim_head=4).init)(jax.random.key(2), x, ctx)["params"]
    run = jax.jit(lambda p: {impl: Attention(heads=4, dim_head=4, attention_impl=impl).apply({"params": p}, x, ctx)
                             for impl in ("auto", "chunked", "jax", "einsum")})
    outs = {k: np.asarray(v) for k, v in run(params).items()}
    for impl in ("auto", "chunked", "jax"):
        np.testing.assert_allclose(outs[impl], outs["einsum"], atol=1e-5, err_msg=impl)
