"""CLIP tokenizer: a thin wrapper on transformers' ``CLIPTokenizer`` (no torch needed).

transformers 5.x has one ``CLIPTokenizer`` (backed by the Rust ``tokenizers`` library); it reads
a diffusers ``tokenizer/`` folder (``vocab.json``, ``merges.txt``, ``tokenizer_config.json``,
``special_tokens_map.json``) exactly as diffusers' Stable Diffusion pipelines do.

Padding follows the checkpoint: SD1 pads with ``<|endoftext|>``, SD2 (OpenCLIP) with ``!``.
Both are read from the checkpoint's own files, never assumed.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

# transformers' sentinel for "no limit" (int(1e30)); a CLIP tokenizer without model_max_length.
_NO_LIMIT = int(1e29)


def load_tokenizer(path: str) -> Any:
    """Load the CLIP tokenizer stored in ``path`` (a diffusers ``tokenizer/`` folder)."""
    from transformers import CLIPTokenizer

    if not os.path.isdir(path):
        raise FileNotFoundError(f"tokenizer directory {path!r} does not exist")
    return CLIPTokenizer.from_pretrained(path)


def _check_prompts(prompts: Any) -> list[str]:
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise TypeError(f"prompts must be a list of strings, got {type(prompts).__name__}")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty: need at least one prompt")
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
    if bad:
        raise TypeError(f"prompts must all be str; entries {bad[:10]} are "
                        f"{sorted({type(prompts[i]).__name__ for i in bad})}")
    return prompts


def tokenize(tokenizer: Any, prompts: Sequence[str], max_length: int | None = None) -> np.ndarray:
    """Token ids ``[B, max_length] int32``: BOS, tokens, EOS, then the checkpoint's pad token.

    ``max_length`` defaults to the tokenizer's ``model_max_length`` (77 for SD); longer prompts are
    truncated (the EOS is kept), as diffusers' pipelines do.
    """
    prompts = _check_prompts(prompts)
    if max_length is None:
        max_length = int(tokenizer.model_max_length)
        if max_length >= _NO_LIMIT:
            raise ValueError("tokenizer has no model_max_length; pass max_length explicitly")
    if not isinstance(max_length, (int, np.integer)) or max_length < 2:
        raise ValueError(f"max_length must be an int >= 2 (BOS + EOS), got {max_length!r}")
    if tokenizer.pad_token is None:
        raise ValueError("tokenizer declares no pad_token; cannot pad to a fixed length")
    enc = tokenizer(prompts, padding="max_length", max_length=int(max_length), truncation=True,
                    return_tensors="np")
    return np.asarray(enc["input_ids"], dtype=np.int32)


def add_token(tokenizer: Any, token: str, *, exist_ok: bool = False) -> int:
    """Add ``token`` (e.g. the metaword placeholder of eq. 8) as one unsplittable token; return its id.

    The tokenizer is modified in place. The text encoder's embedding table must then get a row
    for the returned id (or the caller injects its embedding through ``inputs_embeds``).
    Raises ValueError if the token already exists, unless ``exist_ok``.
    """
    if not isinstance(token, str) or not token or any(c.isspace() for c in token):
        raise ValueError(f"token must be a non-empty string without whitespace, got {token!r}")
    added = tokenizer.add_tokens([token])
    if added == 0 and not exist_ok:
        raise ValueError(f"token {token!r} is already in the tokenizer's vocabulary; choose another placeholder")
    ids = tokenizer(token, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"token {token!r} does not tokenize to a single id after adding it: {ids}")
    return int(ids[0])
