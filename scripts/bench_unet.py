#!/usr/bin/env python3
"""Benchmark our Flax UNet against diffusers' PyTorch UNet2DConditionModel on the same device.

Measures (batch 1 on CPU, 8 on GPU by default; latents 64x64 = 512 px images, 77 text tokens):
  * forward: our jitted ``module.apply`` vs diffusers under ``torch.no_grad``;
  * train step (``--lora R``): eq. 9's loss mean((eps_pred - noise)^2) and its gradient w.r.t.
    rank-R LoRA adapters on the default MAKD targets (``dekag_jax.adapt``; diffusers + PEFT with
    the same targets on the peer side), base weights frozen;
  * without ``--lora``, the LoRA-style step: the same loss and its gradient w.r.t. the
    attention projections only (``.*/attn[12]/to_(q|k|v|out\\.0)/kernel``, selected by regex over
    parameter paths); everything else is a non-differentiated argument (not a jit constant, which
    would bake 3.5 GB into the program). diffusers: the same parameters with requires_grad,
    forward + backward.
  * FLOPs and MFU: model FLOPs counted from the jaxpr (``dekag_jax.perf.count_flops``: convs,
    matmuls, attention from shapes) of the same maths with plain einsum attention and no remat;
    "executed" FLOPs of the configuration timed (remat and the chunked kernel's backward
    recompute). MFU = model FLOPs / time / the matmul peak measured first in the same run on the
    same device (jnp.dot of random n x n operands in the benchmark's dtype). XLA's own cost
    analysis is printed beside it: it counts a while-loop body once (the chunked attention runs
    under lax.map) and, on GPU, does not see convolutions or fused attention, so it is not used.
Both sides use random weights built from the same config: the diffusers model is created from
its config and its state dict converted to ours with dekag_jax.weights.convert (which exercises
the converter at full size). Times are medians of --iters runs after warm-up, ours and diffusers
interleaved; compile time is reported separately.

Usage:
  python scripts/bench_unet.py --config tiny --latent 16 --tokens 8   # smoke test, seconds
  python scripts/bench_unet.py                      # small config
  python scripts/bench_unet.py --config sd21        # full SD2.1 UNet (865M params, ~10 GB RAM)
  python scripts/bench_unet.py --config sd21 --device gpu            # bf16, batch 8, on the GPU

Thread count: ``--threads N`` sets torch.set_num_threads(N) and, for JAX, XLA's CPU thread use
(N=1 disables Eigen multithreading; N>1 uses XLA's default pool, sized to the machine's cores).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time

CONFIGS = {
    # Two blocks, 8x8-group norms: a smoke test that compiles in seconds (use --latent 16).
    "tiny": dict(
        block_out_channels=[32, 64], attention_head_dim=[2, 4], cross_attention_dim=32, layers_per_block=1,
        down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
        norm_num_groups=8),
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
# PEFT's target_modules (full match on diffusers module names) for dekag_jax.adapt.accounting's
# DEFAULT_TARGETS ("+ feed-forward": attention q/k/v/out, transformer proj_in/out, GEGLU, net.2).
PEFT_TARGETS = r".*attn[12]\.to_(q|k|v|out\.0)|.*attentions\.\d+\.proj_(in|out)|.*ff\.net\.(0\.proj|2)"
# Issue 21's goals (GPU, bf16, batch >= 8): time ratios ours/diffusers, MFU of the train step.
GOALS = {"forward": 0.6, "train": 0.7, "mfu_train": 0.30}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=sorted(CONFIGS), default="small")
    p.add_argument("--latent", type=int, default=64, help="latent height = width (64 -> 512 px images)")
    p.add_argument("--tokens", type=int, default=77)
    p.add_argument("--batch", type=int, default=None, help="default 1 on CPU, 8 on GPU")
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default="cpu",
                   help="where both sides run (auto: the GPU if JAX sees one)")
    p.add_argument("--gpu", dest="device", action="store_const", const="gpu", help="same as --device gpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                   help="weights, activations and the peak matmul (default float32 on CPU, bfloat16 on GPU)")
    p.add_argument("--iters", type=int, default=3, help="timed runs per measurement (median reported)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--attention", default="auto",
                   help="our attention implementation (dekag_jax.models.layers.ATTENTION_IMPLS)")
    p.add_argument("--remat", action="store_true", help="gradient checkpointing in our train step")
    p.add_argument("--lora", type=int, default=0, metavar="R",
                   help="train step = LoRA of rank R (eq. 9; ours: dekag_jax.adapt, diffusers: PEFT) on the "
                        "default MAKD targets; 0 (default): grads of the attention projections themselves")
    p.add_argument("--peak-n", type=int, default=None, help="matmul size for the measured peak (2048 CPU, 8192 GPU)")
    p.add_argument("--xla-flags", default="", help="extra XLA_FLAGS for our side (e.g. --xla_cpu_use_onednn=true)")
    p.add_argument("--no-torch", action="store_true", help="skip diffusers timings (ours only)")
    p.add_argument("--no-train", action="store_true", help="skip the train-step measurement")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
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


def _sync_torch(torch, dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None):
    args = parse(argv)
    flags = os.environ.get("XLA_FLAGS", "")
    if args.threads == 1:
        flags += " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    flags += " " + args.xla_flags
    os.environ["XLA_FLAGS"] = flags.strip()

    import numpy as np
    import jax
    import jax.numpy as jnp

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from dekag_jax import perf, runtime
    from dekag_jax.models.unet import UNet2DConditionModel, UNetConfig
    from dekag_jax.weights.convert import flatten, torch_to_flax, unflatten
    from dekag_jax.weights.sd import abstract_params

    info = runtime.setup()
    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    device_kind = args.device
    if device_kind == "auto":
        device_kind = "gpu" if gpus else "cpu"
    if device_kind == "gpu" and not gpus:
        print("--device gpu: JAX sees no GPU; nothing to do")
        return {}
    dev = gpus[0] if device_kind == "gpu" else jax.devices("cpu")[0]
    dtype_name = args.dtype or ("bfloat16" if device_kind == "gpu" else "float32")
    jdt = jnp.dtype(dtype_name)
    B = args.batch or (8 if device_kind == "gpu" else 1)
    S, L = args.latent, args.tokens

    torch = diffusers = None
    if not args.no_torch:
        try:
            import torch
            import diffusers
        except ImportError as e:
            print(f"# torch/diffusers not importable ({e}): ours only")
            torch = None
    tdev = None
    if torch is not None:
        torch.set_num_threads(args.threads)
        if device_kind == "gpu":
            if torch.cuda.is_available():
                tdev = torch.device("cuda")
            else:
                print("# torch sees no CUDA device: ours only")
                torch = None
        else:
            tdev = torch.device("cpu")

    cfg_dict = {**COMMON, **CONFIGS[args.config]}
    print(f"# bench_unet config={args.config} latent={S} tokens={L} batch={B} dtype={dtype_name} "
          f"threads={args.threads} attention={args.attention} remat={args.remat}")
    print(f"# device: {getattr(dev, 'device_kind', dev)} ({dev.platform}); jax {jax.__version__}"
          + (f", torch {torch.__version__}, diffusers {diffusers.__version__}" if torch is not None else "")
          + f"; compilation cache {info.compilation_cache}")
    print(f"# XLA_FLAGS={os.environ['XLA_FLAGS']!r}")
    try:
        print(f"# load average: {os.getloadavg()}")
    except OSError:
        pass
    results = dict(config=args.config, latent=S, tokens=L, batch=B, dtype=dtype_name, device=str(
        getattr(dev, "device_kind", dev)), attention=args.attention, remat=args.remat, lora=args.lora, jax=jax.__version__)

    # ---------------------------------------------------------------- measured matmul peak
    peak_n = args.peak_n or (8192 if device_kind == "gpu" else 2048)
    peak = perf.measure_matmul_peak(n=peak_n, dtype=jdt, device=dev)
    P = peak["flops_per_s"]
    results["peak_flops_per_s"] = P
    print(f"measured matmul peak: {P / 1e12:.3f} TFLOP/s ({peak['dtype']} {peak_n}^3, jnp.dot, fastest of 10; "
          f"median {peak['median_flops_per_s'] / 1e12:.3f}) -- the MFU denominator (measured again at the end; "
          "the larger is kept)")

    # ---------------------------------------------------------------- models
    def mk(**kw):
        return UNet2DConditionModel(config=UNetConfig.from_hf(cfg_dict), dtype=jdt, param_dtype=jdt, **kw)

    module = mk(attention_impl=args.attention, gradient_checkpointing=args.remat)
    # Model-FLOP reference: the same maths with plain einsum attention and no remat, so recompute
    # (remat, the chunked kernel's FlashAttention-style backward) is not counted as useful work.
    ref_module = mk(attention_impl="einsum", gradient_checkpointing=False)
    t0 = time.perf_counter()
    if torch is not None:
        torch.manual_seed(0)
        tm = diffusers.UNet2DConditionModel(**cfg_dict).eval()
        n_params = sum(p.numel() for p in tm.parameters())
        abstract = abstract_params(module, *module.dummy_inputs())
        state = {k: v.detach().numpy() for k, v in tm.state_dict().items()}  # shares torch's memory
        flat = flatten(torch_to_flax(state, abstract, what="bench UNet"))
        del state
        params = unflatten({k: jax.device_put(jnp.asarray(flat.pop(k), jdt), dev) for k in list(flat)})
        if dtype_name != "float32" or tdev.type != "cpu":
            tm = tm.to(tdev, dtype=getattr(torch, dtype_name))
        print(f"diffusers model built and converted with our converter: {n_params / 1e6:.1f} M params "
              f"({time.perf_counter() - t0:.1f} s)")
    else:
        tm = None
        # Random weights drawn on the host (scaled by fan-in): compiling ``init`` for SD2.1 would
        # cost more than the benchmark; timings do not depend on the values.
        init_rng = np.random.default_rng(0)

        def draw(s):
            fan_in = int(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 1
            a = init_rng.standard_normal(s.shape, np.float32) / np.float32(np.sqrt(fan_in))
            return jax.device_put(jnp.asarray(a, jdt), dev)

        params = jax.tree.map(draw, abstract_params(module, *module.dummy_inputs()))
        print(f"our model initialised randomly on the host ({time.perf_counter() - t0:.1f} s)")

    D = module.config.cross_dims[0]
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((B, 4, S, S)).astype(np.float32)
    c_np = rng.standard_normal((B, L, D)).astype(np.float32)
    n_np = rng.standard_normal((B, 4, S, S)).astype(np.float32)
    t_np = np.full((B,), 500, np.int64)
    put = lambda a, dt=jdt: jax.device_put(jnp.asarray(a, dt), dev)  # noqa: E731
    x_j, c_j, n_j = put(x_np.transpose(0, 2, 3, 1)), put(c_np), put(n_np.transpose(0, 2, 3, 1), jnp.float32)
    t_j = put(t_np.astype(np.int32), jnp.int32)
    if tm is not None:
        tdt = getattr(torch, dtype_name)
        x_t, c_t = (torch.from_numpy(a).to(tdev, tdt) for a in (x_np, c_np))
        n_t, t_t = torch.from_numpy(n_np).to(tdev), torch.from_numpy(t_np).to(tdev)

    def shape_of(tree):
        return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)

    def report(what, t_ours, flops_model, flops_exec, xla_flops, t_peer=None, cpu=None):
        """cpu: (ours, peer) median process CPU seconds, on CPU runs (fairer than wall time when
        other jobs share the machine)."""
        line = (f"ours {what}: {t_ours * 1e3:.1f} ms; model {flops_model / 1e9:.2f} GFLOP (jaxpr count, einsum "
                f"attention, no remat) -> {flops_model / t_ours / 1e12:.3f} TFLOP/s, MFU "
                f"{perf.mfu(flops_model, t_ours, P):.1%}; executed {flops_exec / 1e9:.2f} GFLOP (HFU "
                f"{perf.mfu(flops_exec, t_ours, P):.1%})")
        print(line)
        if xla_flops:
            print(f"    XLA cost analysis of our compiled program: {xla_flops / 1e9:.2f} GFLOP = "
                  f"{xla_flops / flops_exec:.3f} x the executed count (XLA counts while-loop bodies once; on "
                  "GPU convs and fused attention are library calls it does not see)")
        results[f"{what}_ours_s"] = t_ours
        results[f"{what}_model_flops"] = flops_model
        results[f"{what}_exec_flops"] = flops_exec
        results[f"{what}_xla_flops"] = xla_flops
        results[f"{what}_mfu_ours"] = perf.mfu(flops_model, t_ours, P)
        if t_peer is not None:
            results[f"{what}_peer_s"] = t_peer
            results[f"{what}_mfu_peer"] = perf.mfu(flops_model, t_peer, P)
            results[f"{what}_ratio"] = t_ours / t_peer
            goal = GOALS[what]
            print(f"diffusers {what}: {t_peer * 1e3:.1f} ms; same model FLOPs -> MFU "
                  f"{perf.mfu(flops_model, t_peer, P):.1%}")
            print(f"RATIO {what} ours/diffusers = {t_ours / t_peer:.3f} (goal <= {goal}: "
                  f"{'met' if t_ours / t_peer <= goal else 'not met'}; ratio/goal {t_ours / t_peer / goal:.2f})")
            if cpu:
                results[f"{what}_cpu_s"] = cpu
                print(f"    process CPU time ours {cpu[0]:.2f} s, diffusers {cpu[1]:.2f} s: ratio {cpu[0] / cpu[1]:.3f}")

    def timed(ours, peer):
        """Median wall seconds of ours (and peer), interleaved; both warm."""
        if peer is None:
            t, _ = median_time(ours, args.iters, warmup=0)
            return t, None, None
        r = paired_times(ours, peer, args.iters)
        return r["a"][0], r["b"][0], (r["a"][1], r["b"][1]) if device_kind == "cpu" else None

    # ---------------------------------------------------------------- forward
    def fwd_of(m):
        return lambda p, x, t, c: m.apply({"params": p}, x, t, c)

    fwd = jax.jit(fwd_of(module))
    abs_args = (shape_of(params), shape_of(x_j), shape_of(t_j), shape_of(c_j))
    fl_model = perf.count_flops(fwd_of(ref_module), *abs_args)
    fl_exec = perf.count_flops(fwd_of(module), *abs_args)
    print(f"forward FLOPs: {fl_model.summary()}")
    t0 = time.perf_counter()
    compiled = fwd.lower(params, x_j, t_j, c_j).compile()
    results["fwd_compile_s"] = time.perf_counter() - t0
    out_j = compiled(params, x_j, t_j, c_j).block_until_ready()

    def jf():
        compiled(params, x_j, t_j, c_j).block_until_ready()

    tf = None
    if tm is not None:
        def tf():
            with torch.no_grad():
                out = tm(x_t, t_t, c_t).sample
            _sync_torch(torch, tdev)
            return out

        out_t = tf().float().cpu().numpy()
        err = np.abs(np.asarray(out_j, np.float32).transpose(0, 3, 1, 2) - out_t).max() / np.abs(out_t).max()
        print(f"parity forward max|ours - diffusers| / max|diffusers| = {err:.2e} ({dtype_name})")
        results["fwd_parity"] = float(err)
    jf()
    t_o, t_p, cpu_o = timed(jf, tf)
    print(f"forward compile {results['fwd_compile_s']:.1f} s")
    report("forward", t_o, fl_model.model, fl_exec.model, perf.xla_cost_flops(compiled), t_p, cpu_o)

    # ---------------------------------------------------------------- LoRA-style train step
    if not args.no_train:
        if args.lora:
            # The real LoRA step of eq. 9: adapters of rank R on the default MAKD targets, grads
            # w.r.t. the adapters only, the base weights frozen (diffusers + PEFT on the peer side).
            from dekag_jax.adapt import accounting, lora

            specs = lora.make_specs(params, accounting.rules_for(accounting.DEFAULT_TARGETS, args.lora),
                                    clamp_rank=True)
            adapters, specs = lora.init(jax.random.key(1), params, specs, dtype=jdt)
            adapters = jax.device_put(adapters, dev)
            n_train = sum(a.size for ad in adapters.values() for a in ad.values())
            print(f"LoRA rank {args.lora} on {len(specs)} kernels ({accounting.DEFAULT_TARGETS!r}): "
                  f"{n_train / 1e6:.2f} M trainable params")

            def loss_of(m):
                def loss_fn(ad, p, x, t, c, noise):
                    pred = lora.apply(m, {"params": p}, ad, specs, x, t, c)
                    return jnp.mean((pred.astype(jnp.float32) - noise) ** 2)
                return jax.value_and_grad(loss_fn)

            step_args = (adapters, params, x_j, t_j, c_j, n_j)
        else:
            pat = re.compile(LORA_TARGETS)
            flat = flatten(params)
            train = {k: v for k, v in flat.items() if pat.match(k)}
            frozen = {k: v for k, v in flat.items() if k not in train}
            n_train = sum(v.size for v in train.values())
            print(f"train subset: {len(train)} tensors, {n_train / 1e6:.1f} M params (regex {LORA_TARGETS})")

            def loss_of(m):
                def loss_fn(tp, fz, x, t, c, noise):
                    pred = m.apply({"params": unflatten({**fz, **tp})}, x, t, c)
                    return jnp.mean((pred.astype(jnp.float32) - noise) ** 2)
                return jax.value_and_grad(loss_fn)

            step_args = (train, frozen, x_j, t_j, c_j, n_j)

        sabs = tuple(shape_of(a) for a in step_args)
        sl_model = perf.count_flops(loss_of(ref_module), *sabs)
        sl_exec = perf.count_flops(loss_of(module), *sabs)
        print(f"train-step FLOPs: {sl_model.summary()}")
        step = jax.jit(loss_of(module))
        t0 = time.perf_counter()
        cstep = step.lower(*step_args).compile()
        results["train_compile_s"] = time.perf_counter() - t0

        def js():
            v, g = cstep(*step_args)
            jax.block_until_ready(g)
            return v, g

        v_j, _ = js()
        ts = None
        if tm is not None:
            if args.lora:
                from peft import LoraConfig

                for p in tm.parameters():
                    p.requires_grad_(False)
                tm.add_adapter(LoraConfig(r=args.lora, lora_alpha=args.lora, target_modules=PEFT_TARGETS))
                names = [n for n, p in tm.named_parameters() if p.requires_grad]
                n_mod = len({n.split(".lora_")[0] for n in names})
                assert n_mod == len(specs), (n_mod, len(specs))
                n_peft = sum(p.numel() for p in tm.parameters() if p.requires_grad)
                assert n_peft == n_train, (n_peft, n_train)
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
                loss = torch.mean((pred.float() - n_t) ** 2)
                loss.backward()
                _sync_torch(torch, tdev)
                return loss

            loss_t = ts()  # warm-up
            print(f"loss ours {float(v_j):.6f} vs diffusers {float(loss_t.detach()):.6f}")
        t_o, t_p, cpu_o = timed(js, ts)
        print(f"train compile {results['train_compile_s']:.1f} s")
        report("train", t_o, sl_model.model, sl_exec.model, perf.xla_cost_flops(cstep), t_p, cpu_o)
    # The peak again: on a shared machine the first measurement may have met other jobs' load.
    peak2 = perf.measure_matmul_peak(n=peak_n, dtype=jdt, device=dev)["flops_per_s"]
    if peak2 > P:
        print(f"matmul peak measured again: {peak2 / 1e12:.3f} TFLOP/s (> {P / 1e12:.3f} at the start): MFU "
              f"figures above x {P / peak2:.3f}")
        for k in [k for k in results if "_mfu_" in k]:
            results[k] *= P / peak2
        results["peak_flops_per_s"] = peak2
    else:
        print(f"matmul peak measured again: {peak2 / 1e12:.3f} TFLOP/s (<= the start's; kept)")
    if "train_mfu_ours" in results:
        mfu_t = results["train_mfu_ours"]
        print(f"MFU train step {mfu_t:.1%} (goal >= {GOALS['mfu_train']:.0%} at batch >= 8 in bf16 on GPU; "
              f"ratio/goal {mfu_t / GOALS['mfu_train']:.2f}{'' if device_kind == 'gpu' else '; CPU: reference only'})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
