"""Speed of one T-KA training step (eq. 7 / eq. 10), tiny and paper-size codec (issue 18 item 7).

    nice -n 10 python scripts/bench_tka_step.py --quick                 # tiny codec only (~1 min)
    nice -n 10 python scripts/bench_tka_step.py --json runs/bench_tka_step.json   # tiny + paper size

The step is the one ``ka.tka.train`` runs: ``tka.make_setup`` (R = 16 adapters on the config's
targets, CALA's default gate form), ``tka.make_tx`` (AdamW) and ``tka.make_step`` (eq. 4 with phi
drawn per sample from Phi_EU, perceptual term through the VAE encoder), compiled by
``ka.tka_studies.step_flops`` (Fig. 11's FLOP counter; ``return_compiled=True`` hands over the
executable), so compile time, XLA FLOPs and step time are of one and the same program. Loss
weights, link and Phi_EU are ``configs/tka.py``'s.

Sizes:
* ``tiny``: the shipped JSCC(MT) (``world/assets/jscc/jscc_mt``) and the shipped tiny VAE (the edge
  pipeline's), latents at the tiny world's size (8 x 8 x 4, images 64 x 64), batch 10 (the main
  job's ``configs/default.py`` ``tka.train.batch``).
* ``paper``: ``JSCCConfig.paper()`` and an SD2.1-base-size VAE (``weights/data/sd21-base.json``),
  both **randomly initialised** (timing only: the arithmetic does not depend on the values), 64 x 64
  x 4 latents (512 x 512 images), batch 1 (CPU memory).

Per method (LoRA R=16, CALA R=16, Full-FT; No-KA trains nothing): compile time (trace + lower +
compile of the step), XLA ``cost_analysis`` FLOPs of the compiled step (and the jaxpr's model
FLOPs, ``perf.count_flops``, as a cross-check), the median step time over ``--steps`` steps after
``--warmup`` (random z ~ N(0, 1), x ~ U[0, 1]: the arithmetic is the same as on S_EG pairs), achieved
GFLOP/s (XLA FLOPs / median), XLA's memory estimate of the step and the process's peak RSS after it.
Peers measured in the same run (no timed asserts): each step against the *forward pass alone* (the
No-KA loss, eq. 4, on the same batch, jitted: no gradient, no update) and LoRA/CALA against Full-FT.
A method whose predicted peak (resident memory now + XLA's estimate of the step: arguments + outputs
+ temporaries - donated aliases) exceeds ``--max-gb`` is compiled and counted but not run ("skipped:
memory"; measured: the paper-size Full-FT step at batch 1 reached 14.7 GB, over the 12 GB default).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

METHODS = ("lora", "cala", "fullft")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the tiny codec only")
    p.add_argument("--sizes", default="tiny,paper", help="comma-separated: tiny, paper (--quick: tiny)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of lora,cala,fullft")
    p.add_argument("--tiny-batch", type=int, default=10)
    p.add_argument("--paper-batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=5, help="timed steps per method, tiny (median reported)")
    p.add_argument("--paper-steps", type=int, default=2, help="timed steps per method, paper size")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before timing")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--max-gb", type=float, default=12.0, help="skip running a step predicted to need more (GB)")
    p.add_argument("--no-jaxpr", action="store_true", help="skip the jaxpr FLOP cross-check")
    p.add_argument("--tiny-codec", default=None, help="codec directory (default: the shipped JSCC(MT))")
    p.add_argument("--tiny-vae", default=None, help="diffusers vae/ directory (default: the shipped tiny VAE)")
    p.add_argument("--tiny-latent", type=int, default=None, help="latent side (default: the tiny world's)")
    p.add_argument("--json", default=None, metavar="OUT", help="write the results as JSON")
    a = p.parse_args(argv)
    a.sizes = ["tiny"] if a.quick else [s.strip() for s in a.sizes.split(",") if s.strip()]
    bad = [s for s in a.sizes if s not in ("tiny", "paper")]
    if bad:
        p.error(f"--sizes: unknown {bad}; expected tiny, paper")
    a.methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    bad = [m for m in a.methods if m not in METHODS]
    if bad:
        p.error(f"--methods: unknown {bad}; expected a subset of {','.join(METHODS)}")
    for name in ("tiny_batch", "paper_batch", "steps", "paper_steps", "rank"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return a


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20   # Linux: KiB


def rss_gb() -> float:
    """The process's resident memory now (Linux ``/proc/self/statm``; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 30
    except (OSError, ValueError, IndexError):
        return 0.0


def build(size: str, args):
    """``(codec, codec_params, vae, vae_params, latent_shape, image_shape, description)``."""
    import jax

    from dekag_jax.ka.codec_io import load_codec
    from dekag_jax.models.jscc import JSCCConfig, init_codec
    from dekag_jax.models.vae import AutoencoderKL, VAEConfig

    if size == "tiny":
        from dekag_jax.weights.sd import load_vae
        from dekag_jax.world.models import ASSETS_DIR, edge_pipeline_dir

        vae_dir = args.tiny_vae or os.path.join(edge_pipeline_dir(), "vae")
        codec_dir = args.tiny_codec or str(ASSETS_DIR / "jscc" / "jscc_mt")
        vae, vae_params = load_vae(vae_dir)
        hw = args.tiny_latent
        if hw is None:   # the tiny world's latent size: its UNet's sample_size
            with open(os.path.join(edge_pipeline_dir(), "unet", "config.json")) as f:
                hw = int(json.load(f)["sample_size"])
        codec, codec_params, _ = load_codec(codec_dir, latent_hw=(hw, hw))
        desc = f"shipped JSCC(MT) {os.path.relpath(codec_dir)} + VAE {os.path.relpath(vae_dir)}"
    else:
        import jax.numpy as jnp

        from dekag_jax.weights import single_file

        hw = 64
        with open(os.path.join(os.path.dirname(single_file.__file__), "data", "sd21-base.json")) as f:
            vcfg = VAEConfig.from_hf(json.load(f)["vae"])
        vae = AutoencoderKL(vcfg)
        # parameter shapes do not depend on the image size: initialise on 8 x 8 (cheap)
        vae_params = jax.jit(vae.init)(jax.random.key(1), jnp.zeros((1, 8, 8, 3), jnp.float32),
                                       jax.random.key(2))["params"]
        codec, codec_params = init_codec(JSCCConfig.paper(), jax.random.key(0), (hw, hw))
        desc = "JSCCConfig.paper() + SD2.1-base VAE (weights/data/sd21-base.json), random init"
    f = vae.downsample_factor
    return codec, codec_params, vae, vae_params, (hw, hw, 4), (hw * f, hw * f, 3), desc


def _count(tree) -> int:
    import jax

    return int(sum(x.size for x in jax.tree_util.tree_leaves(tree)))


def _memory_gb(compiled):
    try:
        m = compiled.memory_analysis()
    except Exception:   # not every backend/version implements it
        return None
    if m is None:
        return None
    b = sum(int(getattr(m, k, 0) or 0) for k in ("argument_size_in_bytes", "output_size_in_bytes",
                                                  "temp_size_in_bytes", "generated_code_size_in_bytes"))
    b -= int(getattr(m, "alias_size_in_bytes", 0) or 0)   # donated outputs reuse their arguments' buffers
    return b / 2 ** 30


def bench_size(size: str, args, cfg, log=print) -> dict:
    import jax
    import jax.numpy as jnp

    from dekag_jax.ka import tka
    from dekag_jax.ka.objective import LossWeights
    from dekag_jax.ka.tka_studies import step_flops
    from dekag_jax.ka.transmission import LinkConfig

    t0 = time.time()
    codec, cp, vae, vp, lshape, ishape, desc = build(size, args)
    batch = args.tiny_batch if size == "tiny" else args.paper_batch
    n_steps = args.steps if size == "tiny" else args.paper_steps
    grid = tka.grid_from_config(cfg.conditions)
    link = LinkConfig(qam_order=cfg.link.qam_order, quantizer=cfg.link.quantizer,
                      temperature=cfg.link.temperature, channel=cfg.link.channel)
    weights = LossWeights(latent=cfg.loss.latent, image=cfg.loss.image, perceptual=cfg.loss.perceptual,
                          constellation=cfg.loss.constellation)
    frozen = tka.frozen_tree(cp, vp)
    kz, kx = jax.random.split(jax.random.key(7))
    z = jax.random.normal(kz, (batch, *lshape), jnp.float32)
    x = jax.random.uniform(kx, (batch, *ishape), jnp.float32)
    out = {"size": size, "models": desc, "batch": batch, "latent_shape": list(lshape), "image_shape": list(ishape),
           "codec_params": _count(cp), "vae_params": _count(vp), "build_s": time.time() - t0,
           "load_avg_start": os.getloadavg()[0], "methods": {}}
    log(f"[{size}] {desc}: codec {out['codec_params'] / 1e6:.2f} M, VAE {out['vae_params'] / 1e6:.2f} M params; "
        f"z {[batch, *lshape]}, x {[batch, *ishape]} (built in {out['build_s']:.1f} s, load {os.getloadavg()[0]:.1f})")

    # the peer: the forward pass alone (No-KA's eq. 4 loss on the same batch; no gradient, no update)
    noka = tka.make_setup("noka", codec, cp, vae, vp, link=link)
    fwd = jax.jit(tka.make_loss(noka, weights, grid))
    t = time.time()
    fwd_c = fwd.lower({}, frozen, z, x, jax.random.key(0)).compile()
    f_compile = time.time() - t
    from dekag_jax import perf

    f_flops = perf.xla_cost_flops(fwd_c)
    for i in range(args.warmup):
        jax.block_until_ready(fwd_c({}, frozen, z, x, jax.random.key(100 + i)))
    times = []
    for i in range(n_steps):
        t = time.time()
        jax.block_until_ready(fwd_c({}, frozen, z, x, jax.random.key(i)))
        times.append(time.time() - t)
    fmed = statistics.median(times)
    out["forward"] = {"compile_s": f_compile, "median_s": fmed, "times_s": times, "xla_flops": f_flops,
                      "gflops_per_s": (f_flops / fmed / 1e9) if f_flops else None, "peak_rss_gb": peak_rss_gb(),
                      "load_avg": os.getloadavg()[0]}
    log(f"[{size}] forward alone (No-KA loss): compile {f_compile:.1f} s, median {fmed * 1e3:.1f} ms, "
        f"{(f_flops or 0) / 1e9:.2f} GFLOP, {(out['forward']['gflops_per_s'] or 0):.1f} GFLOP/s "
        f"(load {os.getloadavg()[0]:.1f}, peak RSS {peak_rss_gb():.2f} GB)")

    for m in args.methods:
        setup = tka.make_setup(m, codec, cp, vae, vp, link=link, rank=args.rank,
                               codec_targets=cfg.adapter.codec_targets, decoder_targets=cfg.adapter.decoder_targets,
                               fullft_decoder=cfg.adapter.fullft_decoder, cala_gate=cfg.adapter.cala_gate)
        trainable = tka.init_method(setup, jax.random.key(3), cp, vp)
        t = time.time()
        fl = step_flops(setup, weights, grid, trainable, frozen, batch=batch, latent_shape=lshape, image_shape=ishape,
                        lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, gate_lr_mult=cfg.train.gate_lr_mult,
                        jaxpr=False, return_compiled=True)
        compile_s = time.time() - t
        jx = None
        if not args.no_jaxpr:
            jx = _jaxpr_flops(setup, weights, grid, trainable, frozen, z, x)
        compiled, xla = fl["compiled"], fl["xla"]
        mem = _memory_gb(compiled)
        # predicted peak = what the process holds now + XLA's estimate of the step (measured: LoRA at paper
        # size 2.2 + 8.6 GB predicted, 10.8 GB peak RSS); the estimate alone (11.5 GB) let Full-FT reach 14.7 GB
        predicted = None if mem is None else rss_gb() + mem
        row = {"trainable_params": _count(trainable), "compile_s": compile_s, "xla_flops": xla,
               "jaxpr_model_flops": jx, "xla_memory_gb": mem, "predicted_peak_gb": predicted,
               "load_avg_compiled": os.getloadavg()[0]}
        if predicted is not None and predicted > args.max_gb:
            row["skipped"] = (f"memory: predicted peak {predicted:.1f} GB (RSS now + XLA's {mem:.1f} GB) > --max-gb "
                              f"{args.max_gb:g}")
            out["methods"][m] = row
            log(f"[{size}] {m}: compiled in {compile_s:.1f} s, {(xla or 0) / 1e9:.2f} GFLOP/step; not run ({row['skipped']})")
            continue
        tx = tka.make_tx(m, cfg.train.lr, weight_decay=cfg.train.weight_decay, gate_lr_mult=cfg.train.gate_lr_mult)
        opt_state = tx.init(trainable)
        times = []
        for i in range(args.warmup + n_steps):
            t = time.time()
            trainable, opt_state, loss, _ = compiled(trainable, opt_state, frozen, z, x, jax.random.key(i))
            jax.block_until_ready((trainable, loss))
            if i >= args.warmup:
                times.append(time.time() - t)
        med = statistics.median(times)
        row.update({"median_s": med, "times_s": times, "gflops_per_s": (xla / med / 1e9) if xla else None,
                    "step_over_forward": med / fmed, "loss_last": float(loss), "peak_rss_gb": peak_rss_gb(),
                    "load_avg": os.getloadavg()[0]})
        out["methods"][m] = row
        log(f"[{size}] {m:6s}: {row['trainable_params'] / 1e6:.3f} M trainable, compile {compile_s:.1f} s, median "
            f"{med * 1e3:.1f} ms/step ({med / fmed:.2f}x forward), {(xla or 0) / 1e9:.2f} GFLOP/step (jaxpr model "
            f"{(jx or 0) / 1e9:.2f}), {(row['gflops_per_s'] or 0):.1f} GFLOP/s, XLA memory "
            f"{mem if mem is not None else float('nan'):.2f} GB, peak RSS {row['peak_rss_gb']:.2f} GB "
            f"(load {row['load_avg']:.1f})")
        del trainable, opt_state, compiled, fl
    full = out["methods"].get("fullft", {})
    ratios = {}
    for m in ("lora", "cala"):
        r = out["methods"].get(m, {})
        if "median_s" in r and "median_s" in full:
            ratios[f"{m}_over_fullft_time"] = r["median_s"] / full["median_s"]
        if r.get("xla_flops") and full.get("xla_flops"):
            ratios[f"{m}_over_fullft_flops"] = r["xla_flops"] / full["xla_flops"]
    out["ratios"] = ratios
    if ratios:
        log(f"[{size}] ratios: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    return out


def _jaxpr_flops(setup, weights, grid, trainable, frozen, z, x):
    """``perf.count_flops`` model FLOPs (matmul + conv) of the loss's value-and-grad (no optimiser)."""
    import jax

    from dekag_jax import perf
    from dekag_jax.ka import tka

    loss_fn = tka.make_loss(setup, weights, grid)
    fc = perf.count_flops(lambda t, f, zz, xx, k: jax.value_and_grad(loss_fn, has_aux=True)(t, f, zz, xx, k),
                          trainable, frozen, z, x, jax.random.key(0))
    return float(fc.model)


def main(argv=None) -> dict:
    args = parse(argv)
    from dekag_jax import runtime

    # no persistent compilation cache: a second run must pay (and measure) the compilation again
    runtime.setup(compilation_cache=False)
    import jax

    from configs.tka import get_config

    cfg = get_config("all")
    res = {"machine": {"backend": jax.default_backend(), "devices": jax.device_count(), "cpu_count": os.cpu_count(),
                       "platform": platform.platform(), "jax": jax.__version__},
           "rank": args.rank, "cala_gate": cfg.adapter.cala_gate, "warmup": args.warmup, "sizes": {}}
    print(f"machine: {os.cpu_count()}-core {jax.default_backend()}, load {os.getloadavg()[0]:.1f} "
          f"(1-min average; other jobs count too)", flush=True)
    for size in args.sizes:
        res["sizes"][size] = bench_size(size, args, cfg, log=lambda s: print(s, flush=True))
        if args.json:  # after each size: a cut-short run keeps what it measured
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as f:
                json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
