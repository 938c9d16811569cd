"""LoRA and CALA by parameter path (dekag_jax.adapt.lora, .cala, .rules) on every model family.

Tiny random models are built here (models are imported in tests only; dekag_jax.adapt imports no
model code). Adapters get random B (and gates) so the low-rank path is not trivially zero.
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dekag_jax.adapt import cala, lora
from dekag_jax.adapt.rules import Rule, label_tree
from dekag_jax.weights.convert import flatten

ALL = [(r".*/kernel", 2, 4.0)]  # every Dense and Conv kernel (alpha != rank: scale 2)


def _randomise(adapters, key, gates=False):
    """B (and the gates) away from their zero init (NumPy draws: no per-shape compiles)."""
    rng = np.random.default_rng(int(jax.random.randint(key, (), 0, 2 ** 30)))
    out = {}
    for path, ad in sorted(adapters.items()):
        ad = dict(ad)
        ad["lora_B"] = jnp.asarray(0.2 * rng.standard_normal(ad["lora_B"].shape), jnp.float32)
        if gates:
            r = ad["lora_A"].shape[-1]
            ad["gate_kernel"] = jnp.asarray(rng.standard_normal((cala.D_PHI, r)), jnp.float32)
            ad["gate_bias"] = jnp.asarray(0.5 * rng.standard_normal(r), jnp.float32)
        out[path] = ad
    return out


def _close(a, b, tol=2e-5):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    err = np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)
    assert err <= tol, f"relative error {err:.3g} > {tol}"


# ----------------------------------------------------------------------------- tiny models


@functools.lru_cache(maxsize=None)
def _unet_shapes():
    """(module, abstract params): enough for specs, init and counts (no init compile)."""
    m, _, args, _ = _unet.__wrapped__(abstract=True)
    return m, jax.eval_shape(m.init, jax.random.key(0), *args)["params"]


def _random_values(abstract, seed=0):
    """Random parameter values (norm scales around 1): no init compile needed."""
    rng = np.random.default_rng(seed)

    def value(kp, a):
        base = 1.0 if str(kp[-1].key) == "scale" else 0.0
        return jnp.asarray(base + 0.1 * rng.standard_normal(a.shape), a.dtype)

    return jax.tree_util.tree_map_with_path(value, abstract)


@functools.lru_cache(maxsize=None)  # shared by the tests below; params are immutable arrays
def _unet(linear_projection=False, remat=False, abstract=False):
    from dekag_jax.models.unet import UNet2DConditionModel, UNetConfig
    cfg = UNetConfig(sample_size=8, block_out_channels=(16, 32), layers_per_block=1,
                     down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                     up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                     attention_head_dim=2, use_linear_projection=linear_projection, norm_num_groups=8)
    m = UNet2DConditionModel(config=cfg, gradient_checkpointing=remat)
    k = jax.random.key(0)
    x = jax.random.normal(k, (2, 8, 8, 4))
    t = jnp.array([3, 700])
    ctx = jax.random.normal(jax.random.key(1), (2, 5, 16))
    if abstract:
        return m, None, (x, t, ctx), {}
    params = jax.jit(m.init)(k, x, t, ctx)["params"]  # compiled: eager init of a UNet is slower
    return m, params, (x, t, ctx), {}


def _clip_text():
    from dekag_jax.models.clip_text import CLIPTextConfig, CLIPTextModel
    cfg = CLIPTextConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=12, eos_token_id=39, hidden_act="gelu")
    m = CLIPTextModel(config=cfg)
    ids = jnp.array([[38, 5, 7, 39, 0, 0], [38, 9, 39, 0, 0, 0]], jnp.int32)
    return m, m.init(jax.random.key(0), ids)["params"], (ids,), {}


def _vae(method="decode"):
    from dekag_jax.models.vae import AutoencoderKL, VAEConfig
    cfg = VAEConfig(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                    up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4, latent_channels=4)
    m = AutoencoderKL(config=cfg)
    params = m.init(jax.random.key(0), *m.dummy_inputs())["params"]
    if method == "decode":
        return m, params, (jax.random.normal(jax.random.key(2), (2, 4, 4, 4)),), {"method": "decode"}
    return m, params, (jax.random.normal(jax.random.key(2), (2, 8, 8, 3)),), {"method": "encode"}


def _dino():
    from dekag_jax.models.vit import ViTConfig, ViTModel
    cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                    image_size=16, patch_size=8)
    m = ViTModel(config=cfg)
    x = jax.random.normal(jax.random.key(3), (2, 16, 16, 3))
    return m, m.init(jax.random.key(0), x)["params"], (x,), {}


def _clip_vision():
    from dekag_jax.models.vit import CLIPVisionConfig, CLIPVisionModel
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, projection_dim=16, num_hidden_layers=2,
                           num_attention_heads=4, image_size=16, patch_size=8)
    m = CLIPVisionModel(config=cfg, with_projection=True)
    x = jax.random.normal(jax.random.key(3), (2, 16, 16, 3))
    return m, m.init(jax.random.key(0), x)["params"], (x,), {}


def _jscc():
    from dekag_jax.models import jscc
    cfg = jscc.JSCCConfig(block_out_channels=(16,), layers_per_block=1, norm_num_groups=4)
    m, params = jscc.init_codec(cfg, jax.random.key(0), (4, 4))
    return m, params, (jax.random.normal(jax.random.key(4), (2, 4, 4, 4)),), {}


MODELS = {"unet_conv_proj": _unet, "unet_linear_proj_remat": lambda: _unet(True, True), "clip_text": _clip_text,
          "vae_decode": _vae, "vae_encode": lambda: _vae("encode"), "dino": _dino, "clip_vision": _clip_vision,
          "jscc": _jscc}


def _leaves(out):
    return jax.tree_util.tree_leaves(out)


def _check_model(name):
    m, params, args, kw = MODELS[name]()
    adapters, specs = lora.init(jax.random.key(7), params, ALL)
    assert any(s.kind == "conv" for s in specs.values()) or name in ("clip_text",)
    adapters = _randomise(adapters, jax.random.key(8))
    strict = not name.startswith("vae")  # encode/decode each reach only half of the VAE

    @jax.jit  # one compile for the three runs (eager dispatch of a UNet is slower than compiling it)
    def three(p, a, args):
        base = m.apply({"params": p}, *args, **kw)
        merged = m.apply({"params": lora.merge(p, a, specs)}, *args, **kw)
        return base, merged, lora.apply(m, p, a, specs, *args, require_all=strict, **kw)

    base, merged, inter = three(params, adapters, args)
    for a, b, c in zip(_leaves(inter), _leaves(merged), _leaves(base)):
        _close(a, b)
        assert np.max(np.abs(np.asarray(b) - np.asarray(c))) > 1e-3  # the adapters do change the output


# CLIP text and DINO (Dense, and a strided VALID conv) by default; the UNet's convs of every size,
# stride and padding are checked by default in the CALA test below (merged vs intercepted, with
# gates); the other model trees run with -m slow.
@pytest.mark.parametrize("name", ["clip_text", "dino"])
def test_merged_equals_intercepted(name):
    _check_model(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["unet_conv_proj", "unet_linear_proj_remat", "vae_decode", "vae_encode",
                                  "clip_vision", "jscc"])
def test_merged_equals_intercepted_slow(name):
    _check_model(name)


def test_init_follows_peft_and_starts_at_the_base():
    m, params = _unet_shapes()
    adapters, specs = lora.init(jax.random.key(0), params, [(r".*/attn[12]/to_(q|k|v|out\.0)/kernel", 4)])
    flat = flatten(params)
    for path, ad in adapters.items():
        fan_in = math.prod(ad["lora_A"].shape[:-1])
        assert np.all(ad["lora_B"] == 0)
        assert np.max(np.abs(ad["lora_A"])) <= 1 / math.sqrt(fan_in)
        assert np.max(np.abs(ad["lora_A"])) > 0.5 / math.sqrt(fan_in)  # uniform over the whole bound
        assert specs[path].scale == 1.0 and specs[path].kind == "dense"
        assert ad["lora_A"].shape == (flat[path].shape[0], 4)
    # per-path streams: A of a layer does not depend on which other layers are adapted
    a2, _ = lora.init(jax.random.key(0), params, [(r".*/attn1/to_q/kernel", 4)])
    for path in a2:
        np.testing.assert_array_equal(a2[path]["lora_A"], adapters[path]["lora_A"])
    m, params, args, _ = _clip_text()
    adapters, specs = lora.init(jax.random.key(0), params, [(r".*/kernel", 4)])
    out = lora.apply(m, params, adapters, specs, *args)
    for x, y in zip(_leaves(out), _leaves(m.apply({"params": params}, *args))):
        np.testing.assert_array_equal(x, y)


def test_conv_shapes_follow_the_contract():
    params = _random_values(_unet_shapes()[1])
    adapters, specs = lora.init(jax.random.key(0), params, [(r"conv_in/kernel", 3, 3), (r".*proj_in/kernel", 2)])
    assert specs["conv_in/kernel"] == lora.LoraSpec("conv_in/kernel", "conv", 3, 3.0)
    assert adapters["conv_in/kernel"]["lora_A"].shape == (3, 3, 4, 3)
    assert adapters["conv_in/kernel"]["lora_B"].shape == (1, 1, 3, 16)
    assert lora.lora_param_count((3, 3, 4, 16), 3) == 3 * (36 + 16)
    merged = lora.merge(params, adapters, specs)  # B = 0: the same values; other leaves shared, not copied
    np.testing.assert_array_equal(merged["conv_in"]["kernel"], params["conv_in"]["kernel"])
    assert merged["conv_out"]["kernel"] is params["conv_out"]["kernel"]


def test_rule_errors_name_the_rule():
    _, params = _unet_shapes()
    with pytest.raises(ValueError, match=r"to_qq"):
        lora.make_specs(params, [(r".*/to_q/kernel", 2), (r".*/to_qq/kernel", 2)])
    # full match: a pattern without ".*" does not match inside a path
    with pytest.raises(ValueError, match=r"attn1/to_q/kernel"):
        lora.make_specs(params, [(r"attn1/to_q/kernel", 2)])
    # a later rule whose paths an earlier rule took matches nothing: also an error
    with pytest.raises(ValueError, match=r"to_k"):
        lora.make_specs(params, [(r".*/kernel", 1), (r".*/to_k/kernel", 2)])
    # rank above min(in, out); conv: min(kh*kw*in, out) = min(36, 16)
    with pytest.raises(ValueError, match=r"conv_in/kernel.*rank 17 > 16"):
        lora.make_specs(params, [(r"conv_in/kernel", 17)])
    with pytest.raises(ValueError, match="rank"):
        Rule(".*", 0)
    with pytest.raises(ValueError, match="regex"):
        Rule("(", 2)
    # biases and norms are not kernels: a rule over them matches nothing
    with pytest.raises(ValueError, match="bias"):
        lora.make_specs(params, [(r".*/bias", 2)])


def test_first_rule_wins_and_labels():
    _, params = _unet_shapes()
    specs = lora.make_specs({"params": params}, [(r".*/attn1/to_q/kernel", 4, 8), (r".*/to_q/kernel", 2)])
    assert {s.rank for p, s in specs.items() if "attn1/to_q" in p} == {4}
    assert {s.rank for p, s in specs.items() if "attn2/to_q" in p} == {2}
    labels = label_tree({"a": {"kernel": 1, "bias": 2}}, [(r"a/kernel", "train")], default="frozen")
    assert labels == {"a": {"kernel": "train", "bias": "frozen"}}
    with pytest.raises(ValueError, match="a/bias"):
        label_tree({"a": {"kernel": 1, "bias": 2}}, [(r"a/kernel", "train")])


def test_unmerge_recovers_the_base():
    params = _random_values(_unet_shapes()[1])
    adapters, specs = lora.init(jax.random.key(0), params, ALL)
    adapters = _randomise(adapters, jax.random.key(1))
    wrapped = {"params": params}
    merged = jax.jit(lambda p, a: lora.merge(p, a, specs))(wrapped, adapters)
    assert set(merged) == {"params"}
    back = flatten(jax.jit(lambda p, a: lora.unmerge(p, a, specs))(merged, adapters)["params"])
    flat, mflat = flatten(params), flatten(merged["params"])
    worst = 0.0
    for path, w in flat.items():
        if path not in specs:
            np.testing.assert_array_equal(back[path], w)
            continue
        w = np.asarray(w)
        assert np.max(np.abs(np.asarray(mflat[path]) - w)) > 1e-3
        # exact up to the two roundings of the add and the subtract: |err| <= ulp(|W| + |dW|)
        bound = np.spacing(np.abs(w) + np.abs(np.asarray(mflat[path]) - w)).astype(np.float64)
        err = np.abs(np.asarray(back[path], np.float64) - w)
        assert np.all(err <= 2 * bound)
        worst = max(worst, float(np.max(err) / np.max(np.abs(w))))
    assert worst < 1e-6


def test_cala_gate_of_ones_is_lora_exactly():
    m, params, args, kw = _dino()
    adapters, specs = lora.init(jax.random.key(0), params, [(r".*/kernel", 2)])
    adapters = _randomise(adapters, jax.random.key(1))
    gated = {p: {**ad, **cala.init_gate(2)} for p, ad in adapters.items()}
    phi = cala.normalise_phi(jnp.array([1 / 64, 6 / 64]), jnp.array([0.0, 20.0]), jnp.array([30e-9, 3e-6]))
    a = lora.apply(m, params, adapters, specs, *args)
    b = lora.apply(m, params, gated, specs, *args, phi=phi)
    for x, y in zip(_leaves(a), _leaves(b)):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="needs phi"):
        lora.apply(m, params, gated, specs, *args)


def test_cala_mixed_batch_equals_each_sample_alone_and_merged():
    m, params = _unet_shapes()
    params = _random_values(params)
    _, _, (x, t, ctx), _ = _unet(abstract=True)
    adapters, specs = lora.init(jax.random.key(0), params, ALL)
    adapters = _randomise(adapters, jax.random.key(1), gates=True)
    phi = cala.normalise_phi(jnp.array([1 / 64, 6 / 64]), jnp.array([0.0, 20.0]), jnp.array([30e-9, 3e-6]))
    # "alone" = the sample twice with its own condition: the same batch shape, so one compile
    # serves both runs (per-sample independence is what is tested)
    run = jax.jit(lambda p, a, x, t, c, phi: lora.apply(m, p, a, specs, x, t, c, phi=phi))
    merged_run = jax.jit(lambda p, a, x, t, c, phi: m.apply({"params": lora.merge(p, a, specs, phi=phi)}, x, t, c))
    mixed = run(params, adapters, x, t, ctx, phi)
    for i in range(2):
        two = lambda v: jnp.concatenate([v[i:i + 1]] * 2)  # noqa: E731
        alone = run(params, adapters, two(x), two(t), two(ctx), two(phi))
        _close(mixed[i], alone[0])
        _close(alone, merged_run(params, adapters, two(x), two(t), two(ctx), phi[i]))
    # the two conditions do give different outputs (the gates matter)
    other = run(params, adapters, x, t, ctx, phi[::-1])
    assert np.max(np.abs(np.asarray(other) - np.asarray(mixed))) > 1e-3 * np.max(np.abs(np.asarray(mixed)))


def test_normalise_phi():
    phi = cala.normalise_phi(jnp.array([1, 6]) / 64, jnp.array([0.0, 20.0]), jnp.array([30e-9, 3000e-9]))
    np.testing.assert_allclose(phi, [[1 / 6, 0, 0], [1, 1, 1]], atol=1e-6)
    assert cala.normalise_phi(2 / 64, 10.0, 300e-9).shape == (3,)
    with pytest.raises(ValueError, match="delay_spread_s"):
        cala.normalise_phi(2 / 64, 10.0, 0.0)
    assert cala.gate_param_count(16) == 64
    from fractions import Fraction
    np.testing.assert_allclose(cala.normalise_phi(Fraction(3, 64), 5, 3e-7), [0.5, 0.25, 0.5], atol=1e-6)
    from dekag_jax.channel import condition
    conds = [condition.Condition(Fraction(2, 64), 10.0, 300e-9), condition.Condition(Fraction(6, 64), 0.0, 3e-6)]
    np.testing.assert_allclose(cala.normalise_phi_array(condition.phi_array(conds)),
                               [[1 / 3, 0.5, 0.5], [1, 0, 1]], atol=1e-6)


def test_pure_function_jits_and_vmaps_over_adapter_sets():
    m, params, args, kw = _clip_text()
    adapters, specs = lora.init(jax.random.key(0), params, [(r".*/self_attn/(q|v)_proj/kernel", 4)])
    sets = [_randomise(adapters, jax.random.key(s)) for s in (1, 2)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *sets)
    f = lambda a: lora.apply(m, params, a, specs, *args)["pooler_output"]  # noqa: E731
    batched = jax.jit(jax.vmap(f))(stacked)
    for i, s in enumerate(sets):
        _close(batched[i], f(s))
    # frozen params are arguments: the jitted program holds no parameter constants
    jaxpr = jax.make_jaxpr(lambda p, a: lora.apply(m, p, a, specs, *args))(params, adapters)
    assert all(np.size(c) < 64 for c in jaxpr.consts)


def test_root_level_modules():
    """A model that is itself one nn.Conv / nn.Dense (paths "kernel"): the conv's inner low-rank
    apply must not be intercepted again."""
    import flax.linen as nn
    for m, x in [(nn.Conv(6, (3, 3), strides=2, padding="SAME"), jnp.ones((2, 5, 5, 3))),
                 (nn.Dense(5), jnp.ones((2, 4)))]:
        params = m.init(jax.random.key(0), x)["params"]
        adapters, specs = lora.init(jax.random.key(1), params, [("kernel", 2)], gates=True)
        adapters = _randomise(adapters, jax.random.key(2), gates=True)
        phi = jnp.array([0.2, 0.5, 0.1])
        merged = m.apply({"params": lora.merge(params, adapters, specs, phi=phi)}, x)
        _close(lora.apply(m, params, adapters, specs, x, phi=phi, require_all=True), merged)
        # per-sample phi [B, 3] in a batch == vmap over samples with phi [3] each
        phis = jnp.array([[0.2, 0.5, 0.1], [1.0, 0.0, 0.7]])
        xs = x * jnp.arange(1, 3).reshape(-1, *([1] * (x.ndim - 1)))
        batched = lora.apply(m, params, adapters, specs, xs, phi=phis)
        mapped = jax.vmap(lambda xi, pi: lora.apply(m, params, adapters, specs, xi[None], phi=pi)[0])(xs, phis)
        _close(batched, mapped)


_SHARD_SCRIPT = r"""
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import test_adapt_lora as T
from dekag_jax.adapt import cala, lora
assert len(jax.devices()) == 2
m, params, (x,), _ = T._dino()
x = jnp.concatenate([x, x[::-1]])
adapters, specs = lora.init(jax.random.key(0), params, T.ALL, gates=True)
adapters = T._randomise(adapters, jax.random.key(1), gates=True)
phi = cala.normalise_phi(jnp.array([1, 2, 5, 6]) / 64, jnp.array([0., 5., 10., 20.]), jnp.array([3e-8, 3e-7, 3e-6, 3e-8]))
f = jax.jit(lambda p, a, x, phi: lora.apply(m, p, a, specs, x, phi=phi)["pooler_output"])
ref = f(params, adapters, x, phi)
mesh = Mesh(np.array(jax.devices()), ("data",))
rep, dat = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
out = f(jax.device_put(params, rep), jax.device_put(adapters, rep), jax.device_put(x, dat), jax.device_put(phi, dat))
assert out.sharding.is_equivalent_to(dat, out.ndim) or len(out.sharding.device_set) == 2
T._close(out, ref)
print("OK")
"""


@pytest.mark.slow
def test_cala_shards_over_a_data_mesh():
    """Per-sample gates under a batch-sharded jit (2 host devices, replicated params and adapters)."""
    import os
    import subprocess
    import sys
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONPATH=os.pathsep.join([here, os.path.dirname(here), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", _SHARD_SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-3000:]


# ----------------------------------------------------------------------------- CALA gate forms


def _form_setup(form):
    """A root-level Dense and Conv (fast: no model compile), specs carrying the gate form."""
    import dataclasses

    import flax.linen as nn
    out = []
    for m, x in [(nn.Conv(6, (3, 3), padding="SAME"), jnp.linspace(-1, 1, 2 * 5 * 5 * 3).reshape(2, 5, 5, 3)),
                 (nn.Dense(5), jnp.linspace(-1, 1, 8).reshape(2, 4))]:
        params = m.init(jax.random.key(0), x)["params"]
        _, specs = lora.init(jax.random.key(1), params, [("kernel", 4)])
        specs = {p: dataclasses.replace(s, gate=form) for p, s in specs.items()}
        adapters, _ = lora.init(jax.random.key(1), params, specs, gates=True)
        out.append((m, x, params, _randomise_b(adapters), specs))
    return out


def _randomise_b(adapters, seed=3):
    rng = np.random.default_rng(seed)
    return {p: {**ad, "lora_B": jnp.asarray(0.2 * rng.standard_normal(ad["lora_B"].shape), jnp.float32)}
            for p, ad in adapters.items()}


_PHIS = jnp.array([[1 / 3, 0.0, 0.0], [1.0, 1.0, 1.0]])


@pytest.mark.parametrize("form", cala.GATE_FORMS)
def test_cala_gate_form_starts_as_lora_and_mixes_per_sample(form):
    """Every gate form: g(phi) == 1 exactly at init (output bit-identical to plain LoRA), a batch
    mixing conditions equals each sample alone (random gates), and gradients reach the gates."""
    for j, (m, x, params, adapters, specs) in enumerate(_form_setup(form)):
        plain = {p: {k: v for k, v in ad.items() if not cala.is_gate_key(k)} for p, ad in adapters.items()}
        for ad in adapters.values():
            np.testing.assert_array_equal(cala.gate_values(ad, _PHIS, form), 1.0)
        y = lora.apply(m, params, plain, specs, x)
        np.testing.assert_array_equal(lora.apply(m, params, adapters, specs, x, phi=_PHIS), y)
        if j == 0:   # the conv: identity only (the rest is the same gate code; the Dense is cheaper)
            continue
        # gradients reach the output layer at init (B != 0) ...
        w = jnp.cos(jnp.arange(y.size)).reshape(y.shape)
        loss = lambda a: jnp.sum(w * lora.apply(m, params, a, specs, x, phi=_PHIS))  # noqa: E731
        grads = jax.grad(loss)(adapters)
        for ad in grads.values():
            for k in cala.GATE_KEYS:
                assert np.max(np.abs(np.asarray(ad[k]))) > 0, (form, k)
        # ... random gates: per-sample gates == each sample alone, and the condition matters
        rng = np.random.default_rng(5)
        rand = {p: {k: (jnp.asarray(rng.standard_normal(v.shape), jnp.float32) if cala.is_gate_key(k) else v)
                    for k, v in ad.items()} for p, ad in adapters.items()}
        if form == "mlp":   # and once the output layer moved, to the hidden layer too
            for ad in jax.grad(loss)(rand).values():
                assert np.max(np.abs(np.asarray(ad["gate_hidden_kernel"]))) > 0
        mixed = lora.apply(m, params, rand, specs, x, phi=_PHIS)
        for i in range(2):
            alone = lora.apply(m, params, rand, specs, x[i:i + 1], phi=_PHIS[i])
            _close(mixed[i:i + 1], alone)
        swapped = lora.apply(m, params, rand, specs, x, phi=_PHIS[::-1])
        assert np.max(np.abs(np.asarray(swapped) - np.asarray(mixed))) > 1e-4


def test_cala_gate_forms_counts_and_mismatch():
    counts = {f: cala.gate_param_count(16, form=f) for f in cala.GATE_FORMS}
    assert counts == {"sigmoid2": 64, "linear": 64, "softmax": 64, "mlp": 4 * 8 + 8 * 16 + 16, "fourier": 15 * 16 + 16}
    from dekag_jax.adapt import accounting
    for form in cala.GATE_FORMS:
        for m, x, params, adapters, specs in _form_setup(form):
            assert accounting.count_specs(params, specs, gates=True) == accounting.adapter_count(adapters)
            assert accounting.spec_bytes(params, specs, gates=True) == 2 * accounting.adapter_count(adapters)
    mlp = cala.init_gate(4, form="mlp", key=jax.random.key(0))
    with pytest.raises(ValueError, match="trained with another gate form"):
        cala.gate_values(mlp, _PHIS, "sigmoid2")
    with pytest.raises(ValueError, match="unknown CALA gate form"):
        cala.gate_values(cala.init_gate(4), _PHIS, "relu")
    with pytest.raises(ValueError, match="unknown CALA gate form"):
        lora.LoraSpec("kernel", "dense", 4, 4.0, "relu")
    # softmax keeps the total weight R for any logits; linear is unbounded
    rng = np.random.default_rng(0)
    g = {"gate_kernel": jnp.asarray(rng.standard_normal((3, 12)), jnp.float32),
         "gate_bias": jnp.asarray(rng.standard_normal(12), jnp.float32)}
    np.testing.assert_allclose(np.sum(cala.gate_values(g, _PHIS, "softmax"), -1), 12.0, rtol=1e-5)
    assert float(np.min(cala.gate_values({k: 5 * v for k, v in g.items()}, _PHIS, "linear"))) < 0
