"""Strict PyTorch <-> Flax parameter conversion on flat path dicts.

Naming convention (the whole package relies on it): a Flax module is named exactly like the
PyTorch module it mirrors in diffusers/transformers, with a ``ModuleList`` index fused into the
list's name. So the PyTorch parameter

    down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_q.weight

lives at the Flax path

    down_blocks.0/attentions.1/transformer_blocks.0/attn1/to_q/kernel

Module paths are therefore identical on both sides up to the separator, which makes the
mapping exactly invertible and lets adapters (LoRA, CALA) and exporters (PEFT/diffusers/kohya
keys) address layers by the names users already know.

Leaf names and layouts (PyTorch -> Flax):
    conv ``weight`` [O, I, kh, kw]  -> ``kernel`` [kh, kw, I, O]   (OIHW -> HWIO)
    linear ``weight`` [O, I]        -> ``kernel`` [I, O]
    linear stored as 1x1 conv [O, I, 1, 1] (legacy VAE attention) -> ``kernel`` [I, O]
    norm ``weight`` [C]             -> ``scale`` [C]
    embedding ``weight`` [N, D]     -> ``embedding`` [N, D]
    ``bias``                        -> ``bias``
    any other leaf (raw ``nn.Parameter`` such as ``cls_token``, ``position_embeddings``,
    ``class_embedding``, ``lambda1``, ``logit_scale``) keeps its name and layout.
Which of kernel/scale/embedding a ``weight`` becomes is read off the abstract Flax tree
(built with ``jax.eval_shape``), never guessed from the tensor rank alone.

Conversion is strict (unlike maxdiffusion, which only logs mismatches): every source tensor
must map to a Flax leaf of the right shape, every Flax leaf must be filled, otherwise a
``ConversionError`` lists *all* problems at once.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

import numpy as np

SEP = "/"


class ConversionError(ValueError):
    """A checkpoint does not match the Flax model it is loaded into."""


# ----------------------------------------------------------------------------- flat trees

def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {"a/b/c": leaf}."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        path = f"{prefix}{SEP}{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, path))
        else:
            out[path] = v
    return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"a/b/c": leaf} -> nested dict."""
    tree: dict[str, Any] = {}
    for path, v in flat.items():
        node = tree
        *parents, leaf = path.split(SEP)
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return tree


# ----------------------------------------------------------------------------- key mapping

def torch_module_to_flax(module_path: str) -> str:
    """``down_blocks.0.attentions.1.to_out.0`` -> ``down_blocks.0/attentions.1/to_out.0``."""
    parts = module_path.split(".") if module_path else []
    segs: list[str] = []
    for p in parts:
        if p.isdigit() and segs:
            segs[-1] = f"{segs[-1]}.{p}"
        else:
            segs.append(p)
    return SEP.join(segs)


def flax_module_to_torch(module_path: str) -> str:
    return module_path.replace(SEP, ".")


_TORCH_LEAF_FOR = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}


def _to_flax_layout(x: np.ndarray, leaf: str, target_shape: tuple[int, ...]) -> np.ndarray:
    if leaf == "kernel":
        if x.ndim == 4 and len(target_shape) == 4:  # conv OIHW -> HWIO
            return np.transpose(x, (2, 3, 1, 0))
        if x.ndim == 4 and len(target_shape) == 2 and x.shape[2:] == (1, 1):  # 1x1 conv as linear
            return np.transpose(x[:, :, 0, 0], (1, 0))
        if x.ndim == 2:  # linear [out, in] -> [in, out]
            return np.transpose(x, (1, 0))
    return x


def _to_torch_layout(x: np.ndarray, leaf: str) -> np.ndarray:
    if leaf == "kernel":
        if x.ndim == 4:
            return np.transpose(x, (3, 2, 0, 1))
        if x.ndim == 2:
            return np.transpose(x, (1, 0))
    return x


KeyRule = tuple[str, str]  # (regex over the torch key, replacement)


def apply_rules(key: str, rules: Iterable[KeyRule]) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


def torch_to_flax(
    state: Mapping[str, Any],
    abstract_params: Mapping[str, Any],
    *,
    rename: Iterable[KeyRule] = (),
    ignore: Iterable[str] = (),
    dtype: Any = None,
    what: str = "checkpoint",
    put: Any = None,
) -> dict[str, Any]:
    """Convert a flat PyTorch state dict into a Flax param tree shaped like ``abstract_params``.

    Args:
      state: ``{torch_key: array-like}``; values may be lazy (anything ``np.asarray`` accepts),
        so a caller can stream tensors from safetensors one at a time.
      abstract_params: the Flax ``params`` tree (leaves with ``.shape``, e.g. from
        ``jax.eval_shape``) that the result must match exactly.
      rename: regex rules applied in order to each torch key first (e.g. legacy VAE attention
        ``query`` -> ``to_q``, or stripping a ``text_model.`` prefix).
      ignore: regexes of torch keys that are known non-parameters (buffers such as
        ``position_ids``); they are skipped, never silently anything else.
      dtype: cast every leaf to this numpy dtype (default: the abstract leaf's dtype).
      what: name of the component, used in error messages.
      put: optional function applied to each converted leaf as soon as it is ready (e.g.
        ``jax.device_put``), so that a loader streaming from safetensors never holds a full
        numpy copy of the weights next to the device copy (peak ~1x the weights, not ~2x).

    Returns: nested dict of numpy arrays (or of whatever ``put`` returns).
    Raises: ConversionError naming every unmapped key, missing leaf and shape mismatch.
    """
    target = flatten(abstract_params)
    ignore_re = [re.compile(p) for p in ignore]
    rules = list(rename)
    out: dict[str, np.ndarray] = {}
    unmapped, mismatched, mismatched_paths = [], [], set()
    for tkey in state:
        if any(r.search(tkey) for r in ignore_re):
            continue
        key = apply_rules(tkey, rules)
        module, _, leaf = key.rpartition(".")
        fmod = torch_module_to_flax(module)
        if leaf in ("weight", "bias"):
            cands = [f"{fmod}{SEP}{fl}" for fl, tl in _TORCH_LEAF_FOR.items() if tl == leaf]
        else:  # a raw parameter: same name on both sides
            cands = [f"{fmod}{SEP}{leaf}" if fmod else leaf]
        hits = [c for c in cands if c in target]
        if len(hits) != 1:
            unmapped.append(tkey)
            continue
        path = hits[0]
        x = np.asarray(state[tkey])
        want = tuple(target[path].shape)
        x = _to_flax_layout(x, path.rpartition(SEP)[2], want)
        if tuple(x.shape) != want:
            mismatched.append(f"{tkey} -> {path}: checkpoint {tuple(x.shape)} vs model {want}")
            mismatched_paths.add(path)
            continue
        dt = dtype if dtype is not None else getattr(target[path], "dtype", x.dtype)
        # np.asarray(order="C"), not ascontiguousarray: that one turns 0-d tensors into shape (1,)
        x = np.asarray(x.astype(dt, copy=False), order="C")
        out[path] = put(x) if put is not None else x
    missing = sorted(set(target) - set(out) - mismatched_paths)
    if unmapped or mismatched or missing:
        lines = [f"{what}: checkpoint does not match the model."]
        if unmapped:
            lines.append(f"  {len(unmapped)} checkpoint keys with no model parameter: " + ", ".join(unmapped[:20])
                         + (" ..." if len(unmapped) > 20 else ""))
        if mismatched:
            lines.append(f"  {len(mismatched)} shape mismatches: " + "; ".join(mismatched[:20])
                         + (" ..." if len(mismatched) > 20 else ""))
        if missing:
            lines.append(f"  {len(missing)} model parameters absent from the checkpoint: " + ", ".join(missing[:20])
                         + (" ..." if len(missing) > 20 else ""))
        raise ConversionError("\n".join(lines))
    return unflatten(out)


def flax_to_torch(params: Mapping[str, Any], *, rename: Iterable[KeyRule] = (),
                  dtype: Any = None) -> dict[str, np.ndarray]:
    """Inverse of :func:`torch_to_flax`: Flax tree -> flat ``{torch_key: np.ndarray}``.

    ``rename`` rules are applied to the produced torch key (e.g. to add a ``text_model.`` prefix
    back). Kernels come back in PyTorch layout (linear [out, in], conv OIHW).
    """
    out: dict[str, np.ndarray] = {}
    for path, v in flatten(params).items():
        module, _, leaf = path.rpartition(SEP)
        tleaf = _TORCH_LEAF_FOR.get(leaf, leaf)  # raw parameters keep their name
        key = f"{flax_module_to_torch(module)}.{tleaf}" if module else tleaf
        key = apply_rules(key, rename)
        x = _to_torch_layout(np.asarray(v), leaf)
        if dtype is not None:
            x = x.astype(dtype)
        out[key] = np.asarray(x, order="C")
    return out

