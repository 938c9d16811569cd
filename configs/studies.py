"""``python -m dekag_jax.train --config configs/studies.py --workdir runs/studies``: the main job plus
the trainings the default leaves out for its 10-minute budget.

What it runs (``arg`` = ""): ``configs/default.py`` with Full-FT among the T-KA methods (the
reference CALA is compared against: "-0.8 dB to Full-FT", Fig. 11; measured last session at about
300 s per subject on this 2-core CPU, so three subjects add about 15 minutes) at the default depth,
and the optional study stages of ``dekag_jax.train`` (``studies.*``, off in the default and smoke
configs), each writing its piece of metrics.json for the report's figure:

* ``fig8``: the G-KA training-depth study (``ka.gka_studies.depth_study``) on ``gka.studies.subject``
  with ``gka.studies``' checkpoint depths, held-out count, image count and DDIM steps;
* ``fig9``: MAKD's LoRA rank against its precision (``ka.gka_studies.rank_bits_study``), same subject;
* ``fig11``: T-KA rank budget (``ka.tka_studies.fig11_data``: LoRA and CALA at ``fig11.ranks`` and
  Full-FT, ``fig11.epochs`` each) on the first subject's S_EG, PSNR over the ``fig11`` grid;
* ``fig12``: PSNR and FID/KID of the received images against bpp per SNR
  (``ka.tka_studies.fig12_data``) of ``fig12.schemes``, every subject (the first one's is Fig. 12).

``multi``: the same over the 30 subjects with multi-subject MAKD (Fig. 7) on.
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
    for fig in ("fig8", "fig9", "fig11", "fig12"):
        c.studies[fig] = True
    if arg == "multi":
        c.subjects = "all"
        c.multi_subject = True
    c.lock()
    return c
