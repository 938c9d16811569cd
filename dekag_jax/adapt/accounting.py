"""Parameter and byte counts of adapter sets (paper Fig. 11, Sec. VI-A4), from shapes alone.

Works on abstract trees (``jax.eval_shape``), so counting SD2.1's 866 M-parameter UNet needs no
weights. ``TARGET_SETS`` are the plausible readings of the paper's "LoRA matrices ... for all the
parameter matrices of the U-Net module" at R = 8 (2.7 M parameters, 5.2 MB), none of which
gives exactly 2.7 M on the SD2.1 UNet (``scripts/adapter_counts.py`` prints the table):

  attention q/k/v/out                          1.66 M  (diffusers' DreamBooth-LoRA targets)
  + transformer proj_in/proj_out               2.06 M
  + feed-forward (GEGLU proj, net.2)           3.46 M  <- our default for MAKD (``DEFAULT_TARGETS``)
  every Linear (+ time embedding, resnet time_emb_proj)  3.88 M
  every Linear and Conv                        8.52 M  (8.53 M if conv_out [3, 3, 320, 4] took
                                               rank 8 > its 4 outputs; we clamp it to rank 4)

Our default is every Linear of the transformer blocks (attention, projections, feed-forward): the
reading closest to "all the parameter matrices" that keeps LoRA on the 2-D weight matrices the
paper's M = BA notation (M in R^{H x W}) describes; 5.2 MB / 2.7 M = 1.93 bytes per parameter,
i.e. float16 storage, which 3.46 M would take to 6.9 MB.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from dekag_jax.adapt import cala
from dekag_jax.adapt.lora import LoraSpec, adapter_shapes, make_specs
from dekag_jax.adapt.quant import matrix_bytes
from dekag_jax.adapt.rules import tree_paths

__all__ = ["TARGET_SETS", "DEFAULT_TARGETS", "rules_for", "table", "count_specs", "adapter_count", "spec_bytes"]

_ATTN = r".*/attn[12]/to_(q|k|v|out\.0)/kernel"
_PROJ = r".*/attentions\.\d+/proj_(in|out)/kernel"
_FF = r".*/ff/net\.(0/proj|2)/kernel"

# name -> patterns (all at one rank); Linear = rank-2 kernels, Conv = rank-4 (see ``count_specs``).
TARGET_SETS: dict[str, tuple[str, ...]] = {
    "attention q/k/v/out": (_ATTN,),
    "+ proj_in/proj_out": (_ATTN, _PROJ),
    "+ feed-forward": (_ATTN, _PROJ, _FF),
    "every Linear": (_ATTN, _PROJ, _FF, r"time_embedding/linear_[12]/kernel", r".*/time_emb_proj/kernel"),
    "every Linear and Conv": (r".*/kernel",),
}
DEFAULT_TARGETS = "+ feed-forward"


def rules_for(name: str, rank: int, alpha: float | None = None) -> list[tuple]:
    """LoRA rules of a named target set (``TARGET_SETS``) at ``rank``."""
    if name not in TARGET_SETS:
        raise ValueError(f"unknown target set {name!r}; known: {sorted(TARGET_SETS)}")
    return [(p, rank, alpha) for p in TARGET_SETS[name]]


def count_specs(params: Mapping[str, Any], specs: Mapping[str, LoraSpec], *, gates: bool = False) -> int:
    """Parameters of the adapters ``specs`` would create on ``params`` (A, B, and gates if asked)."""
    flat = tree_paths(params)
    n = 0
    for path, s in specs.items():
        n += sum(math.prod(v) for v in adapter_shapes(flat[path].shape, s.rank).values())
        if gates:
            n += cala.gate_param_count(s.rank, form=s.gate)
    return n


def adapter_count(adapters: Mapping[str, Mapping[str, Any]]) -> int:
    """Parameters held by an adapter set (every array: A, B, gates)."""
    return sum(math.prod(v.shape) for ad in adapters.values() for v in ad.values())


def spec_bytes(params: Mapping[str, Any], specs: Mapping[str, LoraSpec], bits: int | None = None, *,
               gates: bool = False) -> int:
    """Bytes sent for these adapters: plain float16 (2 per parameter) if ``bits`` is None, else the
    packed per-channel quantised format of ``dekag_jax.adapt.quant`` (codes + float16 scales)."""
    flat = tree_paths(params)
    total = 0
    for path, s in specs.items():
        shapes = list(adapter_shapes(flat[path].shape, s.rank).values())
        if gates:
            shapes += list(cala.gate_shapes(s.rank, s.gate).values())
        for shp in shapes:
            total += 2 * math.prod(shp) if bits is None else matrix_bytes(shp, bits)
    return total


def table(params: Mapping[str, Any], rank: int = 8, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Rows ``{"targets", "matrices", "params", "fp16_bytes", "bytes_8bit", "bytes_4bit", "bytes_2bit"}``."""
    rows = []
    for name in names or TARGET_SETS:
        # clamp: a blanket rule meets kernels narrower than the rank (SD's conv_out has 4 outputs)
        specs = make_specs(params, rules_for(name, rank), clamp_rank=True)
        rows.append({"targets": name, "matrices": len(specs), "params": count_specs(params, specs),
                     "fp16_bytes": spec_bytes(params, specs),
                     **{f"bytes_{b}bit": spec_bytes(params, specs, b) for b in (8, 4, 2)},
                     "default": name == DEFAULT_TARGETS})
    return rows
