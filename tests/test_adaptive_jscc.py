"""RC-JSCC and VJ-MAE (models/adaptive_jscc.py, ka/adaptive.py): K = X tau for the policies' rates,
the Gumbel choice (differentiable in training, deterministic at inference), gradients reaching the
policy, budgets, the entropy policy, save/load, and the T-KA methods on them (tiny random models)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dekag_jax.ka import tka
from dekag_jax.ka.adaptive import make_adaptive_train_step, temperature_at, transmit_adaptive
from dekag_jax.ka.objective import LossWeights
from dekag_jax.ka.transmission import LinkConfig, ReceiveFn, decode_latents
from dekag_jax.models import adaptive_jscc as A
from dekag_jax.models.vae import AutoencoderKL, VAEConfig
from dekag_jax.weights.convert import flatten

SMALL = dict(block_out_channels=(16,), norm_num_groups=4)
LIGHT = LossWeights(latent=1.0, image=10.0, perceptual=0.0, constellation=0.05)


@pytest.fixture(scope="module")
def models():
    rc = A.RCJSCCCodec(config=A.RCJSCCConfig(**SMALL, hidden=8))
    rp = jax.jit(rc.init)(jax.random.key(0), jnp.zeros((1, 4, 4, 4)), jnp.zeros((1,)))["params"]
    z = jax.random.normal(jax.random.key(3), (6, 4, 4, 4)) * jnp.asarray([0.2, 0.5, 0.8, 1.0, 1.5, 3.0])[:, None, None,
                                                                                                          None]
    vcfg = A.VJMAEConfig(**SMALL)
    vcfg = A.VJMAEConfig(**SMALL, thresholds=A.calibrate_thresholds(np.asarray(z), vcfg))
    vj = A.VJMAECodec(config=vcfg)
    vjp = jax.jit(vj.init)(jax.random.key(1), jnp.zeros((1, 4, 4, 4)))["params"]
    vae = AutoencoderKL(config=VAEConfig(down_block_types=("DownEncoderBlock2D",) * 2,
                                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
                                         norm_num_groups=4, scaling_factor=0.5, sample_size=8))
    vp = jax.jit(vae.init)(jax.random.key(1), jnp.zeros((1, 8, 8, 3)), jax.random.key(2))["params"]
    return {"rc": (rc, rp), "vj": (vj, vjp), "vae": (vae, vp), "z": z}


@pytest.fixture(scope="module")
def images(models):
    vae, vp = models["vae"]
    return jax.jit(lambda p, z: decode_latents(vae, p, z))(vp, models["z"])


_JIT = {}


def _tx(codec, params, z, key, budget, mode, policy_key=None, temperature=1.0):
    """One jitted function per (codec, mode, sampling or argmax): the tests reuse the compiles."""
    tag = (id(codec), mode, policy_key is None)
    if tag not in _JIT:
        def f(p, z, k, b, pk, temp):
            return transmit_adaptive(codec, p, z, k, rate_units=b, snr_db=jnp.full((z.shape[0],), 10.0),
                                     omega_index=1, mode=mode, policy_key=pk, temperature=temp)
        _JIT[tag] = jax.jit(f)
    return _JIT[tag](params, z, key, budget, policy_key, jnp.float32(temperature))


def test_group_masks_and_channel_layout():
    y = jax.nn.one_hot(jnp.asarray([0, 2, 4]), 5)
    np.testing.assert_array_equal(A.thermometer(y), [[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    m = A.channel_mask(A.thermometer(y), 2, 12)
    np.testing.assert_array_equal(m.sum(-1), [4, 8, 12])           # 2 (n_base + k) channels
    np.testing.assert_array_equal(m[1], [1] * 8 + [0] * 4)        # nested: the first 2n channels
    al = A.allowed_choices(jnp.asarray([2, 4, 6, 1]), 2, 5)
    np.testing.assert_array_equal(al.sum(-1), [1, 3, 5, 1])
    np.testing.assert_array_equal(A.allowed_choices(jnp.asarray([4]), 2, 5, force=True)[0], [0, 0, 1, 0, 0])
    with pytest.raises(ValueError, match="base_units"):
        A.RCJSCCConfig(base_units=7)
    with pytest.raises(ValueError, match="ascending"):
        A.VJMAEConfig(thresholds=(3.0, 2.0, 4.0, 5.0))


@pytest.mark.parametrize("name", ["rc", "vj"])
def test_symbols_sent_equal_x_tau_for_the_chosen_rates(models, name):
    for mode in ("cap", "force"):     # "free" is checked by the policy tests below (same code path)
        _check_symbols(models, name, mode)


def _check_symbols(models, name, mode):
    codec, params = models[name]
    z = models["z"]
    budget = jnp.asarray([2, 3, 4, 5, 6, 6], jnp.int32)
    t, info = _tx(codec, params, z, jax.random.key(4), budget, mode)
    n = np.asarray(info.units)
    assert t.z_check.shape == z.shape and t.code.shape == z.shape[:3] + (12,)
    X = (8 * 4) ** 2                                                # pixels of the image a 4x4 latent decodes to
    np.testing.assert_array_equal(np.asarray(t.mask).sum(1), X * n // 64)    # K = X tau
    assert np.all(n >= 2) and np.all(n <= 6)
    if mode == "force":
        np.testing.assert_array_equal(n, budget)
    elif mode == "cap":
        assert np.all(n <= np.asarray(budget))
    sent = np.abs(np.asarray(t.sent)) > 0
    np.testing.assert_array_equal(sent, np.asarray(t.mask))       # exactly the K used slots carry symbols


def test_vjmae_rate_follows_the_latent_entropy(models):
    codec, params = models["vj"]
    z = models["z"]
    h = np.asarray(A.latent_entropy(z))
    # plug-in entropy against numpy's histogram
    for b in range(z.shape[0]):
        v = np.clip(np.asarray(z[b]).ravel(), -4, 4 - 1e-6)
        c, _ = np.histogram(v, bins=32, range=(-4, 4))
        p = c[c > 0] / v.size
        assert abs(h[b] - float(-(p * np.log2(p)).sum())) < 1e-4
    n = np.asarray(A.entropy_rate_units(z, codec.config))
    order = np.argsort(h)
    assert np.all(np.diff(n[order]) >= 0) and n.min() < n.max()    # more entropy, more symbols
    _, info = _tx(codec, params, z, jax.random.key(4), jnp.full((6,), 6), "free")
    np.testing.assert_array_equal(np.asarray(info.units), n)
    _, info = _tx(codec, params, z, jax.random.key(4), jnp.full((6,), 3), "cap")
    np.testing.assert_array_equal(np.asarray(info.units), np.minimum(n, 3))


def test_rc_policy_is_deterministic_at_inference_and_gumbel_in_training(models):
    codec, params = models["rc"]
    z = models["z"]
    b = jnp.full((6,), 6, jnp.int32)
    u1 = np.asarray(_tx(codec, params, z, jax.random.key(1), b, "free")[1].units)
    u2 = np.asarray(_tx(codec, params, z, jax.random.key(2), b, "free")[1].units)   # other channel draw
    np.testing.assert_array_equal(u1, u2)
    # training: the sampled choice varies with the Gumbel key at a high temperature
    draws = {tuple(np.asarray(_tx(codec, params, z, jax.random.key(1), b, "free", policy_key=jax.random.key(k),
                                   temperature=5.0)[1].units)) for k in range(6)}
    assert len(draws) > 1
    # straight-through Gumbel: forward one-hot, a gradient to the logits
    lg = jnp.asarray([[0.1, 0.3, -0.2, 0.0, 0.5]])
    y = A.gumbel_choice(jax.random.key(0), lg, 1.0)
    assert set(np.asarray(y).ravel().round(6)) <= {0.0, 1.0} and float(y.sum()) == 1.0
    g = jax.grad(lambda l: jnp.sum(A.thermometer(A.gumbel_choice(jax.random.key(0), l, 1.0))
                                   * jnp.arange(1.0, 5.0)))(lg)
    assert float(jnp.abs(g).sum()) > 0
    assert float(jnp.abs(jax.grad(lambda l: jnp.sum(A.greedy_choice(l) * jnp.arange(5.0)))(lg)).sum()) == 0


def test_gradients_reach_the_policy_from_distortion_and_rate(models):
    codec, params = models["rc"]
    z = models["z"]
    snr = jnp.asarray([0., 5., 10., 15., 20., 0.])

    def loss(p, rate_weight, policy_key):     # latent distortion (the decoder adds nothing to the question)
        t, info = transmit_adaptive(codec, p, z, jax.random.key(5), rate_units=6, snr_db=snr, omega_index=0,
                                    mode="free", policy_key=policy_key, temperature=1.0)
        return jnp.mean((t.z_check - z) ** 2) + rate_weight * jnp.mean(info.rate_cost)

    def norm(tree):
        return float(sum(jnp.abs(v).sum() for v in jax.tree_util.tree_leaves(tree)))

    grad = jax.jit(jax.grad(loss))
    for rw in (0.0, 1.0):      # distortion alone (surrogate for unsent groups) and with the rate term
        g = grad(params, jnp.float32(rw), jax.random.key(6))
        assert norm(g["policy"]) > 0 and norm(g["jscc_encoder"]) > 0, rw
    g = jax.jit(jax.grad(lambda p: loss(p, 1.0, None)))(params)        # inference: argmax, no gradient
    assert norm(g["policy"]) == 0 and norm(g["latent_reconstructor"]) > 0


@pytest.mark.slow   # 35 s at load 8 on the 2-core CPU (three traces of the chain and a gradient)
def test_exploration_forces_the_rate_and_cuts_the_policy_gradient(models):
    """RC-JSCC training's exploration (ka/adaptive.py): explored samples are sent at the given n,
    the others at the policy's choice; with every sample explored no gradient reaches the policy."""
    codec, params = models["rc"]
    z = models["z"]

    def run(p, explore):
        t, info = transmit_adaptive(codec, p, z, jax.random.key(5), rate_units=6, snr_db=jnp.full((6,), 10.0),
                                    omega_index=0, mode="free", policy_key=jax.random.key(6), temperature=1.0,
                                    explore_units=explore)
        return jnp.mean((t.z_check - z) ** 2) + jnp.mean(info.rate_cost), info.units

    free = np.asarray(run(params, jnp.zeros((6,), jnp.int32))[1])
    ex = jnp.asarray([2, 0, 6, 0, 3, 0], jnp.int32)
    units = np.asarray(run(params, ex)[1])
    np.testing.assert_array_equal(units, np.where(np.asarray(ex) > 0, np.asarray(ex), free))
    g = jax.grad(lambda p: run(p, jnp.asarray([2, 3, 4, 5, 6, 2], jnp.int32))[0])(params)
    assert float(sum(jnp.abs(v).sum() for v in jax.tree_util.tree_leaves(g["policy"]))) == 0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["rc", "vj"])
def test_pretraining_step_lowers_the_loss(models, images, name):
    import optax

    from dekag_jax.ka.codec_training import ConditionGrid, init_state

    codec, params = models[name]
    vae, vp = models["vae"]
    z, x = models["z"], images
    grid = ConditionGrid(rates=("6/64",), snrs_db=(0.0, 20.0), delay_spreads_s=(30e-9, 3000e-9))
    opt = optax.adam(3e-3)
    step = make_adaptive_train_step(codec, vae, opt, link=LinkConfig(), weights=LIGHT, grid=grid,
                                    rate_weight=0.01, mae_random_prob=0.5)
    state = init_state(jax.tree_util.tree_map(jnp.array, params), opt)
    losses = []
    for i in range(12):
        state, m = step(state, {"vae": vp, "feat": vp}, z, x, jax.random.key(100 + i % 2),
                        temperature_at(i, 12, 2.0, 0.5))
        losses.append(float(m["loss"]))
        assert 2 <= float(m["units"]) <= 6
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses


@pytest.mark.parametrize("name", ["rc", pytest.param("vj", marks=pytest.mark.slow)])
def test_save_load_roundtrip_and_receive(models, name, tmp_path):
    from dekag_jax.ka.codec_io import load_codec, save_codec

    codec, params = models[name]
    save_codec(str(tmp_path), codec.config, params, dtype=np.float32)
    c2, p2, meta = load_codec(str(tmp_path), latent_hw=(4, 4))
    assert type(c2) is type(codec) and c2.config == codec.config
    assert set(flatten(p2)) == set(flatten(params))
    vae, vp = models["vae"]
    fn = ReceiveFn(c2, vae, rate_mode="force")
    _, xc = fn(p2, vp, models["z"], jax.random.key(0), rate="3/64", snr_db=10.0, delay_spread_s=300e-9)
    assert xc.shape == (6, 8, 8, 3)      # the tiny test VAE upsamples by 2
    with pytest.raises(ValueError, match="below this codec's always-sent 2/64"):
        fn(p2, vp, models["z"], jax.random.key(0), rate="1/64", snr_db=10.0, delay_spread_s=300e-9)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["rc", "vj"])
def test_tka_methods_run_on_adaptive_codecs(models, images, name):
    codec, cp = models[name]
    vae, vp = models["vae"]
    z, x = models["z"], images
    frozen = tka.frozen_tree(cp, vp)
    n = jnp.asarray([2, 6, 4, 3, 5, 2], jnp.int32)
    snr = jnp.asarray([0.0, 20.0, 10.0, 5.0, 15.0, 20.0])
    w = jnp.asarray([0, 2, 1, 2, 0, 1], jnp.int32)
    base = tka.make_setup("noka", codec, cp, vae, vp, rank=4)
    _, x0 = jax.jit(lambda: tka.forward(base, {}, frozen, z, jax.random.key(7), n, snr, w))()
    for method in ("lora", "cala", "fullft"):
        s = tka.make_setup(method, codec, cp, vae, vp, rank=4)
        if method != "fullft":
            assert s.codec_specs and all(p.startswith(("jscc_encoder/", "latent_reconstructor/")) for p in s.codec_specs)
        tr = tka.init_method(s, jax.random.key(5), cp, vp)
        _, x1 = jax.jit(lambda tr: tka.forward(s, tr, frozen, z, jax.random.key(7), n, snr, w))(tr)
        np.testing.assert_allclose(np.asarray(x1), np.asarray(x0), atol=1e-5)   # zero-init adapters / same params
    s = tka.make_setup("cala", codec, cp, vae, vp, rank=4)
    tr = tka.init_method(s, jax.random.key(5), cp, vp)
    loss_fn = tka.make_loss(s, LIGHT, ((2, 6), (0.0, 20.0), (30e-9, 3000e-9)))
    g = jax.jit(jax.grad(lambda a: loss_fn(a, frozen, z, x, jax.random.key(11))[0]))(tr)
    assert float(sum(jnp.abs(v).sum() for v in jax.tree_util.tree_leaves(g["codec_lora"]))) > 0


def test_tka_cala_on_rc_jscc_starts_as_no_ka(models):
    """Default-run check of the T-KA wiring on RC-JSCC (all methods and VJ-MAE: the slow test above)."""
    codec, cp = models["rc"]
    vae, vp = models["vae"]
    z = models["z"]
    frozen = tka.frozen_tree(cp, vp)
    n, snr, w = jnp.asarray([2, 6, 4, 3, 5, 2], jnp.int32), jnp.asarray([0.0, 20.0, 10.0, 5.0, 15.0, 20.0]), \
        jnp.asarray([0, 2, 1, 2, 0, 1], jnp.int32)
    s = tka.make_setup("cala", codec, cp, vae, vp, rank=4)
    assert any("snr_modulation" in p for p in s.codec_specs) and not any(p.startswith("policy/") for p in s.codec_specs)
    tr = tka.init_method(s, jax.random.key(5), cp, vp)
    fwd = jax.jit(lambda tr, m: tka.forward(s if m else base, tr, frozen, z, jax.random.key(7), n, snr, w)[1],
                  static_argnums=1)
    base = tka.make_setup("noka", codec, cp, vae, vp)
    np.testing.assert_allclose(np.asarray(fwd(tr, True)), np.asarray(fwd({}, False)), atol=1e-5)
