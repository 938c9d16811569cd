"""Parity of our Flax AutoencoderKL (dekag_jax.models.vae + weights.sd loader) with diffusers'
PyTorch AutoencoderKL on a tiny random model with all parameters perturbed, for current
(to_q/to_k/to_v/to_out.0) and legacy (query/key/value/proj_attn, 1x1-conv shaped) keys."""
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
from dekag_jax.models.vae import VAEConfig  # noqa: E402
from dekag_jax.weights.convert import ConversionError  # noqa: E402
from dekag_jax.weights.sd import WEIGHTS_NAME, load_vae, save_vae  # noqa: E402

TOL = 1e-4  # max abs error relative to max |reference|

VAE_TINY = dict(
    in_channels=3, out_channels=3, block_out_channels=(16, 32), layers_per_block=1, latent_channels=4,
    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8,
    sample_size=16,
)


@pytest.fixture(scope="module")
def vae(tmp_path_factory):
    """(torch model, dir, module, params, jitted encode, jitted decode)."""
    torch.manual_seed(0)
    m = diffusers.AutoencoderKL(**VAE_TINY).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    d = str(tmp_path_factory.mktemp("vae"))
    m.save_pretrained(d, safe_serialization=True)
    module, params = load_vae(d)
    enc = jax.jit(lambda p, x: module.apply({"params": p}, x, method=module.encode))
    dec = jax.jit(lambda p, z: module.apply({"params": p}, z, method=module.decode))
    return m, d, module, params, enc, dec


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, 16, 16, generator=g) * 2 - 1, torch.randn(2, 4, 8, 8, generator=g)


def _nhwc(t):
    return jnp.asarray(t.numpy().transpose(0, 2, 3, 1))


def _nchw(a):
    return np.asarray(a, np.float32).transpose(0, 3, 1, 2)


def _check(ours, ref, tol=TOL):
    scale = np.abs(ref).max()
    err = np.abs(ours - ref).max()
    assert err <= tol * scale, f"max abs err {err:.3g} > {tol} * {scale:.3g}"


def _compare(m, params, enc, dec, seed=0):
    img, z = _data(seed)
    with torch.no_grad():
        post = m.encode(img).latent_dist
        ref_mean, ref_logvar = post.mean.numpy(), post.logvar.numpy()
        ref_dec = m.decode(z).sample.numpy()
    mean, logvar = enc(params, _nhwc(img))
    _check(_nchw(mean), ref_mean)
    _check(_nchw(logvar), ref_logvar)
    _check(_nchw(dec(params, _nhwc(z))), ref_dec)


def test_vae_parity_current_keys(vae):
    m, d, module, params, enc, dec = vae
    assert "to_q" in params["encoder"]["mid_block"]["attentions.0"]
    assert module.scaling_factor == 0.18215 and module.shift_factor is None
    _compare(m, params, enc, dec)


def test_vae_parity_legacy_keys(vae, tmp_path):
    """Old checkpoints: query/key/value/proj_attn, stored as 1x1 convs [C, C, 1, 1] or linear [C, C]."""
    m, d, module, params, enc, dec = vae
    state = load_file(os.path.join(d, WEIGHTS_NAME))
    legacy = {}
    names = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    n_renamed = 0
    for k, v in state.items():
        for new, old in names.items():
            tag = f".attentions.0.{new}."
            if tag in k:
                k = k.replace(tag, f".attentions.0.{old}.")
                if k.endswith("weight") and ("encoder" in k):
                    v = v[:, :, None, None]  # the encoder half as 1x1 conv kernels
                n_renamed += 1
        legacy[k] = v
    assert n_renamed == 16
    ld = tmp_path / "legacy"
    ld.mkdir()
    save_file(legacy, str(ld / WEIGHTS_NAME))
    with open(os.path.join(d, "config.json")) as f:
        (ld / "config.json").write_text(f.read())
    module2, params2 = load_vae(str(ld))
    _compare(m, params2, enc, dec)


def test_vae_sampling_call(vae):
    m, d, module, params, enc, dec = vae
    img, _ = _data(1)
    # shapes only (tracing, no compile): encode -> sample -> decode; parity is checked above
    out = jax.eval_shape(lambda p, x, k: module.apply({"params": p}, x, k), params, _nhwc(img),
                         jax.random.PRNGKey(0))
    assert out.shape == (2, 16, 16, 3) and out.dtype == jnp.float32


def test_vae_round_trip(vae, tmp_path):
    m, d, module, params, enc, dec = vae
    out_dir = str(tmp_path / "vae_rt")
    save_vae(module, params, out_dir)
    cfg = json.load(open(os.path.join(out_dir, "config.json")))
    assert cfg["_class_name"] == "AutoencoderKL" and cfg["scaling_factor"] == 0.18215
    m2 = diffusers.AutoencoderKL.from_pretrained(out_dir).eval()
    a, b = m.state_dict(), m2.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    _compare(m2, params, enc, dec, seed=2)


def test_vae_wrong_shape_named(vae, tmp_path):
    m, d, *_ = vae
    state = load_file(os.path.join(d, WEIGHTS_NAME))
    state["decoder.conv_in.weight"] = np.zeros((32, 4, 1, 1), np.float32)
    state["encoder.bogus.weight"] = np.zeros((2,), np.float32)
    bd = tmp_path / "bad"
    bd.mkdir()
    save_file(state, str(bd / WEIGHTS_NAME))
    with open(os.path.join(d, "config.json")) as f:
        (bd / "config.json").write_text(f.read())
    with pytest.raises(ConversionError) as e:
        load_vae(str(bd))
    msg = str(e.value)
    assert "decoder.conv_in.weight" in msg and "(1, 1, 4, 32) vs model (3, 3, 4, 32)" in msg
    assert "encoder.bogus.weight" in msg


@pytest.mark.parametrize("field,value", [("act_fn", "relu"), ("down_block_types", ["AttnDownEncoderBlock2D"] * 2),
                                         ("norm_type", "spatial"), ("made_up", 3)])
def test_vae_unsupported_config_named(vae, field, value):
    cfg = {**dict(vae[0].config), field: value}
    with pytest.raises(UnsupportedConfigError, match=field if field != "down_block_types" else "AttnDown"):
        VAEConfig.from_hf(cfg)
