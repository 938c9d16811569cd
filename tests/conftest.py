"""Test-session settings.

* OpenBLAS threads fight XLA's for the CI machine's two cores (one SciPy test went from 0.07 s to
  10 s under contention), so NumPy/SciPy run single-threaded here.
* No silent skips in CI: when the ``CI`` environment variable is set (to anything but "", "0",
  "false", "no"), a test extra that fails to import (torch, diffusers, transformers' PyTorch
  models, sionna, peft...) is an ERROR, not a skip: ``pytest.importorskip`` fails instead of
  skipping, and any other skip whose reason says a module is missing is turned into a failure.
  Outside CI, skips stay skips (a developer may install only the core). The only skips allowed
  in CI are named in ``ALLOWED_MISSING`` with the reason.
"""
import os
import re

import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

#: Modules whose absence is a known, legitimate skip even in CI (module -> why).
ALLOWED_MISSING: dict[str, str] = {}

_MISSING = re.compile(r"No module named|could not import|not importable|not installed|"
                      r"ModuleNotFoundError|ImportError", re.IGNORECASE)
_INSTALL = "install the extras: pip install -c .ci/constraints.txt -e '.[dev]'"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


_importorskip = pytest.importorskip


def _strict_importorskip(modname, *args, **kwargs):
    try:
        return _importorskip(modname, *args, **kwargs)
    except pytest.skip.Exception as e:
        if in_ci() and modname not in ALLOWED_MISSING:
            pytest.fail(f"CI: test dependency {modname!r} is missing ({e.msg}); {_INSTALL}",
                        pytrace=False)
        raise


# Test modules call ``pytest.importorskip(...)`` at import time, after this conftest is loaded.
pytest.importorskip = _strict_importorskip


def _skip_reason(rep) -> str:
    lr = rep.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:
        return str(lr[2])
    return str(lr)


def _fail_missing_module_skip(rep):
    if not (in_ci() and rep.skipped and not hasattr(rep, "wasxfail")):
        return
    reason = _skip_reason(rep)
    if _MISSING.search(reason) and not any(m in reason for m in ALLOWED_MISSING):
        rep.outcome = "failed"
        rep.longrepr = f"CI: skipped for a missing dependency ({reason}); {_INSTALL}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_missing_module_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_missing_module_skip(outcome.get_result())
