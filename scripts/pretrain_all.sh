#!/usr/bin/env bash
# Re-create every shipped model of the tiny world (dekag_jax/world/assets/) from seed 0.
# Order: the VAE beside the CLIP model (text encoder + semantic judge), the DINO judge beside the first
# UNet stage (the UNet needs the VAE and the frozen text encoder), then two more UNet stages. Each script
# prints progress and writes assets/training/<model>.json (steps, wall time, machine load). Weights are
# stored in float16 (scripts/pretrain_common.SHIP_DTYPE). Afterwards:
#   python -m dekag_jax.world.gates        # the quality-gate values
#   python -m pytest -q tests/test_world_gates.py tests/test_world_diffusers.py
# The shipped models were trained on this 2-core CPU; which ran side by side is in the README.
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
# Second and third UNet stages, each on a fresh pool with a new cosine schedule, continuing from the
# previous stage (the third is what ships). Each stage is one run of under 30 minutes here.
python3 scripts/pretrain_unet.py --seed "$((SEED + 1))" --lr 3e-4 --init-from dekag_jax/world/assets/edge_pipeline/unet
python3 scripts/pretrain_unet.py --seed "$((SEED + 2))" --lr 2e-4 --init-from dekag_jax/world/assets/edge_pipeline/unet
# The JSCC codecs decode through the shipped VAE, so they come after it: JSCC(MT) at the paper's
# pretraining condition (10 dB, 300 ns, all six rates), JSCC(AT) under the edge-user grid.
python3 scripts/pretrain_jscc.py --config configs/jscc_pretrain.py:mt --ship
python3 scripts/pretrain_jscc.py --config configs/jscc_pretrain.py:at --ship
python3 -m dekag_jax.world.gates | tee dekag_jax/world/assets/training/gates.json
