"""Stable Diffusion pipelines in the diffusers directory layout: load and save.

A pipeline directory (what ``StableDiffusionPipeline.save_pretrained`` writes)::

    model_index.json
    unet/          config.json, diffusion_pytorch_model[.<variant>].safetensors (or sharded)
    vae/           config.json, diffusion_pytorch_model[.<variant>].safetensors
    text_encoder/  config.json, model[.<variant>].safetensors
    tokenizer/     vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json
    scheduler/     scheduler_config.json

:func:`load_pipeline` also takes a Hugging Face repo id (``"stabilityai/stable-diffusion-2-1"``),
resolved in the *local* Hugging Face cache only: dekag_jax never downloads, and a single
``.safetensors`` file in the original Stable Diffusion layout (weights/single_file.py). Component
weights may be sharded and/or a variant, as diffusers and transformers write them (weights/files.py).

Only safetensors are read (``.bin`` / pickle files are refused: unpickling runs code). Memory:
each component streams its tensors one at a time (files.LazyStateDict -> convert -> jax), so
loading needs about one copy of the weights (see scripts/measure_load_memory.py).

Whatever scheduler the checkpoint ships (DDIM, PNDM, Euler, ...), we sample with DDIM on its noise
schedule (diffusion/ddim.py); :func:`save_pipeline` therefore writes a ``DDIMScheduler`` config, so
diffusers samples the saved pipeline exactly as we do.
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import jax.numpy as jnp

from dekag_jax.errors import UnsupportedConfigError
from dekag_jax.weights.files import CheckpointError
# The shared piece of both loaders (re-exported: this module stays the place to import them from).
from dekag_jax.weights.pipeline_common import (COMPONENTS, StableDiffusion, load_tokenizer_dir,  # noqa: F401
                                               resolve_pipeline_dir, vae_dtype_for)
from dekag_jax.weights.single_file import load_single_file

_CLASSES = {
    "unet": ("diffusers", ("UNet2DConditionModel",)),
    "vae": ("diffusers", ("AutoencoderKL",)),
    "text_encoder": ("transformers", ("CLIPTextModel",)),
    "tokenizer": ("transformers", ("CLIPTokenizer", "CLIPTokenizerFast")),
    "scheduler": ("diffusers", None),  # any: only its noise-schedule fields are used (see schedules.py)
}
# Components a Stable Diffusion pipeline may list that do not take part in text -> image: the NSFW
# post-filter and the IP-adapter image encoder. Anything else (text_encoder_2 of SDXL, a
# transformer of PixArt, ...) changes the model and is refused.
_IGNORABLE = ("safety_checker", "feature_extractor", "image_encoder")
DIFFUSERS_VERSION = "0.42.1"


# ----------------------------------------------------------------------------- resolving

def read_model_index(pipe_dir: str) -> dict[str, Any]:
    path = os.path.join(pipe_dir, "model_index.json")
    if not os.path.isfile(path):
        raise CheckpointError(f"{pipe_dir}: no model_index.json (not a diffusers pipeline directory)")
    with open(path) as f:
        return json.load(f)


def _check_index(index: dict[str, Any], wanted: Sequence[str], pipe_dir: str) -> None:
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list):
            continue
        if name in _CLASSES or name in _IGNORABLE or entry == [None, None]:
            continue
        raise UnsupportedConfigError(
            f"{pipe_dir}/model_index.json: component {name}={entry} is not part of a Stable Diffusion "
            f"pipeline we implement (unet, vae, text_encoder, tokenizer, scheduler)")
    for name in list(wanted) + ["scheduler"]:
        entry = index.get(name)
        if not entry or entry == [None, None]:
            raise CheckpointError(f"{pipe_dir}/model_index.json: has no {name!r} component")
        lib, classes = _CLASSES[name]
        if classes is not None and entry[1] not in classes:
            raise UnsupportedConfigError(
                f"{pipe_dir}/model_index.json: {name}={entry}; supported: {[[lib, c] for c in classes]}")


def _component_dir(pipe_dir: str, name: str) -> str:
    d = os.path.join(pipe_dir, name)
    if not os.path.isdir(d):
        raise CheckpointError(f"{pipe_dir}: component directory {name}/ is missing (model_index.json lists it)")
    return d


# ----------------------------------------------------------------------------- load / save

def load_pipeline(path_or_repo_id: str, *, dtype: Any = jnp.float32, variant: str | None = None,
                  components: Sequence[str] | None = None, revision: str | None = None,
                  cache_dir: str | None = None, vae_dtype: Any = None, **single_file) -> StableDiffusion:
    """Load a diffusers Stable Diffusion pipeline (directory or locally cached repo id), or an
    original-layout single ``.safetensors`` file (see weights/single_file.py).

    Args:
      path_or_repo_id: pipeline directory, or ``org/name`` resolved in the local HF cache, or a
        single ``.safetensors`` file in the original SD layout.
      single_file: only for a single file: ``config``, ``model_type``, ``prediction_type``, ``ema``,
        ``tokenizer`` of :func:`~dekag_jax.weights.single_file.load_single_file`.
      dtype: parameter and compute dtype of unet and text encoder (and VAE, see ``vae_dtype``).
      variant: weights variant, e.g. "fp16" for ``*.fp16.safetensors``.
      components: subset of ("unet", "vae", "text_encoder", "tokenizer") to load (default all);
        the scheduler config is always read.
      vae_dtype: VAE dtype; default ``dtype``, except float32 when ``dtype`` is float16 and the VAE
        config says ``force_upcast`` (SD2.x's VAE overflows in fp16, as diffusers knows).
    Raises: CheckpointError (missing directory/file, pickle-only weights, repo not in the cache),
      UnsupportedConfigError (names the component and the config field), ConversionError.
    """
    if os.path.isfile(os.fspath(path_or_repo_id)) and os.fspath(path_or_repo_id).endswith(".safetensors"):
        if variant is not None:
            raise ValueError("variant= names files in a pipeline directory; a single file has none")
        return load_single_file(path_or_repo_id, dtype=dtype, components=components, revision=revision,
                                cache_dir=cache_dir, vae_dtype=vae_dtype, **single_file)
    if single_file:
        raise TypeError(f"load_pipeline: {sorted(single_file)} apply to single-file checkpoints only")
    comps = tuple(COMPONENTS if components is None else components)
    bad = [c for c in comps if c not in COMPONENTS]
    if bad:
        raise ValueError(f"components: unknown {bad}; choose from {COMPONENTS}")
    pipe_dir = resolve_pipeline_dir(path_or_repo_id, revision=revision, cache_dir=cache_dir)
    index = read_model_index(pipe_dir)
    _check_index(index, comps, pipe_dir)

    sched_path = os.path.join(_component_dir(pipe_dir, "scheduler"), "scheduler_config.json")
    if not os.path.isfile(sched_path):
        raise CheckpointError(f"{pipe_dir}: scheduler/scheduler_config.json is missing")
    with open(sched_path) as f:
        scheduler_config = json.load(f)
    from dekag_jax.diffusion.schedules import SchedulerConfig

    try:
        SchedulerConfig.from_dict(scheduler_config)
    except UnsupportedConfigError as e:
        raise UnsupportedConfigError(f"scheduler: {e}") from e

    out = StableDiffusion(scheduler_config=scheduler_config, model_index=index, source=pipe_dir)
    for name in comps:
        d = _component_dir(pipe_dir, name)
        try:
            if name == "unet":
                from dekag_jax.weights.sd import load_unet

                out.unet, out.unet_params = load_unet(d, dtype=dtype, variant=variant)
            elif name == "vae":
                from dekag_jax.weights.files import read_config
                from dekag_jax.weights.sd import load_vae

                out.vae, out.vae_params = load_vae(d, dtype=vae_dtype_for(dtype, read_config(d), vae_dtype),
                                                   variant=variant)
            elif name == "text_encoder":
                from dekag_jax.weights.hf import load_text_encoder

                out.text_encoder, out.text_params = load_text_encoder(d, dtype=dtype, variant=variant)
            elif name == "tokenizer":
                out.tokenizer = load_tokenizer_dir(d)
        except UnsupportedConfigError as e:
            raise UnsupportedConfigError(f"{name}: {e}") from e
    return out


def save_tokenizer(tokenizer, tok_dir: str) -> None:
    """``tokenizer.save_pretrained`` plus the classic CLIP files (``vocab.json``, ``merges.txt``,
    ``special_tokens_map.json``) that published SD tokenizer folders hold: transformers 5 writes
    only ``tokenizer.json``, which transformers 4's slow CLIPTokenizer cannot read."""
    tokenizer.save_pretrained(tok_dir)
    tj = os.path.join(tok_dir, "tokenizer.json")
    if os.path.isfile(tj) and not os.path.isfile(os.path.join(tok_dir, "vocab.json")):
        with open(tj, encoding="utf-8") as f:
            full = json.load(f)
        model = full.get("model", {})
        if model.get("type") == "BPE":
            vocab = dict(model["vocab"])
            for t in full.get("added_tokens", []):  # specials and e.g. an added metaword
                vocab.setdefault(t["content"], t["id"])
            with open(os.path.join(tok_dir, "vocab.json"), "w", encoding="utf-8") as f:
                json.dump(vocab, f, ensure_ascii=False)
            merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
            with open(os.path.join(tok_dir, "merges.txt"), "w", encoding="utf-8") as f:
                f.write("#version: 0.2\n" + "".join(m + "\n" for m in merges))
    stm = os.path.join(tok_dir, "special_tokens_map.json")
    if not os.path.isfile(stm):
        special = {k: str(getattr(tokenizer, k)) for k in ("bos_token", "eos_token", "unk_token", "pad_token")
                   if getattr(tokenizer, k, None) is not None}
        with open(stm, "w", encoding="utf-8") as f:
            json.dump(special, f, indent=2)


def save_pipeline(pipe: StableDiffusion, out_dir: str, *, dtype: Any = None) -> None:
    """Write ``pipe`` as a diffusers pipeline directory that
    ``StableDiffusionPipeline.from_pretrained(out_dir)`` loads (safety_checker None,
    requires_safety_checker False, scheduler DDIMScheduler). ``dtype``: optional storage dtype
    of the weights (e.g. ``jnp.float16``), default their own."""
    missing = [n for n in COMPONENTS if getattr(pipe, n) is None]
    if missing:
        raise ValueError(f"save_pipeline: the pipeline lacks {missing}; load it with all components")
    from dekag_jax.diffusion.schedules import SchedulerConfig
    from dekag_jax.weights.hf import save_text_encoder
    from dekag_jax.weights.sd import save_unet, save_vae

    np_dtype = None if dtype is None else jnp.dtype(dtype)
    os.makedirs(out_dir, exist_ok=True)
    save_unet(pipe.unet, pipe.unet_params, os.path.join(out_dir, "unet"), dtype=np_dtype)
    save_vae(pipe.vae, pipe.vae_params, os.path.join(out_dir, "vae"), dtype=np_dtype)
    save_text_encoder(os.path.join(out_dir, "text_encoder"), pipe.text_encoder, pipe.text_params, dtype=dtype)
    save_tokenizer(pipe.tokenizer, os.path.join(out_dir, "tokenizer"))
    sched = SchedulerConfig.from_dict(pipe.scheduler_config).to_dict("DDIMScheduler")
    sched["_diffusers_version"] = DIFFUSERS_VERSION
    os.makedirs(os.path.join(out_dir, "scheduler"), exist_ok=True)
    with open(os.path.join(out_dir, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(sched, f, indent=2, sort_keys=True)
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": DIFFUSERS_VERSION,
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    with open(os.path.join(out_dir, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)
