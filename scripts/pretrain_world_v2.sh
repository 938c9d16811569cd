#!/usr/bin/env bash
# Tiny world v2 (issue 17): retrain every model of the tiny world on world version 2 (the extended
# prompts of the paper's Fig. 6: "... next to a red ball", "... holding a yellow balloon") into a
# SEPARATE asset root, on a lent GPU, then measure its quality gates. The shipped v1 assets
# (dekag_jax/world/assets/) are not touched; they are replaced by hand only once the gates pass.
#
#   bash scripts/pretrain_world_v2.sh --plan              # print the stages and budgets, run nothing
#   bash scripts/pretrain_world_v2.sh --smoke [--dest D]  # CPU dry run: a few steps of every stage
#   bash scripts/pretrain_world_v2.sh --part 1            # on the GPU: VAE, CLIP, DINO, UNet stage 1
#   bash scripts/pretrain_world_v2.sh --part 2            # on the GPU: UNet stage 2, JSCC (MT, AT), gates
#
# On a lent H200 (device budget 15 min per session, one command at most 10 min): TWO calls, the
# second right after the first while the machine is warm (a fresh machine costs 1-2 min to start):
#   bash scripts/gpu_wheels.sh                            # here, once: ml_collections etc. -> .whl/
#   run(command="bash scripts/pretrain_world_v2.sh --part 1", carry=[".whl"], timeout_s=480)
#   run(command="bash scripts/pretrain_world_v2.sh --part 2", carry=[".whl"], timeout_s=300)
# Each call leaves in $OUT: world_v2_assets.tgz (the asset root: weights, training logs), logs.tgz
# (every stage's output) and summary.txt. If the machine went back between the calls, unpack part
# 1's world_v2_assets.tgz here into runs/world_v2/ (`mkdir -p runs/world_v2 && tar -xzf
# <files_at>/world_v2_assets.tgz -C runs/world_v2`) and add "runs/world_v2" to the second call's
# carry: finished stages are skipped, so part 2 resumes where part 1 ended.
#
# Sizing (issue 17: the UNet pretraining step runs about 36 steps/s at batch 64 on the H200, 1.1 on
# the 2-core CPU). Only the UNet's rate is measured; the others are guesses, so every stage also
# has --max-train-s (stop, save and log "stopped_early") and a hard timeout, which bound each part's
# wall time whatever the real rates are: part 1 <= 440 s, part 2 <= 260 s, so about 12 min of
# commands plus one machine start fits the 15 min.
#   part 1: VAE (6000 steps, batch 32; today 1200 x 16)  ||  CLIP (4000 x 256; today 600 x 96)
#           DINO (3000 x 64; today 1200 x 24)            ||  UNet stage 1 (5000 x 64, pool 30000)
#   part 2: UNet stage 2 (3500 x 64, lr 3e-4, fresh pool) || JSCC(MT) || JSCC(AT) (2100 steps each)
#           || RC-JSCC || VJ-MAE (1000 steps each; today 170 and 320), every codec on the new VAE,
#           then python -m dekag_jax.world.gates --assets <root>
# (--smoke runs one codec, the JSCC smoke variant: the same script trains all four.)
# UNet total 8500 steps at batch 64 (today 4200); the architectures are today's, so the main job's
# budget (scripts/bench_world_budget.py) does not change. Every stage is seeded (SEED, default 0)
# and resumable at stage granularity: a stage whose training log <root>/training/<name>.json exists
# is skipped (the JSCC stages also resume inside from their orbax checkpoints). Every log records
# the machine (platform, JAX backend, device kind), wall time, load, steps done and whether the
# budget stopped it early.
#
# Environment: SEED; DEKAG_RENDER_WORKERS (processes rendering the image pools; default nproc - 2
# on the GPU machine, 1 for --smoke); PYTHON.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

MODE=gpu
PART=all
DEST=""
for arg in "$@"; do
  case "$arg" in
    --smoke) MODE=smoke ;;
    --plan) MODE=plan ;;
    --part=*) PART=${arg#--part=} ;;
    --dest=*) DEST=${arg#--dest=} ;;
    -h|--help) sed -n 2,45p "$0"; exit 0 ;;
    *) if [ "${PREV:-}" = "--part" ]; then PART=$arg; elif [ "${PREV:-}" = "--dest" ]; then DEST=$arg;
       elif [ "$arg" != "--part" ] && [ "$arg" != "--dest" ]; then
         echo "pretrain_world_v2.sh: unknown argument $arg (expected --plan, --smoke, --part 1|2|all, --dest DIR)"; exit 2
       fi ;;
  esac
  PREV=$arg
done
case "$PART" in 1|2|all) ;; *) echo "pretrain_world_v2.sh: --part must be 1, 2 or all, got '$PART'"; exit 2 ;; esac

PY=${PYTHON:-python3}
SEED=${SEED:-0}
if [ -z "$DEST" ]; then
  if [ "$MODE" = smoke ]; then DEST=$(mktemp -d)/world_v2; else DEST=$REPO/runs/world_v2; fi
fi
if [ "$MODE" != plan ]; then   # --plan creates nothing
  mkdir -p "$DEST" && DEST=$(cd "$DEST" && pwd) || { echo "pretrain_world_v2.sh: cannot create --dest $DEST"; exit 2; }
fi
ROOT=$DEST/assets
LOGS=$DEST/logs
[ "$MODE" = plan ] || mkdir -p "$ROOT/training" "$LOGS" "$DEST/work"
export DEKAG_WORLD_ASSETS=$ROOT
export PYTHONUNBUFFERED=1
V="--world-version 2"

# Stage sizes: "steps batch pool max_train_s timeout_s" per stage and mode.
if [ "$MODE" = smoke ]; then
  export DEKAG_RENDER_WORKERS=${DEKAG_RENDER_WORKERS:-1}
  VAE="--steps 2 --batch 4 --pool 8";           VAE_T=600
  CLIP="--steps 2 --batch 8 --pool 16";         CLIP_T=600
  DINO="--steps 2 --batch 4 --pool 8";          DINO_T=600
  UNET1="--steps 2 --batch 4 --pool 16";        UNET1_T=600
  UNET2="--steps 2 --batch 4 --pool 16";        UNET2_T=600
  JSCC_MT=(--config configs/jscc_pretrain.py:smoke --config.steps=2); JSCC_T=600
  JSCC_AT=(); JSCC_RC=(); JSCC_VJ=()
  GATES="--n-per-subject 1 --steps 2 --n-psnr 4"; GATES_T=600
else
  N=$(nproc 2>/dev/null || echo 4)
  export DEKAG_RENDER_WORKERS=${DEKAG_RENDER_WORKERS:-$(( N > 3 ? N - 2 : 1 ))}
  export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.15}  # up to five jobs share the GPU
  VAE="--steps 6000 --batch 32 --pool 8000 --max-train-s 150";            VAE_T=210
  CLIP="--steps 4000 --batch 256 --pool 6000 --max-train-s 150";          CLIP_T=210
  DINO="--steps 3000 --batch 64 --pool 4000 --max-train-s 120";           DINO_T=200
  UNET1="--steps 5000 --batch 64 --pool 30000 --max-train-s 160";         UNET1_T=230
  UNET2="--steps 3500 --batch 64 --pool 30000 --max-train-s 100";         UNET2_T=160
  JSCC_MT=(--config configs/jscc_pretrain.py:mt --config.steps=2100 --config.max_wall_s=60)
  JSCC_AT=(--config configs/jscc_pretrain.py:at --config.steps=2100 --config.max_wall_s=60); JSCC_T=150
  JSCC_RC=(--config configs/jscc_pretrain.py:rc --config.steps=1000 --config.max_wall_s=60)
  JSCC_VJ=(--config configs/jscc_pretrain.py:vjmae --config.steps=1000 --config.max_wall_s=60)
  GATES=""; GATES_T=100
fi

stage() {  # stage NAME MARKER TIMEOUT_S CMD...: skip when MARKER exists, else run under a timeout, log
  local name=$1 marker=$2 limit=$3
  shift 3
  if [ "$MODE" = plan ]; then
    printf '%-8s timeout %4ss  %s\n' "$name" "$limit" "$*"
    return 0
  fi
  if [ -f "$marker" ]; then
    echo "[world_v2] $name: done earlier ($marker), skipped"
    return 0
  fi
  echo "[world_v2] $name: start $(date -u +%T) (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout --signal=TERM --kill-after=10 "$limit" "$@" >"$LOGS/$name.log" 2>&1
  local rc=$?
  echo "[world_v2] $name: exit $rc after $((SECONDS - t0)) s (log: $LOGS/$name.log)"
  if [ $rc -ne 0 ]; then tail -n 20 "$LOGS/$name.log"; return $rc; fi
  [ -f "$marker" ] || { echo "[world_v2] $name: finished without writing $marker"; return 1; }
}

together() {  # together "STAGE ARGS" ...: run stages side by side (sequentially for --plan); fail if any fails
  local pids=() rc=0
  for s in "$@"; do
    if [ "$MODE" = plan ]; then eval "stage $s"; else eval "stage $s" & pids+=($!); fi
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  return $rc
}

if [ "$MODE" != plan ] && [ "$MODE" != smoke ] && ls .whl/*.whl >/dev/null 2>&1; then   # the GPU machine's missing wheels
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site:$REPO${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
fi

T=$ROOT/training
EP=$ROOT/edge_pipeline
echo "[world_v2] mode=$MODE part=$PART seed=$SEED root=$ROOT render_workers=${DEKAG_RENDER_WORKERS} $(date -u +%FT%TZ)"
FAIL=0
if [ "$PART" = 1 ] || [ "$PART" = all ]; then
  [ "$MODE" = plan ] && echo "part 1 (sequential groups; stages in a group run side by side):"
  together "vae $T/vae.json $VAE_T $PY scripts/pretrain_vae.py --seed $SEED $V $VAE" \
           "clip $T/clip.json $CLIP_T $PY scripts/pretrain_clip.py --seed $SEED $V $CLIP" || FAIL=1
  [ $FAIL = 0 ] && { together "dino $T/dino.json $DINO_T $PY scripts/pretrain_dino.py --seed $SEED $V $DINO" \
           "unet1 $T/unet.json $UNET1_T $PY scripts/pretrain_unet.py --seed $SEED $V $UNET1" || FAIL=1; }
fi
if { [ "$PART" = 2 ] || [ "$PART" = all ]; } && [ $FAIL = 0 ]; then
  [ "$MODE" = plan ] && echo "part 2:"
  JA=""
  JR=""; JV=""
  if [ ${#JSCC_AT[@]} -gt 0 ]; then
    JA="jscc_at $T/jscc_at.json $JSCC_T $PY scripts/pretrain_jscc.py ${JSCC_AT[*]} --workdir $DEST/work/jscc_at --ship"
    JR="rc_jscc $T/rc_jscc.json $JSCC_T $PY scripts/pretrain_jscc.py ${JSCC_RC[*]} --workdir $DEST/work/rc_jscc --ship"
    JV="vj_mae $T/vj_mae.json $JSCC_T $PY scripts/pretrain_jscc.py ${JSCC_VJ[*]} --workdir $DEST/work/vj_mae --ship"
  fi
  if [ "$MODE" = smoke ]; then JM_MARK=$DEST/work/jscc_smoke/jscc_smoke.json; JM_WORK=$DEST/work/jscc_smoke
  else JM_MARK=$T/jscc_mt.json; JM_WORK=$DEST/work/jscc_mt; fi
  together "unet2 $T/unet_v2_stage2.json $UNET2_T $PY scripts/pretrain_unet.py --seed $((SEED + 1)) --lr 3e-4 --name unet_v2_stage2 --init-from $EP/unet $V $UNET2" \
           "jscc_mt $JM_MARK $JSCC_T $PY scripts/pretrain_jscc.py ${JSCC_MT[*]} --workdir $JM_WORK --ship" \
           ${JA:+"$JA"} ${JR:+"$JR"} ${JV:+"$JV"} || FAIL=1
  if [ $FAIL = 0 ]; then
    if [ "$MODE" = plan ]; then
      stage gates "$T/gates.json" "$GATES_T" $PY -m dekag_jax.world.gates --assets "$ROOT" $GATES
    elif [ -f "$T/gates.json" ]; then
      echo "[world_v2] gates: done earlier ($T/gates.json), skipped"
    else
      echo "[world_v2] gates: start $(date -u +%T)"
      timeout --signal=TERM --kill-after=10 "$GATES_T" $PY -m dekag_jax.world.gates --assets "$ROOT" $GATES \
        >"$LOGS/gates.json.tmp" 2>"$LOGS/gates.log" && mv "$LOGS/gates.json.tmp" "$T/gates.json" \
        || { echo "[world_v2] gates failed:"; tail -n 20 "$LOGS/gates.log"; FAIL=1; }
      [ -f "$T/gates.json" ] && cat "$T/gates.json"
    fi
  fi
fi
[ "$MODE" = plan ] && exit 0

# What a lent machine sends back ($OUT: at most 8 files): the asset root (weights + logs), the stage
# logs and a one-screen summary of the training logs.
SUMMARY=$DEST/summary.txt
$PY - "$ROOT" >"$SUMMARY" 2>&1 <<'EOF'
import glob, json, os, sys
root = sys.argv[1]
for p in sorted(glob.glob(os.path.join(root, "training", "*.json"))):
    try:
        d = json.load(open(p))
    except Exception as e:  # noqa: BLE001 - a half-written file is reported, not fatal
        print(f"{os.path.basename(p)}: unreadable ({e})"); continue
    if "model" in d:
        m = d.get("machine", {})
        print(f"{d['model']}: {d.get('steps_done')}/{d.get('steps')} steps, {d.get('wall_time_s')} s wall, "
              f"train {d.get('train_loop_s')} s, stopped_early={d.get('stopped_early')}, "
              f"{m.get('jax_backend')} {m.get('device_kind')}, final {d.get('final_metrics')}"
              + (f", held-out PSNR {d['heldout_psnr_db']}" if "heldout_psnr_db" in d else ""))
    else:
        print(f"{os.path.basename(p)}: {json.dumps(d)[:600]}")
EOF
cat "$SUMMARY"
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
  tar -czf "$OUT/world_v2_assets.tgz" -C "$DEST" assets
  tar -czf "$OUT/logs.tgz" -C "$DEST" logs
  cp "$SUMMARY" "$OUT/summary.txt"
  ls -la "$OUT"
fi
echo "[world_v2] finished part $PART with status $FAIL; root $ROOT"
exit $FAIL
