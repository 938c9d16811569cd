#!/usr/bin/env python3
"""The main job's budget on the tiny world's edge model (issue 17, item 4): time DDIM-50 sampling
of 30 latents and one G-KA LoRA step on the current (or any) edge pipeline, so that a retrained
world (v2, ``scripts/pretrain_world_v2.sh``) can be compared with today's on the same machine.

What is timed (each after one untimed call that compiles it; median of ``--repeats``):

* **DDIM-50**: ``text_to_latents`` for 30 latents (one target prompt, as the main job samples one
  subject's ``eg_test`` seeds), 50 DDIM steps, classifier-free guidance 7.5 (``configs/gka.py``
  ``eval``), one batch of 30 (cond + uncond = 60 rows per UNet call).
* **LoRA step**: eq. 9's step exactly as G-KA trains it: ``ka.gka.make_loss`` (metaword spliced
  after BOS through the frozen text encoder, rank-8 alpha-8 LoRA on ``configs/gka.py``
  ``lora.targets``, intercepted) under ``adapt.partition.make_step`` with Adam at ``lora.lr``,
  batch ``lora.batch`` (8) of latents of the pipeline's latent shape. The latents are random
  (the step's cost does not depend on their values).

Prints one JSON line per measurement and a summary; the machine's load average is printed with
them (on the shared 2-core CPU the numbers are only comparable at similar load: compare a
retrained model with this script's run of the old one in the SAME session).

    python scripts/bench_world_budget.py                      # the shipped edge pipeline
    python scripts/bench_world_budget.py --pipeline runs/world_v2/assets/edge_pipeline
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _time(fn, repeats: int) -> tuple[float, list[float]]:
    """(compile + first call seconds, timed calls' seconds); ``fn`` must block until done."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return first, out


def main(argv=None) -> int:
    from dekag_jax.errors import ArgumentParser, UsageError

    ap = ArgumentParser(prog="scripts/bench_world_budget.py", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline", default=None, help="edge pipeline directory (default: the shipped one)")
    ap.add_argument("--n", type=int, default=30, help="latents sampled in one batch")
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls of each (median reported)")
    ap.add_argument("--lora-repeats", type=int, default=10, help="timed LoRA steps")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    a = ap.parse_args(argv)
    for name in ("n", "steps", "repeats", "lora_repeats"):
        if getattr(a, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')}={getattr(a, name)} must be >= 1")
    if a.pipeline is not None and not os.path.isdir(a.pipeline):
        raise UsageError(f"--pipeline {a.pipeline}: not a directory")

    from dekag_jax import runtime
    runtime.setup()
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import importlib.util
    from dekag_jax.adapt import partition
    from dekag_jax.diffusion.generate import text_to_latents
    from dekag_jax.ka import gka
    from dekag_jax.weights.pipeline import load_pipeline
    from dekag_jax.world.models import edge_pipeline_dir
    from dekag_jax.world.subjects import get_subject

    spec = importlib.util.spec_from_file_location("gka_config", os.path.join(REPO, "configs", "gka.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = mod.get_config("makd")
    path = a.pipeline or edge_pipeline_dir()
    pipe = load_pipeline(path)
    subj = get_subject("human_00")
    res = {"pipeline": os.path.relpath(os.path.abspath(path), REPO), "backend": jax.default_backend(),
           "devices": jax.device_count(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
           "unet_params": int(sum(x.size for x in jax.tree_util.tree_leaves(pipe.unet_params))),
           "loadavg_start": _load()}

    # --- DDIM-50 of 30 latents, guidance 7.5
    ss, ch = pipe.unet.config.sample_size, pipe.unet.config.in_channels
    z_T = jax.random.normal(jax.random.key(0), (a.n, ss, ss, ch), jnp.float32)

    def sample():
        z = text_to_latents(pipe, [subj.prompt] * a.n, jax.random.key(1), num_steps=a.steps,
                            guidance_scale=float(cfg.eval.guidance), latents=z_T)
        jax.block_until_ready(z)

    first, times = _time(sample, a.repeats)
    res["ddim"] = {"n": a.n, "steps": a.steps, "guidance": float(cfg.eval.guidance), "first_call_s": round(first, 3),
                   "median_s": round(statistics.median(times), 3), "times_s": [round(t, 3) for t in times],
                   "loadavg": _load()}
    print(json.dumps({"ddim": res["ddim"]}), flush=True)

    # --- one G-KA LoRA step (eq. 9, MAKD's second stage: metaword frozen, LoRA trains)
    adapters, specs = gka.init_lora(pipe, jax.random.key(2), rank=cfg.lora.rank, alpha=cfg.lora.alpha,
                                    targets=cfg.lora.targets)
    dim = pipe.text_encoder.config.hidden_size
    mu = 0.141 * jax.random.normal(jax.random.key(3), (1, cfg.metaword.n_tokens, dim), jnp.float32)
    frozen = {"unet": pipe.unet_params, "text": pipe.text_params, "metaword": mu}
    trainable = {"lora": adapters}
    tx = optax.adam(cfg.lora.lr)
    opt_state = tx.init(trainable)
    step = partition.make_step(gka.make_loss(pipe, specs), tx)
    b = int(cfg.lora.batch)
    k = jax.random.split(jax.random.key(4), 3)
    z0 = jax.random.normal(k[0], (b, ss, ss, ch), jnp.float32)
    sid = jnp.zeros((b,), jnp.int32)
    ids = jnp.asarray(np.asarray(pipe.tokenize([subj.prompt]), np.int32))
    t = jax.random.randint(k[1], (b,), 0, pipe.schedule.num_train_timesteps, dtype=jnp.int32)
    noise = jax.random.normal(k[2], z0.shape, jnp.float32)
    state = {"tr": trainable, "opt": opt_state}

    def lora_step():
        tr, st, loss = step(state["tr"], state["opt"], frozen, z0, sid, ids, t, noise)
        jax.block_until_ready(loss)
        state["tr"], state["opt"] = tr, st

    first, times = _time(lora_step, a.lora_repeats)
    res["lora_step"] = {"batch": b, "rank": int(cfg.lora.rank), "targets": cfg.lora.targets,
                        "adapter_params": int(partition.tree_size(adapters)), "first_call_s": round(first, 3),
                        "median_s": round(statistics.median(times), 4), "times_s": [round(x, 4) for x in times],
                        "loadavg": _load()}
    print(json.dumps({"lora_step": res["lora_step"]}), flush=True)
    res["loadavg_end"] = _load()
    print(f"DDIM-{a.steps} x {a.n} latents: {res['ddim']['median_s']:.2f} s; one LoRA step (batch {b}): "
          f"{res['lora_step']['median_s'] * 1e3:.1f} ms; load {res['loadavg_start']} -> {res['loadavg_end']} "
          f"({res['cpu_count']} CPUs, {res['backend']})", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    from dekag_jax.errors import cli_main
    sys.exit(cli_main(main))
