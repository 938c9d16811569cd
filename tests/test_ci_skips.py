"""Under CI a missing test extra is an error, not a silent skip (tests/conftest.py).

Runs pytest in a subprocess on tiny test files next to a copy of our conftest: with CI=1 a
module that needs a non-existent package must fail (both through ``pytest.importorskip`` at
import time and through a plain skip whose reason names a missing module); without CI the same
files skip; an ordinary skip, and an allow-listed module, stay skips under CI.
"""
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

FILES = {
    "test_needs_missing.py": (
        "import pytest\n"
        "mod = pytest.importorskip('dekag_no_such_module_xyz')\n"
        "def test_a():\n    pass\n"),
    "test_skip_missing.py": (
        "import pytest\n"
        "def test_b():\n    pytest.skip(\"No module named 'dekag_no_such_module_xyz'\")\n"),
    "test_ordinary.py": (
        "import pytest\n"
        "def test_c():\n    pytest.skip('one activation suffices for the dtype path')\n"
        "def test_d():\n    pass\n"),
}


def _run(tmp_path, ci):
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "1"
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
                        "--continue-on-collection-errors", *sorted(FILES)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout + p.stderr


def test_missing_extra_is_an_error_under_ci(tmp_path):
    shutil.copy(os.path.join(HERE, "conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    rc, out = _run(tmp_path, ci=False)
    assert rc == 0, out[-3000:]
    assert "1 passed, 3 skipped" in out, out[-3000:]

    rc, out = _run(tmp_path, ci=True)
    assert rc != 0, out[-3000:]
    assert "ERROR test_needs_missing.py" in out and "FAILED test_skip_missing.py::test_b" in out, out[-3000:]
    assert "CI: test dependency 'dekag_no_such_module_xyz' is missing" in out, out[-3000:]
    # An ordinary skip stays a skip.
    assert "PASSED test_ordinary.py::test_d" in out and "SKIPPED [1] test_ordinary.py" in out, out[-3000:]


def test_allow_listed_module_stays_a_skip_under_ci(monkeypatch):
    import conftest

    monkeypatch.setenv("CI", "true")
    monkeypatch.setitem(conftest.ALLOWED_MISSING, "dekag_fake_allowed_xyz", "test")
    with pytest.raises(pytest.skip.Exception):
        pytest.importorskip("dekag_fake_allowed_xyz")
    with pytest.raises(pytest.fail.Exception, match="CI: test dependency"):
        pytest.importorskip("dekag_no_such_module_xyz")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        pytest.importorskip("dekag_no_such_module_xyz")
