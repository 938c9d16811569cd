"""``python -m dekag_jax.train``: DeKA-g Algorithm 1 end to end.

Not built yet: the adapters (``dekag_jax.adapt``), the JSCC codec and first versions of G-KA
(``python -m dekag_jax.ka.gka``) and T-KA (``python -m dekag_jax.ka.tka``) exist, but the command
that chains them per subject, with resume, report and figures, does not. Until then this entry
point says so and exits with status 2; it never pretends to train.
"""
import sys


def main(argv=None) -> int:
    print(
        "dekag_jax.train: Algorithm 1 (S_CG -> MAKD -> S_EG -> CALA -> evaluation) is not built yet.\n"
        "Its stages run on their own today: G-KA (python -m dekag_jax.ka.gka --config configs/gka.py\n"
        "--workdir DIR) and T-KA (python -m dekag_jax.ka.tka --config configs/tka.py:all --workdir DIR);\n"
        "the link level (python -m dekag_jax.sweep) and the tiny world (python -m dekag_jax.world.picture).\n"
        "See README.md.",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
