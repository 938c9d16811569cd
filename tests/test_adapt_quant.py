"""Quantised adapter updates (dekag_jax.adapt.quant) and accounting (dekag_jax.adapt.accounting)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dekag_jax.adapt import accounting, cala, lora, quant


@pytest.mark.parametrize("bits", quant.BITS)
def test_error_is_within_half_a_step(bits):
    rng = np.random.default_rng(bits)
    # channels of very different magnitudes, one all-zero channel, an exact-max element
    x = rng.standard_normal((24, 7)) * np.array([1e-3, 1e-2, 0.1, 1.0, 10.0, 0.0, 3e-2])
    q, s16 = quant.quantise(x, bits)
    qmax = 2 ** (bits - 1) - 1
    assert s16.dtype == np.float16 and s16.shape == (7,)
    assert np.all(np.abs(q) <= qmax)
    s = np.max(np.abs(x), axis=0) / qmax
    s16f = s16.astype(np.float64)
    assert np.all(s16f >= s)  # rounded up: nothing clips
    normal = s >= 2.0 ** -14  # float16 normal range: the scale is within one fp16 rounding of s
    assert np.all(s16f[normal] <= s[normal] * (1 + 2.0 ** -10))
    xh = quant.dequantise(q, s16, np.float64)
    assert np.all(np.abs(x - xh) <= s16f / 2 + 1e-15)
    assert np.all(xh[:, 5] == 0)
    # the bound is tight: some element is off by more than a quarter step
    assert np.max(np.abs(x - xh)[:, 3] / s16f[3]) > 0.25


@pytest.mark.parametrize("bits", quant.BITS)
def test_packed_bytes_are_exact_and_round_trip(bits):
    rng = np.random.default_rng(0)
    for shape in [(13, 8), (8, 5), (3, 3, 4, 8), (1, 1, 8, 3), (8,)]:
        x = rng.standard_normal(shape).astype(np.float32)
        data = quant.pack_matrix(x, bits)
        n = math.prod(shape)
        assert len(data) == math.ceil(n * bits / 8) + 2 * shape[-1] == quant.matrix_bytes(shape, bits)
        q, s16 = quant.quantise(x, bits)
        np.testing.assert_array_equal(quant.unpack_matrix(data, shape, bits), quant.dequantise(q, s16))
    with pytest.raises(ValueError, match="bits"):
        quant.quantise(x, 3)
    with pytest.raises(ValueError, match="bytes"):
        quant.unpack_matrix(data[:-1], shape, bits)


def test_adapter_set_encode_decode_and_counts():
    from dekag_jax.models.clip_text import CLIPTextConfig, CLIPTextModel
    m = CLIPTextModel(config=CLIPTextConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, max_position_embeddings=8, eos_token_id=39))
    params = jax.eval_shape(m.init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
    adapters, specs = lora.init(jax.random.key(0), params, [(r".*/(q|v)_proj/kernel", 4), (r".*/fc1/kernel", 2)],
                                gates=True)
    adapters = {p: {**a, "lora_B": a["lora_B"] + 0.1} for p, a in adapters.items()}
    # 2 layers x (q, v: 4*(32+32)) + 2 x fc1: 2*(32+64); gates 3R+R each
    n = 2 * 2 * 4 * 64 + 2 * 2 * 96 + 4 * cala.gate_param_count(4) + 2 * cala.gate_param_count(2)
    assert accounting.adapter_count(adapters) == accounting.count_specs(params, specs, gates=True) == n
    assert accounting.spec_bytes(params, specs, gates=True) == quant.fp16_bytes(adapters) == 2 * n
    for bits in (8, 2):
        packed = quant.encode(adapters, bits)
        sent = sum(len(b) for ad in packed.values() for b in ad.values())
        assert sent == quant.payload_bytes(adapters, bits) == accounting.spec_bytes(params, specs, bits, gates=True)
        back = quant.decode(packed, adapters, bits)
        for p, ad in adapters.items():
            for k, v in ad.items():
                _, s16 = quant.quantise(v, bits)
                assert np.all(np.abs(np.asarray(v) - back[p][k]) <= s16.astype(np.float32) / 2 + 1e-7)


def test_sd21_unet_counts_reproduce_the_issue_table():
    from dekag_jax.models.unet import UNet2DConditionModel, UNetConfig
    from dekag_jax.weights.sd import abstract_params
    import importlib.util
    import os
    spec = importlib.util.spec_from_file_location(
        "adapter_counts", os.path.join(os.path.dirname(__file__), "..", "scripts", "adapter_counts.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    module = UNet2DConditionModel(config=UNetConfig.from_hf(mod.SD21_UNET))
    params = abstract_params(module, *module.dummy_inputs())
    params = params.get("params", params)
    rows = {r["targets"]: r for r in accounting.table(params, rank=8)}
    got = {k: round(r["params"] / 1e6, 2) for k, r in rows.items()}
    assert got == {"attention q/k/v/out": 1.66, "+ proj_in/proj_out": 2.06, "+ feed-forward": 3.46,
                   "every Linear": 3.88, "every Linear and Conv": 8.52}
    assert rows["attention q/k/v/out"]["params"] == 1659904
    assert rows[accounting.DEFAULT_TARGETS]["default"]
    assert rows["+ feed-forward"]["fp16_bytes"] == 2 * 3457024
