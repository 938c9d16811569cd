"""Peak host memory of loading a diffusers UNet with dekag_jax, relative to the weights' size.

Builds a random diffusers ``UNet2DConditionModel`` checkpoint on disk (shapes from a model built on
torch's ``meta`` device, values random float32 written tensor by tensor into safetensors), then in
a fresh subprocess measures

    peak RSS during ``dekag_jax.weights.sd.load_unet(dir)``  minus  RSS before it (after imports)

and prints it next to the size of the weights. Also optionally (``--torch``) diffusers'
``UNet2DConditionModel.from_pretrained`` for reference.

Usage:
    python scripts/measure_load_memory.py                 # mid-size (~1/4 of SD2.1, ~0.9 GB fp32)
    python scripts/measure_load_memory.py --sd21          # SD2.1 UNet (865M params, 3.46 GB fp32)
    python scripts/measure_load_memory.py --dtype bfloat16 --dir /tmp/unet_ckpt --keep

The numbers depend on the machine (glibc's allocator, other processes do not enter RSS); the script
prints the host's load average next to them.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

SD21 = dict(
    sample_size=96, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=[320, 640, 1280, 1280], attention_head_dim=[5, 10, 20, 20],
    cross_attention_dim=1024, use_linear_projection=True, upcast_attention=True,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
)
MID = dict(SD21, block_out_channels=[160, 320, 640, 640], sample_size=64)

_CHILD = r"""
import json, sys, time
def status(key):
    for l in open("/proc/self/status"):
        if l.startswith(key):
            return int(l.split()[1]) * 1024
def reset_peak():
    try:  # Linux >= 4.0: writing 5 resets VmHWM to the current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
mode, path, dtype = sys.argv[1], sys.argv[2], sys.argv[3]
import gc, threading
# Anonymous (heap) and file-backed (mmapped safetensors pages, reclaimable page cache) RSS are
# polled separately: /proc only keeps the peak of their sum (VmHWM).
peaks = {"RssAnon": 0, "RssFile": 0}
stop = threading.Event()
def poll():
    while not stop.is_set():
        for k in peaks:
            peaks[k] = max(peaks[k], status(k))
        time.sleep(0.002)
if mode == "ours":
    import jax, jax.numpy as jnp
    from dekag_jax.weights.sd import load_unet
    jnp.zeros(1).block_until_ready()
    gc.collect()
    base = status("VmRSS"); base_anon = status("RssAnon"); ok = reset_peak()
    th = threading.Thread(target=poll, daemon=True); th.start()
    t = time.time()
    module, params = load_unet(path, dtype=getattr(jnp, dtype))
    jax.block_until_ready(params)
    elapsed = time.time() - t
    nbytes = sum(x.nbytes for x in jax.tree.leaves(params))
else:
    import torch, diffusers
    gc.collect()
    base = status("VmRSS"); base_anon = status("RssAnon"); ok = reset_peak()
    th = threading.Thread(target=poll, daemon=True); th.start()
    t = time.time()
    m = diffusers.UNet2DConditionModel.from_pretrained(path, torch_dtype=getattr(torch, dtype))
    elapsed = time.time() - t
    nbytes = sum(p.numel() * p.element_size() for p in m.parameters())
gc.collect()
stop.set(); th.join()
print(json.dumps(dict(base=base, peak=status("VmHWM"), after=status("VmRSS"), peak_reset=ok,
                      anon_peak=peaks["RssAnon"] - base_anon, anon_after=status("RssAnon") - base_anon,
                      file_peak=peaks["RssFile"], seconds=elapsed, param_bytes=nbytes)))
"""


def build_checkpoint(cfg: dict, out_dir: str, seed: int = 0) -> int:
    """Write config.json + diffusion_pytorch_model.safetensors of a random UNet; return bytes."""
    import numpy as np
    import torch
    import diffusers
    from safetensors.numpy import save_file

    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel(**cfg)
    os.makedirs(out_dir, exist_ok=True)
    unet.save_config(out_dir)
    rng = np.random.default_rng(seed)
    state = {}
    for k, v in unet.state_dict().items():
        state[k] = (rng.standard_normal(tuple(v.shape), dtype=np.float32) * 0.02)
    total = sum(x.nbytes for x in state.values())
    save_file(state, os.path.join(out_dir, "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
    return total


def measure(mode: str, path: str, dtype: str) -> dict:
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", _CHILD, mode, path, dtype], capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(f"{mode} load failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sd21", action="store_true", help="full SD2.1 UNet (3.46 GB fp32) instead of the mid-size one")
    ap.add_argument("--dir", default=None, help="checkpoint directory (reused if it exists)")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoint directory")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--torch", action="store_true", help="also measure diffusers' from_pretrained")
    args = ap.parse_args()

    cfg = SD21 if args.sd21 else MID
    tmp = None
    path = args.dir
    if path is None:
        tmp = tempfile.mkdtemp(prefix="unet_mem_")
        path = tmp
    try:
        weights_file = os.path.join(path, "diffusion_pytorch_model.safetensors")
        if not os.path.isfile(weights_file):
            build_checkpoint(cfg, path)
        file_bytes = os.path.getsize(weights_file)
        gib = 1024 ** 3
        print(f"config: {'SD2.1' if args.sd21 else 'mid-size'} UNet, block_out_channels={cfg['block_out_channels']}")
        print(f"weights file: {file_bytes / gib:.3f} GiB (float32); load dtype {args.dtype}")
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} "
              f"{os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
        modes = ["ours"] + (["torch"] if args.torch else [])
        for mode in modes:
            m = measure(mode, path, args.dtype)
            pb = m["param_bytes"]
            extra = m["peak"] - m["base"]
            print(f"{mode:6s}: params {pb / gib:.3f} GiB; peak anonymous (heap) memory +{m['anon_peak'] / gib:.3f} GiB "
                  f"= {m['anon_peak'] / pb:.2f} x params (after load {m['anon_after'] / pb:.2f} x); "
                  f"peak file-backed RSS (mmapped safetensors, reclaimable) {m['file_peak'] / gib:.3f} GiB; "
                  f"peak total RSS +{extra / gib:.3f} GiB = {extra / pb:.2f} x"
                  f"{'' if m['peak_reset'] else ' (VmHWM not reset: includes imports)'}; {m['seconds']:.1f} s")
    finally:
        if tmp and not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
