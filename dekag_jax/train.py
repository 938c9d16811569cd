"""``python -m dekag_jax.train``: DeKA-g Algorithm 1 end to end.

Not built yet: the main job lands once the adaptation layer (LoRA/CALA/metaword), T-KA and
G-KA are in. Until then this entry point says so and exits with status 2; it never pretends
to train.
"""
import sys


def main(argv=None) -> int:
    print(
        "dekag_jax.train: Algorithm 1 (S_CG -> MAKD -> S_EG -> CALA -> evaluation) is not built yet.\n"
        "What exists today: the SD-compatible Flax stack (dekag_jax.models, dekag_jax.diffusion,\n"
        "dekag_jax.weights), the link-level stack (dekag_jax.channel, python -m dekag_jax.sweep) and\n"
        "the tiny world (python -m dekag_jax.world.picture). See README.md.",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
