"""The tiny world's pretrained models, shipped in ``dekag_jax/world/assets/``.

* ``edge_pipeline/``: the edge-GAI, a tiny Stable-Diffusion-2-style pipeline in the diffusers
  layout (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/); diffusers'
  ``StableDiffusionPipeline.from_pretrained`` loads it too.
* ``judges/dino/``: the visual judge (transformers ``ViTModel`` layout, DINO-trained), DINO-score.
* ``judges/clip/``: the semantic judge (transformers ``CLIPModel`` layout), CLIP-score; its text
  tower is the edge pipeline's text encoder.
* ``training/*.json``: how each was trained (scripts/pretrain_*.py: seed, steps, wall time, load).

Every helper takes ``assets=`` (default :data:`ASSETS_DIR`): another directory of the same layout,
e.g. a retrained world (``scripts/pretrain_world_v2.sh`` writes ``runs/world_v2/assets``) before it
replaces the shipped one.

These helpers only name the directories and call the generic loaders
(:func:`dekag_jax.weights.pipeline.load_pipeline`, :func:`dekag_jax.weights.hf.load_dino`,
:func:`dekag_jax.weights.hf.load_clip_model`); nothing here is special to the shipped files.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax.numpy as jnp

ASSETS_DIR = Path(__file__).resolve().parent / "assets"

__all__ = ["ASSETS_DIR", "Judges", "edge_pipeline_dir", "judge_dirs", "load_edge_pipeline", "load_judges"]


def _need(d: Path, what: str) -> str:
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: the tiny world's {what} is not there; (re)create it with "
                                "scripts/pretrain_all.sh")
    return str(d)


def _root(assets) -> Path:
    return ASSETS_DIR if assets is None else Path(assets)


def edge_pipeline_dir(assets=None) -> str:
    """Path of the shipped edge pipeline (a diffusers pipeline directory), or ``assets``'s."""
    return _need(_root(assets) / "edge_pipeline", "edge pipeline")


def judge_dirs(assets=None) -> dict[str, str]:
    """``{"dino": path, "clip": path}`` of the shipped judges (transformers layouts), or ``assets``'s."""
    root = _root(assets)
    return {"dino": _need(root / "judges" / "dino", "DINO judge"),
            "clip": _need(root / "judges" / "clip", "CLIP judge")}


def load_edge_pipeline(*, dtype: Any = jnp.float32, components=None, assets=None):
    """The edge-GAI as a :class:`dekag_jax.weights.pipeline.StableDiffusion`."""
    from dekag_jax.weights.pipeline import load_pipeline

    return load_pipeline(edge_pipeline_dir(assets), dtype=dtype, components=components)


@dataclasses.dataclass
class Judges:
    """The two judges of eq. 5: ``dino`` (ViTModel) and ``clip`` (CLIPModel) modules with params,
    and the tokenizer of the CLIP text tower (for prompt matching). Feature functions live in
    :mod:`dekag_jax.world.gates` (they take images in [0, 1] or uint8 at the world's size)."""

    dino: Any
    dino_params: Any
    clip: Any
    clip_params: Any
    tokenizer: Any
    _jit_cache: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)


def load_judges(*, dtype: Any = jnp.float32, assets=None) -> Judges:
    """Load the shipped DINO and CLIP judges (or ``assets``'s; their CLIP text tower reads the
    tokenizer of that directory's edge pipeline, which a retrained world may have changed)."""
    from dekag_jax.weights.hf import load_clip_model, load_dino
    from dekag_jax.world.vocab import load_tokenizer

    d = judge_dirs(assets)
    dino, dino_params = load_dino(d["dino"], dtype=dtype)
    clip, clip_params = load_clip_model(d["clip"], dtype=dtype)
    tok = load_tokenizer() if assets is None else load_tokenizer(Path(edge_pipeline_dir(assets)) / "tokenizer")
    return Judges(dino, dino_params, clip, clip_params, tok)
