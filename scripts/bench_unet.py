#!/usr/bin/env python3
"""Benchmark our Flax UNet against diffusers' PyTorch UNet2DConditionModel on the same machine.

Measures (batch 1 by default, latents 64x64 = 512 px images, 77 text tokens):
  * forward: our jitted ``module.apply`` vs diffusers under ``torch.no_grad``;
  * LoRA-style train step: loss = mean((eps_pred - noise)^2) and its gradient w.r.t. the
    attention projections only (``.*/attn[12]/to_(q|k|v|out\\.0)/kernel``, selected by regex over
    parameter paths); everything else is a non-differentiated argument (not a jit constant, which
    would bake 3.5 GB into the program). diffusers: the same parameters with requires_grad,
    forward + backward.
Both sides use random weights built from the same config: the diffusers model is created from
its config and its state dict converted to ours with dekag_jax.weights.convert (which exercises
the converter at full size). Times are medians of --iters runs after warm-up; compile time is
reported separately.

Usage:
  python scripts/bench_unet.py                      # small config, quick
  python scripts/bench_unet.py --config sd21        # full SD2.1 UNet (865M params, ~10 GB RAM)
  python scripts/bench_unet.py --gpu                # also bf16 throughput + MFU if a GPU is present

Thread count: ``--threads N`` sets torch.set_num_threads(N) and, for JAX, XLA's CPU thread use
(N=1 disables Eigen multithreading; N>1 uses XLA's default pool, sized to the machine's cores).
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time

CONFIGS = {
    # SD2-shaped but narrow: quick to run, same code paths as sd21.
    "small": dict(
        block_out_channels=[32, 64, 128, 128], attention_head_dim=[1, 2, 4, 4], cross_attention_dim=128,
        layers_per_block=1),
    # Stable Diffusion 2.1 (stabilityai/stable-diffusion-2-1 unet/config.json).
    "sd21": dict(
        block_out_channels=[320, 640, 1280, 1280], attention_head_dim=[5, 10, 20, 20], cross_attention_dim=1024,
        layers_per_block=2),
}
COMMON = dict(
    sample_size=64, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    mid_block_type="UNetMidBlock2DCrossAttn", downsample_padding=1, mid_block_scale_factor=1, act_fn="silu",
    norm_num_groups=32, norm_eps=1e-5, use_linear_projection=True, upcast_attention=True, dual_cross_attention=False,
    only_cross_attention=False, num_class_embeds=None,
)
LORA_TARGETS = r".*/attn[12]/to_(q|k|v|out\.0)/kernel$"


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=sorted(CONFIGS), default="small")
    p.add_argument("--latent", type=int, default=64, help="latent height = width (64 -> 512 px images)")
    p.add_argument("--tokens", type=int, default=77)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--iters", type=int, default=3, help="timed runs per measurement (median reported)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--attention", choices=["chunked", "einsum", "jax"], default="chunked")
    p.add_argument("--remat", action="store_true", help="gradient checkpointing in our train step")
    p.add_argument("--xla-flags", default="", help="extra XLA_FLAGS for our side (e.g. --xla_cpu_use_onednn=true)")
    p.add_argument("--no-torch", action="store_true", help="skip diffusers timings (ours only)")
    p.add_argument("--no-train", action="store_true", help="skip the train-step measurement")
    p.add_argument("--gpu", action="store_true", help="if a GPU backend exists, also bf16 throughput and MFU")
    return p.parse_args(argv)


def median_time(fn, iters, warmup=1):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), ts


def paired_times(fa, fb, iters):
    """Alternate a, b, a, b, ... so that both see the same (shared, fluctuating) machine load.
    Returns {'a': (median wall s, median cpu s), 'b': ...}; both must be warm already."""
    out = {"a": ([], []), "b": ([], [])}
    for _ in range(iters):
        for key, fn in (("a", fa), ("b", fb)):
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            out[key][0].append(time.perf_counter() - w0)
            out[key][1].append(time.process_time() - c0)
    return {k: (statistics.median(w), statistics.median(c)) for k, (w, c) in out.items()}


def main(argv=None):
    args = parse(argv)
    flags = os.environ.get("XLA_FLAGS", "")
    if args.threads == 1:
        flags += " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    flags += " " + args.xla_flags
    os.environ["XLA_FLAGS"] = flags.strip()

    import numpy as np
    import torch
    import diffusers
    import jax
    import jax.numpy as jnp

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from dekag_jax.models.unet import UNet2DConditionModel, UNetConfig
    from dekag_jax.weights.convert import flatten, torch_to_flax, unflatten
    from dekag_jax.weights.sd import abstract_params

    torch.set_num_threads(args.threads)
    cfg_dict = {**COMMON, **CONFIGS[args.config]}
    backend = jax.default_backend()
    print(f"# bench_unet config={args.config} latent={args.latent} tokens={args.tokens} batch={args.batch} "
          f"threads={args.threads} attention={args.attention} remat={args.remat} backend={backend}")
    print(f"# XLA_FLAGS={os.environ['XLA_FLAGS']!r} torch={torch.__version__} diffusers={diffusers.__version__} "
          f"jax={jax.__version__}")
    try:
        print(f"# load average: {os.getloadavg()}")
    except OSError:
        pass

    # ---------------------------------------------------------------- models
    t0 = time.perf_counter()
    torch.manual_seed(0)
    tm = diffusers.UNet2DConditionModel(**cfg_dict).eval()
    n_params = sum(p.numel() for p in tm.parameters())
    print(f"diffusers model built: {n_params / 1e6:.1f} M params ({time.perf_counter() - t0:.1f} s)")

    module = UNet2DConditionModel(UNetConfig.from_hf(dict(tm.config)), attention_impl=args.attention,
                                  gradient_checkpointing=args.remat)
    t0 = time.perf_counter()
    abstract = abstract_params(module, *module.dummy_inputs())
    state = {k: v.detach().numpy() for k, v in tm.state_dict().items()}  # shares torch's memory
    flat = flatten(torch_to_flax(state, abstract, what="bench UNet"))
    del state
    params = unflatten({k: jnp.asarray(flat.pop(k)) for k in list(flat)})
    print(f"converted torch state -> flax params with our converter: {time.perf_counter() - t0:.1f} s")

    B, S, L = args.batch, args.latent, args.tokens
    D = module.config.cross_dims[0]
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((B, 4, S, S)).astype(np.float32)
    c_np = rng.standard_normal((B, L, D)).astype(np.float32)
    n_np = rng.standard_normal((B, 4, S, S)).astype(np.float32)
    t_np = np.full((B,), 500, np.int64)
    x_j, c_j, n_j = (jnp.asarray(x_np.transpose(0, 2, 3, 1)), jnp.asarray(c_np),
                     jnp.asarray(n_np.transpose(0, 2, 3, 1)))
    t_j = jnp.asarray(t_np.astype(np.int32))
    x_t, c_t, n_t, t_t = (torch.from_numpy(a) for a in (x_np, c_np, n_np, t_np))

    results = {}

    # ---------------------------------------------------------------- forward
    fwd = jax.jit(lambda p, x, t, c: module.apply({"params": p}, x, t, c))
    t0 = time.perf_counter()
    compiled = fwd.lower(params, x_j, t_j, c_j).compile()
    results["fwd_compile"] = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    fwd_flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
    out_j = compiled(params, x_j, t_j, c_j).block_until_ready()

    def jf():
        compiled(params, x_j, t_j, c_j).block_until_ready()

    if args.no_torch:
        results["fwd_ours"], _ = median_time(jf, args.iters)
        print(f"ours   forward: {results['fwd_ours']:.3f} s (median of {args.iters}); compile "
              f"{results['fwd_compile']:.1f} s; XLA cost analysis {fwd_flops / 1e9:.1f} GFLOP")
    else:
        with torch.no_grad():
            out_t = tm(x_t, t_t, c_t).sample.numpy()  # also the torch warm-up

            def tf():
                tm(x_t, t_t, c_t)

            r = paired_times(jf, tf, args.iters)
        results["fwd_ours"], results["fwd_torch"] = r["a"][0], r["b"][0]
        err = np.abs(np.asarray(out_j).transpose(0, 3, 1, 2) - out_t).max() / np.abs(out_t).max()
        print(f"ours   forward: {r['a'][0]:.3f} s wall, {r['a'][1]:.2f} s CPU (median of {args.iters}, "
              f"interleaved with diffusers); compile {results['fwd_compile']:.1f} s; XLA cost analysis "
              f"{fwd_flops / 1e9:.1f} GFLOP -> {fwd_flops / r['a'][0] / 1e9:.1f} GFLOP/s")
        print(f"diffusers forward: {r['b'][0]:.3f} s wall, {r['b'][1]:.2f} s CPU; parity max|diff|/max|ref| = "
              f"{err:.2e}")
        print(f"RATIO forward ours/diffusers = {r['a'][0] / r['b'][0]:.3f} (wall), "
              f"{r['a'][1] / r['b'][1]:.3f} (CPU time)")

    # ---------------------------------------------------------------- LoRA-style train step
    if not args.no_train:
        pat = re.compile(LORA_TARGETS)
        flat = flatten(params)
        train = {k: v for k, v in flat.items() if pat.match(k)}
        frozen = {k: v for k, v in flat.items() if k not in train}
        n_train = sum(v.size for v in train.values())
        print(f"train subset: {len(train)} tensors, {n_train / 1e6:.1f} M params (regex {LORA_TARGETS})")

        def loss_fn(tp, fz, x, t, c, noise):
            pred = module.apply({"params": unflatten({**fz, **tp})}, x, t, c)
            return jnp.mean((pred.astype(jnp.float32) - noise) ** 2)

        step = jax.jit(jax.value_and_grad(loss_fn))
        t0 = time.perf_counter()
        cstep = step.lower(train, frozen, x_j, t_j, c_j, n_j).compile()
        results["train_compile"] = time.perf_counter() - t0
        scost = cstep.cost_analysis()
        scost = scost[0] if isinstance(scost, (list, tuple)) else scost
        step_flops = float(scost.get("flops", float("nan"))) if scost else float("nan")

        def js():
            v, g = cstep(train, frozen, x_j, t_j, c_j, n_j)
            jax.block_until_ready(g)
            return v, g

        v_j, g_j = js()
        if args.no_torch:
            results["train_ours"], _ = median_time(js, args.iters)
            print(f"ours   train step: {results['train_ours']:.3f} s; compile {results['train_compile']:.1f} s; "
                  f"{step_flops / 1e9:.1f} GFLOP")
        else:
            tpat = re.compile(r".*attn[12]\.to_(q|k|v|out\.0)\.weight$")
            names = []
            for name, p in tm.named_parameters():
                p.requires_grad_(bool(tpat.match(name)))
                if p.requires_grad:
                    names.append(name)
            assert len(names) == len(train), (len(names), len(train))

            def ts():
                tm.zero_grad(set_to_none=True)
                pred = tm(x_t, t_t, c_t).sample
                loss = torch.mean((pred - n_t) ** 2)
                loss.backward()
                return loss

            loss_t = ts()  # warm-up
            r = paired_times(js, ts, args.iters)
            results["train_ours"], results["train_torch"] = r["a"][0], r["b"][0]
            print(f"ours   train step: {r['a'][0]:.3f} s wall, {r['a'][1]:.2f} s CPU; compile "
                  f"{results['train_compile']:.1f} s; {step_flops / 1e9:.1f} GFLOP")
            print(f"diffusers train step: {r['b'][0]:.3f} s wall, {r['b'][1]:.2f} s CPU; loss ours "
                  f"{float(v_j):.6f} vs diffusers {float(loss_t.detach()):.6f}")
            print(f"RATIO train ours/diffusers = {r['a'][0] / r['b'][0]:.3f} (wall), "
                  f"{r['a'][1] / r['b'][1]:.3f} (CPU time)")

    # ---------------------------------------------------------------- GPU: bf16 throughput + MFU
    if args.gpu:
        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        if not gpus:
            print("--gpu: no GPU backend present; skipped")
        else:
            bmod = module.clone(dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
            bparams = jax.tree.map(lambda a: jax.device_put(a.astype(jnp.bfloat16), gpus[0]), params)
            bf = jax.jit(lambda p, x, t, c: bmod.apply({"params": p}, x, t, c))
            gb = max(8, B)
            xs = jax.device_put(jnp.tile(x_j, (gb // B, 1, 1, 1)).astype(jnp.bfloat16), gpus[0])
            cs = jax.device_put(jnp.tile(c_j, (gb // B, 1, 1)).astype(jnp.bfloat16), gpus[0])
            ts_ = jax.device_put(jnp.tile(t_j, (gb // B,)), gpus[0])
            cb = bf.lower(bparams, xs, ts_, cs).compile()
            bc = cb.cost_analysis()
            bc = bc[0] if isinstance(bc, (list, tuple)) else bc
            flops = float(bc.get("flops", float("nan")))
            tb, _ = median_time(lambda: cb(bparams, xs, ts_, cs).block_until_ready(), max(args.iters, 5))
            peak = float(os.environ.get("PEAK_TFLOPS", "989"))  # H100 SXM dense bf16
            print(f"GPU bf16 forward batch {gb}: {tb * 1e3:.1f} ms, {gb / tb:.1f} samples/s, "
                  f"{flops / tb / 1e12:.1f} TFLOP/s, MFU {flops / tb / 1e12 / peak:.1%} of {peak} TFLOP/s "
                  f"(set PEAK_TFLOPS for other GPUs)")
    return results


if __name__ == "__main__":
    main()
