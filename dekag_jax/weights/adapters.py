"""Adapter files that diffusers, PEFT and kohya-style tools read and write: LoRA and the metaword.

This module knows the *file formats* only. It works on the plain adapter data contract shared
with :mod:`dekag_jax.adapt` (which this module never imports; ``weights/`` knows nothing of
alignment):

* a **path** is the "/"-joined key path of a base kernel inside ``params`` (as
  :func:`dekag_jax.weights.convert.flatten` writes it), e.g.
  ``down_blocks.0/attentions.0/transformer_blocks.0/attn1/to_q/kernel``;
* **adapter params** ``{path: {"lora_A": A, "lora_B": B}}`` in Flax layouts:
  Dense kernel ``[in, out]``: ``A [in, r]``, ``B [r, out]``;
  Conv kernel ``[kh, kw, in, out]``: ``A [kh, kw, in, r]`` (a conv with the base kernel's size),
  ``B [1, 1, r, out]`` (a 1x1 conv);
* merged kernel ``W + (alpha / r) * A @ B`` (conv: ``einsum('hwir,ro->hwio', A, B[0, 0])``);
* **alphas**: one float for all paths, ``{path: float}``, or ``{path: spec}`` where ``spec`` has an
  ``alpha`` attribute (``adapt``'s ``LoraSpec``); the rank is always read off ``A``.

Files
-----
``pytorch_lora_weights.safetensors`` (:func:`save_lora`, what ``pipe.load_lora_weights(dir)``
reads): PEFT keys ``unet.<module>.lora_A.weight`` / ``lora_B.weight`` (and ``text_encoder.``),
torch layouts (``lora_A [r, in]`` or ``[r, in, kh, kw]``, ``lora_B [out, r]`` or
``[out, r, 1, 1]``), where ``<module>`` is the path without ``/kernel`` with "/" -> ".". The scale
travels in the safetensors ``__metadata__["lora_adapter_metadata"]``: a JSON object of
``LoraConfig`` keyword arguments prefixed by the component, ``{"unet.r": 8, "unet.lora_alpha":
16, "unet.target_modules": [...], "unet.rank_pattern": {...}, "unet.alpha_pattern": {...}}``,
exactly what diffusers 0.42's ``save_lora_weights`` writes and ``load_lora_weights`` turns back
into ``LoraConfig(**kwargs)``. Without that metadata (and without kohya ``.alpha`` keys) diffusers
takes alpha = rank, so ``bake_alpha=True`` multiplies B by alpha / r instead, for tools that ignore
the metadata (the metadata then says alpha = r, which is consistent with both readings).

``learned_embeds.safetensors`` (:func:`save_textual_inversion`, what ``load_textual_inversion``
reads): one key ``{token: [n, dim]}``; n > 1 becomes the tokens ``token, token_1, ...``.

:func:`load_lora` imports LoRA files users already have, strictly (like the weight converter):
PEFT (``lora_A`` / ``lora_B``, optional ``base_model.model.`` prefix, alpha from the metadata
above or from a PEFT ``adapter_config.json`` beside the file), diffusers (``lora.down`` /
``lora.up``, ``lora_linear_layer``, and the older attention-processor keys
``processor.to_q_lora.down``), kohya (``lora_unet_<module_with_underscores>.lora_down.weight``,
``.lora_up.weight``, ``.alpha``; text encoder ``lora_te_``). kohya's names lose the module
boundaries (``down_blocks_0_attentions_0``), so they are resolved against the model's own kernel
paths; a name matching none, or more than one, is an error. Every key that maps to no kernel,
every incomplete pair and every shape mismatch is listed in ONE :class:`AdapterFileError`.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
from typing import Any, Iterable, Mapping

import numpy as np

from dekag_jax.weights.convert import SEP, ConversionError, flatten, torch_module_to_flax

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
TEXTUAL_INVERSION_NAME = "learned_embeds.safetensors"
LORA_ADAPTER_METADATA_KEY = "lora_adapter_metadata"  # diffusers.loaders.lora_base
COMPONENTS = ("unet", "text_encoder")  # diffusers' key prefixes in a Stable Diffusion LoRA file
_KOHYA_PREFIX = {"unet": "lora_unet_", "text_encoder": "lora_te_"}
_MAX_LISTED = 20


class AdapterFileError(ConversionError):
    """An adapter file does not match the model (or our adapters cannot be written as asked)."""


@dataclasses.dataclass
class ImportedLora:
    """LoRA of one component read from a file.

    adapters: ``{path: {"lora_A", "lora_B"}}`` (Flax layouts, float32 numpy) -- the contract;
    rank / alpha: ``{path: int}`` / ``{path: float}``; ``scale(path) = alpha / rank``;
    format: "peft", "diffusers" or "kohya" (the key style found).
    """

    adapters: dict[str, dict[str, np.ndarray]]
    rank: dict[str, int]
    alpha: dict[str, float]
    format: str

    def scale(self, path: str) -> float:
        return self.alpha[path] / self.rank[path]

    def spec_fields(self, path: str) -> tuple[str, str, int, float]:
        """``(path, kind, rank, alpha)``: the fields of ``dekag_jax.adapt.lora.LoraSpec``, so that
        ``{p: LoraSpec(*imp.spec_fields(p)) for p in imp.adapters}`` feeds ``lora.merge``/``apply``."""
        kind = "dense" if self.adapters[path]["lora_A"].ndim == 2 else "conv"
        return path, kind, self.rank[path], self.alpha[path]


# ----------------------------------------------------------------------------- naming

def module_name(path: str) -> str:
    """Kernel path -> torch module name: ``a.0/b/to_out.0/kernel`` -> ``a.0.b.to_out.0``."""
    if not path.endswith(SEP + "kernel"):
        raise AdapterFileError(f"{path}: an adapted parameter must be a kernel (a path ending in '/kernel')")
    return path[: -len("/kernel")].replace(SEP, ".")


def kernel_path(module: str) -> str:
    """Torch module name -> kernel path (inverse of :func:`module_name`)."""
    return torch_module_to_flax(module) + SEP + "kernel"


def _kernel_shapes(model: Any, what: str) -> dict[str, tuple[int, ...]]:
    """``{path: shape}`` of the kernels of ``model``: a params tree (``{"params": ...}`` or the inner
    dict, leaves with ``.shape``, e.g. from ``jax.eval_shape``) or a flat ``{path: shape}``."""
    if not isinstance(model, Mapping):
        raise AdapterFileError(f"{what}: expected the model's params (a dict), got {type(model).__name__}")
    if set(model) == {"params"} and isinstance(model["params"], Mapping):
        model = model["params"]
    out = {}
    for p, v in flatten(model).items():
        if p.endswith(SEP + "kernel"):
            out[p] = tuple(v) if isinstance(v, (tuple, list)) else tuple(v.shape)
    if not out:
        raise AdapterFileError(f"{what}: the given params hold no kernels")
    return out


# ----------------------------------------------------------------------------- export

def _alpha_of(alphas: Any, path: str, rank: int) -> float:
    a = alphas
    if isinstance(alphas, Mapping):
        if path not in alphas:
            raise AdapterFileError(f"{path}: no alpha given for this adapter")
        a = alphas[path]
    spec_rank = getattr(a, "rank", None)
    if spec_rank is not None and int(spec_rank) != rank:
        raise AdapterFileError(f"{path}: spec says rank {spec_rank} but lora_A has rank {rank}")
    a = getattr(a, "alpha", a)
    if not isinstance(a, (int, float, np.integer, np.floating)) or not np.isfinite(a) or a <= 0:
        raise AdapterFileError(f"{path}: alpha must be a positive number, got {a!r}")
    return float(a)


def _check_pair(path: str, entry: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, str]:
    """(A, B, kind) of one contract entry, shapes checked. kind: "dense" or "conv"."""
    extra = sorted(set(entry) - {"lora_A", "lora_B"})
    if extra:
        raise AdapterFileError(
            f"{path}: holds {extra}; a file has room for plain LoRA only (a CALA gate makes the update depend on "
            "the channel condition: merge the gate for one condition into lora_B first)")
    if "lora_A" not in entry or "lora_B" not in entry:
        raise AdapterFileError(f"{path}: needs both lora_A and lora_B, got {sorted(entry)}")
    A = np.asarray(entry["lora_A"], np.float32)
    B = np.asarray(entry["lora_B"], np.float32)
    if A.ndim == 2 and B.ndim == 2 and A.shape[1] == B.shape[0]:
        return A, B, "dense"
    if A.ndim == 4 and B.ndim == 4 and B.shape[:2] == (1, 1) and A.shape[3] == B.shape[2]:
        return A, B, "conv"
    raise AdapterFileError(f"{path}: lora_A {A.shape} / lora_B {B.shape} are neither dense ([in, r] / [r, out]) "
                           "nor conv ([kh, kw, in, r] / [1, 1, r, out])")


def _config_name(module: str, prefix: str) -> str:
    # transformers 5 flattened CLIPTextModel (no ``text_model`` submodule); diffusers strips
    # ``text_model.`` from the state-dict keys then, but not from the metadata. A name without it
    # matches both generations: PEFT matches target_modules by suffix (``.name``) and patterns by
    # ``(.*\.)?(pattern)$``.
    return module.removeprefix("text_model.") if prefix == "text_encoder" else module


def lora_to_torch(adapters: Mapping[str, Mapping[str, Any]], alphas: Any, *, prefix: str = "unet",
                  bake_alpha: bool = False) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Contract adapters -> (PEFT state dict in torch layouts, ``LoraConfig`` kwargs).

    Keys are ``{prefix}.<module>.lora_A.weight`` / ``lora_B.weight`` (``prefix=""``: none). The
    kwargs hold ``r`` / ``lora_alpha`` (the most common values), ``rank_pattern`` /
    ``alpha_pattern`` for the other modules (keys are ``re.escape``d module names, as PEFT matches
    them with ``re.match(r"(.*\\.)?(key)$", name)``) and ``target_modules`` (the module names).
    ``bake_alpha``: B is multiplied by alpha / r and every alpha written equals its rank.
    """
    if not adapters:
        raise AdapterFileError(f"{prefix or 'adapters'}: no adapters to export")
    state: dict[str, np.ndarray] = {}
    ranks: dict[str, int] = {}
    alpha_of: dict[str, float] = {}
    pre = f"{prefix}." if prefix else ""
    for path in sorted(adapters):
        A, B, kind = _check_pair(path, adapters[path])
        mod = module_name(path)
        r = int(A.shape[-1])
        alpha = _alpha_of(alphas, path, r)
        if bake_alpha:
            B = B * np.float32(alpha / r)
            alpha = float(r)
        if kind == "dense":
            a_t, b_t = A.T, B.T  # [r, in], [out, r]
        else:
            a_t, b_t = A.transpose(3, 2, 0, 1), B.transpose(3, 2, 0, 1)  # [r, in, kh, kw], [out, r, 1, 1]
        state[f"{pre}{mod}.lora_A.weight"] = np.ascontiguousarray(a_t)
        state[f"{pre}{mod}.lora_B.weight"] = np.ascontiguousarray(b_t)
        ranks[_config_name(mod, prefix)], alpha_of[_config_name(mod, prefix)] = r, alpha
    r0 = collections.Counter(ranks.values()).most_common(1)[0][0]
    a0 = collections.Counter(alpha_of.values()).most_common(1)[0][0]
    config = {
        "r": r0,
        "lora_alpha": a0,
        "rank_pattern": {re.escape(m): v for m, v in ranks.items() if v != r0},
        "alpha_pattern": {re.escape(m): v for m, v in alpha_of.items() if v != a0},
        "target_modules": sorted(ranks),
        "init_lora_weights": True,
        "use_dora": False,
        "lora_bias": False,
    }
    return state, config


def _lora_path(out: str, name: str) -> str:
    out = os.fspath(out)
    if out.endswith(".safetensors"):
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        return out
    os.makedirs(out, exist_ok=True)
    return os.path.join(out, name)


def save_lora(out: str, unet_adapters: Mapping[str, Any] | None, unet_alphas: Any = None, *,
              text_encoder_adapters: Mapping[str, Any] | None = None, text_encoder_alphas: Any = None,
              bake_alpha: bool = False, dtype: Any = np.float32) -> str:
    """Write ``pytorch_lora_weights.safetensors`` that ``StableDiffusionPipeline.load_lora_weights``
    loads (PEFT keys + ``lora_adapter_metadata``; see the module docstring).

    Args:
      out: a directory (the file gets the default name) or a ``*.safetensors`` path.
      unet_adapters / text_encoder_adapters: contract adapters (Flax paths of the UNet / the CLIP
        text encoder, e.g. ``text_model/encoder/layers.0/self_attn/q_proj/kernel``); either may be None.
      unet_alphas / text_encoder_alphas: a float, ``{path: float}`` or ``{path: LoraSpec}``.
      bake_alpha: fold alpha / r into B (for readers that ignore the metadata).
      dtype: stored dtype (float32 default; float16 halves the file).
    Returns the file path.
    """
    state: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {}
    parts = (("unet", unet_adapters, unet_alphas), ("text_encoder", text_encoder_adapters, text_encoder_alphas))
    for prefix, ad, al in parts:
        if ad is None:
            continue
        if al is None:
            raise AdapterFileError(f"{prefix}: adapters given without alphas")
        s, cfg = lora_to_torch(ad, al, prefix=prefix, bake_alpha=bake_alpha)
        state.update(s)
        meta.update({f"{prefix}.{k}": v for k, v in cfg.items()})
    if not state:
        raise AdapterFileError("save_lora: nothing to write (no unet or text-encoder adapters)")
    from dekag_jax.weights.files import save_state_dict

    path = _lora_path(out, LORA_WEIGHT_NAME)
    save_state_dict({k: v.astype(dtype) for k, v in state.items()}, path,
                    metadata={"format": "pt", LORA_ADAPTER_METADATA_KEY: json.dumps(meta, indent=2, sort_keys=True)})
    return path


# ----------------------------------------------------------------------------- import

# Older diffusers key styles -> PEFT ("<module>.lora_A" / "<module>.lora_B"), as diffusers'
# state_dict_utils maps them (UNET_TO_DIFFUSERS, DIFFUSERS_OLD_TO_PEFT, DIFFUSERS_TO_PEFT).
_OLD_UNET = [(rf"\.processor\.to_{n}_lora\.(down|up)\.weight$", rf".to_{m}.lora.\1.weight")
             for n, m in (("q", "q"), ("k", "k"), ("v", "v"), ("out", "out.0"))]
_OLD_TE = [(rf"\.to_{n}_lora\.(down|up)\.weight$", rf".{n}_proj.lora.\1.weight") for n in ("q", "k", "v")] + [
    (r"\.to_out_lora\.(down|up)\.weight$", r".out_proj.lora.\1.weight")]
_SUFFIX = [  # (key suffix, role, style)
    (".lora_A.weight", "A", "peft"), (".lora_B.weight", "B", "peft"),
    (".lora.down.weight", "A", "diffusers"), (".lora.up.weight", "B", "diffusers"),
    (".lora_linear_layer.down.weight", "A", "diffusers"), (".lora_linear_layer.up.weight", "B", "diffusers"),
    (".lora_down.weight", "A", "kohya"), (".lora_up.weight", "B", "kohya"),
    (".alpha", "alpha", None),
]


def _read_file(file: str) -> tuple[Mapping[str, np.ndarray], dict[str, str]]:
    file = os.fspath(file)
    if os.path.isdir(file):
        file = os.path.join(file, LORA_WEIGHT_NAME)
    if not file.endswith(".safetensors"):
        raise AdapterFileError(f"{file}: only .safetensors adapter files are read (pickles run code when loaded)")
    if not os.path.isfile(file):
        raise AdapterFileError(f"{file}: no such file")
    from safetensors import safe_open

    from dekag_jax.weights.files import LazyStateDict

    with safe_open(file, framework="numpy") as h:
        meta = dict(h.metadata() or {})
    return LazyStateDict([file]), meta


def _peft_adapter_config(file: str) -> dict[str, Any] | None:
    """PEFT's ``save_pretrained`` writes ``adapter_model.safetensors`` + ``adapter_config.json``."""
    d = file if os.path.isdir(file) else os.path.dirname(os.path.abspath(file))
    p = os.path.join(d, "adapter_config.json")
    if not os.path.isfile(p):
        return None
    with open(p) as f:
        return json.load(f)


def _pattern_value(patterns: Mapping[str, Any], module: str, default: Any) -> Any:
    # PEFT's get_pattern_key: the first pattern with re.match(rf"(.*\.)?({key})$", module)
    for key, v in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return v
    return default


def _lora_config_for(meta: Mapping[str, Any] | None, comp: str, n_components: int) -> dict[str, Any] | None:
    if not meta:
        return None
    pre = f"{comp}."
    sub = {k[len(pre):]: v for k, v in meta.items() if k.startswith(pre)}
    if not sub and n_components == 1 and "lora_alpha" in meta:
        sub = dict(meta)  # a PEFT adapter_config.json: no component prefix
    return sub or None


def _split_key(key: str) -> tuple[str, str, str | None] | None:
    for suf, role, style in _SUFFIX:
        if key.endswith(suf):
            return key[: -len(suf)], role, style
    return None


def _kohya_index(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, list[str]]:
    idx: dict[str, list[str]] = collections.defaultdict(list)
    for p in shapes:
        idx[re.sub(r"[./]", "_", module_name(p))].append(p)
    return idx


def _to_flax_pair(a: np.ndarray, b: np.ndarray, base: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray] | str:
    """torch lora_A / lora_B -> Flax A / B for a base kernel of shape ``base``; or an error string."""
    if a.ndim != b.ndim or a.shape[0] != b.shape[1]:
        return f"lora_A {a.shape} and lora_B {b.shape} do not pair (rank {a.shape[0]} vs {b.shape[1:2]})"
    r = a.shape[0]
    if len(base) == 2:  # Dense [in, out]; 1x1 conv-stored LoRA (kohya on SD1 proj_in) squeezes
        if a.ndim == 4 and a.shape[2:] == (1, 1) and b.shape[2:] == (1, 1):
            a, b = a[:, :, 0, 0], b[:, :, 0, 0]
        if a.ndim != 2 or a.shape[1] != base[0] or b.shape[0] != base[1]:
            return f"lora_A {a.shape} / lora_B {b.shape} do not fit the dense kernel {base} (want [r, {base[0]}] / [{base[1]}, r])"
        return a.T, b.T
    kh, kw, cin, cout = base
    if a.ndim == 2 and (kh, kw) == (1, 1):  # linear-stored LoRA on a 1x1 conv
        a, b = a[:, :, None, None], b[:, :, None, None]
    if a.ndim != 4 or a.shape != (r, cin, kh, kw) or b.shape != (cout, r, 1, 1):
        return (f"lora_A {a.shape} / lora_B {b.shape} do not fit the conv kernel {base} "
                f"(want [r, {cin}, {kh}, {kw}] / [{cout}, r, 1, 1])")
    return a.transpose(2, 3, 1, 0), b.transpose(2, 3, 1, 0)


def load_lora(file: str, *, unet: Any = None, text_encoder: Any = None,
              alpha: float | None = None) -> dict[str, ImportedLora]:
    """Read a LoRA file in PEFT, diffusers or kohya format into contract adapters, strictly.

    Args:
      file: a ``.safetensors`` file, or a directory holding ``pytorch_lora_weights.safetensors``.
      unet / text_encoder: the params (tree or flat ``{path: shape}``) of the models the file may
        adapt; keys of a component not given are errors. A file without component prefixes (a PEFT
        ``adapter_model.safetensors`` of one model) goes to the one component given.
      alpha: override every alpha (e.g. a file whose alpha only its model card states).
    Alpha, per module, from: the file's ``.alpha`` keys (kohya), else its
    ``lora_adapter_metadata`` (diffusers, see the module docstring), else a PEFT
    ``adapter_config.json`` beside the file, else alpha = rank (diffusers' assumption).
    Returns ``{component: ImportedLora}`` for the components the file adapts.
    Raises AdapterFileError listing every unmatched key, incomplete pair and shape mismatch.
    """
    models = {c: m for c, m in (("unet", unet), ("text_encoder", text_encoder)) if m is not None}
    if not models:
        raise AdapterFileError("load_lora: pass the params of the unet and/or text_encoder the file adapts")
    shapes = {c: _kernel_shapes(m, c) for c, m in models.items()}
    kohya = {c: _kohya_index(s) for c, s in shapes.items()}
    state, file_meta = _read_file(file)
    if file_meta.get(LORA_ADAPTER_METADATA_KEY):
        meta = json.loads(file_meta[LORA_ADAPTER_METADATA_KEY])
    else:
        meta = _peft_adapter_config(file)

    unmatched: list[str] = []
    problems: list[str] = []
    not_given: dict[str, list[str]] = collections.defaultdict(list)  # component -> its keys
    found: dict[tuple[str, str], dict[str, Any]] = collections.defaultdict(dict)  # (comp, path) -> parts
    styles: dict[str, set] = collections.defaultdict(set)
    for key in state:
        k = key[len("base_model.model."):] if key.startswith("base_model.model.") else key
        comp = None
        kohya_key = False
        for c, pre in _KOHYA_PREFIX.items():
            if k.startswith(pre):
                comp, k, kohya_key = c, k[len(pre):], True
                break
        if comp is None:
            for c in COMPONENTS:
                if k.startswith(c + "."):
                    comp, k = c, k[len(c) + 1:]
                    break
        if comp is None and len(models) == 1 and not k.startswith(("lora_", "text_encoder_2.")):
            comp = next(iter(models))
        if comp is None:
            unmatched.append(key)
            continue
        if comp not in models:
            not_given[comp].append(key)
            continue
        if not kohya_key:
            for pat, repl in _OLD_UNET if comp == "unet" else _OLD_TE:
                k = re.sub(pat, repl, k)
        split = _split_key(k)
        if split is None:
            unmatched.append(key)
            continue
        mod, role, style = split
        if kohya_key:
            hits = kohya[comp].get(mod, [])
            if not hits:
                unmatched.append(key)
                continue
            if len(hits) > 1:
                problems.append(f"{key}: ambiguous, matches {hits}")
                continue
            path, style = hits[0], style or "kohya"
        else:
            path = kernel_path(mod)
            if path not in shapes[comp] and comp == "text_encoder":
                path = kernel_path("text_model." + mod)  # written from transformers 5's flattened CLIP
            if path not in shapes[comp]:
                unmatched.append(key)
                continue
        if role in found[(comp, path)]:
            problems.append(f"{key}: a second {role} for {path}")
            continue
        found[(comp, path)][role] = (key, state[key])
        if style:
            styles[comp].add("kohya" if kohya_key else style)

    out: dict[str, ImportedLora] = {}
    for (comp, path), parts in sorted(found.items()):
        if "A" not in parts or "B" not in parts:
            have = ", ".join(parts[r][0] for r in sorted(parts))
            problems.append(f"{path} ({comp}): incomplete, only {have}")
            continue
        a = np.asarray(parts["A"][1], np.float32)
        b = np.asarray(parts["B"][1], np.float32)
        pair = _to_flax_pair(a, b, shapes[comp][path])
        if isinstance(pair, str):
            problems.append(f"{parts['A'][0]}: {pair}")
            continue
        rank = int(a.shape[0])
        mod = module_name(path)
        if alpha is not None:
            al = float(alpha)
        elif "alpha" in parts:
            al = float(np.asarray(parts["alpha"][1], np.float64).reshape(-1)[0])
        else:
            cfg = _lora_config_for(meta, comp, len(models))
            if cfg is not None:
                al = float(_pattern_value(cfg.get("alpha_pattern") or {}, mod, cfg.get("lora_alpha", rank)))
                r_cfg = _pattern_value(cfg.get("rank_pattern") or {}, mod, cfg.get("r", rank))
                if int(r_cfg) != rank:
                    problems.append(f"{path} ({comp}): the file's metadata says rank {r_cfg}, its tensors rank {rank}")
                    continue
            else:
                al = float(rank)
        ent = out.setdefault(comp, ImportedLora({}, {}, {}, ""))
        ent.adapters[path] = {"lora_A": np.ascontiguousarray(pair[0]), "lora_B": np.ascontiguousarray(pair[1])}
        ent.rank[path], ent.alpha[path] = rank, al
    for comp, ent in out.items():
        ent.format = "+".join(sorted(styles[comp])) or "peft"

    for comp, keys in not_given.items():
        problems.insert(0, f"{len(keys)} {comp} keys (e.g. {keys[0]}) but no {comp} params were given")
    if unmatched or problems:
        lines = [f"{os.fspath(file)}: LoRA file does not match the model(s) {sorted(models)}."]
        if unmatched:
            lines.append(f"  {len(unmatched)} keys with no kernel to adapt: " + ", ".join(unmatched[:_MAX_LISTED])
                         + (" ..." if len(unmatched) > _MAX_LISTED else ""))
        if problems:
            lines.append(f"  {len(problems)} problems: " + "; ".join(problems[:_MAX_LISTED])
                         + (" ..." if len(problems) > _MAX_LISTED else ""))
        raise AdapterFileError("\n".join(lines))
    if not out:
        raise AdapterFileError(f"{os.fspath(file)}: holds no LoRA tensors")
    return out


# ----------------------------------------------------------------------------- the metaword

def expand_tokens(token: str, n: int) -> list[str]:
    """The tokens a ``[n, dim]`` embedding becomes in diffusers: ``token, token_1, ..., token_{n-1}``."""
    return [token] + [f"{token}_{i}" for i in range(1, n)]


def expand_prompt(prompt: str, token: str, n: int) -> str:
    """Replace ``token`` in ``prompt`` by ``token token_1 ...`` (diffusers' ``maybe_convert_prompt``)."""
    return prompt.replace(token, " ".join(expand_tokens(token, n))) if n > 1 else prompt


def _embedding_2d(embedding: Any, what: str) -> np.ndarray:
    e = np.asarray(embedding, np.float32)
    if e.ndim == 1:
        e = e[None]
    if e.ndim != 2 or e.shape[0] < 1 or not np.isfinite(e).all():
        raise AdapterFileError(f"{what}: expected a finite [n_tokens, dim] embedding, got shape {e.shape}")
    return e


def save_textual_inversion(out: str, token: str, embedding: Any, *, dtype: Any = np.float32) -> str:
    """Write the metaword as ``learned_embeds.safetensors`` ``{token: [n, dim]}`` (diffusers'
    ``load_textual_inversion`` format). ``out``: a directory or a ``*.safetensors`` path."""
    if not isinstance(token, str) or not token or any(c.isspace() for c in token):
        raise AdapterFileError(f"token must be a non-empty string without whitespace, got {token!r}")
    e = _embedding_2d(embedding, token)
    from dekag_jax.weights.files import save_state_dict

    path = _lora_path(out, TEXTUAL_INVERSION_NAME)
    save_state_dict({token: e.astype(dtype)}, path)
    return path


def load_textual_inversion(file: str, token: str | None = None) -> tuple[str, np.ndarray]:
    """Read a textual-inversion file -> ``(token, embedding [n, dim] float32)``.

    Accepts diffusers' one-key ``{token: [n, dim]}``, and A1111 / kohya safetensors embeddings
    (``emb_params``, or a flattened ``string_to_param.*``), whose token is then ``token`` (required)
    or the ``name`` in the file's metadata. ``token`` overrides the stored token as diffusers does.
    """
    file = os.fspath(file)
    if os.path.isdir(file):
        file = os.path.join(file, TEXTUAL_INVERSION_NAME)
    state, meta = _read_file(file)
    keys = list(state)
    if len(keys) == 1 and keys[0] not in ("emb_params", "string_to_param.*"):
        stored, emb = keys[0], state[keys[0]]
    else:
        a1111 = [k for k in ("emb_params", "string_to_param.*") if k in state]
        if len(a1111) != 1 or len(keys) != 1:
            raise AdapterFileError(f"{file}: not a textual-inversion file: expected one key {{token: [n, dim]}} or "
                                   f"'emb_params' / 'string_to_param.*', got {keys[:_MAX_LISTED]}")
        stored, emb = meta.get("name"), state[a1111[0]]
        if stored is None and token is None:
            raise AdapterFileError(f"{file}: an A1111/kohya embedding stores no token name: pass token=...")
    return (token or stored), _embedding_2d(emb, file)


def add_token_embeddings(tokenizer: Any, text_encoder: Any, text_params: Any, token: str,
                         embedding: Any) -> tuple[Any, Any, list[int]]:
    """Insert a textual-inversion embedding the way diffusers' ``load_textual_inversion`` does.

    The tokenizer (modified in place) gets the new tokens ``expand_tokens(token, n)``; the text
    encoder's ``token_embedding`` grows to cover their ids and their rows are ``embedding``
    (``[n, dim]``). Returns ``(text_encoder', text_params', ids)``: a clone of the Flax module with
    the larger ``vocab_size`` (linen checks parameter shapes) and new params (same nesting as given).
    A prompt then names ``token`` (expanded with :func:`expand_prompt` when n > 1).
    """
    e = _embedding_2d(embedding, token)
    wrapped = isinstance(text_params, Mapping) and set(text_params) == {"params"}
    inner = text_params["params"] if wrapped else text_params
    flat = flatten(inner)
    key = "text_model/embeddings/token_embedding/embedding"
    if key not in flat:
        raise AdapterFileError(f"text encoder params have no {key}")
    table = np.asarray(flat[key])
    if e.shape[1] != table.shape[1]:
        raise AdapterFileError(f"{token}: embedding width {e.shape[1]} != text encoder width {table.shape[1]}")
    tokens = expand_tokens(token, e.shape[0])
    vocab = tokenizer.get_vocab()
    clash = [t for t in tokens if t in vocab]
    if clash:
        raise AdapterFileError(f"tokens {clash} are already in the tokenizer's vocabulary; choose another token")
    tokenizer.add_tokens(tokens)
    ids = [int(tokenizer.convert_tokens_to_ids(t)) for t in tokens]
    n_rows = max(table.shape[0], max(ids) + 1)
    grown = np.zeros((n_rows, table.shape[1]), table.dtype)
    grown[: table.shape[0]] = table
    grown[ids] = e.astype(table.dtype)
    import jax.numpy as jnp

    flat = dict(flat)
    flat[key] = jnp.asarray(grown)
    from dekag_jax.weights.convert import unflatten

    new_inner = unflatten(flat)
    te = text_encoder.clone(config=dataclasses.replace(text_encoder.config, vocab_size=n_rows))
    return te, ({"params": new_inner} if wrapped else new_inner), ids


__all__ = [
    "AdapterFileError", "COMPONENTS", "ImportedLora", "LORA_WEIGHT_NAME", "TEXTUAL_INVERSION_NAME",
    "add_token_embeddings", "expand_prompt", "expand_tokens", "kernel_path", "load_lora",
    "load_textual_inversion", "lora_to_torch", "module_name", "save_lora", "save_textual_inversion",
]
