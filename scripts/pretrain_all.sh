#!/usr/bin/env bash
# Re-create every shipped model of the tiny world (dekag_jax/world/assets/) from seed 0.
# Order: the VAE and the CLIP model (text encoder + semantic judge) first, the DINO judge, then
# the edge UNet in two stages (it needs the VAE and the frozen text encoder). Each script prints progress and
# writes assets/training/<model>.json (steps, wall time, machine load). Afterwards:
#   python -m dekag_jax.world.gates        # the quality-gate values
#   python -m pytest -q tests/test_world_gates.py tests/test_world_diffusers.py
# On the 2-core CPU they were trained on, the VAE and CLIP ran side by side, then DINO beside the UNet.
set -euo pipefail
cd "$(dirname "$0")/.."
SEED="${SEED:-0}"
python3 scripts/pretrain_vae.py --seed "$SEED" &
VAE=$!
python3 scripts/pretrain_clip.py --seed "$SEED"
wait "$VAE"
python3 scripts/pretrain_dino.py --seed "$SEED" &
DINO=$!
python3 scripts/pretrain_unet.py --seed "$SEED"
wait "$DINO"
# Second UNet stage on a fresh pool (what ships): continue from stage 1 with a new cosine schedule.
python3 scripts/pretrain_unet.py --seed "$((SEED + 1))" --lr 3e-4 --init-from dekag_jax/world/assets/edge_pipeline/unet
python3 -m dekag_jax.world.gates | tee dekag_jax/world/assets/training/gates.json
