"""Single-file Stable Diffusion checkpoints in the original (CompVis / Stability LDM) layout.

One ``.safetensors`` file holds the whole pipeline under the original module names:

    model.diffusion_model.*     the UNet (``input_blocks``, ``middle_block``, ``output_blocks``)
    first_stage_model.*         the VAE (``encoder.down.N.block.M``, ``mid.attn_1.q``, ...)
    cond_stage_model.*          the text tower: SD1.x ``transformer.text_model.*`` (a transformers
                                CLIPTextModel), SD2.x ``model.*`` (OpenCLIP: ``transformer.resblocks.N``
                                with fused ``attn.in_proj_weight``, ``ln_1``, ``mlp.c_fc``,
                                ``positional_embedding``, ``token_embedding``, ``ln_final``)
    model_ema.*                 optional EMA copy of the UNet (LitEma: dots removed from the names)
    betas, alphas_cumprod, ...  the training noise schedule buffers

:func:`load_single_file` renames each tensor to its diffusers key (our own mapping, built from the
UNet/VAE configs; the facts were read off diffusers' ``loaders/single_file_utils.py``) and then
goes through the same strict conversion as a diffusers directory: every key of the file is either
mapped, or in a short documented list of ignored buffers, or listed in the one error raised.

The architecture comes from a diffusers pipeline directory the user names (``config=``: its
``unet/``, ``vae/``, ``text_encoder/`` ``config.json``, ``scheduler/scheduler_config.json`` and,
if present, ``tokenizer/``; a repo id in the local HF cache works too), as diffusers'
``from_single_file(path, config=...)`` does, or is recognised from the tensor shapes for the
standard SD1.5 / SD2.1 / SD2.1-base configs shipped in ``weights/data/*.json``.

Readings, each as diffusers' ``from_single_file`` does unless said otherwise:

* **SD2.1 vs SD2.1-base.** Their tensors have identical shapes; they differ in the prediction
  type (v / epsilon), the default size (768 / 512) and ``upcast_attention``. Recognised SD2 files
  default to SD2.1 (v-prediction), as diffusers does (it guesses ``epsilon`` only from a
  ``global_step`` of 875000, which safetensors files rarely carry); pass
  ``model_type="sd21-base"`` (or ``prediction_type="epsilon"``) for the base model.
* **Penultimate layer (SD2).** SD2 conditions on OpenCLIP's penultimate layer, followed by
  ``ln_final``. diffusers expresses this as a 23-layer ``CLIPTextModel`` and drops the file's last
  resblock; we drop resblock ``num_hidden_layers`` when the file has exactly one resblock more than
  the config (any other surplus is an error). ``text_projection`` and ``logit_scale`` are unused
  by SD (it conditions on hidden states) and ignored.
* **EMA.** ``ema=False`` (the default, as diffusers): ``model_ema.*`` is ignored and the trained
  weights are used. ``ema=True``: the UNet is read from the EMA copy (every UNet tensor must have
  one, else the error lists those without); the VAE and text tower have no EMA copy in LDM files.
* **Noise schedule.** The scheduler config comes from the config source; when the file carries
  ``alphas_cumprod`` (LDM training files do), it must agree with that config's schedule to 1e-4,
  otherwise the file was trained on another schedule and we refuse rather than sample wrongly.

Shapes and dtypes: tensors are read one at a time and converted to the requested ``dtype``
(float32 default), as for diffusers directories. SDXL, inpainting (9 input channels) and other
single-file families are refused by name.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Sequence

import numpy as np
import jax.numpy as jnp

from dekag_jax.errors import UnsupportedConfigError
from dekag_jax.weights.convert import ConversionError
from dekag_jax.weights.files import CheckpointError, LazyStateDict, pickle_advice
from dekag_jax.weights.pipeline_common import COMPONENTS, StableDiffusion, load_tokenizer_dir, \
    resolve_pipeline_dir, vae_dtype_for

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")
STANDARD_MODELS = ("sd15", "sd21", "sd21-base")

UNET = "model.diffusion_model."
VAE = "first_stage_model."
CLIP = "cond_stage_model.transformer."   # SD1.x: a transformers CLIPTextModel
OPEN_CLIP = "cond_stage_model.model."    # SD2.x: OpenCLIP's text tower
EMA = "model_ema."

# Buffers of the LDM training wrapper (DDPM schedule, loss weights, EMA bookkeeping): not weights.
LDM_BUFFERS = frozenset({
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
    "logvar", "lvlb_weights", "model_ema.decay", "model_ema.num_updates",
})
# Unused by SD (see the module docstring) or non-parameter buffers of the text towers.
_TEXT_IGNORED = (OPEN_CLIP + "text_projection", OPEN_CLIP + "logit_scale", OPEN_CLIP + "attn_mask")
_SD2_PROBE = UNET + "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"  # [C, cross_attention_dim]

# ldm -> diffusers names inside a UNet ResBlock and inside the VAE's ResnetBlock / AttnBlock
_UNET_RESNET = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
                "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}
_VAE_RESNET = {"nin_shortcut": "conv_shortcut"}
_VAE_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_OPEN_CLIP_LAYER = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
                    "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}


# ----------------------------------------------------------------------------- renamed views

class RenamedState(Mapping):
    """``{new key: tensor}`` over a lazy source: each entry is ``(source key, transform or None)``,
    read (and transformed, e.g. one third of a fused qkv) only when accessed."""

    def __init__(self, source: Mapping[str, Any], entries: Mapping[str, tuple[str, Callable | None]]):
        self._source, self._entries = source, dict(entries)

    def __getitem__(self, key: str) -> np.ndarray:
        src, fn = self._entries[key]
        x = np.asarray(self._source[src])
        return fn(x) if fn is not None else x

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def _split(key: str, table: Mapping[str, tuple[str, Mapping[str, str]]]) -> tuple[str, str] | None:
    """The longest module prefix of ``key`` in ``table`` -> the diffusers key, or None."""
    parts = key.split(".")
    for n in range(len(parts) - 1, 0, -1):
        hit = table.get(".".join(parts[:n]))
        if hit is not None:
            new_prefix, inner = hit
            module, leaf = ".".join(parts[n:-1]), parts[-1]
            module = inner.get(module, module)
            return ".".join(p for p in (new_prefix, module, leaf) if p)
    return None


def unet_table(cfg) -> dict[str, tuple[str, Mapping[str, str]]]:
    """LDM module prefix -> (diffusers module prefix, inner renames) for a UNet config
    (:class:`~dekag_jax.models.unet.UNetConfig`).

    LDM numbers the down path as one list ``input_blocks`` (``.0`` the ResBlock or the
    downsampler ``.0.op``, ``.1`` the SpatialTransformer) after ``input_blocks.0.0`` = conv_in; the
    up path as ``output_blocks`` with layers_per_block + 1 entries per level whose last one carries
    the upsampler (``.1.conv``, or ``.2.conv`` after an attention).
    """
    table: dict[str, tuple[str, Mapping[str, str]]] = {
        "time_embed.0": ("time_embedding.linear_1", {}), "time_embed.2": ("time_embedding.linear_2", {}),
        "input_blocks.0.0": ("conv_in", {}), "out.0": ("conv_norm_out", {}), "out.2": ("conv_out", {}),
        "middle_block.0": ("mid_block.resnets.0", _UNET_RESNET), "middle_block.1": ("mid_block.attentions.0", {}),
        "middle_block.2": ("mid_block.resnets.1", _UNET_RESNET),
    }
    n = cfg.num_blocks
    i = 1
    for b, (kind, layers) in enumerate(zip(cfg.down_block_types, cfg.layers)):
        for j in range(layers):
            table[f"input_blocks.{i}.0"] = (f"down_blocks.{b}.resnets.{j}", _UNET_RESNET)
            if "CrossAttn" in kind:
                table[f"input_blocks.{i}.1"] = (f"down_blocks.{b}.attentions.{j}", {})
            i += 1
        if b < n - 1:
            table[f"input_blocks.{i}.0.op"] = (f"down_blocks.{b}.downsamplers.0.conv", {})
            i += 1
    i = 0
    for b, (kind, layers) in enumerate(zip(cfg.up_block_types, reversed(cfg.layers))):
        attn = "CrossAttn" in kind
        for j in range(layers + 1):
            table[f"output_blocks.{i}.0"] = (f"up_blocks.{b}.resnets.{j}", _UNET_RESNET)
            if attn:
                table[f"output_blocks.{i}.1"] = (f"up_blocks.{b}.attentions.{j}", {})
            i += 1
        if b < n - 1:
            table[f"output_blocks.{i - 1}.{2 if attn else 1}.conv"] = (f"up_blocks.{b}.upsamplers.0.conv", {})
    return table


def vae_table(cfg) -> dict[str, tuple[str, Mapping[str, str]]]:
    """LDM module prefix -> (diffusers prefix, inner renames) for a VAE config
    (:class:`~dekag_jax.models.vae.VAEConfig`). The LDM decoder numbers ``up.N`` from the
    highest resolution, diffusers' ``up_blocks`` from the lowest; the 1x1-conv attention
    projections are read as linear layers by convert.py."""
    n = len(cfg.block_out_channels)
    table: dict[str, tuple[str, Mapping[str, str]]] = {"quant_conv": ("quant_conv", {}),
                                                       "post_quant_conv": ("post_quant_conv", {})}
    for side in ("encoder", "decoder"):
        table[f"{side}.conv_in"] = (f"{side}.conv_in", {})
        table[f"{side}.conv_out"] = (f"{side}.conv_out", {})
        table[f"{side}.norm_out"] = (f"{side}.conv_norm_out", {})
        table[f"{side}.mid.block_1"] = (f"{side}.mid_block.resnets.0", _VAE_RESNET)
        table[f"{side}.mid.block_2"] = (f"{side}.mid_block.resnets.1", _VAE_RESNET)
        table[f"{side}.mid.attn_1"] = (f"{side}.mid_block.attentions.0", _VAE_ATTN)
    for i in range(n):
        for j in range(cfg.layers_per_block):
            table[f"encoder.down.{i}.block.{j}"] = (f"encoder.down_blocks.{i}.resnets.{j}", _VAE_RESNET)
        for j in range(cfg.layers_per_block + 1):
            table[f"decoder.up.{n - 1 - i}.block.{j}"] = (f"decoder.up_blocks.{i}.resnets.{j}", _VAE_RESNET)
        if i < n - 1:
            table[f"encoder.down.{i}.downsample.conv"] = (f"encoder.down_blocks.{i}.downsamplers.0.conv", {})
            table[f"decoder.up.{n - 1 - i}.upsample.conv"] = (f"decoder.up_blocks.{i}.upsamplers.0.conv", {})
    return table


def _map_prefixed(keys: Sequence[str], prefix: str, table, source_key=lambda k: k):
    """Rename ``prefix``-ed keys through ``table``; unmapped or colliding keys keep their original
    name (so the strict conversion lists them)."""
    entries: dict[str, tuple[str, Callable | None]] = {}
    for k in keys:
        new = _split(k[len(prefix):], table)
        if new is None or new in entries:
            new = k
        entries[new] = (source_key(k), None)
    return entries


def _ema_key(key: str) -> str:
    """LitEma's name for a ``model.diffusion_model.*`` tensor: ``model_ema.`` + the name after
    ``model.`` with its dots removed."""
    return EMA + key.split(".", 1)[1].replace(".", "")


def open_clip_entries(keys: Sequence[str], num_hidden_layers: int):
    """SD2's OpenCLIP text tower -> transformers ``CLIPTextModel`` keys (``text_model.*``), plus
    the keys dropped by the penultimate-layer convention. Fused ``in_proj_weight`` [3W, W] /
    ``in_proj_bias`` [3W] are split into q, k, v in that order (torch ``MultiheadAttention``)."""
    entries: dict[str, tuple[str, Callable | None]] = {}
    block = re.compile(re.escape(OPEN_CLIP) + r"transformer\.resblocks\.(\d+)\.")
    layer_ids = sorted({int(m[1]) for k in keys if (m := block.match(k))})
    skip = {num_hidden_layers} if layer_ids and layer_ids[-1] == num_hidden_layers == len(layer_ids) - 1 else set()
    dropped = []
    fixed = {"token_embedding.weight": "text_model.embeddings.token_embedding.weight",
             "positional_embedding": "text_model.embeddings.position_embedding.weight",
             "ln_final.weight": "text_model.final_layer_norm.weight",
             "ln_final.bias": "text_model.final_layer_norm.bias"}
    for k in keys:
        rest = k[len(OPEN_CLIP):]
        if rest in fixed:
            entries[fixed[rest]] = (k, None)
            continue
        fused = re.fullmatch(r"transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)", rest)
        plain = re.fullmatch(r"transformer\.resblocks\.(\d+)\.(.+)\.(weight|bias)", rest)
        m = fused or plain
        if m is not None and int(m[1]) in skip:
            dropped.append(k)
        elif fused:
            base = f"text_model.encoder.layers.{fused[1]}.self_attn"
            for n, name in enumerate(("q_proj", "k_proj", "v_proj")):
                entries[f"{base}.{name}.{fused[2]}"] = (k, lambda x, n=n: np.split(x, 3, axis=0)[n])
        elif plain and plain[2] in _OPEN_CLIP_LAYER:
            entries[f"text_model.encoder.layers.{plain[1]}.{_OPEN_CLIP_LAYER[plain[2]]}.{plain[3]}"] = (k, None)
        else:  # unknown: keeps its name, so the strict conversion lists it
            entries[k] = (k, None)
    return entries, dropped


# ----------------------------------------------------------------------------- config sources

def standard_config(model_type: str) -> dict[str, Any]:
    """The shipped ``{unet, vae, text_encoder, scheduler}`` configs of a standard model."""
    if model_type not in STANDARD_MODELS:
        raise ValueError(f"model_type={model_type!r}; choose from {STANDARD_MODELS}")
    with open(os.path.join(DATA_DIR, f"{model_type}.json")) as f:
        return json.load(f)


def recognise(state: LazyStateDict, path: str = "checkpoint") -> str:
    """Which standard model (``"sd15"`` or ``"sd21"``) a file's tensor shapes say it is. SD2.1
    and SD2.1-base cannot be told apart by shapes; "sd21" is returned, as diffusers does."""
    keys = set(state)
    if any(k.startswith(("conditioner.embedders.", "model.diffusion_model.label_emb.")) for k in keys):
        raise UnsupportedConfigError(f"{path}: an SDXL-family single file (conditioner.embedders / label_emb); "
                                     "only SD1.x and SD2.x are supported")
    conv_in = UNET + "input_blocks.0.0.weight"
    if conv_in not in keys or _SD2_PROBE not in keys:
        raise CheckpointError(f"{path}: not an original-layout Stable Diffusion file that can be recognised from its "
                              f"tensor shapes (no {conv_in} / {_SD2_PROBE}); pass config=<a diffusers pipeline "
                              "directory with the matching configs>")
    if state.shape(conv_in)[1] != 4:
        raise UnsupportedConfigError(f"{path}: the UNet takes {state.shape(conv_in)[1]} input channels (inpainting "
                                     "or another variant), not a standard text-to-image model; pass config=<its "
                                     "diffusers pipeline directory>")
    dim = state.shape(_SD2_PROBE)[-1]
    if dim == 768:
        return "sd15"
    if dim == 1024:
        return "sd21"
    raise CheckpointError(f"{path}: cross-attention width {dim} matches no standard model (768: SD1.x, 1024: "
                          "SD2.x); pass config=<a diffusers pipeline directory with the matching configs>")


def _config_from_dir(config: str, revision: str | None, cache_dir: str | None) -> tuple[dict[str, Any], str]:
    d = resolve_pipeline_dir(config, revision=revision, cache_dir=cache_dir)
    out: dict[str, Any] = {}
    for name, file in (("unet", "config.json"), ("vae", "config.json"), ("text_encoder", "config.json"),
                       ("scheduler", "scheduler_config.json")):
        p = os.path.join(d, name, file)
        if not os.path.isfile(p):
            raise CheckpointError(f"config={config!r}: {name}/{file} is missing (expected a diffusers pipeline "
                                  "directory such as StableDiffusionPipeline.save_pretrained writes)")
        with open(p) as f:
            out[name] = json.load(f)
    return out, d


def _check_schedule(state: LazyStateDict, scheduler_config: Mapping[str, Any], path: str) -> None:
    if "alphas_cumprod" not in state:
        return
    from dekag_jax.diffusion.schedules import from_scheduler_config

    ours = np.asarray(from_scheduler_config(scheduler_config).alphas_cumprod, np.float64)
    theirs = np.asarray(state["alphas_cumprod"], np.float64)
    if theirs.shape != ours.shape or np.max(np.abs(theirs - ours)) > 1e-4:
        raise UnsupportedConfigError(
            f"{path}: the file's alphas_cumprod (training noise schedule, {theirs.shape[0]} steps) does not match the "
            f"scheduler config ({ours.shape[0]} steps, max |diff| "
            f"{np.max(np.abs(theirs - ours)) if theirs.shape == ours.shape else 'n/a'}); pass config=<the model's "
            "diffusers directory>")


# ----------------------------------------------------------------------------- loading

def load_single_file(path: str, *, config: str | None = None, model_type: str | None = None,
                     prediction_type: str | None = None, ema: bool = False, tokenizer: str | None = None,
                     dtype: Any = jnp.float32, vae_dtype: Any = None, components: Sequence[str] | None = None,
                     revision: str | None = None, cache_dir: str | None = None):
    """Load an original-layout Stable Diffusion ``.safetensors`` file as a
    :class:`~dekag_jax.weights.pipeline.StableDiffusion`.

    Args:
      path: the single file (``.safetensors``; pickle ``.ckpt``/``.pt``/``.bin`` are refused with
        the recipe to convert them).
      config: a diffusers pipeline directory (or a repo id in the local HF cache) whose configs
        describe this file, as for diffusers' ``from_single_file(path, config=...)``. Default:
        recognise SD1.5 / SD2.1 from the tensor shapes and use the shipped configs.
      model_type: ``"sd15"``, ``"sd21"`` or ``"sd21-base"``: use that shipped config (with
        ``config`` None); needed to pick SD2.1-base, which shapes cannot tell from SD2.1.
      prediction_type: override the scheduler config's (``"epsilon"``, ``"v_prediction"``).
      ema: read the UNet from the ``model_ema.*`` copy (see the module docstring).
      tokenizer: a tokenizer directory; default ``config``'s ``tokenizer/``. A single file holds
        no tokenizer: without either, ask for components without "tokenizer".
      dtype, vae_dtype, components: as :func:`~dekag_jax.weights.pipeline.load_pipeline`.
    Raises: CheckpointError (file, config or tokenizer missing; unrecognised file),
      UnsupportedConfigError (SDXL, inpainting, schedule mismatch, config fields we do not
      implement), ConversionError (ONE error listing every unmapped key, missing parameter and
      shape mismatch over all requested components).
    """
    from dekag_jax.models.unet import UNetConfig
    from dekag_jax.models.vae import VAEConfig

    comps = tuple(COMPONENTS if components is None else components)
    bad = [c for c in comps if c not in COMPONENTS]
    if bad:
        raise ValueError(f"components: unknown {bad}; choose from {COMPONENTS}")
    p = os.fspath(path)
    if p.endswith((".ckpt", ".pt", ".pth", ".bin", ".pkl")):
        raise CheckpointError(f"{p}: a pickle checkpoint. " + pickle_advice(p))
    if not os.path.isfile(p):
        raise CheckpointError(f"{p}: no such file")
    if not p.endswith(".safetensors"):
        raise CheckpointError(f"{p}: expected a .safetensors file")
    if config is not None and model_type is not None:
        raise ValueError("pass config= or model_type=, not both")
    state = LazyStateDict([p])

    tok_dir = tokenizer
    if config is not None:
        cfgs, cfg_dir = _config_from_dir(config, revision, cache_dir)
        source = cfg_dir
        if tok_dir is None and os.path.isdir(os.path.join(cfg_dir, "tokenizer")):
            tok_dir = os.path.join(cfg_dir, "tokenizer")
    else:
        model_type = model_type or recognise(state, p)
        cfgs = standard_config(model_type)
        source = f"{model_type} (dekag_jax/weights/data/{model_type}.json)"
    scheduler_config = dict(cfgs["scheduler"])
    if prediction_type is not None:
        scheduler_config["prediction_type"] = prediction_type
    from dekag_jax.diffusion.schedules import SchedulerConfig

    try:
        SchedulerConfig.from_dict(scheduler_config)
    except UnsupportedConfigError as e:
        raise UnsupportedConfigError(f"scheduler: {e}") from e
    _check_schedule(state, scheduler_config, p)
    if "tokenizer" in comps and tok_dir is None:
        raise CheckpointError(
            f"{p}: a single-file checkpoint holds no tokenizer. Pass tokenizer=<a CLIP tokenizer directory> (the "
            "tokenizer/ folder of the matching diffusers pipeline), config=<a pipeline directory that has one>, or "
            "components=('unet', 'vae', 'text_encoder') and give token ids.")

    keys = list(state)
    has_ema = any(k.startswith(EMA) and k not in LDM_BUFFERS for k in keys)
    if ema and not has_ema:
        raise CheckpointError(f"{p}: ema=True but the file holds no model_ema.* weights")
    unknown = [k for k in keys if k not in LDM_BUFFERS and not k.startswith((UNET, VAE, CLIP, OPEN_CLIP, EMA))
               and k not in _TEXT_IGNORED]
    problems: list[str] = []
    if unknown:
        problems.append(f"  {len(unknown)} keys of no Stable Diffusion component: " + ", ".join(unknown[:20])
                        + (" ..." if len(unknown) > 20 else ""))

    out = StableDiffusion(scheduler_config=scheduler_config, model_index={}, source=p)
    what = f"{os.path.basename(p)} [{source}]"

    def attempt(name, fn, entries):
        try:
            return fn()
        except ConversionError as e:
            # name the file's own keys, not only the diffusers names they were read as
            rev = {new: src for new, (src, _) in entries.items() if new != src}
            problems.append(re.sub(r"[\w.]+", lambda m: f"{rev[m[0]]} (read as {m[0]})" if m[0] in rev else m[0],
                                   str(e)))
        except UnsupportedConfigError as e:
            raise UnsupportedConfigError(f"{name}: {e}") from e
        return None, None

    if "unet" in comps:
        from dekag_jax.weights.sd import unet_from_state

        try:
            ucfg = UNetConfig.from_hf(cfgs["unet"])
        except UnsupportedConfigError as e:
            raise UnsupportedConfigError(f"unet: {e}") from e
        unet_keys = [k for k in keys if k.startswith(UNET)]
        entries = _map_prefixed(unet_keys, UNET, unet_table(ucfg), _ema_key if ema else (lambda k: k))
        absent = [src for src, _ in entries.values() if src not in state]  # only with ema=True
        if absent:
            problems.append(f"  ema=True: {len(absent)} UNet tensors have no EMA copy: "
                            + ", ".join(absent[:20]) + (" ..." if len(absent) > 20 else ""))
        else:
            out.unet, out.unet_params = attempt("unet", lambda: unet_from_state(
                cfgs["unet"], RenamedState(state, entries), dtype=dtype, what=f"UNet ({what})"), entries)
    if "vae" in comps:
        from dekag_jax.weights.sd import vae_from_state

        vd = vae_dtype_for(dtype, cfgs["vae"], vae_dtype)
        vae_keys = [k for k in keys if k.startswith(VAE)]
        try:
            vcfg = VAEConfig.from_hf(cfgs["vae"])
        except UnsupportedConfigError as e:
            raise UnsupportedConfigError(f"vae: {e}") from e
        entries = _map_prefixed(vae_keys, VAE, vae_table(vcfg))
        out.vae, out.vae_params = attempt("vae", lambda: vae_from_state(
            cfgs["vae"], RenamedState(state, entries), dtype=vd, what=f"VAE ({what})"), entries)
    if "text_encoder" in comps:
        from dekag_jax.weights.hf import text_encoder_from_state

        sd1 = [k for k in keys if k.startswith(CLIP)]
        sd2 = [k for k in keys if k.startswith(OPEN_CLIP) and k not in _TEXT_IGNORED]
        if sd1 and sd2:
            problems.append(f"  the file holds both an SD1 ({CLIP}*) and an SD2 ({OPEN_CLIP}*) text tower")
        elif not sd1 and not sd2:
            problems.append(f"  no text tower ({CLIP}* or {OPEN_CLIP}*) in the file")
        else:
            if sd1:
                entries = {k[len(CLIP):]: (k, None) for k in sd1}
            else:
                entries, _ = open_clip_entries(sd2, cfgs["text_encoder"]["num_hidden_layers"])
            out.text_encoder, out.text_params = attempt("text_encoder", lambda: text_encoder_from_state(
                cfgs["text_encoder"], RenamedState(state, entries), dtype=dtype, what=f"text encoder ({what})"),
                entries)
    if problems:
        raise ConversionError(f"{p}: the single-file checkpoint does not match the model ({source}):\n"
                              + "\n".join(problems))
    if "tokenizer" in comps:
        out.tokenizer = load_tokenizer_dir(tok_dir)
    return out
