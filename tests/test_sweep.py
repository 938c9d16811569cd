"""The condition sweep: sharded over 4 forced host devices == single device; resume skips
finished points; bad grids are rejected."""
import csv
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from dekag_jax import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "sweep_smoke.py")
OVERRIDES = dict(taus="1/64", snrs_db=(0.0, 20.0), delay_spreads_ns=(30.0, 3000.0),
                 num_realizations=6, batch=4)


def _config(**kw):
    spec = importlib.util.spec_from_file_location("sweep_smoke_cfg", SMOKE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config()  # locked: only existing fields can be set
    for k, v in {**OVERRIDES, **kw}.items():
        setattr(c, k, v)
    return c


def _read_csv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_resume_and_four_devices_match_single_device(tmp_path):
    a = str(tmp_path / "single")
    cfg = _config()
    keys = [c.key for c in sweep.conditions(cfg)]
    assert len(keys) == 4
    # 1) interrupted run: only 2 of 4 points
    r1 = sweep.run_sweep(cfg, a, progress=False, max_points=2)
    assert r1.computed == keys[:2] and not r1.complete and r1.reused == []
    assert not os.path.exists(os.path.join(a, "results.csv"))
    pts = {k: os.path.join(a, "points", k + ".json") for k in keys[:2]}
    mtimes = {k: os.stat(p).st_mtime_ns for k, p in pts.items()}
    # 2) resume: the finished points are loaded, not recomputed (files untouched)
    r2 = sweep.run_sweep(cfg, a, progress=False)
    assert r2.reused == keys[:2] and r2.computed == keys[2:] and r2.complete
    assert all(os.stat(p).st_mtime_ns == mtimes[k] for k, p in pts.items())
    for f in ("results.csv", "results.json", "results.png"):
        assert os.path.getsize(os.path.join(a, f)) > 0
    # 3) a fresh run on 4 forced host devices (subprocess: the flag must precede jax import)
    b = str(tmp_path / "four")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu", DEKAG_JAX_CACHE_DIR="off",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "dekag_jax.sweep", "--config", SMOKE, "--out", b,
           "--noprogress", "--config.taus=1/64", "--config.snrs_db=(0.,20.)",
           "--config.delay_spreads_ns=(30.,3000.)", "--config.num_realizations=6",
           "--config.batch=4"]
    p = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "devices: 4 (cpu)" in p.stdout and "computed 4 points" in p.stdout, p.stdout
    ta, tb = _read_csv(os.path.join(a, "results.csv")), _read_csv(os.path.join(b, "results.csv"))
    assert len(ta) == len(tb) == 4
    for ra, rb in zip(ta, tb):
        for k in ("tau", "K", "snr_db", "delay_spread_ns", "num_realizations", "num_symbols",
                  "sym_errors", "bit_errors", "ser", "ber"):
            assert ra[k] == rb[k], (k, ra, rb)  # counts are exact
        for k in ("ser_std_tx", "mse_db", "post_eq_snr_db", "ser_theory"):
            np.testing.assert_allclose(float(ra[k]), float(rb[k]), rtol=1e-5, atol=1e-6)
    # the sweep measured something sensible: SER falls with SNR and matches Rayleigh theory
    ser = {(r["snr_db"], r["delay_spread_ns"]): float(r["ser"]) for r in ta}
    assert ser[("20.0", "30.0")] < ser[("0.0", "30.0")]
    # The aggregates are the counts over the symbols (BER from bit errors, not from SER).
    for r in ta:
        assert float(r["ser"]) == int(r["sym_errors"]) / int(r["num_symbols"])
        assert float(r["ber"]) == int(r["bit_errors"]) / (6 * int(r["num_symbols"]))
    # Six flat-fading transmissions cannot tell a detector from guessing (SER 0.93 vs 0.98):
    # the sweep's SER/BER against theory within binomial bounds is in test_sweep_stats.py.


def test_bad_grids_and_stale_points(tmp_path):
    with pytest.raises(ValueError, match="tau='7/64'"):
        sweep.conditions(_config(taus="1/64,7/64"))
    with pytest.raises(ValueError, match="tau='0.25'"):
        sweep.conditions(_config(taus="0.25"))
    with pytest.raises(ValueError, match="omega"):
        sweep.conditions(_config(delay_spreads_ns=(30.0, -3.0)))
    with pytest.raises(ValueError, match="M=48"):
        sweep.conditions(_config(M=48))
    # a finished point made with other settings is an error, not silently reused
    out = str(tmp_path / "s")
    sweep.run_sweep(_config(), out, progress=False, max_points=1)
    with pytest.raises(ValueError, match="another --out"):
        sweep.run_sweep(_config(num_realizations=7), out, progress=False)
