"""The metaword mu of MAKD (paper Sec. IV-B, eq. 8): a trainable embedding prepended to the prompt
("mu a Shiba plush toy"), fed to the frozen text encoder through ``inputs_embeds``.

Design: the prompt is tokenised WITHOUT the metaword (so any CLIP tokenizer works unchanged,
the tiny world's and SD's alike); ``splice`` shifts the token embeddings right by n and writes the
n metaword vectors right after BOS. That is exactly what textual inversion computes for the prompt
"<mu> a Shiba plush toy" with "<mu>" added to the tokenizer and its row appended to the
embedding table (diffusers ``load_textual_inversion``; tested), including truncation: the last
n tokens fall off and, if the EOS fell off with them, the last position becomes EOS (as the
tokenizer keeps EOS when it truncates).

The pooled output: CLIP pools the EOS position, found from ``input_ids`` (first id equal to the
config's ``eos_token_id``, or, for legacy configs with ``eos_token_id == 2``, the largest id, as
transformers does). ``splice`` returns the shifted ids too, with the metaword positions holding
the row's BOS id: BOS is never EOS and is smaller than EOS in every CLIP vocabulary, so both
pooling rules find the true EOS. (An added token's real id, e.g. 49408 > EOS 49407, would make
the legacy argmax rule pool the metaword instead: the ids are only used to locate EOS.)

Initialisation: the paper (Sec. VI-A4) draws the 1024-d embedding from "a Gaussian distribution
with zero mean and variance 0.02". We read "variance" literally: std sqrt(0.02) ~ 0.141
(``init="paper"``, the default). Hugging Face's ``initializer_range`` convention, which the
phrase may echo, is std 0.02 (``init="hf"``): one switch.

Shapes: mu ``[n, D]`` (one subject) or ``[B, n, D]`` (a batch mixing subjects, one metaword per
sample: multi-subject MAKD, Sec. VI-B2). The text encoder stays frozen: its params are an
argument of the functions here and receive no gradient unless the caller asks.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from dekag_jax.adapt.rules import params_dict
from dekag_jax.weights.convert import flatten

__all__ = ["DEFAULT_TOKEN", "PAPER_STD", "HF_STD", "TOKEN_EMBEDDING_PATH", "init_metaword", "splice",
           "encode_prompt"]

# An added token both the tiny world's BPE and SD's CLIP tokenizer accept as one new token.
DEFAULT_TOKEN = "<mu>"
PAPER_STD = math.sqrt(0.02)  # "variance 0.02", read literally
HF_STD = 0.02  # initializer_range convention
TOKEN_EMBEDDING_PATH = "text_model/embeddings/token_embedding/embedding"
_STDS = {"paper": PAPER_STD, "hf": HF_STD}


def init_metaword(key: jax.Array, dim: int, n_tokens: int = 1, *, init: str = "paper",
                  dtype: Any = jnp.float32) -> jax.Array:
    """mu ``[n_tokens, dim]`` ~ N(0, std^2), std = sqrt(0.02) (``init="paper"``) or 0.02 (``"hf"``)."""
    if init not in _STDS:
        raise ValueError(f"metaword init must be one of {sorted(_STDS)}, got {init!r}")
    if n_tokens < 1 or dim < 1:
        raise ValueError(f"metaword needs n_tokens >= 1 and dim >= 1, got {n_tokens}, {dim}")
    return (_STDS[init] * jax.random.normal(key, (n_tokens, dim), jnp.float32)).astype(dtype)


def splice(input_ids: jax.Array, mu: jax.Array, token_embedding: jax.Array, *, eos_id: int,
           bos_position: int = 0) -> tuple[jax.Array, jax.Array]:
    """``(ids [B, L] int32, inputs_embeds [B, L, D])`` with mu inserted right after BOS.

    input_ids: ``[B, L]`` tokenised prompts (BOS at ``bos_position``, EOS, padding), without the
    metaword. mu: ``[n, D]`` or ``[B, n, D]``. token_embedding: the encoder's table ``[V, D]``.
    eos_id: the tokenizer's EOS id. Positions bos_position+1 .. bos_position+n hold mu; the rest
    is shifted right by n and truncated to L, keeping an EOS (see module doc). Pure, jittable;
    gradients flow to mu (and to the table, if the caller differentiates it).
    """
    input_ids = jnp.asarray(input_ids)
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [B, L], got shape {input_ids.shape}")
    b, length = input_ids.shape
    d = token_embedding.shape[-1]
    if mu.ndim == 2:
        mu = jnp.broadcast_to(mu, (b, *mu.shape))
    if mu.ndim != 3 or mu.shape[0] != b or mu.shape[-1] != d:
        raise ValueError(f"metaword must be [n, {d}] or [B={b}, n, {d}], got shape {mu.shape}")
    n = mu.shape[1]
    start = bos_position + 1
    if start + n >= length:
        raise ValueError(f"sequence length {length} leaves no room for BOS, {n} metaword token(s) and EOS")
    bos = input_ids[:, bos_position:bos_position + 1]
    ids = jnp.concatenate([input_ids[:, :start], jnp.broadcast_to(bos, (b, n)), input_ids[:, start:length - n]], axis=1)
    has_eos = jnp.any(ids == eos_id, axis=1)
    ids = ids.at[:, -1].set(jnp.where(has_eos, ids[:, -1], eos_id)).astype(jnp.int32)
    emb = jnp.take(token_embedding, ids, axis=0)
    emb = jax.lax.dynamic_update_slice_in_dim(emb, mu.astype(emb.dtype), start, axis=1)
    return ids, emb


def encode_prompt(text_module: Any, text_params: Mapping[str, Any], input_ids: jax.Array, mu: jax.Array, *,
                  eos_id: int, bos_position: int = 0, **kwargs) -> Any:
    """Run a CLIP text encoder (``text_module.apply``, e.g. ``CLIPTextModel``) on the prompts with
    the metaword spliced in (see ``splice``); returns the module's output dict. ``kwargs`` pass
    through (``output_hidden_states``...). The encoder's params are an argument: frozen unless
    the caller differentiates them.
    """
    table = flatten(params_dict(text_params)).get(TOKEN_EMBEDDING_PATH)
    if table is None:
        raise ValueError(f"text encoder params have no {TOKEN_EMBEDDING_PATH!r} (not a CLIP text encoder?)")
    ids, emb = splice(input_ids, mu, table, eos_id=eos_id, bos_position=bos_position)
    return text_module.apply({"params": params_dict(text_params)}, ids, inputs_embeds=emb, **kwargs)
