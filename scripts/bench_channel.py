"""Link-level throughput benchmark.

(a) complex symbols / second through: 64-QAM quantisation (nearest point) -> correlated OFDM
    channel (eq. 3 factor, one h per transmission) -> AWGN -> MMSE equaliser, for a batch of
    transmissions (default 64 x K=4096), ours (jax.jit) vs the same chain in plain NumPy and in
    PyTorch (CPU), same thread count (CPU affinity limited to --threads cores for all three).
    All three draw fresh channel and noise random numbers on every call and use complex64.
(b) LDPC: runs ``scripts/bench_ldpc.py``'s ``main(argv)`` if it is importable (``--skip-ldpc``
    skips it; ``--ldpc-args "..."`` passes its arguments).

    python scripts/bench_channel.py [--batch 64] [--K 4096] [--threads N] [--skip-torch]
        [--skip-ldpc] [--prng philox4x32,threefry2x32]

Prints absolute Msym/s and ratios. Also "the sweep's path": ``montecarlo.uncoded_row_stats`` (what
``python -m dekag_jax.sweep`` jits per row block: the same ``ofdm.transmit`` under vmap, omega
looked up in the grid, plus random symbols, decisions and error counts), to show the sweep
runs the same fast chain. When JAX sees a GPU (or with ``--accel cpu``, a smoke test of that
section on the CPU): ours on it at ``--accel-batch`` x K, the device's measured copy bandwidth
(``dekag_jax.perf.measure_copy_bandwidth``), the chain's memory-bandwidth bound counting 16 bytes
per complex64 symbol (payload in, received symbols out) and the fraction of that bound reached
(issue 21's goal: >= 25%).
Timings are medians of ``--repeats`` timed loops of ``--iters`` calls each, after warm-up,
interleaved across the implementations (fair under background load).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


GOAL_BOUND_FRACTION = 0.25  # issue 21: the chain at >= 25% of the memory-bandwidth bound


def _args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--K", type=int, default=4096)
    p.add_argument("--snr-db", type=float, default=10.0)
    p.add_argument("--delay-spread-ns", type=float, default=300.0)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--prng", default="philox4x32,threefry2x32",
                   help="comma-separated JAX PRNG implementations for ours (the key type is the "
                        "caller's choice; the first one is compared with NumPy/PyTorch). "
                        "threefry2x32 is JAX's default; philox4x32 (Random123, as in cuRAND) is "
                        "the counter-based generator comparable to NumPy's PCG64 / torch's "
                        "mt19937 and several times faster on CPU")
    p.add_argument("--skip-torch", action="store_true")
    p.add_argument("--accel", choices=["gpu", "cpu"], default="gpu",
                   help="device of the accelerator section ('cpu': smoke test of it without a GPU)")
    p.add_argument("--accel-batch", type=int, default=512, help="transmissions per call on the accelerator")
    p.add_argument("--copy-bytes", type=int, default=1 << 30, help="buffer size of the bandwidth measurement")
    p.add_argument("--skip-cpu", action="store_true", help="skip the CPU comparison (accelerator section only)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--skip-ldpc", action="store_true")
    p.add_argument("--ldpc-args", default="",
                   help="arguments for scripts/bench_ldpc.py main(), e.g. \"--k 972 --n 1944\"")
    return p.parse_args(argv)


def _time_round_robin(fns, iters, repeats):
    """Median seconds/call of each callable; repeats interleaved across callables so that all
    see the same background load (the benchmark machine may be shared)."""
    for fn in fns.values():  # warm-up / compile
        fn()
        fn()
    ts = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(iters):
                fn()
            ts[name].append((time.perf_counter() - t0) / iters)
    return {name: statistics.median(v) for name, v in ts.items()}


def bench_jax(a, device=None, prng="philox4x32"):
    import jax
    import numpy as np
    from dekag_jax.channel import OFDMConfig, qam, transmit

    cfg = OFDMConfig()
    w = a.delay_spread_ns * 1e-9
    dev = device or jax.devices()[0]
    rng = np.random.default_rng(0)
    payload = ((rng.standard_normal((a.batch, a.K)) + 1j * rng.standard_normal((a.batch, a.K)))
               / math.sqrt(2)).astype(np.complex64)
    payload = jax.device_put(payload, dev)

    @jax.jit
    def chain(key, payload, snr_db):
        s = qam.quantize(payload, 64, method="none")
        y, _ = transmit(key, s, snr_db, w, cfg=cfg)
        return y

    key = jax.device_put(jax.random.key(0, impl=prng), dev)
    state = {"i": 0}

    def run():
        state["i"] += 1
        chain(jax.random.fold_in(key, state["i"]), payload, a.snr_db).block_until_ready()

    return run


def bench_sweep_path(a, device=None, rows=None):
    """The sweep's per-row computation (montecarlo.uncoded_row_stats) on ``rows`` x K symbols."""
    import jax
    import jax.numpy as jnp
    from dekag_jax.channel import montecarlo

    dev = device or jax.devices()[0]
    rows = rows or a.batch
    keys = jax.device_put(jax.random.split(jax.random.key(0), rows), dev)
    snr = jax.device_put(jnp.full((rows,), a.snr_db, jnp.float32), dev)
    omega = jax.device_put(jnp.full((rows,), a.delay_spread_ns * 1e-9, jnp.float32), dev)

    def run():
        jax.block_until_ready(montecarlo.uncoded_row_stats(keys, snr, omega, K=a.K))

    return run


def bench_numpy(a):
    import numpy as np
    from dekag_jax.channel.ofdm import channel_factor

    J = 120
    L = channel_factor(J, 30e3, a.delay_spread_ns * 1e-9).astype(np.complex64)
    rng = np.random.default_rng(0)
    payload = ((rng.standard_normal((a.batch, a.K)) + 1j * rng.standard_normal((a.batch, a.K)))
               / math.sqrt(2)).astype(np.complex64)
    norm = np.float32(math.sqrt(42.0))
    p_delta = np.float32(10 ** (-a.snr_db / 10))
    reps = -(-a.K // J)

    def run():
        re = np.clip(np.round((payload.real * norm + 7) * 0.5), 0, 7)
        im = np.clip(np.round((payload.imag * norm + 7) * 0.5), 0, 7)
        s = ((2 * re - 7) + 1j * (2 * im - 7)).astype(np.complex64) / norm
        z = (rng.standard_normal((a.batch, J), np.float32)
             + 1j * rng.standard_normal((a.batch, J), np.float32)) * np.float32(math.sqrt(0.5))
        h = z.astype(np.complex64) @ L.T
        hk = np.tile(h, (1, reps))[:, :a.K]
        n = (rng.standard_normal((a.batch, a.K), np.float32)
             + 1j * rng.standard_normal((a.batch, a.K), np.float32)) * np.sqrt(p_delta / 2)
        y = hk * s + n
        return np.conj(hk) * y / (hk.real ** 2 + hk.imag ** 2 + p_delta)

    return run


def bench_torch(a):
    import numpy as np
    import torch
    from dekag_jax.channel.ofdm import channel_factor

    torch.set_num_threads(a.threads)
    J = 120
    L = torch.from_numpy(channel_factor(J, 30e3, a.delay_spread_ns * 1e-9).astype(np.complex64))
    g = torch.Generator().manual_seed(0)
    payload = torch.randn(a.batch, a.K, dtype=torch.complex64, generator=g)
    norm = math.sqrt(42.0)
    p_delta = 10 ** (-a.snr_db / 10)
    reps = -(-a.K // J)

    @torch.inference_mode()
    def run():
        re = torch.clamp(torch.round((payload.real * norm + 7) * 0.5), 0, 7)
        im = torch.clamp(torch.round((payload.imag * norm + 7) * 0.5), 0, 7)
        s = torch.complex(2 * re - 7, 2 * im - 7) / norm
        z = torch.randn(a.batch, J, dtype=torch.complex64, generator=g)  # CN(0, 1)
        h = z @ L.T
        hk = h.repeat(1, reps)[:, :a.K]
        n = torch.randn(a.batch, a.K, dtype=torch.complex64, generator=g) * math.sqrt(p_delta)
        y = hk * s + n
        return torch.conj(hk) * y / (hk.real ** 2 + hk.imag ** 2 + p_delta)

    return run


def main(argv=None):
    a = _args(sys.argv[1:] if argv is None else argv)
    if a.threads < (os.cpu_count() or 1) and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:a.threads]))
    for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(v, str(a.threads))
    sys.path.insert(0, os.path.dirname(HERE))
    import jax
    from dekag_jax import runtime

    runtime.setup()  # the package's one runtime setup (compilation cache)

    import json

    from dekag_jax import perf

    nsym = a.batch * a.K
    out = {}
    print(f"(a) channel chain: 64-QAM quantise + correlated OFDM (J=120, 30 kHz, "
          f"omega={a.delay_spread_ns:g} ns) + AWGN ({a.snr_db:g} dB) + MMSE; "
          f"{a.batch} x K={a.K} = {nsym} symbols/call, complex64, {a.threads} thread(s), "
          f"jax {jax.__version__}")
    import numpy as np
    try:
        import torch
        tv = torch.__version__
    except ImportError:
        tv = "absent"
    print(f"    numpy {np.__version__}, torch {tv}; devices {jax.devices()}")
    cpu = jax.devices("cpu")[0]
    prngs = [p.strip() for p in a.prng.split(",") if p.strip()]
    res = {}
    if not a.skip_cpu:
        fns = {}
        for p in prngs:
            fns[f"ours (jax.jit, cpu, {p})"] = bench_jax(a, cpu, p)
        fns["numpy"] = bench_numpy(a)
        if not a.skip_torch:
            try:
                import torch  # noqa: F401
                fns["pytorch (cpu)"] = bench_torch(a)
            except ImportError:
                print("  pytorch not installed: skipped")
        try:
            fns["the sweep's path (cpu, threefry)"] = bench_sweep_path(a, cpu)
        except (TypeError, ValueError, AttributeError) as e:  # its API may move; say so, go on
            print(f"  the sweep's path not measurable here ({type(e).__name__}: {e})")
        res = _time_round_robin(fns, a.iters, a.repeats)
        for name, t in res.items():
            print(f"  {name:<36s} {t * 1e3:8.3f} ms/call  {nsym / t / 1e6:9.1f} Msym/s")
        for p in prngs:
            ours = res[f"ours (jax.jit, cpu, {p})"]
            for name, t in res.items():
                if name.startswith(("ours", "the sweep")):
                    continue
                print(f"  ours(cpu, {p}) vs {name:<14s} speed ratio {t / ours:6.2f}x")
        sweep, chain = res.get("the sweep's path (cpu, threefry)"), res.get("ours (jax.jit, cpu, threefry2x32)")
        if sweep and chain:
            print(f"  the sweep's path takes {sweep / chain:.2f}x the chain's time per symbol (same PRNG; it also "
                  "draws the symbols, decides and counts errors)")
        out["cpu_msym_s"] = {name: nsym / t / 1e6 for name, t in res.items()}
    try:
        accel = jax.devices("gpu")[0] if a.accel == "gpu" else cpu
    except RuntimeError:
        accel = None
    if accel is None:
        print("  (no GPU backend in this JAX: no GPU figures)")
    else:
        ab = a.accel_batch
        ns = ab * a.K
        bw = perf.measure_copy_bandwidth(a.copy_bytes, accel)
        bound = 16.0 * ns / bw["bytes_per_s"]     # payload in + received out, complex64 each
        kind = getattr(accel, "device_kind", str(accel))
        print(f"accelerator {kind}: copy bandwidth {bw['bytes_per_s'] / 1e9:.1f} GB/s (read + write, "
              f"{bw['nbytes'] / 2**20:.0f} MiB buffer); chain of {ab} x K={a.K} = {ns} symbols: memory bound "
              f"{bound * 1e3:.3f} ms ({bw['bytes_per_s'] / 16 / 1e9:.2f} Gsym/s)")
        sub = argparse.Namespace(**{**vars(a), "batch": ab})
        afns = {f"ours ({kind}, {p})": bench_jax(sub, accel, p) for p in prngs}
        try:
            afns[f"the sweep's path ({kind}, threefry)"] = bench_sweep_path(sub, accel)
        except (TypeError, ValueError, AttributeError) as e:
            print(f"  the sweep's path not measurable here ({type(e).__name__}: {e})")
        ares = _time_round_robin(afns, a.iters, a.repeats)
        out.update(accel=kind, copy_bytes_per_s=bw["bytes_per_s"], accel_symbols=ns, bound_s=bound)
        for name, t in ares.items():
            frac = bound / t
            print(f"  {name:<44s} {t * 1e3:8.3f} ms/call  {ns / t / 1e9:7.3f} Gsym/s  {frac:6.1%} of the "
                  f"memory bound (goal >= {GOAL_BOUND_FRACTION:.0%}: ratio/goal {frac / GOAL_BOUND_FRACTION:.2f})")
            out[name] = dict(seconds=t, gsym_s=ns / t / 1e9, bound_fraction=frac)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)

    if a.skip_ldpc:
        return res
    sys.path.insert(0, HERE)
    try:
        import bench_ldpc
    except ImportError as e:
        print(f"(b) LDPC: scripts/bench_ldpc.py not importable ({e}); skipped")
        return res
    print("(b) LDPC (scripts/bench_ldpc.py)")
    import shlex
    largs = shlex.split(a.ldpc_args)
    if "--threads" not in largs:  # same thread count as part (a)
        largs += ["--threads", str(a.threads)]
    bench_ldpc.main(largs)
    return res


if __name__ == "__main__":
    main()
