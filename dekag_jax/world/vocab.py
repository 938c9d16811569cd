"""The tiny world's vocabulary and a CLIP-format byte-level BPE tokenizer over it.

Every word a prompt of this world can use (:func:`words`) becomes ONE token: the merges are
learned by plain BPE over the word list (each word counted once, ties broken
lexicographically) until every word is a single symbol, so applying them in rank order (what
CLIP's BPE does) rebuilds each word completely. Format as OpenAI CLIP / SD2.x ship it:

* ``vocab.json``: the 256 byte-level characters (GPT-2 ``bytes_to_unicode`` order), the same with
  the ``</w>`` end-of-word suffix, then one entry per merge, then ``<|startoftext|>`` and
  ``<|endoftext|>`` last.
* ``merges.txt``: ``#version: 0.2`` header, one ``left right`` pair per line in rank order.
* ``tokenizer_config.json`` / ``special_tokens_map.json``: ``model_max_length`` 77,
  bos ``<|startoftext|>``, eos/unk ``<|endoftext|>``, pad ``!`` (id 0), the SD2.x (OpenCLIP)
  convention of the paper's edge model (SD1.x pads with ``<|endoftext|>`` instead).

``transformers.CLIPTokenizer.from_pretrained(dir)`` loads the directory. A copy is shipped in
``dekag_jax/world/data/tokenizer`` (:data:`TOKENIZER_DIR`), identical to what
:func:`write_tokenizer` produces.

World versions (``dekag_jax.world.spec.WORLD_VERSIONS``): every function takes ``version`` (default
1, the shipped world, unchanged). Version 2 adds the interaction words of the extended prompts
("next", "to", "holding", "ball", "balloon"); its merges are learned the same way over the larger
word list, so its ids differ from version 1's beyond the byte tokens: a version-2 text encoder is a
new model, not an extension of the shipped one. Its copy is ``data/tokenizer_v2``
(:data:`TOKENIZER_DIRS`).
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from .render import check_version, prompt_words

__all__ = ["words", "bpe_merges", "build_vocab", "vocab_size", "write_tokenizer",
           "load_tokenizer", "TOKENIZER_DIR", "TOKENIZER_DIRS", "BOS", "EOS", "PAD", "MODEL_MAX_LENGTH"]

BOS, EOS, PAD = "<|startoftext|>", "<|endoftext|>", "!"
MODEL_MAX_LENGTH = 77
SUFFIX = "</w>"
TOKENIZER_DIR = Path(__file__).resolve().parent / "data" / "tokenizer"
TOKENIZER_DIRS = {1: TOKENIZER_DIR, 2: Path(__file__).resolve().parent / "data" / "tokenizer_v2"}


def words(version: int = 1) -> tuple[str, ...]:
    """All words of world ``version``'s prompts (sorted)."""
    return prompt_words(version)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode map (transformers' own; imported lazily,
    since rendering the world does not need transformers)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return bytes_to_unicode()


def _symbols(word: str) -> list[str]:
    b2u = _bytes_to_unicode()
    chars = [b2u[b] for b in word.encode("utf-8")]
    chars[-1] = chars[-1] + SUFFIX
    return chars


@lru_cache(maxsize=None)
def bpe_merges(word_list: tuple[str, ...] | None = None) -> tuple[tuple[str, str], ...]:
    """BPE merges (rank order) that turn every word of ``word_list`` (default :func:`words`)
    into a single token."""
    word_list = words() if word_list is None else word_list
    segs = [_symbols(w) for w in word_list]
    merges: list[tuple[str, str]] = []
    while True:
        counts: dict[tuple[str, str], int] = {}
        for s in segs:
            for p in zip(s[:-1], s[1:]):
                counts[p] = counts.get(p, 0) + 1
        if not counts:
            return tuple(merges)
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        a, b = best
        for k, s in enumerate(segs):
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            segs[k] = out


def build_vocab(version: int = 1) -> dict[str, int]:
    """token -> id, in CLIP's layout (bytes, bytes+</w>, merges, specials)."""
    base = list(_bytes_to_unicode().values())
    toks = base + [t + SUFFIX for t in base] + [a + b for a, b in bpe_merges(words(version))] + [BOS, EOS]
    vocab: dict[str, int] = {}
    for t in toks:
        if t not in vocab:
            vocab[t] = len(vocab)
    return vocab


def vocab_size(version: int = 1) -> int:
    """Number of ids the text encoder's embedding needs (before any metaword is added)."""
    return len(build_vocab(version))


def write_tokenizer(directory: str | os.PathLike, version: int = 1) -> Path:
    """Write world ``version``'s vocab.json, merges.txt, tokenizer_config.json,
    special_tokens_map.json into ``directory`` (created if needed); returns the path."""
    version = check_version(version)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    vocab = build_vocab(version)
    (d / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    with open(d / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in bpe_merges(words(version)):
            f.write(f"{a} {b}\n")
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": PAD}
    (d / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    cfg = {"tokenizer_class": "CLIPTokenizer", "model_max_length": MODEL_MAX_LENGTH,
           "do_lower_case": True, "clean_up_tokenization_spaces": False,
           "add_prefix_space": False, "errors": "replace", **special}
    (d / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return d


def load_tokenizer(directory: str | os.PathLike | None = None, version: int = 1):
    """``transformers.CLIPTokenizer`` for the world (default: the shipped copy of ``version``)."""
    from transformers import CLIPTokenizer
    return CLIPTokenizer.from_pretrained(str(directory or TOKENIZER_DIRS[check_version(version)]))


if __name__ == "__main__":  # regenerate the shipped copies
    for v, d in TOKENIZER_DIRS.items():
        print(write_tokenizer(d, v), vocab_size(v), "tokens")
