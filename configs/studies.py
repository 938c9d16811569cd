"""``python -m dekag_jax.train --config configs/studies.py --workdir runs/studies``: the main job plus
the trainings the default leaves out for its 10-minute budget (skeleton: the study variants of
Figs. 7-9, 11 and 12 are added here by their owners as their data functions land).

What it runs today (``arg`` = ""): ``configs/default.py`` with Full-FT among the T-KA methods (the
reference CALA is compared against: "-0.8 dB to Full-FT", Fig. 11; measured last session at about
300 s per subject on this 2-core CPU, so three subjects add about 15 minutes) at the default depth.
``multi``: the same over the 30 subjects with multi-subject MAKD (Fig. 7) on, when ``ka.gka`` has it.
"""
import importlib.util
import os


def get_config(arg: str = ""):
    if arg not in ("", "multi"):
        raise ValueError(f"configs/studies.py: variant {arg!r}; expected '' or 'multi'")
    spec = importlib.util.spec_from_file_location(
        "_dekag_configs_default", os.path.join(os.path.dirname(os.path.abspath(__file__)), "default.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.base_config()
    c.tka.methods = "noka,lora,cala,fullft"
    if arg == "multi":
        c.subjects = "all"
        c.multi_subject = True
    c.lock()
    return c
