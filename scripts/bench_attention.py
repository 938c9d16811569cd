"""Attention implementations side by side on this machine's default backend (what "auto" picks).

Times the forward (and optionally forward + backward) of ``dekag_jax.models.layers.attention``
for each implementation at Stable Diffusion's self-attention shapes, interleaved (one repeat of
each in turn) so that load changes hit all alike; prints medians and ratios against the
implementation ``"auto"`` resolves to here.

    python scripts/bench_attention.py                      # SD2.1 at 64x64 latents: L = 4096, 5 x 64
    python scripts/bench_attention.py --tokens 1024 --batch 2 --grad
"""
from __future__ import annotations

import argparse
import statistics
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=4096, help="query = key length (64x64 latents: 4096)")
    ap.add_argument("--heads", type=int, default=5)
    ap.add_argument("--dim-head", type=int, default=64)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--grad", action="store_true", help="time forward + backward instead of forward")
    a = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp
    from dekag_jax import runtime
    from dekag_jax.models.layers import attention, resolve_attention_impl

    runtime.setup()
    dt = jnp.dtype(a.dtype)
    shape = (a.batch, a.tokens, a.heads * a.dim_head)
    q, k, v = (jax.random.normal(jax.random.key(i), shape, dt) for i in range(3))
    impls = ("chunked", "jax", "einsum")
    fns = {}
    for impl in impls:
        if a.grad:
            f = jax.jit(jax.grad(lambda q, k, v, impl=impl: jnp.sum(attention(q, k, v, a.heads, impl=impl)
                                                                       .astype(jnp.float32) ** 2), argnums=(0, 1, 2)))
        else:
            f = jax.jit(lambda q, k, v, impl=impl: attention(q, k, v, a.heads, impl=impl))
        jax.block_until_ready(f(q, k, v))  # compile
        fns[impl] = f
    times = {impl: [] for impl in impls}
    for _ in range(a.repeats):
        for impl in impls:
            t = time.perf_counter()
            jax.block_until_ready(fns[impl](q, k, v))
            times[impl].append(time.perf_counter() - t)
    auto = resolve_attention_impl("auto")
    med = {i: statistics.median(t) for i, t in times.items()}
    what = "forward + backward" if a.grad else "forward"
    print(f"attention {what}, backend {jax.default_backend()} ({jax.devices()[0].device_kind}), "
          f"[B={a.batch}, L={a.tokens}, {a.heads} heads x {a.dim_head}] {a.dtype}, median of {a.repeats}; "
          f'"auto" -> {auto}')
    for impl in impls:
        print(f"  {impl:8s} {med[impl] * 1e3:9.1f} ms   ratio to {auto}: {med[impl] / med[auto]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
