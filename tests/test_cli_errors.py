"""Command-line errors a user can read: every CLI validates its arguments before any work, answers
bad input with ONE stderr line ``error: ...`` and exit status 2, tracebacks only with --debug, and
leaves no empty output folder behind. Unwritable paths are made without chmod (CI runs as root):
a path under an existing regular file."""
import os
import subprocess
import sys

import pytest
from PIL import Image

from dekag_jax.errors import UsageError, cli_main, prepare_output_dir, remove_if_empty

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "sweep_smoke.py")


def _main(name):
    if name == "sweep":
        from dekag_jax.sweep import main
    elif name == "baselines":
        from dekag_jax.baselines.__main__ import main
    elif name == "picture":
        from dekag_jax.world.picture import main
    else:
        from dekag_jax.world.gates import main
    return main


def _run(capsys, name, argv):
    rc = cli_main(_main(name), argv)
    err = capsys.readouterr().err
    return rc, [ln for ln in err.splitlines() if ln.strip()]


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(d / "a.png")
    return str(d)


def test_bad_arguments_one_line_exit_2(tmp_path, capsys, images, monkeypatch):
    # bad input must not touch caches: runtime.setup() comes after validation
    from dekag_jax import runtime
    monkeypatch.setattr(runtime, "setup", lambda *a, **k: pytest.fail("setup() before validation"))
    afile = tmp_path / "plain_file"
    afile.write_text("x")
    out = str(tmp_path / "out")
    base = ["--method", "jpeg-ldpc", "--images", images, "--out", out, "--snr", "10"]
    cases = [
        ("sweep", ["--config", str(tmp_path / "missing.py"), "--out", out], "config file"),
        ("sweep", ["--out", out], "--config is required"),
        ("sweep", ["--config", SMOKE, "--out", out, "--config.taus=1/64,7/64"], "tau='7/64'"),
        ("sweep", ["--config", SMOKE, "--out", out, "--config.delay_spreads_ns=(30.,-300.)"], "omega=-300 ns"),
        ("sweep", ["--config", SMOKE, "--out", out, "--config.delay_spreads_ns=(3e-6,)"],
         "did you mean 3e-06s = 3000ns?"),
        ("sweep", ["--config", SMOKE, "--out", out, "--nonsense=1"], "nonsense"),
        ("sweep", ["--config", SMOKE, "--out", str(afile / "out")], "cannot be written"),
        ("baselines", base + ["--delay-spread", "3000", "--rate", "2/64"], "did you mean 3000ns?"),
        ("baselines", base + ["--delay-spread", "-3ns", "--rate", "2/64"], "must be > 0"),
        ("baselines", base + ["--delay-spread", "3us", "--rate", "7/64"], "tau='7/64'"),
        ("baselines", base + ["--delay-spread", "3us", "--rate", "2"], "did you mean 2/64?"),
        ("baselines", base + ["--delay-spread", "3us", "--rate", "2/64", "--amc-table", str(tmp_path / "no.json")],
         "AMC table"),
        ("baselines", ["--method", "jpeg-ldpc", "--images", str(tmp_path / "none"), "--out", out, "--snr", "10",
                       "--delay-spread", "3us", "--rate", "2/64"], "does not exist"),
        ("baselines", base[:5] + [str(afile / "out")] + base[6:] + ["--delay-spread", "3us", "--rate", "2/64"],
         "cannot be written"),
        ("picture", ["--out", str(afile / "out")], "cannot be written"),
        ("picture", ["--out", out, "--n", "0"], "--n=0"),
        ("picture", ["--out", out, "--model", str(tmp_path / "nomodel")], "model_index.json"),
        ("gates", ["--steps", "0"], "--steps=0"),
        ("gates", ["--bogus"], "unrecognized arguments"),
    ]
    for name, argv, want in cases:
        rc, lines = _run(capsys, name, argv)
        assert rc == 2, (name, argv, lines)
        assert len(lines) == 1 and lines[0].startswith("error: ") and want in lines[0], (name, argv, lines)
        assert not os.path.exists(out), (name, argv)  # nothing created by a refused command
    with pytest.raises(UsageError, match="did you mean 3000ns"):  # --debug: the exception itself
        cli_main(_main("baselines"), base + ["--delay-spread", "3000", "--rate", "2/64", "--debug"])


def test_other_failures_are_one_line_exit_1(capsys):
    def boom(argv):
        raise RuntimeError("disk on fire\nsecond line")
    assert cli_main(boom, []) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: RuntimeError: disk on fire second line (run with --debug for the traceback)"]
    with pytest.raises(RuntimeError):
        cli_main(boom, ["--debug"])
    assert cli_main(lambda argv: None, []) == 0


def test_output_dir_probe_and_cleanup(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    for bad in (str(f), str(f / "a" / "b"), "/proc/dekag_jax_no/out"):
        with pytest.raises(UsageError, match="output folder"):
            prepare_output_dir(bad)
    assert not (tmp_path / "f" / "a").exists()
    created = prepare_output_dir(str(tmp_path / "x" / "y"))
    assert [os.path.basename(c) for c in created] == ["x", "y"] and os.listdir(tmp_path / "x" / "y") == []
    remove_if_empty(created)
    assert not (tmp_path / "x").exists()
    assert prepare_output_dir(str(tmp_path)) == []  # existing folders are kept


def test_sweep_help_and_exit_status_in_a_subprocess(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", DEKAG_JAX_CACHE_DIR="off",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-m", "dekag_jax.sweep", "--help"], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "--config" in p.stdout and "usage:" in p.stdout and not p.stderr.strip()
    p = subprocess.run([sys.executable, "-m", "dekag_jax.baselines", "--method", "jpeg-ldpc", "--images",
                        str(tmp_path), "--out", str(tmp_path / "o"), "--snr", "10", "--delay-spread", "3000",
                        "--rate", "2/64"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        "error: argument --delay-spread: delay spread 3000 s is implausible (more than 100 us); "
        "did you mean 3000ns?"]


def test_failed_run_leaves_no_empty_output_folder(tmp_path, capsys, monkeypatch):
    from dekag_jax import runtime, sweep
    from dekag_jax.world import picture

    def boom(*a, **k):
        raise RuntimeError("boom")
    monkeypatch.setattr(runtime, "setup", lambda *a, **k: None)
    monkeypatch.setattr(sweep, "run_sweep", boom)
    monkeypatch.setattr(picture, "write_pictures", boom)
    out = tmp_path / "a" / "b"
    assert cli_main(sweep.main, ["--config", SMOKE, "--out", str(out)]) == 1
    assert cli_main(picture.main, ["--out", str(out)]) == 1
    assert not (tmp_path / "a").exists()
    assert capsys.readouterr().err.count("error: RuntimeError: boom") == 2
