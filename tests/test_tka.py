"""T-KA methods (dekag_jax/ka/tka.py): No-KA, LoRA, CALA, Full-FT on a tiny random codec and VAE."""
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dekag_jax.ka import tka
from dekag_jax.ka.objective import LossWeights
from dekag_jax.ka.transmission import LinkConfig
from dekag_jax.models.jscc import JSCCCodec, JSCCConfig
from dekag_jax.models.vae import AutoencoderKL, VAEConfig
from dekag_jax.weights.convert import flatten

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RANK = 4
GRID = ((2, 6), (0.0, 20.0), (30e-9, 3000e-9))
WEIGHTS = LossWeights(latent=1.0, image=10.0, perceptual=0.1, constellation=0.05)
LIGHT = LossWeights(latent=1.0, image=10.0, perceptual=0.0, constellation=0.05)   # no VAE-encoder features


@pytest.fixture(scope="module")
def models():
    codec = JSCCCodec(config=JSCCConfig(block_out_channels=(16,), norm_num_groups=4))
    cp = jax.jit(codec.init)(jax.random.key(0), jnp.zeros((1, 4, 4, 4)))["params"]
    vae = AutoencoderKL(config=VAEConfig(down_block_types=("DownEncoderBlock2D",) * 2,
                                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
                                         norm_num_groups=4, scaling_factor=0.5, sample_size=8))
    vp = jax.jit(vae.init)(jax.random.key(1), jnp.zeros((1, 8, 8, 3)), jax.random.key(2))["params"]
    z = jax.random.normal(jax.random.key(3), (6, 4, 4, 4))
    from dekag_jax.ka.transmission import decode_latents
    x = jax.jit(lambda p, z: decode_latents(vae, p, z))(vp, z)     # jitted: eager flax is slow on this CPU
    return codec, cp, vae, vp, z, x


def _setup(method, models, link=LinkConfig()):
    codec, cp, vae, vp, _, _ = models
    return tka.make_setup(method, codec, cp, vae, vp, link=link, rank=RANK)


def _perturb(trainable, key, scale=0.05):
    """Non-zero B and gates, so every adapter parameter has a gradient and gates act."""
    leaves, tdef = jax.tree_util.tree_flatten(trainable)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(tdef, [l + scale * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)])


def _conds(b):
    return (jnp.asarray([2, 6, 4, 3, 5, 2][:b], jnp.int32), jnp.asarray([0.0, 20.0, 10.0, 5.0, 15.0, 20.0][:b]),
            jnp.asarray([0, 2, 1, 2, 0, 1][:b], jnp.int32))


def test_targets_named_as_config_and_paper(models):
    spec = importlib.util.spec_from_file_location("tka_cfg", os.path.join(ROOT, "configs", "tka.py"))
    cfg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cfg)
    assert cfg.CODEC_TARGETS == tka.CODEC_TARGETS and cfg.DECODER_FIRST_SIX == tka.DECODER_FIRST_SIX
    c = cfg.get_config("cala")
    assert c.methods == "cala" and c.adapter.rank == 16
    assert cfg.get_config("paper").train.epochs == 1000 and cfg.get_config("paper").train.lr == 1e-4
    with pytest.raises(ValueError, match="variant"):
        cfg.get_config("dora")
    s = _setup("lora", models)
    assert sorted(s.dec_specs) == sorted([
        "decoder/conv_in/kernel", "decoder/mid_block/resnets.0/conv1/kernel", "decoder/mid_block/resnets.0/conv2/kernel",
        "decoder/mid_block/attentions.0/to_q/kernel", "decoder/mid_block/attentions.0/to_k/kernel",
        "decoder/mid_block/attentions.0/to_v/kernel"])
    codec_kernels = [p for p in flatten(models[1]) if p.endswith("kernel")]
    assert sorted(s.codec_specs) == sorted(codec_kernels)   # every Dense/Conv kernel of f_JE and the reconstructor
    with pytest.raises(ValueError, match="unknown T-KA method"):
        _setup("dora", models)


@pytest.mark.parametrize("method", [pytest.param("lora", marks=pytest.mark.slow), "cala"])
def test_zero_initialised_adapters_leave_outputs_unchanged(models, method):
    _, cp, _, vp, z, _ = models
    base = _setup("noka", models)
    s = _setup(method, models)
    frozen = tka.frozen_tree(cp, vp)
    tr = tka.init_method(s, jax.random.key(5), cp, vp)
    n, snr, w = _conds(z.shape[0])
    t0, x0 = jax.jit(lambda: tka.forward(base, {}, frozen, z, jax.random.key(7), n, snr, w))()
    fwd = jax.jit(lambda tr: tka.forward(s, tr, frozen, z, jax.random.key(7), n, snr, w))
    t1, x1 = fwd(tr)
    np.testing.assert_allclose(np.asarray(t0.z_check), np.asarray(t1.z_check), atol=1e-6, rtol=0)
    np.testing.assert_allclose(np.asarray(x0), np.asarray(x1), atol=1e-6, rtol=0)
    # and a perturbed adapter does change them (the comparison can fail)
    _, x2 = fwd(_perturb(tr, jax.random.key(8)))
    assert float(jnp.max(jnp.abs(x2 - x0))) > 1e-4


# CALA's gradients are also covered by the short-run test below (every leaf moves), in the default run
@pytest.mark.parametrize("method", ["noka", pytest.param("lora", marks=pytest.mark.slow),
                                    pytest.param("cala", marks=pytest.mark.slow), "fullft"])
def test_gradients_reach_only_the_intended_parameters(models, method):
    codec, cp, vae, vp, z, x = models
    s = _setup(method, models)
    frozen = tka.frozen_tree(cp, vp)
    tr = tka.init_method(s, jax.random.key(5), cp, vp)
    leaves = flatten(tr) if tr else {}
    if method == "noka":
        assert tr == {}
        return
    if method in ("lora", "cala"):
        names = {p.rsplit("/", 1)[-1] for p in leaves}
        want = {"lora_A", "lora_B"} | ({"gate_kernel", "gate_bias"} if method == "cala" else set())
        assert names == want
        tr = _perturb(tr, jax.random.key(9))
    else:
        # Full-FT: every codec parameter and the latent decoder (decoder + post_quant_conv), not the VAE encoder
        want = {f"codec/{p}" for p in flatten(cp)}
        want |= {f"dec/{p}" for p in flatten(vp) if p.startswith(("decoder/", "post_quant_conv/"))}
        assert set(leaves) == want
    loss_fn = tka.make_loss(s, WEIGHTS if method == "lora" else LIGHT, GRID)   # lora: with the perceptual term
    g_tr = jax.jit(jax.grad(lambda a, b: loss_fn(a, b, z, x, jax.random.key(11))[0]))(tr, frozen)
    assert set(flatten(g_tr)) == set(flatten(tr))
    zero_tr = [p for p, v in flatten(g_tr).items() if not np.any(np.asarray(v))]
    assert not zero_tr, f"no gradient reaches {zero_tr[:5]}"


def test_cala_mixed_condition_batch_equals_per_sample_runs(models):
    _, cp, _, vp, z, _ = models
    s = _setup("cala", models, LinkConfig(channel="none"))   # deterministic link: the gates are under test
    frozen = tka.frozen_tree(cp, vp)
    tr = _perturb(tka.init_method(s, jax.random.key(5), cp, vp), jax.random.key(12), scale=0.5)
    n, snr, w = _conds(3)
    fwd = jax.jit(lambda tr, zz, n, s_, w: tka.forward(s, tr, frozen, zz, jax.random.key(0), n, s_, w)[1])
    xb = np.asarray(fwd(tr, z[:3], n, snr, w))
    for b in range(3):
        xa = np.asarray(fwd(tr, z[b:b + 1], n[b:b + 1], snr[b:b + 1], w[b:b + 1]))
        np.testing.assert_allclose(xb[b], xa[0], atol=2e-5, rtol=1e-5)
    # the gate does depend on phi: the same latent under two conditions of the same rate differs
    zz = jnp.stack([z[0], z[0]])
    x2 = np.asarray(fwd(tr, zz, jnp.asarray([4, 4]), jnp.asarray([0.0, 20.0]), jnp.asarray([0, 2])))
    assert np.max(np.abs(x2[0] - x2[1])) > 1e-4


def test_short_tka_run_lowers_the_loss_and_moves_only_the_trainable_tree(models):
    _, cp, _, vp, z, x = models
    s = _setup("cala", models)
    frozen = tka.frozen_tree(cp, vp)
    frozen_before = jax.tree_util.tree_map(np.array, frozen)
    tr = tka.init_method(s, jax.random.key(5), cp, vp)
    tr_before = flatten(jax.tree_util.tree_map(np.array, tr))
    loss_fn = jax.jit(lambda t: tka.make_loss(s, LIGHT, GRID)(t, frozen, z, x, jax.random.key(99))[0])
    before = float(loss_fn(tr))
    tr, hist = tka.train(s, tr, frozen, z, x, grid=GRID, weights=LIGHT, epochs=10, batch=6, lr=3e-3)
    assert len(hist) == 10
    after = float(loss_fn(tr))
    assert after < 0.9 * before, (before, after)
    # Adam moved every adapter leaf (A, B, gates), the frozen codec and VAE are bit-identical
    still = [p for p, v in flatten(tr).items() if not np.any(np.asarray(v) != tr_before[p])]
    assert not still, still[:5]
    for a, b in zip(jax.tree_util.tree_leaves(frozen_before), jax.tree_util.tree_leaves(frozen)):
        np.testing.assert_array_equal(a, np.asarray(b))


@pytest.mark.slow
def test_evaluate_zero_init_equals_noka(models):
    _, cp, _, vp, z, x = models
    frozen = tka.frozen_tree(cp, vp)
    s = _setup("cala", models)
    tr = tka.init_method(s, jax.random.key(5), cp, vp)
    e0 = tka.evaluate(_setup("noka", models), {}, frozen, z[:3], x[:3], grid=GRID, chunk=5)
    e1 = tka.evaluate(s, tr, frozen, z[:3], x[:3], grid=GRID, chunk=5)
    assert e0["n_conditions"] == 8 and len(e0["conditions"]) == 8
    assert e0["psnr_mean"] == pytest.approx(e1["psnr_mean"], abs=1e-4)     # zero-init CALA = No-KA, same draws
    assert set(e0["by_snr"]) == {"0.0", "20.0"}


def test_checkpoint_and_counts(models, tmp_path):
    _, cp, _, vp, z, x = models
    frozen = tka.frozen_tree(cp, vp)
    s = _setup("cala", models)
    tr = tka.init_method(s, jax.random.key(5), cp, vp)
    tr = _perturb(tr, jax.random.key(3))
    path = str(tmp_path / "cala.safetensors")
    tka.save_checkpoint(path, s, tr)
    method, back = tka.load_checkpoint(path)
    assert method == "cala"
    for a, b in zip(jax.tree_util.tree_leaves(tr), jax.tree_util.tree_leaves(back)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    c = tka.adapter_counts(s, cp, vp)
    assert c["gate_params"] == sum(4 * sp.rank for sp in (*s.codec_specs.values(), *s.dec_specs.values()))
    assert c["update_params"] == sum(int(np.prod(v.shape)) for v in jax.tree_util.tree_leaves(tr))
    assert c["update_fp16_bytes"] == 2 * c["update_params"]
    f = tka.adapter_counts(_setup("fullft", models), cp, vp)
    assert f["ratio"] == 1.0 and tka.adapter_counts(_setup("noka", models), cp, vp)["update_params"] == 0
    # the gate form travels with the checkpoint: counts per form, a mismatch is one clear error
    from dekag_jax.adapt import cala
    codec, _, vae, _, _, _ = models
    for form in ("mlp", "linear"):
        sf = tka.make_setup("cala", codec, cp, vae, vp, rank=RANK, cala_gate=form)
        trf = tka.init_method(sf, jax.random.key(5), cp, vp)
        cf = tka.adapter_counts(sf, cp, vp)
        assert cf["gate_params"] == sum(cala.gate_param_count(sp.rank, form=form)
                                        for sp in (*sf.codec_specs.values(), *sf.dec_specs.values()))
        assert cf["update_params"] == sum(int(np.prod(v.shape)) for v in jax.tree_util.tree_leaves(trf))
        pf = str(tmp_path / f"cala_{form}.safetensors")
        tka.save_checkpoint(pf, sf, trf)
        assert tka.load_checkpoint(pf, sf)[0] == "cala"
        with pytest.raises(ValueError, match=f"trained in form '{form}'.*'sigmoid2'"):
            tka.load_checkpoint(pf, s)
    with pytest.raises(ValueError, match="trained in form 'sigmoid2'.*'linear'"):
        tka.load_checkpoint(path, sf)
    with pytest.raises(ValueError, match="a 'cala' checkpoint, the setup is 'lora'"):
        tka.load_checkpoint(path, _setup("lora", models))
    with pytest.raises(ValueError, match="unknown CALA gate form"):
        tka.make_setup("cala", codec, cp, vae, vp, rank=RANK, cala_gate="relu")


def test_cli_refuses_bad_config(tmp_path):
    from dekag_jax.errors import UsageError

    with pytest.raises(UsageError, match="unknown"):
        tka._parse(["--config", os.path.join(ROOT, "configs/tka.py:smoke"), "--config.methods=lora,dora",
                    "--workdir", str(tmp_path)])
    with pytest.raises(UsageError, match="rate|1/64"):
        tka._parse(["--config", os.path.join(ROOT, "configs/tka.py:smoke"), "--config.conditions.rates=9/64",
                    "--config.codec=random", "--workdir", str(tmp_path)])
    with pytest.raises(UsageError, match="no such directory"):
        tka._parse(["--config", os.path.join(ROOT, "configs/tka.py:smoke"), "--config.codec=/nonexistent",
                    "--workdir", str(tmp_path)])
