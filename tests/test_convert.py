"""Strict PyTorch <-> Flax conversion on flat path dicts (dekag_jax/weights/convert.py)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dekag_jax.weights.convert import (ConversionError, flatten, flax_to_torch, torch_module_to_flax,
                                       torch_to_flax, unflatten)


class Tiny(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3), name="conv_in")(x)
        x = nn.GroupNorm(num_groups=2, name="blocks.0")(x)
        x = nn.Dense(5, name="to_out.0")(x)
        x = x * self.param("logit_scale", nn.initializers.ones, ())  # a raw 0-d parameter
        return x + nn.Embed(7, 5, name="pos")(jnp.zeros(x.shape[:1], jnp.int32))[:, None, None]


def _abstract():
    return jax.eval_shape(Tiny().init, jax.random.key(0), jnp.zeros((1, 6, 6, 3)))["params"]


def _torch_state(rng):
    return {
        "conv_in.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),  # OIHW
        "conv_in.bias": rng.normal(size=(4,)).astype(np.float32),
        "blocks.0.weight": rng.normal(size=(4,)).astype(np.float32),
        "blocks.0.bias": rng.normal(size=(4,)).astype(np.float32),
        "to_out.0.weight": rng.normal(size=(5, 4)).astype(np.float32),  # [out, in]
        "to_out.0.bias": rng.normal(size=(5,)).astype(np.float32),
        "pos.weight": rng.normal(size=(7, 5)).astype(np.float32),
        "logit_scale": np.asarray(rng.normal(), np.float32),
    }


def test_module_path_mapping():
    assert torch_module_to_flax("down_blocks.0.attentions.1.to_out.0") == "down_blocks.0/attentions.1/to_out.0"
    assert torch_module_to_flax("time_embedding.linear_1") == "time_embedding/linear_1"


def test_layouts_and_round_trip():
    state = _torch_state(np.random.default_rng(0))
    params = torch_to_flax(state, _abstract())
    assert params["conv_in"]["kernel"].shape == (3, 3, 3, 4)
    np.testing.assert_array_equal(params["conv_in"]["kernel"][1, 2, 0, 3], state["conv_in.weight"][3, 0, 1, 2])
    np.testing.assert_array_equal(params["to_out.0"]["kernel"], state["to_out.0.weight"].T)
    np.testing.assert_array_equal(params["blocks.0"]["scale"], state["blocks.0.weight"])
    np.testing.assert_array_equal(params["pos"]["embedding"], state["pos.weight"])
    assert params["logit_scale"].shape == ()  # raw parameters keep name, layout and rank
    back = flax_to_torch(params)
    assert set(back) == set(state)
    for k in state:
        np.testing.assert_array_equal(back[k], state[k])
    # The converted params run.
    Tiny().apply({"params": params}, jnp.ones((1, 6, 6, 3)))


def test_linear_stored_as_1x1_conv():
    state = _torch_state(np.random.default_rng(1))
    w = state["to_out.0.weight"]
    state["to_out.0.weight"] = w[:, :, None, None]
    params = torch_to_flax(state, _abstract())
    np.testing.assert_array_equal(params["to_out.0"]["kernel"], w.T)


def test_rename_and_ignore_rules():
    state = {("legacy." + k): v for k, v in _torch_state(np.random.default_rng(2)).items()}
    state["legacy.position_ids"] = np.arange(7)
    params = torch_to_flax(state, _abstract(), rename=[(r"^legacy\.", "")], ignore=[r"position_ids$"])
    assert set(flatten(params)) == set(flatten(_abstract()))


def test_strict_errors_name_every_problem():
    state = _torch_state(np.random.default_rng(3))
    state["extra.weight"] = np.zeros(3, np.float32)
    state["to_out.0.weight"] = np.zeros((5, 3), np.float32)
    del state["pos.weight"]
    with pytest.raises(ConversionError) as e:
        torch_to_flax(state, _abstract(), what="tiny")
    msg = str(e.value)
    assert "tiny" in msg and "extra.weight" in msg
    assert "to_out.0.weight" in msg and "(3, 5)" in msg and "(4, 5)" in msg
    assert "pos/embedding" in msg


def test_flatten_unflatten():
    tree = {"a": {"b.0": {"kernel": 1}, "c": 2}}
    assert unflatten(flatten(tree)) == tree
