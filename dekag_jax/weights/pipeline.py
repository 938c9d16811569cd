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

import dataclasses
import json
import os
import re
from typing import Any, Sequence

import jax.numpy as jnp

from dekag_jax.errors import UnsupportedConfigError
from dekag_jax.weights.files import PICKLE_SUFFIXES, CheckpointError, pickle_advice

COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer")
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


@dataclasses.dataclass
class StableDiffusion:
    """A loaded Stable Diffusion pipeline (components not asked for are None).

    unet / vae / text_encoder are Flax modules; *_params their param trees (jax arrays);
    tokenizer a transformers CLIPTokenizer; scheduler_config the diffusers scheduler config dict;
    model_index the parsed model_index.json (as read; informational).
    """

    unet: Any = None
    unet_params: Any = None
    vae: Any = None
    vae_params: Any = None
    text_encoder: Any = None
    text_params: Any = None
    tokenizer: Any = None
    scheduler_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    model_index: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: str | None = None
    _jit_cache: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def schedule(self):
        """The :class:`~dekag_jax.diffusion.schedules.NoiseSchedule` of ``scheduler_config``."""
        from dekag_jax.diffusion.schedules import from_scheduler_config

        return from_scheduler_config(self.scheduler_config)

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", "epsilon")

    @property
    def vae_scale_factor(self) -> int:
        from dekag_jax.diffusion.generate import vae_scale_factor

        return vae_scale_factor(self)

    def tokenize(self, prompts: Sequence[str]):
        """Token ids ``[B, L] int32`` of ``prompts`` with this pipeline's tokenizer (padded and
        truncated to its ``model_max_length``, 77 for SD). The pipeline carries its tokenize function
        so that ``diffusion/`` works from functions only and never imports ``models/``."""
        if self.tokenizer is None:
            raise ValueError("the pipeline has no tokenizer; pass token ids [B, L] instead of strings")
        from dekag_jax.models.tokenizer import tokenize

        return tokenize(self.tokenizer, prompts)


# ----------------------------------------------------------------------------- resolving

def _hf_cache_dir(cache_dir: str | None) -> str:
    """The hub cache, read at call time (HF_HUB_CACHE, then HF_HOME/hub, then the default)."""
    if cache_dir:
        return cache_dir
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def resolve_pipeline_dir(path_or_repo_id: str, *, revision: str | None = None,
                         cache_dir: str | None = None) -> str:
    """A local pipeline directory, or the snapshot of a repo id in the local HF cache (offline)."""
    p = os.fspath(path_or_repo_id)
    if os.path.isdir(p):
        return p
    if os.path.exists(p):
        if p.endswith(PICKLE_SUFFIXES):
            raise CheckpointError(f"{p}: a pickle checkpoint. " + pickle_advice(p))
        raise CheckpointError(f"{p}: is a file; expected a diffusers pipeline directory or a repo id "
                              "(an original-layout .safetensors file loads with load_pipeline(file) / load_single_file)")
    if not _REPO_ID.match(p) or p.startswith((".", "/")) or p.endswith((".", "-")):
        raise CheckpointError(f"{p}: no such directory (and not a Hugging Face repo id)")
    from huggingface_hub import snapshot_download

    cache = _hf_cache_dir(cache_dir)
    try:
        # local_files_only: never touches the network, whatever HF_HUB_OFFLINE says.
        return snapshot_download(p, revision=revision, cache_dir=cache, local_files_only=True)
    except Exception as e:  # LocalEntryNotFoundError, HFValidationError, ...: all mean "not here"
        raise CheckpointError(
            f"{p!r} is not a local directory and not in the local Hugging Face cache ({cache}"
            f"{', revision ' + revision if revision else ''}). dekag_jax never downloads. On a machine with "
            f"internet access run `hf download {p} --exclude '*.bin' '*.ckpt' '*.pt'` (or "
            f"huggingface_hub.snapshot_download) and copy the cache here (set HF_HUB_CACHE to it), "
            f"or pass a pipeline directory. ({type(e).__name__}: {e})") from e


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


def _load_tokenizer(d: str):
    from dekag_jax.models.tokenizer import load_tokenizer

    names = set(os.listdir(d))
    if "tokenizer.json" not in names:
        missing = [n for n in ("vocab.json", "merges.txt") if n not in names]
        if missing:
            raise CheckpointError(f"{d}: tokenizer files missing: {missing} (and no tokenizer.json)")
    return load_tokenizer(d)


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
        from dekag_jax.weights.single_file import load_single_file

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
                out.tokenizer = _load_tokenizer(d)
        except UnsupportedConfigError as e:
            raise UnsupportedConfigError(f"{name}: {e}") from e
    return out


def vae_dtype_for(dtype: Any, vae_config: dict[str, Any], vae_dtype: Any = None) -> Any:
    """The VAE's dtype: ``vae_dtype`` if given, else ``dtype``, except float32 when ``dtype`` is
    float16 and the config says ``force_upcast`` (SD's VAE overflows in fp16, as diffusers knows)."""
    if vae_dtype is not None:
        return vae_dtype
    if jnp.dtype(dtype) == jnp.float16 and vae_config.get("force_upcast", True):
        return jnp.float32
    return dtype


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
