#!/usr/bin/env python3
"""Benchmark a LoRA training step (eq. 9) of ours against diffusers + PEFT, on the same machine.

The step (both sides, same shapes, same initial state):
  * LoRA of rank 8, alpha 8, on the UNet's attention projections to_q, to_k, to_v, to_out.0
    (ours: the regex ``.*/attn[12]/to_(q|k|v|out\\.0)/kernel`` over parameter paths; diffusers:
    ``unet.add_adapter(LoraConfig(r=8, lora_alpha=8, target_modules=[...]))``);
  * eq. 9's loss: the DDPM epsilon-prediction MSE ``|| eps - eps_theta(z_t, t, c) ||^2`` with
    ``z_t = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps`` (SD's scaled-linear schedule), where c is the
    (metaword-conditioned) prompt embedding. The text encoder is not part of the step: c is a
    fixed random ``[B, 77, cross_attention_dim]`` tensor on both sides (the metaword's own update
    goes through the frozen text encoder, which this benchmark leaves out);
  * Adam (lr 1e-4) on the LoRA parameters only. Ours: ``optax.adam``, adapters and optimiser state
    donated, the frozen base params passed as an argument (never a jit constant); diffusers:
    ``torch.optim.Adam`` over the PEFT parameters, the base frozen (requires_grad False).
Our LoRA is applied either by merging inside the loss (``W + (alpha/r) A B`` for each adapted
kernel, differentiated w.r.t. A and B; ``--impl merge``) or unmerged, beside each frozen layer
(``dekag_jax.adapt.lora.apply``: ``y += (alpha/r) x A B``; ``--impl intercept``, PEFT's way);
``--impl both`` times both against the same diffusers step.

Parity first: from identical adapters (B made non-zero) and inputs, the first two steps' losses
of ours and diffusers are printed (the second checks the optimiser too). Then times are medians of
``--iters`` steps, ours and diffusers alternating, after one warm-up each.

Usage:
  python scripts/bench_lora.py --config tiny --latent 16          # seconds: a smoke test
  nice -n 5 python scripts/bench_lora.py --config sd21 --impl merge --threads 1   # SD2.1, batch 1, 64x64
Measured here (2-core CPU shared with other jobs, load 10-14, one thread each): SD2.1 ratio 1.07
(merged) and 1.27 (unmerged); peak memory about 15.6 GB for both fp32 models together.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))
from bench_unet import COMMON, CONFIGS, LORA_TARGETS  # noqa: E402  (same UNet configs as the UNet benchmark)

TORCH_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=sorted(CONFIGS), default="sd21")
    p.add_argument("--latent", type=int, default=64, help="latent height = width (64 -> 512 px images)")
    p.add_argument("--tokens", type=int, default=77)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=float, default=8.0)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--impl", choices=["merge", "intercept", "both"], default="both",
                   help="how our step applies LoRA (see the module docstring)")
    p.add_argument("--iters", type=int, default=3, help="timed steps per side (median reported)")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="torch threads; 1 also makes XLA single-threaded. On a machine shared with other jobs "
                        "use 1: torch's OpenMP threads slow down 10-20x when the cores are oversubscribed")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    if args.threads == 1:  # as bench_unet.py: both sides on one thread (set before JAX starts)
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
    import statistics

    import numpy as np
    import jax
    import jax.numpy as jnp
    import optax
    import torch
    import diffusers
    import peft

    from dekag_jax import runtime
    from dekag_jax.adapt import lora
    from dekag_jax.diffusion.schedules import diffusion_loss, stable_diffusion_schedule
    from dekag_jax.models.unet import UNet2DConditionModel, UNetConfig
    from dekag_jax.weights.adapters import module_name
    from dekag_jax.weights.convert import torch_to_flax
    from dekag_jax.weights.sd import abstract_params

    info = runtime.setup()
    torch.set_num_threads(args.threads)
    B, S, L = args.batch, args.latent, args.tokens
    cfg = {**COMMON, **CONFIGS[args.config]}
    dev = jax.devices()[0]
    print(f"# bench_lora config={args.config} latent={S} tokens={L} batch={B} rank={args.rank} alpha={args.alpha} "
          f"impl={args.impl} threads={args.threads} iters={args.iters}")
    print(f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; jax device "
          f"{getattr(dev, 'device_kind', dev)}; load average {os.getloadavg()}")
    print(f"# versions: jax {jax.__version__}, optax {optax.__version__}, torch {torch.__version__}, "
          f"diffusers {diffusers.__version__}, peft {peft.__version__}; compilation cache {info.compilation_cache}")
    results = dict(config=args.config, latent=S, tokens=L, batch=B, rank=args.rank, alpha=args.alpha,
                   device=str(getattr(dev, "device_kind", dev)), cores=os.cpu_count(), jax=jax.__version__,
                   torch=torch.__version__, diffusers=diffusers.__version__, peft=peft.__version__)

    # ------------------------------------------------------------------ models (same random weights)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    tm = diffusers.UNet2DConditionModel(**cfg).train()
    module = UNet2DConditionModel(config=UNetConfig.from_hf(cfg))
    abstract = abstract_params(module, *module.dummy_inputs())
    state = {k: v.detach().numpy() for k, v in tm.state_dict().items()}  # shares torch's memory
    params = jax.tree.map(jnp.asarray, torch_to_flax(state, abstract, what="bench UNet"))
    del state
    print(f"models built and converted: {sum(p.numel() for p in tm.parameters()) / 1e6:.1f} M params "
          f"({time.perf_counter() - t0:.1f} s)")

    # ------------------------------------------------------------------ adapters, identical on both sides
    adapters, specs = lora.init(jax.random.key(0), params, [(LORA_TARGETS.rstrip("$"), args.rank, args.alpha)])
    rng = np.random.default_rng(0)
    for p in sorted(adapters):  # B non-zero so that the parity check sees every factor
        adapters[p]["lora_B"] = jnp.asarray(0.01 * rng.standard_normal(adapters[p]["lora_B"].shape), jnp.float32)
    n_lora = sum(int(np.prod(a.shape)) for ad in adapters.values() for a in ad.values())
    print(f"LoRA: {len(adapters)} kernels, {n_lora / 1e6:.3f} M trainable params")
    results["lora_params"] = n_lora

    tm.add_adapter(peft.LoraConfig(r=args.rank, lora_alpha=args.alpha, target_modules=TORCH_TARGETS,
                                   init_lora_weights=True))
    mods = dict(tm.named_modules())
    with torch.no_grad():
        for p, ad in adapters.items():
            m = mods[module_name(p)]
            m.lora_A["default"].weight.copy_(torch.from_numpy(np.asarray(ad["lora_A"]).T.copy()))
            m.lora_B["default"].weight.copy_(torch.from_numpy(np.asarray(ad["lora_B"]).T.copy()))
    t_params = []
    for n, p in tm.named_parameters():
        p.requires_grad_(".lora_" in n)
        if p.requires_grad:
            t_params.append(p)
    assert sum(p.numel() for p in t_params) == n_lora, (sum(p.numel() for p in t_params), n_lora)
    opt = torch.optim.Adam(t_params, lr=args.lr)

    # ------------------------------------------------------------------ inputs (same on both sides)
    D = module.config.cross_dims[0]
    z0_np = rng.standard_normal((B, 4, S, S)).astype(np.float32)
    eps_np = rng.standard_normal((B, 4, S, S)).astype(np.float32)
    c_np = rng.standard_normal((B, L, D)).astype(np.float32)
    t_np = np.full((B,), 500, np.int64)
    sched = stable_diffusion_schedule("epsilon")
    z0, eps = jnp.asarray(z0_np.transpose(0, 2, 3, 1)), jnp.asarray(eps_np.transpose(0, 2, 3, 1))
    ctx, tt = jnp.asarray(c_np), jnp.asarray(t_np.astype(np.int32))
    ac = torch.from_numpy(np.array(sched.alphas_cumprod, np.float32))  # a writable copy
    z0_t, eps_t, c_t, t_t = (torch.from_numpy(a) for a in (z0_np, eps_np, c_np, t_np))

    def theirs():
        a = ac[t_t].view(-1, 1, 1, 1)
        z_t = a.sqrt() * z0_t + (1 - a).sqrt() * eps_t  # eq. 1's forward process
        loss = torch.mean((tm(z_t, t_t, c_t).sample - eps_t) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    # ------------------------------------------------------------------ our steps
    tx = optax.adam(args.lr)

    def make_step(impl):
        def loss_fn(ad, frozen, z0, eps, t, c):
            if impl == "merge":
                merged = lora.merge(frozen, ad, specs)
                model = lambda z, t, c: module.apply({"params": merged}, z, t, c)  # noqa: E731
            else:
                model = lambda z, t, c: lora.apply(module, {"params": frozen}, ad, specs, z, t, c)  # noqa: E731
            return diffusion_loss(model, z0, jax.random.key(0), schedule=sched, cond=c, t=t, noise=eps)

        def step(ad, opt_state, frozen, z0, eps, t, c):
            loss, g = jax.value_and_grad(loss_fn)(ad, frozen, z0, eps, t, c)
            updates, opt_state = tx.update(g, opt_state, ad)
            return optax.apply_updates(ad, updates), opt_state, loss

        return jax.jit(step, donate_argnums=(0, 1))

    impls = ["merge", "intercept"] if args.impl == "both" else [args.impl]
    ours = {}
    for impl in impls:
        st = {"ad": jax.tree.map(jnp.copy, adapters)}
        st["opt"] = tx.init(st["ad"])
        t0 = time.perf_counter()
        compiled = make_step(impl).lower(st["ad"], st["opt"], params, z0, eps, tt, ctx).compile()
        results[f"compile_{impl}_s"] = time.perf_counter() - t0
        print(f"ours ({impl}) compiled in {results[f'compile_{impl}_s']:.1f} s")

        def run(compiled=compiled, st=st):
            st["ad"], st["opt"], loss = compiled(st["ad"], st["opt"], params, z0, eps, tt, ctx)
            return float(loss)  # float() waits for the step

        ours[impl] = run

    # ------------------------------------------------------------------ parity: two steps from the same state
    ref = [theirs(), theirs()]
    for impl, run in ours.items():
        got = [run(), run()]
        rel = [abs(a - b) / abs(b) for a, b in zip(got, ref)]
        print(f"parity ({impl}): loss step 1 ours {got[0]:.6f} vs diffusers {ref[0]:.6f}; step 2 {got[1]:.6f} vs "
              f"{ref[1]:.6f} (relative {rel[0]:.1e}, {rel[1]:.1e})")
        results[f"parity_{impl}"] = rel

    # ------------------------------------------------------------------ timing, interleaved
    times = {k: [] for k in [*ours, "diffusers"]}
    for _ in range(args.iters):
        for name, fn in [*ours.items(), ("diffusers", theirs)]:
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"step {k}: median {med[k]:.3f} s (runs {', '.join(f'{x:.3f}' for x in v)})")
        results[f"step_{k}_s"] = med[k]
    for impl in ours:
        r = med[impl] / med["diffusers"]
        results[f"ratio_{impl}"] = r
        print(f"RATIO ours ({impl}) / diffusers+PEFT = {r:.3f}")
    print(f"# load average at the end: {os.getloadavg()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
