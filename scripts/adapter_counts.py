#!/usr/bin/env python3
"""LoRA parameter and byte counts of the plausible target sets on Stable Diffusion 2.1's UNet
(paper Sec. VI-A4: "rank R = 8 for all the parameter matrices of the U-Net", 2.7 M parameters,
5.2 MB), from abstract shapes only (``jax.eval_shape``: no weights, no download).

Bytes: float16 (2 per parameter, the paper's 16-bit) and the packed per-channel quantised
formats of ``dekag_jax.adapt.quant`` at 8, 4 and 2 bits (codes + float16 scales).

Usage: python scripts/adapter_counts.py [--rank 8] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# Stable Diffusion 2.1 (stabilityai/stable-diffusion-2-1 unet/config.json), as scripts/bench_unet.py.
SD21_UNET = dict(
    sample_size=96, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    mid_block_type="UNetMidBlock2DCrossAttn", downsample_padding=1, mid_block_scale_factor=1, act_fn="silu",
    norm_num_groups=32, norm_eps=1e-5, use_linear_projection=True, upcast_attention=True, dual_cross_attention=False,
    only_cross_attention=False, num_class_embeds=None, block_out_channels=[320, 640, 1280, 1280],
    attention_head_dim=[5, 10, 20, 20], cross_attention_dim=1024, layers_per_block=2,
)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = p.parse_args(argv)

    from dekag_jax import runtime
    from dekag_jax.adapt.accounting import table
    from dekag_jax.models.unet import UNet2DConditionModel, UNetConfig
    from dekag_jax.weights.sd import abstract_params

    runtime.setup()
    module = UNet2DConditionModel(config=UNetConfig.from_hf(SD21_UNET))
    params = abstract_params(module, *module.dummy_inputs())
    params = params.get("params", params)
    n_base = sum(int(v.size) for v in __import__("jax").tree_util.tree_leaves(params))
    rows = table(params, rank=args.rank)
    if args.json:
        print(json.dumps({"unet_params": n_base, "rank": args.rank, "rows": rows}, indent=1))
        return rows
    print(f"SD2.1 UNet: {n_base / 1e6:.1f} M parameters; LoRA rank {args.rank} (paper: 2.7 M, 5.2 MB)")
    print(f"{'targets':<24} {'matrices':>8} {'params':>9} {'fp16 MB':>8} {'8-bit MB':>9} {'4-bit MB':>9} "
          f"{'2-bit MB':>9}")
    for r in rows:
        mark = "  <- default" if r["default"] else ""
        print(f"{r['targets']:<24} {r['matrices']:>8} {r['params'] / 1e6:>8.2f}M {r['fp16_bytes'] / 1e6:>8.2f} "
              f"{r['bytes_8bit'] / 1e6:>9.2f} {r['bytes_4bit'] / 1e6:>9.2f} {r['bytes_2bit'] / 1e6:>9.2f}{mark}")
    return rows


if __name__ == "__main__":
    main()
