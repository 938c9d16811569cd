"""The main job's optional study stages (Figs. 8, 9, 11, 12; ``studies.<fig>``): off in the default and
smoke configs, on in configs/studies.py, their settings checked before any work, and (slow) a tiny
run with all four on writes the metrics.json pieces the report draws."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(name, arg=""):
    spec = importlib.util.spec_from_file_location(f"_cfg_{name}", os.path.join(ROOT, "configs", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(arg)


def test_studies_are_off_by_default_and_on_in_the_studies_config():
    from dekag_jax.train import STUDIES

    for name, arg in (("default", ""), ("default", "all"), ("smoke", ""), ("smoke", "gka")):
        assert not any(_config(name, arg).studies[f] for f in STUDIES), (name, arg)
    for arg in ("", "multi"):
        assert all(_config("studies", arg).studies[f] for f in STUDIES), arg


@pytest.mark.parametrize("field, value, msg", [
    ("fig12.schemes", "cala,fullft", "fig12.schemes"),          # fullft is not among the smoke's tka.methods
    ("fig12.feature", "inception", "fig12.feature"),
    ("fig11.methods", "lora,dora", "fig11.methods"),
    ("fig11.rates", "9/64", "9/64"),
    ("gka.studies.metaword_epochs", "0,five", "gka.studies.metaword_epochs"),
])
def test_bad_study_settings_are_refused_before_any_work(field, value, msg):
    from dekag_jax.train import check_studies

    c = _config("smoke")
    check_studies(c)          # off: nothing is checked
    c.unlock()
    for f in ("fig8", "fig9", "fig11", "fig12"):
        c.studies[f] = True
    check_studies(c)          # the smoke's own settings are valid
    node, *path = field.split(".")
    target = c[node]
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    with pytest.raises(ValueError, match=msg):
        check_studies(c)


TINY = [
    "--config.studies.fig8=True", "--config.studies.fig9=True", "--config.studies.fig11=True",
    "--config.studies.fig12=True", "--config.gka.studies.subject=animal_00",
    "--config.gka.studies.metaword_epochs=0,1", "--config.gka.studies.lora_epochs=0,1",
    "--config.gka.studies.n_heldout=2", "--config.gka.studies.n_images=2", "--config.gka.studies.num_steps=2",
    "--config.gka.studies.ranks=1", "--config.gka.studies.bits=16,8", "--config.fig11.ranks=(1,)",
    "--config.fig11.methods=cala", "--config.fig11.epochs=1", "--config.fig11.rates=2/64",
    "--config.fig11.snrs_db=(10.0,)", "--config.fig11.delay_spreads_ns=(3000.0,)", "--config.fig12.schemes=noka",
    "--config.fig12.kid_subsets=10",
]


@pytest.mark.slow
def test_tiny_run_with_every_study_writes_their_pieces(tmp_path):
    d = str(tmp_path / "run")
    env = dict(os.environ, DEKAG_JAX_CACHE_DIR=str(tmp_path / "cache"))
    p = subprocess.run([sys.executable, "-m", "dekag_jax.train", "--config",
                        os.path.join(ROOT, "configs", "smoke.py:gka"), "--workdir", d, *TINY],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    assert p.returncode == 0, p.stderr[-3000:]
    with open(os.path.join(d, "metrics.json")) as f:
        m = json.load(f)
    with open(os.path.join(d, "state.json")) as f:
        state = json.load(f)
    assert {"fig8", "fig9", "fig11"} <= set(state["global"]) and "fig12" in state["done"]["animal_00"]
    f8 = m["fig8"]
    assert [r["epoch"] for r in f8["metaword"]] == [0, 1] == [r["epoch"] for r in f8["lora"]]
    assert f8["chosen"]["metaword"] in (0, 1) and f8["chosen"]["lora"] in (0, 1)
    f9 = {(r["rank"], r["bits"]): r for r in m["fig9"]}
    assert set(f9) == {(0, 16), (1, 16), (1, 8)} and f9[(1, 8)]["bytes"] < f9[(1, 16)]["bytes"]
    assert m["studies_info"]["fig9"]["metaword"] == "this run's metaword stage"
    f11 = {r["method"]: r for r in m["fig11"]}
    assert set(f11) == {"cala", "fullft"} and 0 < f11["cala"]["update_ratio"] < 1 == f11["fullft"]["update_ratio"]
    assert all(isinstance(r["psnr"], float) for r in m["fig11"])
    f12 = m["fig12"]
    assert f12["subject"] == "animal_00" and set(f12["per_subject"]) == {"animal_00"}
    assert {pt["snr_db"] for pt in f12["points"]} == {0.0, 20.0} and isinstance(f12["slopes"]["psnr_db_per_db"], float)
    # the report draws them (report.write_report ran as the last stage)
    for n in (8, 9, 11, 12):
        assert os.path.isfile(os.path.join(d, "figures", f"fig{n}.png")), n
