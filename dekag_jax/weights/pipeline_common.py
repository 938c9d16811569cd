"""What both Stable Diffusion loaders share: the loaded-pipeline container, the component names,
where a pipeline is (a directory or a repo id in the local Hugging Face cache), the tokenizer
folder check and the VAE dtype rule.

``weights/pipeline.py`` (diffusers directories) and ``weights/single_file.py`` (original-layout
``.safetensors`` files) both build on this module; ``pipeline.load_pipeline`` dispatches a single
file to ``single_file.load_single_file``. Keeping the shared piece here is what lets both import
each other's needs at module level without a cycle. ``weights.pipeline`` re-exports every public
name, so ``from dekag_jax.weights.pipeline import StableDiffusion`` keeps working.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Sequence

import jax.numpy as jnp

from dekag_jax.weights.files import PICKLE_SUFFIXES, CheckpointError, pickle_advice

__all__ = ["COMPONENTS", "StableDiffusion", "resolve_pipeline_dir", "load_tokenizer_dir", "vae_dtype_for"]

COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer")


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


# ----------------------------------------------------------------------------- components

def load_tokenizer_dir(d: str):
    """The CLIP tokenizer of folder ``d`` (``tokenizer.json``, or ``vocab.json`` + ``merges.txt``);
    CheckpointError naming the missing files otherwise."""
    from dekag_jax.models.tokenizer import load_tokenizer

    names = set(os.listdir(d))
    if "tokenizer.json" not in names:
        missing = [n for n in ("vocab.json", "merges.txt") if n not in names]
        if missing:
            raise CheckpointError(f"{d}: tokenizer files missing: {missing} (and no tokenizer.json)")
    return load_tokenizer(d)


def vae_dtype_for(dtype: Any, vae_config: dict[str, Any], vae_dtype: Any = None) -> Any:
    """The VAE's dtype: ``vae_dtype`` if given, else ``dtype``, except float32 when ``dtype`` is
    float16 and the config says ``force_upcast`` (SD's VAE overflows in fp16, as diffusers knows)."""
    if vae_dtype is not None:
        return vae_dtype
    if jnp.dtype(dtype) == jnp.float16 and vae_config.get("force_upcast", True):
        return jnp.float32
    return dtype
