"""dekag_jax.runtime.setup: one cache variable, 'off' disables both caches, idempotent.

Each case runs in its own interpreter: setup() changes process-wide JAX configuration, which must
not leak into the test session.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

_PROBE = r"""
import json, sys
import jax
from dekag_jax import runtime
from dekag_jax.weights import abstract
before = jax.config.jax_compilation_cache_dir
a = runtime.setup()
b = runtime.setup(compilation_cache=False, min_compile_time_s=99.0)  # idempotent: the first call's result stays
shapes = runtime.cache_dir("param_shapes")
print(json.dumps({"before": before, "cache": a.compilation_cache, "same": a is b, "distributed": a.distributed,
                  "jax_dir": jax.config.jax_compilation_cache_dir,
                  "min_time": jax.config.jax_persistent_cache_min_compile_time_secs,
                  "shapes": None if shapes is None else str(shapes),
                  "abstract_dir": None if abstract.cache_dir() is None else str(abstract.cache_dir())}))
"""


def _run(env_updates: dict, drop=()) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in drop and k != "DEKAG_JAX_CACHE_DIR"}
    env.update(env_updates, JAX_PLATFORMS="cpu")
    for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(k, None)
    return subprocess.Popen([sys.executable, "-c", _PROBE], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=str(Path(__file__).resolve().parents[1]))


def _result(p) -> dict:
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_setup_cache_dir_off_and_default(tmp_path):
    root = tmp_path / "root"
    home = tmp_path / "home"
    procs = {"var": _run({"DEKAG_JAX_CACHE_DIR": str(root)}),
             "off": _run({"DEKAG_JAX_CACHE_DIR": "off"}),
             "default": _run({"HOME": str(home)})}  # started together: the interpreters start in parallel
    res = {k: _result(p) for k, p in procs.items()}

    r = res["var"]  # the compilation cache lives under the variable's root
    assert r["before"] is None
    assert r["cache"] == r["jax_dir"] == str(root / "xla") and (root / "xla").is_dir()
    assert r["min_time"] == 0.5  # the first call's setting, not the second's
    assert r["same"] and r["distributed"] is False
    assert r["shapes"] == str(root / "param_shapes")

    r = res["off"]  # both caches off
    assert r["cache"] is None and r["jax_dir"] is None and r["same"]
    assert r["shapes"] is None and r["abstract_dir"] is None

    r = res["default"]
    assert r["cache"] == r["jax_dir"] == str(home / ".cache" / "dekag_jax" / "xla")
    assert r["shapes"] == str(home / ".cache" / "dekag_jax" / "param_shapes")
