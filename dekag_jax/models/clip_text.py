"""CLIP text encoder (SD1 OpenAI CLIP-L, SD2 OpenCLIP-H) in flax.linen, plus the pre-norm
transformer pieces shared with the CLIP vision tower (``dekag_jax.models.vit``).

Module names mirror transformers' state-dict keys (see ``dekag_jax/weights/convert.py``): the
torch key ``text_model.encoder.layers.3.self_attn.q_proj.weight`` is the Flax path
``text_model/encoder/layers.3/self_attn/q_proj/kernel``. The top-level ``text_model`` name is
kept so checkpoint keys and Flax paths coincide without prefix rules.

The text tower conditions the UNet (paper Sec. II); next wave the metaword of eq. (8) is injected
through ``inputs_embeds`` (it replaces the token-embedding lookup; position embeddings are still
added, as in textual inversion).
"""
from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import flax.linen as nn

from dekag_jax.errors import UnsupportedConfigError

Dtype = Any

# ----------------------------------------------------------------------------- activations


def quick_gelu(x: jax.Array) -> jax.Array:
    """OpenAI CLIP's ``x * sigmoid(1.702 x)`` (transformers ``quick_gelu``)."""
    return x * jax.nn.sigmoid(1.702 * x)


# transformers ACT2FN names -> functions. "gelu" there is the exact erf form.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "quick_gelu": quick_gelu,
    "gelu": partial(jax.nn.gelu, approximate=False),
    "gelu_new": partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": partial(jax.nn.gelu, approximate=True),
}

# ----------------------------------------------------------------------------- config checking

# Fields of a (possibly old, transformers 4.x) config.json that do not change the forward math:
# bookkeeping, generation settings, init scales (weights come from the checkpoint).
BENIGN_FIELDS = frozenset({
    "_name_or_path", "_commit_hash", "_attn_implementation", "_attn_implementation_autoset",
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype",
    "initializer_range", "initializer_factor", "layerscale_value", "logit_scale_init_value",
    "bos_token_id", "sep_token_id", "decoder_start_token_id", "return_dict", "output_hidden_states",
    "output_attentions", "torchscript", "use_bfloat16", "tf_legacy_loss", "pruned_heads",
    "tie_word_embeddings", "chunk_size_feed_forward", "is_encoder_decoder", "is_decoder",
    "cross_attention_hidden_size", "add_cross_attention", "tie_encoder_decoder", "max_length",
    "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups", "diversity_penalty",
    "temperature", "top_k", "top_p", "typical_p", "repetition_penalty", "length_penalty",
    "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences",
    "output_scores", "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id",
    "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens",
    "begin_suppress_tokens", "finetuning_task", "id2label", "label2id", "tokenizer_class", "prefix",
    "task_specific_params", "problem_type", "gradient_checkpointing", "use_cache", "num_labels",
    "output_router_logits", "chunk_size", "layer_types",
})

# Dropout-like fields: training-time regularisers. Our modules are deterministic, so we accept
# them only at 0 (every published CLIP/DINO checkpoint has 0) rather than silently dropping them.
ZERO_ONLY_FIELDS = frozenset({
    "attention_dropout", "dropout", "hidden_dropout_prob", "attention_probs_dropout_prob",
    "drop_path_rate", "hidden_dropout", "activation_dropout",
})


def check_fields(cfg: Mapping[str, Any], used: set[str], what: str, extra_benign: frozenset = frozenset()) -> None:
    """Raise UnsupportedConfigError naming the first field we would otherwise ignore."""
    for key, value in cfg.items():
        if key in used or key in BENIGN_FIELDS or key in extra_benign:
            continue
        if key in ZERO_ONLY_FIELDS:
            if value not in (None, 0, 0.0):
                raise UnsupportedConfigError(
                    f"{what}: {key}={value!r} is not supported (dekag_jax modules are deterministic; "
                    "only 0 is accepted)")
            continue
        raise UnsupportedConfigError(f"{what}: config field {key}={value!r} is not implemented")


def check_act(value: str, what: str) -> str:
    if value not in ACTIVATIONS:
        raise UnsupportedConfigError(
            f"{what}: hidden_act={value!r} is not supported (supported: {sorted(ACTIVATIONS)})")
    return value


# ----------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
    """Subset of transformers' ``CLIPTextConfig`` that defines the math (same field names)."""

    vocab_size: int = 49408
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    projection_dim: int = 768
    eos_token_id: int = 49407
    pad_token_id: int | None = 1

    @classmethod
    def from_hf(cls, cfg: Mapping[str, Any]) -> "CLIPTextConfig":
        """Build from a transformers ``CLIPTextConfig`` dict (``config.json`` of a text encoder).

        Raises UnsupportedConfigError naming any field/value we do not implement.
        """
        what = "CLIPTextConfig"
        cfg = dict(cfg)
        mt = cfg.get("model_type", "clip_text_model")
        if mt not in ("clip_text_model", "clip"):
            raise UnsupportedConfigError(f"{what}: model_type={mt!r} is not a CLIP text model")
        fields = {f.name for f in dataclasses.fields(cls)}
        check_fields(cfg, fields, what)
        kw = {k: cfg[k] for k in fields if k in cfg and cfg[k] is not None}
        check_act(kw.get("hidden_act", cls.hidden_act), what)
        eos = kw.get("eos_token_id", cls.eos_token_id)
        if not isinstance(eos, int):
            raise UnsupportedConfigError(f"{what}: eos_token_id={eos!r} (only a single int is supported)")
        c = cls(**kw)
        if c.hidden_size % c.num_attention_heads:
            raise UnsupportedConfigError(
                f"{what}: hidden_size={c.hidden_size} is not divisible by num_attention_heads={c.num_attention_heads}")
        return c

    def to_hf(self, architecture: str = "CLIPTextModel") -> dict[str, Any]:
        """A config.json dict that transformers' ``CLIPTextConfig`` reads back."""
        d = dataclasses.asdict(self)
        d.update(model_type="clip_text_model", architectures=[architecture], attention_dropout=0.0)
        return d


# ----------------------------------------------------------------------------- shared blocks


def layer_norm(eps: float, dtype: Dtype, param_dtype: Dtype, name: str) -> nn.LayerNorm:
    # use_fast_variance=False: E[(x-mu)^2] like torch, not E[x^2]-mu^2 (cancellation in fp32).
    return nn.LayerNorm(epsilon=eps, dtype=dtype, param_dtype=param_dtype, use_fast_variance=False, name=name)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, num_heads: int, *, causal: bool = False) -> jax.Array:
    """Multi-head scaled dot-product attention; ``[B, L, D]`` in and out, scale ``head_dim**-0.5``.

    Softmax runs in float32 whatever the input dtype (as transformers' eager CLIP attention).
    """
    b, l, d = q.shape
    if d % num_heads:
        raise ValueError(f"attention: width {d} is not divisible by {num_heads} heads")
    split = lambda x: x.reshape(b, x.shape[1], num_heads, d // num_heads)  # noqa: E731
    out = jax.nn.dot_product_attention(split(q), split(k), split(v), is_causal=causal, implementation="xla")
    return out.reshape(b, l, d)


class CLIPAttention(nn.Module):
    """transformers ``CLIPAttention`` (q_proj/k_proj/v_proj/out_proj, all with bias)."""

    hidden_size: int
    num_heads: int
    causal: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dense = partial(nn.Dense, self.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype)
        q, k, v = dense(name="q_proj")(x), dense(name="k_proj")(x), dense(name="v_proj")(x)
        return dense(name="out_proj")(attention(q, k, v, self.num_heads, causal=self.causal))


class CLIPMLP(nn.Module):
    hidden_size: int
    intermediate_size: int
    hidden_act: str
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dense = partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
        x = ACTIVATIONS[self.hidden_act](dense(self.intermediate_size, name="fc1")(x))
        return dense(self.hidden_size, name="fc2")(x)


class CLIPEncoderLayer(nn.Module):
    """Pre-norm block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``."""

    hidden_size: int
    intermediate_size: int
    num_heads: int
    hidden_act: str
    layer_norm_eps: float
    causal: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ln = partial(layer_norm, self.layer_norm_eps, self.dtype, self.param_dtype)
        x = x + CLIPAttention(hidden_size=self.hidden_size, num_heads=self.num_heads, causal=self.causal,
                              dtype=self.dtype, param_dtype=self.param_dtype, name="self_attn")(ln("layer_norm1")(x))
        x = x + CLIPMLP(hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
                        hidden_act=self.hidden_act, dtype=self.dtype, param_dtype=self.param_dtype,
                        name="mlp")(ln("layer_norm2")(x))
        return x


class CLIPEncoder(nn.Module):
    """``encoder.layers.N``; returns (last hidden state, tuple of the input and every layer's output)."""

    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_layers: int
    hidden_act: str
    layer_norm_eps: float
    causal: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        states = [x]
        for i in range(self.num_layers):
            x = CLIPEncoderLayer(hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
                                 num_heads=self.num_heads, hidden_act=self.hidden_act,
                                 layer_norm_eps=self.layer_norm_eps, causal=self.causal, dtype=self.dtype,
                                 param_dtype=self.param_dtype, name=f"layers.{i}")(x)
            states.append(x)
        return x, tuple(states)


# ----------------------------------------------------------------------------- text tower


class CLIPTextEmbeddings(nn.Module):
    config: CLIPTextConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids: jax.Array, inputs_embeds: jax.Array | None = None) -> jax.Array:
        c = self.config
        embed = partial(nn.Embed, features=c.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype)
        tok = embed(c.vocab_size, name="token_embedding")
        pos = embed(c.max_position_embeddings, name="position_embedding")
        seq = input_ids.shape[-1]
        if inputs_embeds is None:
            inputs_embeds = tok(input_ids)
        else:
            tok(input_ids[:, :0])  # creates the parameter when initialising; no lookup
        return inputs_embeds.astype(self.dtype) + pos(jnp.arange(seq))[None]


class CLIPTextTransformer(nn.Module):
    """transformers' ``CLIPTextModel.text_model``: embeddings -> causal encoder -> final LN -> EOS pool."""

    config: CLIPTextConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids, inputs_embeds=None, output_hidden_states=False):
        c = self.config
        x = CLIPTextEmbeddings(config=c, dtype=self.dtype, param_dtype=self.param_dtype,
                               name="embeddings")(input_ids, inputs_embeds)
        x, states = CLIPEncoder(hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                                num_heads=c.num_attention_heads, num_layers=c.num_hidden_layers,
                                hidden_act=c.hidden_act, layer_norm_eps=c.layer_norm_eps, causal=True, dtype=self.dtype,
                                param_dtype=self.param_dtype, name="encoder")(x)
        last = layer_norm(c.layer_norm_eps, self.dtype, self.param_dtype, "final_layer_norm")(x)
        if c.eos_token_id == 2:
            # legacy configs (before transformers PR #24773): the EOS is the largest id in the row
            pos = jnp.argmax(input_ids, axis=-1)
        else:
            # first occurrence of the configured EOS id (0 if absent, like torch's argmax)
            pos = jnp.argmax((input_ids == c.eos_token_id).astype(jnp.int32), axis=-1)
        pooled = jnp.take_along_axis(last, pos[:, None, None], axis=1)[:, 0]
        out = {"last_hidden_state": last, "pooler_output": pooled}
        if output_hidden_states:
            out["hidden_states"] = states
        return out


def _check_text_inputs(config: CLIPTextConfig, input_ids, inputs_embeds) -> None:
    if input_ids.ndim != 2 or not jnp.issubdtype(input_ids.dtype, jnp.integer):
        raise ValueError(f"input_ids must be an integer array [B, L], got {input_ids.dtype} {input_ids.shape}")
    if input_ids.shape[1] > config.max_position_embeddings:
        raise ValueError(f"sequence length {input_ids.shape[1]} exceeds max_position_embeddings "
                         f"{config.max_position_embeddings}")
    if inputs_embeds is not None and inputs_embeds.shape != (*input_ids.shape, config.hidden_size):
        raise ValueError(f"inputs_embeds must be [B, L, D] = {(*input_ids.shape, config.hidden_size)}, "
                         f"got {inputs_embeds.shape}")


class CLIPTextModel(nn.Module):
    """transformers ``CLIPTextModel``.

    ``__call__(input_ids [B, L] int32, *, inputs_embeds=None [B, L, D], output_hidden_states=False)``
    returns ``{"last_hidden_state": [B, L, D] (after final_layer_norm), "pooler_output": [B, D]
    (EOS position, see CLIPTextConfig.eos_token_id), "hidden_states": (embeddings, layer 1..N)
    outputs, pre-final-LN, only if asked}``. ``inputs_embeds`` replaces the token lookup (position
    embeddings are still added); ``input_ids`` is still required, for the EOS pooling position.
    """

    config: CLIPTextConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids, *, inputs_embeds=None, output_hidden_states=False):
        input_ids = jnp.asarray(input_ids)
        _check_text_inputs(self.config, input_ids, inputs_embeds)
        return CLIPTextTransformer(config=self.config, dtype=self.dtype, param_dtype=self.param_dtype,
                                   name="text_model")(
            input_ids, inputs_embeds, output_hidden_states)


class CLIPTextModelWithProjection(nn.Module):
    """transformers ``CLIPTextModelWithProjection``: adds ``text_embeds = text_projection(pooler_output)``
    ([B, projection_dim], no bias, not normalised)."""

    config: CLIPTextConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids, *, inputs_embeds=None, output_hidden_states=False):
        input_ids = jnp.asarray(input_ids)
        _check_text_inputs(self.config, input_ids, inputs_embeds)
        out = CLIPTextTransformer(config=self.config, dtype=self.dtype, param_dtype=self.param_dtype,
                                  name="text_model")(
            input_ids, inputs_embeds, output_hidden_states)
        out["text_embeds"] = nn.Dense(self.config.projection_dim, use_bias=False, dtype=self.dtype,
                                      param_dtype=self.param_dtype, name="text_projection")(out["pooler_output"])
        return out
