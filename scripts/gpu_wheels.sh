#!/usr/bin/env bash
# Fetch, on THIS machine (it has pip and a registry), the wheels that the lent H200 machine lacks
# (it has jax 0.11, flax, optax, orbax, chex, torch, transformers, safetensors; not diffusers,
# ml_collections or sionna) into .whl/ (git-ignored), for scripts/gpu_check.sh to install there.
# Pure-Python wheels only, pinned to the versions this project's CI uses.
#
#   bash scripts/gpu_wheels.sh          # then: run(command="bash scripts/gpu_check.sh", carry=[".whl"])
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
PKGS=(
  diffusers==0.42.1          # the UNet peer (bench_unet.py)
  ml_collections==1.1.0      # our configs
  sionna-no-rt==2.2.0        # the LDPC peer (bench_ldpc.py)
  importlib_metadata==10.2.0 # diffusers needs it; absent there
  importlib_resources==7.1.0 # sionna needs it; absent there
)
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "${PKGS[@]}"
ls -la .whl
du -sh .whl
