"""G-KA studies of the paper's Figs. 7-9 on the tiny world (``dekag_jax/ka/gka_studies.py``), written
as the contract's ``fig7`` / ``fig8`` / ``fig9`` pieces of ``metrics.json``:

    python scripts/gka_studies.py --config configs/gka.py:multi --out runs/gka_studies.json
    python scripts/gka_studies.py --config configs/gka.py --study fig8 --out runs/fig8.json \
        --config.studies.metaword_epochs=0,5,15,30 --config.studies.n_images=8

``--study`` is a comma list of fig7, fig8, fig9 (default all). Settings: the config's ``metaword``,
``lora`` and ``eval.guidance`` fields and its ``studies`` section (subject, depths, ranks, bits,
images and DDIM steps per point). The JSON also holds ``info`` (settings, seconds, and for Fig. 8
the depths the test images themselves would pick, for comparison with the automatic pick).
"""
import json
import os
import sys

from dekag_jax.errors import UsageError, cli_main, parse_config_flags


def main(argv=None) -> int:
    from dekag_jax.ka import gka_studies as GS

    def define(flags, fv):
        flags.DEFINE_string("out", None, "output JSON file", flag_values=fv)
        flags.DEFINE_string("study", ",".join(GS.STUDIES), "comma list of fig7, fig8, fig9", flag_values=fv)

    argv = list(sys.argv[1:] if argv is None else argv)
    fv, config, _ = parse_config_flags(argv, prog="gka_studies", what="G-KA config (configs/gka.py[:variant])",
                                       example="configs/gka.py:multi", define=define)
    if not fv.out:
        raise UsageError("--out is required (the output JSON file)")
    studies = [s for s in fv.study.split(",") if s]
    bad = [s for s in studies if s not in GS.STUDIES]
    if bad or not studies:
        raise UsageError(f"--study: unknown {bad}; choose from {list(GS.STUDIES)}")
    d = os.path.dirname(os.path.abspath(fv.out))
    from dekag_jax.errors import prepare_output_dir

    prepare_output_dir(d, "folder of --out")
    from dekag_jax import runtime

    runtime.setup()
    res = GS.run_studies(config, studies, log=lambda m: print(m, flush=True))
    res["config"] = json.loads(config.to_json())
    with open(fv.out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"wrote {fv.out} ({res['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
