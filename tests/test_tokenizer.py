"""dekag_jax.models.tokenizer against transformers' own CLIPTokenizer call (tiny vocab, both pad conventions)."""
from __future__ import annotations

import json

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")

from dekag_jax.models.tokenizer import add_token, load_tokenizer, tokenize  # noqa: E402

LETTERS = "abcdefghijklmnopqrstuvwxyz"
MERGES = ["c a", "ca t</w>", "d o", "do g</w>", "p h", "ph o", "pho t", "phot o</w>", "o f</w>"]
PROMPTS = ["a photo of a cat", "dog dog, xyz!", "A  PHOTO\tof\n a   dog", "", "cat " * 20]


def _write_tokenizer(path, pad: str, max_len: int = 16) -> str:
    """A diffusers-style tokenizer/ folder with a tiny byte-level BPE vocabulary."""
    vocab: dict[str, int] = {}
    for c in "!\"#$%&',":
        vocab[c] = len(vocab)
    for c in LETTERS:
        vocab[c] = len(vocab)
    for c in LETTERS + "!,":
        vocab[c + "</w>"] = len(vocab)
    for m in MERGES:
        vocab[m.replace(" ", "")] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    path.mkdir()
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": pad}
    (path / "special_tokens_map.json").write_text(json.dumps(special))
    (path / "tokenizer_config.json").write_text(json.dumps({**special, "model_max_length": max_len,
                                                            "tokenizer_class": "CLIPTokenizer"}))
    return str(path)


@pytest.fixture(params=["<|endoftext|>", "!"], ids=["sd1_pad_eos", "sd2_pad_bang"])
def tok_dir(request, tmp_path):
    return _write_tokenizer(tmp_path / "tokenizer", request.param), request.param


def test_ids_match_transformers(tok_dir):
    path, pad = tok_dir
    tok = load_tokenizer(path)
    assert tok.pad_token == pad
    ids = tokenize(tok, PROMPTS)
    ref = transformers.CLIPTokenizer.from_pretrained(path)(
        PROMPTS, padding="max_length", max_length=16, truncation=True, return_tensors="np")["input_ids"]
    assert ids.dtype == np.int32 and ids.shape == (len(PROMPTS), 16)
    np.testing.assert_array_equal(ids, ref)
    bos, eos, pad_id = (tok.convert_tokens_to_ids(t) for t in ("<|startoftext|>", "<|endoftext|>", pad))
    assert (ids[:, 0] == bos).all()
    assert ids[3, 1] == eos and (ids[3, 2:] == pad_id).all()  # empty prompt: BOS EOS pad...
    assert ids[4, -1] == eos  # truncated prompt keeps its EOS
    # merges are used: "photo" is one token
    assert tok.convert_tokens_to_ids("photo</w>") in ids[0]


def test_explicit_max_length(tok_dir):
    tok = load_tokenizer(tok_dir[0])
    assert tokenize(tok, ["a cat"], max_length=8).shape == (1, 8)


def test_add_token(tok_dir):
    tok = load_tokenizer(tok_dir[0])
    n = len(tok)
    tid = add_token(tok, "<meta>")
    assert tid == n
    ids = tokenize(tok, ["a <meta> cat"])
    assert ids[0, 2] == tid
    with pytest.raises(ValueError, match="already"):
        add_token(tok, "<meta>")
    assert add_token(tok, "<meta>", exist_ok=True) == tid
    with pytest.raises(ValueError, match="whitespace"):
        add_token(tok, "two words")


@pytest.mark.parametrize("bad,err,msg", [([], ValueError, "empty"), ("a cat", TypeError, "list of strings"),
                                         (["a", 3], TypeError, r"entries \[1\]"), (None, TypeError, "list")])
def test_bad_input(tok_dir, bad, err, msg):
    tok = load_tokenizer(tok_dir[0])
    with pytest.raises(err, match=msg):
        tokenize(tok, bad)


def test_bad_max_length_and_dir(tok_dir, tmp_path):
    tok = load_tokenizer(tok_dir[0])
    with pytest.raises(ValueError, match="max_length"):
        tokenize(tok, ["a"], max_length=1)
    with pytest.raises(FileNotFoundError):
        load_tokenizer(str(tmp_path / "nope"))
