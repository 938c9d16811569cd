"""Training partition (dekag_jax.adapt.partition) and the metaword (dekag_jax.adapt.metaword)."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dekag_jax.adapt import lora, metaword, partition
from dekag_jax.adapt.partition import tree_size


def _text_model(vocab=638, eos=636, max_pos=12, legacy_eos=False):
    from dekag_jax.models.clip_text import CLIPTextConfig, CLIPTextModel
    cfg = CLIPTextConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=max_pos,
                         eos_token_id=2 if legacy_eos else eos, hidden_act="gelu")
    m = CLIPTextModel(config=cfg)
    return m, m.init(jax.random.key(0), jnp.zeros((1, max_pos), jnp.int32))["params"]


def _world_tokenizer():
    from dekag_jax.models.tokenizer import load_tokenizer
    from dekag_jax.world.models import edge_pipeline_dir
    return load_tokenizer(os.path.join(edge_pipeline_dir(), "tokenizer"))


# ----------------------------------------------------------------------------- partition


def _setup():
    m, params = _text_model(vocab=40, eos=39)
    ids = jnp.array([[38, 5, 7, 39, 0, 0, 0, 0, 0, 0, 0, 0]] * 2, jnp.int32)
    adapters, specs = lora.init(jax.random.key(1), params, [(r".*/self_attn/(q|v)_proj/kernel", 2)])
    mu = metaword.init_metaword(jax.random.key(2), 32)
    target = jax.random.normal(jax.random.key(3), (2, 12, 32))

    def loss_fn(trainable, frozen, ids, target):
        with lora.attach(trainable["lora"], specs):
            out = metaword.encode_prompt(m, frozen, ids, trainable["metaword"], eos_id=39)
        return jnp.mean((out["last_hidden_state"] - target) ** 2)

    return params, {"lora": adapters, "metaword": mu}, loss_fn, (ids, target)


def test_only_trainable_parameters_train_and_hold_optimiser_state():
    params, trainable, loss_fn, batch = _setup()
    tx = optax.adam(1e-2)
    opt_state = tx.init(trainable)
    n_train = tree_size(trainable)
    assert tree_size(opt_state) == 2 * n_train + 1  # mu, nu, count: nothing for the frozen model
    assert n_train < tree_size(params) / 10
    step = partition.make_step(loss_fn, tx)
    frozen_before = jax.tree.map(np.array, params)
    loss_jit = jax.jit(loss_fn)
    before = float(loss_jit(trainable, params, *batch))
    for _ in range(3):
        trainable, opt_state, loss = step(trainable, opt_state, params, *batch)
    assert float(loss_jit(trainable, params, *batch)) < before
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(frozen_before)))
    # the frozen model is an argument: no parameter constant in the program
    jaxpr = jax.make_jaxpr(loss_fn)(trainable, params, *batch)
    assert all(np.size(c) <= 16 for c in jaxpr.consts)
    hlo = loss_jit.lower(trainable, params, *batch).as_text()
    assert len(hlo) < 4 * tree_size(params)  # a 20k-parameter model baked in would be >= 8 bytes each


def test_multi_transform_from_path_rules_keeps_no_state_for_frozen():
    params, trainable, loss_fn, batch = _setup()
    tree = {"frozen": params, **trainable}
    tx = partition.optimizer(optax.adam(1e-2), [(r"lora/.*", "train"), (r"metaword", "train")])
    state = tx.init(tree)
    assert tree_size(state) == 2 * tree_size(trainable) + 1
    grads = jax.tree.map(jnp.ones_like, tree)
    updates, _ = tx.update(grads, state, tree)
    assert all(np.all(u == 0) for u in jax.tree.leaves(updates["frozen"]))
    assert all(np.all(u != 0) for u in jax.tree.leaves(updates["lora"]))
    with pytest.raises(ValueError, match="without a transform"):
        partition.optimizer(optax.adam(1e-2), [(r"lora/.*", "lr_high")])


# ----------------------------------------------------------------------------- metaword


def test_metaword_init_reads_variance_literally():
    mu = metaword.init_metaword(jax.random.key(0), 1024, 4)
    assert mu.shape == (4, 1024)
    assert abs(float(jnp.std(mu)) - 0.02 ** 0.5) < 0.01
    assert abs(float(jnp.std(metaword.init_metaword(jax.random.key(0), 1024, 4, init="hf"))) - 0.02) < 0.002
    with pytest.raises(ValueError, match="init"):
        metaword.init_metaword(jax.random.key(0), 8, init="xavier")


def _sd1_style_tokenizer(tmp_path):
    """A byte-level CLIP BPE with SD1's padding by <|endoftext|> (pad == EOS)."""
    from dekag_jax.models.tokenizer import load_tokenizer
    from test_pipeline import write_tiny_tokenizer
    write_tiny_tokenizer(str(tmp_path / "tok"), pad_token="<|endoftext|>")
    return load_tokenizer(str(tmp_path / "tok"))


PROMPTS = {"world": ["a red creature with stripes", "a tall blue building with a door and windows in a field"],
           "sd1_style": ["the cat", "a dog and the cat on a hat"]}


@pytest.mark.parametrize("which,n_tokens", [("world", 1), ("world", 2), ("sd1_style", 1)])
def test_splice_equals_textual_inversion(which, n_tokens, tmp_path):
    """Our splice (prompt tokenised without mu) == the token added to the tokenizer and its
    embedding appended to the table (what diffusers' load_textual_inversion does), including the
    EOS-pooled output and truncation of a prompt that fills the sequence; for the tiny world's
    tokenizer (pad "!") and an SD1-style CLIP tokenizer (pad = EOS)."""
    from dekag_jax.models.tokenizer import add_token, tokenize
    tok = _world_tokenizer() if which == "world" else _sd1_style_tokenizer(tmp_path)
    eos = tok.eos_token_id
    vocab = len(tok)
    names = [metaword.DEFAULT_TOKEN] + [f"{metaword.DEFAULT_TOKEN}_{i}" for i in range(1, n_tokens)]
    new_ids = [add_token(tok, t) for t in names]
    assert new_ids == list(range(vocab, vocab + n_tokens))
    m, params = _text_model(vocab=vocab + n_tokens, eos=eos)
    table = params["text_model"]["embeddings"]["token_embedding"]["embedding"]
    mu = table[vocab:vocab + n_tokens]  # the learned rows
    prompts = PROMPTS[which]
    plain = tokenize(tok, prompts, max_length=12)
    assert eos not in plain[1, :-1] and plain[1, -1] == eos  # the second prompt is truncated
    ids, emb = metaword.splice(plain, mu, table[:vocab], eos_id=eos)
    ref_ids = tokenize(tok, [" ".join(names) + " " + p for p in prompts], max_length=12)
    np.testing.assert_array_equal(np.where(np.isin(ref_ids, new_ids), plain[:, :1], ref_ids), ids)
    ours = m.apply({"params": params}, ids, inputs_embeds=emb)
    ref = m.apply({"params": params}, ref_ids)
    for k in ("last_hidden_state", "pooler_output"):
        np.testing.assert_allclose(ours[k], ref[k], rtol=1e-5, atol=1e-5)
    out = metaword.encode_prompt(m, {"params": params}, plain, mu, eos_id=eos)
    np.testing.assert_allclose(out["pooler_output"], ref["pooler_output"], rtol=1e-5, atol=1e-5)


def test_splice_keeps_the_pooled_eos_with_legacy_argmax_configs():
    m, params = _text_model(vocab=40, eos=39, legacy_eos=True)  # eos_token_id == 2: pool at argmax(ids)
    table = params["text_model"]["embeddings"]["token_embedding"]["embedding"]
    plain = jnp.array([[38, 5, 7, 39, 0, 0, 0, 0, 0, 0, 0, 0]], jnp.int32)
    mu = metaword.init_metaword(jax.random.key(0), 32, 2)
    ids, emb = metaword.splice(plain, mu, table, eos_id=39)
    np.testing.assert_array_equal(ids, [[38, 38, 38, 5, 7, 39, 0, 0, 0, 0, 0, 0]])
    out = m.apply({"params": params}, ids, inputs_embeds=emb)
    np.testing.assert_array_equal(out["pooler_output"], out["last_hidden_state"][:, 5])
    # a batch mixing subjects: one metaword per sample
    mus = jnp.stack([mu, 2 * mu])
    _, emb2 = metaword.splice(jnp.concatenate([plain, plain]), mus, table, eos_id=39)
    np.testing.assert_array_equal(emb2[1, 1:3], 2 * mu)
    with pytest.raises(ValueError, match="metaword must be"):
        metaword.splice(plain, mu[:, :5], table, eos_id=39)
