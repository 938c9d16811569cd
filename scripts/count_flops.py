#!/usr/bin/env python3
"""FLOPs of our models counted from shapes (dekag_jax.perf.count_flops), optionally beside XLA's
CPU cost analysis of the compiled program (--xla; compiles, so slow for SD2.1).

Nothing is allocated: parameters and inputs are ShapeDtypeStructs, so SD2.1-sized models count
in seconds to a minute on any CPU.

    python scripts/count_flops.py unet --config sd21 --batch 8 [--train] [--xla]
    python scripts/count_flops.py vae --config sd --image 512
    python scripts/count_flops.py jscc --config paper --latent 64
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
VAE_CONFIGS = {
    # Stable Diffusion's KL-f8 autoencoder (SD1/SD2 vae/config.json).
    "sd": dict(in_channels=3, out_channels=3, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
               latent_channels=4, down_block_types=("DownEncoderBlock2D",) * 4,
               up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32, sample_size=512),
    "tiny": dict(in_channels=3, out_channels=3, block_out_channels=(16, 32), layers_per_block=1, latent_channels=4,
                 down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                 norm_num_groups=8, sample_size=16),
}
# XLA:CPU expands these transcendentals into arithmetic its "flops" include (see tests/test_flops.py).
XLA_CPU_EXPANSION = {"logistic": 3, "erfc": 60}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", choices=["unet", "vae", "jscc"])
    p.add_argument("--config", default=None, help="unet: tiny/small/sd21; vae: sd/tiny; jscc: tiny/paper")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--latent", type=int, default=64, help="latent side (unet, jscc)")
    p.add_argument("--tokens", type=int, default=77)
    p.add_argument("--image", type=int, default=512, help="image side (vae)")
    p.add_argument("--attention", default="einsum", help="unet attention implementation traced")
    p.add_argument("--train", action="store_true",
                   help="unet: the train step (value_and_grad w.r.t. the attention projections) as well")
    p.add_argument("--xla", action="store_true", help="also XLA's CPU cost analysis (compiles)")
    args = p.parse_args(argv)

    sys.path.insert(0, os.path.dirname(HERE))
    import jax
    import jax.numpy as jnp

    from dekag_jax import perf, runtime

    runtime.setup()
    S = jax.ShapeDtypeStruct
    f32 = jnp.float32
    jobs = []  # (name, fn, args)
    if args.model == "unet":
        sys.path.insert(0, HERE)
        from bench_unet import COMMON, CONFIGS, LORA_TARGETS
        from dekag_jax.models.unet import UNet2DConditionModel, UNetConfig
        from dekag_jax.weights.convert import flatten, unflatten

        name = args.config or "sd21"
        m = UNet2DConditionModel(config=UNetConfig.from_hf({**COMMON, **CONFIGS[name]}), attention_impl=args.attention)
        params = jax.eval_shape(m.init, jax.random.key(0), *m.dummy_inputs())["params"]
        B, L = args.batch, args.latent
        x, t, c = S((B, L, L, 4), f32), S((B,), jnp.int32), S((B, args.tokens, m.config.cross_dims[0]), f32)

        def fwd(p, x, t, c):
            return m.apply({"params": p}, x, t, c)

        jobs.append((f"unet {name} forward", fwd, (params, x, t, c)))
        if args.train:
            flat = flatten(params)
            tr = {k: v for k, v in flat.items() if re.match(LORA_TARGETS, k)}
            fz = {k: v for k, v in flat.items() if k not in tr}

            def loss(tp, fz, x, t, c):
                return jnp.mean((fwd(unflatten({**fz, **tp}), x, t, c) - x) ** 2)

            jobs.append((f"unet {name} train step", jax.value_and_grad(loss), (tr, fz, x, t, c)))
    elif args.model == "vae":
        from dekag_jax.models.vae import AutoencoderKL, VAEConfig

        name = args.config or "sd"
        m = AutoencoderKL(VAEConfig.from_hf(VAE_CONFIGS[name]))
        params = jax.eval_shape(m.init, jax.random.key(0), *m.dummy_inputs())["params"]
        img = S((args.batch, args.image, args.image, 3), f32)
        z = S((args.batch, args.image // m.downsample_factor, args.image // m.downsample_factor,
               m.config.latent_channels), f32)
        jobs.append((f"vae {name} encode", lambda p, x: m.apply({"params": p}, x, method=m.encode), (params, img)))
        jobs.append((f"vae {name} decode", lambda p, z: m.apply({"params": p}, z, method=m.decode), (params, z)))
    else:
        from dekag_jax.models.jscc import JSCCCodec, JSCCConfig

        name = args.config or "paper"
        cfg = JSCCConfig.named(name)
        m = JSCCCodec(config=cfg)
        z = S((args.batch, args.latent, args.latent, cfg.latent_channels), f32)
        params = jax.eval_shape(m.init, jax.random.key(0), z)["params"]
        jobs.append((f"jscc {name} encode", lambda p, z: m.apply({"params": p}, z, method=m.encode), (params, z)))
        code = S((args.batch, args.latent, args.latent, cfg.code_channels), f32)
        jobs.append((f"jscc {name} reconstruct", lambda p, c: m.apply({"params": p}, c, method=m.reconstruct),
                     (params, code)))

    for name, fn, fargs in jobs:
        t0 = time.perf_counter()
        fc = perf.count_flops(fn, *fargs)
        line = f"{name}: {fc.summary()} [counted in {time.perf_counter() - t0:.1f} s]"
        if args.xla:
            t0 = time.perf_counter()
            xla = perf.xla_cost_flops(jax.jit(fn).lower(*fargs).compile())
            pred = fc.xla_like + sum(XLA_CPU_EXPANSION.get(k, 0) * v for k, v in fc.transcendental_elements.items())
            line += (f"\n    XLA CPU cost analysis {xla / 1e9:.3f} GFLOP: model/XLA {fc.model / xla:.4f}, (model + "
                     f"elementwise + XLA's expansions)/XLA {pred / xla:.4f} [compiled in {time.perf_counter() - t0:.1f} s]")
        print(line, flush=True)


if __name__ == "__main__":
    main()
