"""G-KA table (MAKD, TI, DB, LB, UB) on the tiny world: the same as ``python -m dekag_jax.ka.gka``.

    python scripts/run_gka.py --config configs/gka.py --workdir runs/gka            # 3 subjects
    python scripts/run_gka.py --config configs/gka.py:smoke --workdir runs/gka_smoke
    python scripts/run_gka.py --config configs/gka.py --workdir runs/gka --config.lora.epochs=100

Writes ``metrics.json`` (per subject and method: DINO, CLIP and their sum with std, eq. 6 losses on a
fixed batch, seconds per stage) and, per subject, MAKD's ``learned_embeds.safetensors`` and
``pytorch_lora_weights.safetensors`` (diffusers' formats).
"""
import sys

from dekag_jax.errors import cli_main
from dekag_jax.ka.gka import main

if __name__ == "__main__":
    sys.exit(cli_main(main))
