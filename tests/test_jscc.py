"""The JSCC codec (models/jscc.py), its composition with the link (ka/transmission.py) and the eq. 4
objective (ka/objective.py, ka/codec_training.py). Tiny random models; the shipped edge VAE only
encodes a handful of generic-corpus images for the training test."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dekag_jax.channel import qam
from dekag_jax.ka.codec_training import ConditionGrid, init_state, make_train_step
from dekag_jax.ka.counts import SD_VAE_CONFIG, codec_param_counts
from dekag_jax.ka.objective import LossWeights, eq4_loss, eq4_terms, perceptual_distance, vae_encoder_features
from dekag_jax.ka.transmission import (LinkConfig, ReceiveFn, check_snr_db, condition_arrays, decode_latents,
                                       delay_spread_index, rate_unit_array, transmit_latents,
                                       transmit_latents_fixed_rate)
from dekag_jax.models.jscc import JSCCCodec, JSCCConfig, num_symbols, pad_from_symbols, rate_units, truncate_to_symbols
from dekag_jax.models.vae import AutoencoderKL, VAEConfig

SMALL = JSCCConfig(block_out_channels=(16,), layers_per_block=1, norm_num_groups=4)
VAE_CFG = VAEConfig(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                    block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, scaling_factor=0.5)


def _numpy_init(module, seed, *args):
    """Random parameters from abstract shapes (no compiled init: that costs more CPU than the tests).
    Kernels N(0, 1/fan_in), biases 0, norm scales 1."""
    shapes = jax.eval_shape(lambda *a: module.init(jax.random.key(0), *a), *args)["params"]
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name == "kernel":
            return jnp.asarray(rng.normal(0, 1 / np.sqrt(np.prod(leaf.shape[:-1])), leaf.shape), jnp.float32)
        return jnp.ones(leaf.shape, jnp.float32) if name == "scale" else jnp.zeros(leaf.shape, jnp.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope="module")
def models():
    codec = JSCCCodec(config=SMALL)
    params = _numpy_init(codec, 0, jax.ShapeDtypeStruct((1, 8, 8, 4), jnp.float32))
    vae = AutoencoderKL(config=VAE_CFG)
    vp = _numpy_init(vae, 1, jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32), jax.random.key(2))
    return codec, params, vae, vp


_CHAINS = {}


def _chain(codec, link=LinkConfig()):
    """One jitted mixed-rate chain per link config, shared by the tests (compiles are the cost)."""
    if link not in _CHAINS:
        _CHAINS[link] = jax.jit(lambda p, z, key, n, snr, w: transmit_latents(
            codec, p, z, key, rate_units=n, snr_db=snr, omega_index=w, link=link))
    return _CHAINS[link]


def _z(b=6, seed=3):
    return jax.random.normal(jax.random.key(seed), (b, 8, 8, 4))


# ----------------------------------------------------------------------------- truncation, rates


def test_truncation_gives_K_equal_X_tau_for_every_rate():
    code = np.asarray(jax.random.normal(jax.random.key(0), (2, 8, 8, 12)))
    X = 64 * 64                                   # a tiny-world image: 8x8 latents, f = 8
    slots = []

    @jax.jit
    def roundtrip(code):
        out = []
        for n in range(1, 7):
            s = truncate_to_symbols(code, f"{n}/64")
            out.append((s, pad_from_symbols(s, (8, 8), 12)))
        return out

    for n, (s, back) in enumerate(roundtrip(code), start=1):
        s, back = np.asarray(s), np.asarray(back)
        tau = n / 64
        assert s.shape == (2, round(X * tau)) == (2, num_symbols((8, 8), f"{n}/64"))
        assert s.dtype == np.complex64
        # first n channels real, next n imaginary, (row, col, channel) order
        np.testing.assert_array_equal(np.real(s).reshape(2, 8, 8, n), code[..., :n])
        np.testing.assert_array_equal(np.imag(s).reshape(2, 8, 8, n), code[..., n:2 * n])
        np.testing.assert_array_equal(back[..., :2 * n], code[..., :2 * n])
        assert not np.any(back[..., 2 * n:])
        slots.append(math.ceil(s.shape[-1] / 120))
        # the paper's size: 64x64x4 latents of 512x512 images, K = 512^2 tau
        assert num_symbols((64, 64), f"{n}/64") == 512 * 512 * n // 64
    assert slots == [1, 2, 2, 3, 3, 4]            # OFDM slots of J = 120 in the tiny world


@pytest.mark.parametrize("bad, msg", [("7/64", "not one of"), (0.5, "not one of"), (2, "did you mean 2/64"),
                                      ("abc", "not a number"), (0, "not one of"), ("1/128", "not one of")])
def test_bad_rate_is_one_clear_line(bad, msg):
    with pytest.raises(ValueError, match=msg) as e:
        rate_units(bad)
    assert "\n" not in str(e.value)


def test_rate_forms():
    from fractions import Fraction
    assert rate_units("3/64") == rate_units(Fraction(3, 64)) == rate_units(3 / 64) == 3
    np.testing.assert_array_equal(rate_unit_array(["1/64", "6/64"], 2), [1, 6])
    with pytest.raises(ValueError, match="2 rates given for a batch of 3"):
        rate_unit_array(["1/64", "6/64"], 3)


def test_bad_snr_and_delay_spread_are_clear():
    with pytest.raises(ValueError, match="not finite"):
        check_snr_db(float("nan"))
    with pytest.raises(ValueError, match="linear ratio"):
        check_snr_db(1e4)
    with pytest.raises(ValueError, match="not a number of dB"):
        check_snr_db("loud")
    with pytest.raises(ValueError, match="did you mean 3000ns"):
        delay_spread_index(3000.0)
    with pytest.raises(ValueError, match="not on the cached factor grid"):
        delay_spread_index(100e-9)
    with pytest.raises(ValueError, match="finite and > 0"):
        delay_spread_index(-300e-9)
    with pytest.raises(ValueError, match="broadcast to the batch"):
        condition_arrays(3, [0.0, 10.0], 300e-9)
    snr, w = condition_arrays(3, [0.0, 10.0, 20.0], [30e-9, 300e-9, 3000e-9])
    np.testing.assert_array_equal(w, [0, 1, 2])


def test_bad_conditions_raise_before_tracing(models):
    codec, params, vae, vp = models
    fn = ReceiveFn(codec, vae)
    for kw, msg in [(dict(rate="7/64", snr_db=10.0, delay_spread_s=300e-9), "rate"),
                    (dict(rate="2/64", snr_db=float("inf"), delay_spread_s=300e-9), "SNR"),
                    (dict(rate="2/64", snr_db=10.0, delay_spread_s=300.0), "delay spread")]:
        with pytest.raises(ValueError, match=msg):
            fn(params, vp, _z(2), jax.random.key(0), **kw)
    assert fn._run._cache_size() == 0


def test_config_validation():
    with pytest.raises(ValueError, match="exactly one entry"):
        JSCCConfig(block_out_channels=(32, 64))
    with pytest.raises(ValueError, match="divisible"):
        JSCCConfig(block_out_channels=(30,), norm_num_groups=4)
    with pytest.raises(ValueError, match="quantizer"):
        LinkConfig(quantizer="round")


# ----------------------------------------------------------------------------- the codec


def test_codec_shapes_and_parameter_names(models):
    codec, params, _, _ = models
    z = _z(2)
    code = jax.eval_shape(lambda p, z: codec.apply({"params": p}, z, method=JSCCCodec.encode), params, z)
    assert code.shape == (2, 8, 8, 12)
    assert jax.eval_shape(lambda p, c: codec.apply({"params": p}, c, method=JSCCCodec.reconstruct),
                          params, code).shape == (2, 8, 8, 4)
    assert set(params) == {"jscc_encoder", "latent_reconstructor"}
    assert "to_q" in params["jscc_encoder"]["mid_block"]["attentions.0"]
    assert "resnets.1" in params["latent_reconstructor"]["up_blocks.0"]
    with pytest.raises(ValueError, match="expects latents"):
        codec.apply({"params": params}, jnp.zeros((2, 8, 8, 3)), method=JSCCCodec.encode)


def test_paper_size_parameter_count():
    """The paper's ~50.5 M: f_JE + reconstructor (~1 M) + SD's VAE decoder (49.49 M)."""
    c = codec_param_counts(JSCCConfig.paper(), SD_VAE_CONFIG, (64, 64))
    assert c["latent_decoder"] == 49_490_199          # diffusers AutoencoderKL(SD) decoder + post_quant_conv
    assert c["vae_total"] == 83_653_863
    assert 0.9e6 < c["jscc_encoder"] + c["latent_reconstructor"] < 1.1e6
    assert 50.3e6 < c["total"] < 50.7e6


# ----------------------------------------------------------------------------- the chain


def test_mixed_rate_layout_equals_per_rate_path(models):
    """One compile for all rates gives what the literal K-symbol path gives, rate by rate."""
    codec, params, _, _ = models
    z = _z(6)
    n = jnp.arange(1, 7)
    link = LinkConfig()
    fixed = jax.jit(lambda p, z, snr, rate: transmit_latents_fixed_rate(
        codec, p, z, jax.random.key(5), rate=rate, snr_db=snr, omega_index=1, link=link), static_argnums=3)
    for snr in (160.0,):
        t = _chain(codec)(params, z, jax.random.key(5), n, snr, 1)
        for i in (0, 5):              # one compile per rate on this path: two rates keep the test fast
            f = fixed(params, z[i:i + 1], snr, f"{i + 1}/64")
            K = 64 * (i + 1)
            assert int(t.mask[i].sum()) == K and bool(t.mask[i, :K].all())
            np.testing.assert_allclose(t.sent[i, :K], f.sent[0], atol=1e-6)
            np.testing.assert_allclose(t.z_check[i], f.z_check[0], atol=2e-4)


def test_power_normalisation_and_qam(models):
    codec, params, _, _ = models
    z = _z(6) * 5.0
    t = _chain(codec)(params, z, jax.random.key(0), jnp.arange(1, 7), 10.0, 0)
    p = np.sum(np.abs(np.asarray(t.symbols)) ** 2, axis=1) / np.asarray(t.mask).sum(1)
    np.testing.assert_allclose(p, 1.0, rtol=1e-5)
    assert not np.any(np.asarray(t.symbols)[~np.asarray(t.mask)])
    sent = np.asarray(t.sent)[np.asarray(t.mask)]
    pts = np.asarray(qam.constellation(64))
    assert np.min(np.abs(sent[:, None] - pts[None]), axis=1).max() < 1e-6      # valid 64-QAM points


def test_high_snr_chain_reproduces_pre_channel_path(models):
    codec, params, vae, vp = models
    z = _z(6)
    n = jnp.arange(1, 7)
    ref = _chain(codec, LinkConfig(channel="none"))(params, z, jax.random.key(0), n, 0.0, 0)
    for omega in (0, 2):
        t = _chain(codec)(params, z, jax.random.key(1), n, 150.0, omega)
        np.testing.assert_allclose(t.received, ref.sent, atol=1e-3)
        np.testing.assert_allclose(t.z_check, ref.z_check, atol=1e-3)
    low = _chain(codec)(params, z, jax.random.key(1), n, 0.0, 2)
    assert float(jnp.mean(jnp.abs(low.z_check - ref.z_check))) > 1e-3       # the channel does act


def test_whole_chain_shapes_per_sample_conditions(models):
    codec, params, vae, vp = models
    fn = ReceiveFn(codec, vae)
    zc, xc = fn(params, vp, _z(3), jax.random.key(0), rate=["2/64", "4/64", "6/64"], snr_db=[0.0, 10.0, 20.0],
                delay_spread_s=[30e-9, 300e-9, 3000e-9])
    assert zc.shape == (3, 8, 8, 4) and xc.shape == (3, 16, 16, 3)
    assert float(xc.min()) >= 0.0 and float(xc.max()) <= 1.0
    fn(params, vp, _z(3), jax.random.key(1), rate="1/64", snr_db=5.0, delay_spread_s=30e-9)
    from dekag_jax.channel.condition import Condition
    zc2, _ = fn(params, vp, _z(3), jax.random.key(0), condition=[Condition("2/64", "0dB", "30ns"),
                                                                 Condition("4/64", "10dB", "300ns"),
                                                                 Condition("6/64", "20dB", "3us")])
    np.testing.assert_allclose(zc2, zc, atol=1e-6)                            # the channel's Condition type
    assert fn._run._cache_size() == 1                                          # one compile for all phi


def _image_loss(codec, vae, vp, link):
    def f(params, z, key):
        t = transmit_latents(codec, params, z, key, rate_units=3, snr_db=10.0, omega_index=1, link=link)
        x_check = decode_latents(vae, vp, t.z_check)
        return jnp.mean((x_check - decode_latents(vae, vp, z)) ** 2)
    return jax.jit(jax.grad(f))


def test_gradient_flows_through_quantiser_and_channel(models):
    codec, params, vae, vp = models
    z = _z(2)

    def enc_norm(quantizer):
        g = _image_loss(codec, vae, vp, LinkConfig(quantizer=quantizer))(params, z, jax.random.key(0))
        leaves = jax.tree_util.tree_leaves(g["jscc_encoder"])
        assert all(np.all(np.isfinite(np.asarray(x))) for x in leaves)
        return float(optax.global_norm(g["jscc_encoder"])), float(optax.global_norm(g["latent_reconstructor"]))

    soft_enc, soft_rec = enc_norm("soft")
    assert soft_enc > 1e-6 and soft_rec > 1e-6


# ----------------------------------------------------------------------------- objective, training


def test_perceptual_distance():
    a = [np.random.default_rng(0).normal(size=(2, 4, 4, 8)).astype(np.float32)]
    same, scaled, neg = jax.jit(lambda a: (perceptual_distance(a, a), perceptual_distance(a, [3.0 * a[0]]),
                                           perceptual_distance(a, [-a[0]])))(a)
    assert float(jnp.max(jnp.abs(same))) < 1e-6
    np.testing.assert_allclose(scaled, 0.0, atol=1e-6)    # scale invariant per position
    np.testing.assert_allclose(neg, 4.0, rtol=1e-5)


def test_eq4_terms_vanish_at_the_ideal_and_weights_apply(models):
    _, _, vae, vp = models
    z = _z(2)
    feat = vae_encoder_features(vae)
    pts = qam.constellation(64)[:10][None].repeat(2, 0)

    @jax.jit
    def terms_of(vp, z, z_check, symbols):
        return eq4_terms(z=z, z_check=z_check, x=decode_latents(vae, vp, z), x_check=decode_latents(vae, vp, z_check),
                         symbols=symbols, qam_order=64, features=lambda im: feat(vp, im))

    terms = terms_of(vp, z, z, pts)
    for k, v in terms.items():
        assert v.shape == (2,) and float(jnp.max(jnp.abs(v))) < 1e-6, k
    terms = terms_of(vp, z, z + 0.1, pts * 1.05)
    w = LossWeights(latent=1.0, image=2.0, perceptual=0.5, constellation=3.0)
    loss, m = eq4_loss(terms, w)
    want = np.mean(terms["latent"] + 2 * terms["image"] + 0.5 * terms["perceptual"] + 3 * terms["constellation"])
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    assert all(float(terms[k].min()) > 0 for k in terms)
    with pytest.raises(ValueError, match="image"):
        LossWeights(image=-1.0)


@pytest.fixture(scope="module")
def corpus_latents():
    """A handful of generic-corpus images through the shipped edge VAE encoder (the tiny world's
    D_JSCC): 8x8x4 latents."""
    from dekag_jax.diffusion.generate import encode_images
    from dekag_jax.world.corpus import generic_corpus
    from dekag_jax.world.models import load_edge_pipeline

    _, imgs = generic_corpus(8, seed=3)
    pipe = load_edge_pipeline(components=("vae",))
    return np.asarray(encode_images(pipe, jnp.asarray(imgs, jnp.float32) / 255.0))


def test_short_training_lowers_eq4_loss(models, corpus_latents):
    codec, params, vae, vp = models
    z = jnp.asarray(corpus_latents)
    x = decode_latents(vae, vp, z)
    link = LinkConfig()
    grid = ConditionGrid(rates=("2/64", "4/64", "6/64"), snrs_db=(5.0, 15.0), delay_spreads_s=(300e-9, 3000e-9))
    opt = optax.adam(3e-3)
    step = make_train_step(codec, vae, opt, link=link, weights=LossWeights(image=10.0), grid=grid,
                           features=vae_encoder_features(vae))
    state = init_state(jax.tree_util.tree_map(jnp.copy, params), opt)
    aux = {"vae": vp, "feat": vp}
    losses, psnrs = [], []
    for i in range(30):
        state, m = step(state, aux, z, x, jax.random.key(100 + i))
        losses.append(float(m["loss"]))
        psnrs.append(float(m["psnr"]))
    assert int(state["step"]) == 30
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
    assert np.mean(psnrs[-5:]) > np.mean(psnrs[:5]) + 1.0, psnrs


def test_codec_save_load_roundtrip_and_strict(models, tmp_path):
    from dekag_jax.ka.codec_io import WEIGHTS_NAME, load_codec, save_codec
    from dekag_jax.weights.convert import ConversionError, flatten
    from dekag_jax.weights.files import save_state_dict

    codec, params, _, _ = models
    save_codec(str(tmp_path), SMALL, params, extra={"steps": 1})
    c2, p2, meta = load_codec(str(tmp_path))
    assert c2.config == SMALL and meta["training"] == {"steps": 1}
    flat, flat2 = flatten(params), flatten(p2)
    assert set(flat) == set(flat2)
    for k in flat:      # float16 storage
        np.testing.assert_allclose(flat2[k], np.asarray(flat[k], np.float16).astype(np.float32))
    bad = {k: np.asarray(v, np.float16) for k, v in flat.items() if "conv_in" not in k}
    bad["extra/kernel"] = np.zeros(3, np.float16)
    bad["jscc_encoder/conv_out/bias"] = np.zeros(5, np.float16)
    save_state_dict(bad, str(tmp_path / WEIGHTS_NAME))
    with pytest.raises(ConversionError, match="6 problem") as e:     # 4 missing, 1 unexpected, 1 shape: one error
        load_codec(str(tmp_path))
    msg = str(e.value)
    assert "missing jscc_encoder/conv_in/kernel" in msg and "unexpected extra/kernel" in msg
    assert "jscc_encoder/conv_out/bias: shape (5,) != (12,)" in msg
