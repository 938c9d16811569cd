"""``python -m dekag_jax.train --config configs/smoke.py``: the main job's whole path (every stage of
Algorithm 1, the artefacts, metrics.json and the report) in under two minutes on a 2-core CPU: a
wiring check used by the tests (tests/test_train.py runs it once per test session), not a result.

One subject (animal_00), 2 epochs per G-KA stage, 5 DDIM steps, 4 eg_test images; S_EG of 4 + 4
latents, 2 T-KA epochs of batch 4 (No-KA, LoRA, CALA), a 2 x 2 x 2 condition grid, 2 received
conditions per image, 2 images for Fig. 4 and Fig. 13 (SNR 0 and 20 dB at 3000 ns). Checkpoints
after every epoch (the resume test kills a run after the first one).

Variants (``arg``): ``""``; ``gka``: MAKD and UB only, 2 images, S_EG of 4 + 2 latents, T-KA No-KA,
no FID, Fig. 4 baselines or Fig. 13: the smaller config of the kill-and-resume and NaN tests.
"""
import importlib.util
import os


def get_config(arg: str = ""):
    if arg not in ("", "gka"):
        raise ValueError(f"configs/smoke.py: variant {arg!r}; expected '' or 'gka'")
    spec = importlib.util.spec_from_file_location(
        "_dekag_configs_default", os.path.join(os.path.dirname(os.path.abspath(__file__)), "default.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.base_config()
    c.subjects = "animal_00"
    c.checkpoint_every_epochs = 1
    c.gka.metaword.epochs = 2
    c.gka.lora.epochs = 2
    c.gka.db.epochs = 2
    c.gka.eval.n_images = 4
    c.gka.eval.num_steps = 5
    c.gka.eval.loss_repeats = 1
    c.tka.seg.n_train = 4             # = gka.eval.n_images: S_EG reuses the eg_test sampling program (one compile)
    c.tka.seg.n_test = 4
    c.tka.train.epochs = 2
    c.tka.train.batch = 4
    c.tka.train.log_every = 1
    c.tka.conditions.rates = "2/64,6/64"
    c.tka.conditions.snrs_db = (0.0, 20.0)
    c.tka.conditions.delay_spreads_ns = (30.0, 3000.0)
    c.tka.eval.chunk = 16
    c.eval.received_conditions = 2
    c.fig4.n_images = 2
    c.fig13.n_images = 2
    c.fig13.rates = "2/64"
    c.fig13.snrs_db = (0.0, 20.0)
    c.fig13.delay_spreads_ns = (3000.0,)
    if arg == "gka":
        c.gka.methods = "makd,ub"
        c.gka.eval.n_images = 2
        c.tka.seg.n_train = 4
        c.tka.seg.n_test = 2
        c.tka.methods = "noka"
        c.eval.received_conditions = 1
        c.eval.fid = False
        c.fig4.baselines = False
        c.fig13.n_images = 0
    c.lock()
    return c
