#!/usr/bin/env bash
# Issue 21's GPU measurements in ONE call of the lent H200 machine (about 8 minutes; --quick
# about 4), or a smoke test of the same script on a CPU (--cpu-smoke, tiny sizes, minutes).
#
# Prepared without a GPU: a session that is lent one runs, from the repository root,
#   bash scripts/gpu_wheels.sh          # here: diffusers, ml_collections, sionna wheels -> .whl/
#   run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=560)
# and reads $OUT/summary.txt (printed last) and the logs. What it measures, each step under its own
# timeout so that a slow step cannot take the others' results with it (cheap steps first):
#   1. env.log      the card (nvidia-smi), versions of jax/jaxlib/torch/diffusers/sionna
#   2. channel.*    scripts/bench_channel.py: measured copy bandwidth, the chain (64-QAM + OFDM +
#                   AWGN + MMSE) at 512 x 4096 symbols and the sweep's path, % of the memory bound
#   3. ldpc.*       scripts/bench_ldpc.py: 5G NR k=972 n=1944 min-sum flooding 20 it., 32768
#                   codewords, ours vs Sionna 2.2 on the same GPU (Gbit/s, ratio)
#   4. unet.*       scripts/bench_unet.py --config sd21: bf16, batch 8, 64x64 latents, 77 tokens,
#                   ours (attention "auto" = jax.nn.dot_product_attention) vs diffusers (SDPA):
#                   forward and eq. 9's LoRA step (rank 8, default MAKD targets; diffusers + PEFT,
#                   which the machine has), measured bf16 matmul peak, model FLOPs from the jaxpr
#                   count, MFU. --quick: forward only.
#   5. unet_chunked.*  (not with --quick) the same forward with attention "chunked", ours only.
# Everything lands in $OUT (the device tool returns at most 8 files: env.log, channel.log,
# ldpc.log, unet.log, unet_chunked.log, and the JSON results merged into summary.json, and
# summary.txt). Without $OUT (e.g. --cpu-smoke here) it writes to runs/gpu_check/.
# Installs nothing from the network; the wheels in .whl/ go to /tmp/site (the machine's own
# jax, torch, flax, transformers are used as they are).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

MODE=full
for arg in "$@"; do
  case "$arg" in
    --quick) MODE=quick ;;
    --cpu-smoke) MODE=smoke ;;
    -h|--help) sed -n 2,26p "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $arg (expected --quick or --cpu-smoke)"; exit 2 ;;
  esac
done

OUT=${OUT:-$REPO/runs/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export DEKAG_JAX_CACHE_DIR=${DEKAG_JAX_CACHE_DIR:-/tmp/dekag_jax_cache}
# JAX and torch share the card in the UNet step: JAX must not preallocate 75% of it.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.5}

if [ "$MODE" != smoke ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site:$REPO${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
fi

step() {  # step NAME TIMEOUT_S CMD...: run, log to $OUT/NAME.log, never abort the script
  local name=$1 limit=$2
  shift 2
  echo "=== $name ($(date -u +%T), limit ${limit}s): $*" | tee "$OUT/$name.log"
  local t0=$SECONDS
  timeout --signal=TERM --kill-after=10 "$limit" "$@" 2>&1 | grep -v "^WARNING: All log messages" | tee -a "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT/$name.log"
}

{
  echo "mode=$MODE date=$(date -u +%FT%TZ) host=$(hostname)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
  $PY - <<'EOF'
import importlib
for m in ("jax", "jaxlib", "flax", "torch", "diffusers", "transformers", "sionna", "ml_collections", "numpy"):
    try:
        print(f"{m} {importlib.import_module(m).__version__}")
    except Exception as e:  # noqa: BLE001 - report and go on
        print(f"{m} not importable: {type(e).__name__}: {e}")
import jax
print("jax devices:", jax.devices())
EOF
} 2>&1 | tee "$OUT/env.log"

if [ "$MODE" = smoke ]; then
  step channel 240 $PY scripts/bench_channel.py --skip-cpu --skip-ldpc --accel cpu --accel-batch 8 --K 1024 \
    --copy-bytes 33554432 --iters 2 --repeats 2 --json "$OUT/channel.json"
  step ldpc 300 $PY scripts/bench_ldpc.py --gpu-only --accel cpu --gpu-batch 32 --sionna-gpu-batch 8 --reps 1 \
    --json "$OUT/ldpc.json"
  step unet 400 $PY scripts/bench_unet.py --config tiny --latent 16 --tokens 8 --device cpu --dtype bfloat16 \
    --batch 2 --iters 1 --peak-n 256 --lora 4 --json "$OUT/unet.json"
  step unet_chunked 200 $PY scripts/bench_unet.py --config tiny --latent 16 --tokens 8 --device cpu \
    --dtype bfloat16 --batch 2 --iters 1 --peak-n 256 --attention chunked --no-torch --no-train \
    --json "$OUT/unet_chunked.json"
else
  step channel 60 $PY scripts/bench_channel.py --skip-cpu --skip-ldpc --accel gpu --accel-batch 512 --K 4096 \
    --json "$OUT/channel.json"
  step ldpc 100 $PY scripts/bench_ldpc.py --gpu-only --gpu-batch 32768 --sionna-gpu-batch 32768 --reps 3 \
    --json "$OUT/ldpc.json"
  if [ "$MODE" = quick ]; then
    step unet 200 $PY scripts/bench_unet.py --config sd21 --device gpu --no-train --iters 10 --json "$OUT/unet.json"
  else
    step unet 270 $PY scripts/bench_unet.py --config sd21 --device gpu --iters 10 --lora 8 --json "$OUT/unet.json"
    step unet_chunked 100 $PY scripts/bench_unet.py --config sd21 --device gpu --iters 10 --attention chunked \
      --no-torch --no-train --json "$OUT/unet_chunked.json"
  fi
fi

# One summary of the goals (the JSONs are merged so that at most 8 files come back).
$PY - "$OUT" <<'EOF' 2>&1 | tee "$OUT/summary.txt"
import json, os, sys
out = sys.argv[1]
merged = {}
for name in ("channel", "ldpc", "unet", "unet_chunked"):
    p = os.path.join(out, f"{name}.json")
    if os.path.exists(p):
        with open(p) as f:
            merged[name] = json.load(f)
        os.remove(p)
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(merged, f, indent=1)
rows = []
u = merged.get("unet", {})
if u:
    dev = u.get("device", "?")
    for what, goal in (("forward", 0.6), ("train", 0.7)):
        if f"{what}_ours_s" in u:
            r = u.get(f"{what}_ratio")
            label = f"LoRA r={u['lora']} train step" if what == "train" and u.get("lora") else what
            rows.append((f"UNet {u['config']} {label}, {u['dtype']}, batch {u['batch']}, attention {u['attention']}",
                         f"{u[f'{what}_ours_s'] * 1e3:.1f} ms, MFU {u[f'{what}_mfu_ours']:.1%}",
                         f"{u[f'{what}_peer_s'] * 1e3:.1f} ms (MFU {u[f'{what}_mfu_peer']:.1%})" if r else "-",
                         f"{r:.3f} (goal <= {goal})" if r else "-"))
    if "train_mfu_ours" in u:
        rows.append(("UNet train-step MFU", f"{u['train_mfu_ours']:.1%} of {u['peak_flops_per_s'] / 1e12:.3g} "
                     "TFLOP/s measured", "-", f"goal >= 30%"))
uc = merged.get("unet_chunked", {})
if "forward_ours_s" in uc:
    rows.append(("UNet forward, attention chunked", f"{uc['forward_ours_s'] * 1e3:.1f} ms", "-", "-"))
l = merged.get("ldpc", {})
g = l.get("gpu ours minsum flooding")
if g:
    s = l.get("gpu sionna minsum flooding")
    rows.append(("LDPC k=972 n=1944 min-sum flooding 20 it.", f"{g['mbps'] / 1e3:.3f} Gbit/s (goal >= 1)",
                 f"Sionna {s['mbps'] / 1e3:.4f} Gbit/s" if s else "-",
                 f"{l['gpu_ratio_ours_over_sionna']:.1f}x (goal >= 20x)" if s else "-"))
c = merged.get("channel", {})
for k, v in c.items():
    if isinstance(v, dict) and "bound_fraction" in v:
        rows.append((f"channel chain {k}", f"{v['gsym_s']:.3f} Gsym/s",
                     f"copy {c['copy_bytes_per_s'] / 1e9:.0f} GB/s", f"{v['bound_fraction']:.1%} of bound (goal >= 25%)"))
print("| what | ours | peer / ceiling | ratio (goal) |")
print("|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
if not rows:
    print("no results: see the step logs")
EOF
