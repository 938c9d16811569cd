"""How long loading the tiny world's shipped models takes, in fresh processes.

Each measurement runs a new Python process that imports dekag_jax, the tokenizer class and the
loader modules (flax, the model classes), then times ``load_edge_pipeline()`` and
``load_judges()`` until the arrays are ready. Three cases:

* ``no shape cache``: ``DEKAG_JAX_CACHE_DIR=off``, so every loader traces ``init`` under
  ``jax.eval_shape`` (weights/abstract.py);
* ``cold shape cache``: an empty cache directory (the trace runs and fills it);
* ``warm shape cache``: the same directory again (what every later process sees).

Import time is printed separately: it is paid once per process whatever is loaded.

    python scripts/bench_world_load.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CHILD = r"""
import json, time
t0 = time.perf_counter()
import jax
from transformers import CLIPTokenizer  # noqa: F401  (the tokenizer class: ~1 s of import, once per process)
from dekag_jax.world.models import load_edge_pipeline, load_judges
import dekag_jax.weights.hf, dekag_jax.weights.pipeline, dekag_jax.weights.sd  # noqa: E401,F401  (flax, models)
import dekag_jax.diffusion.schedules, dekag_jax.world.vocab  # noqa: E401,F401
jax.numpy.zeros(1).block_until_ready()
t1 = time.perf_counter()
p = load_edge_pipeline(); jax.block_until_ready((p.unet_params, p.vae_params, p.text_params))
t2 = time.perf_counter()
j = load_judges(); jax.block_until_ready((j.dino_params, j.clip_params))
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "pipeline_s": t2 - t1, "judges_s": t3 - t2}))
"""


def child(cache: str) -> dict:
    env = dict(os.environ, DEKAG_JAX_CACHE_DIR=cache, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    rows: dict[str, list[dict]] = {"no shape cache": [], "cold shape cache": [], "warm shape cache": []}
    for _ in range(args.repeats):
        rows["no shape cache"].append(child("off"))
        with tempfile.TemporaryDirectory() as d:
            rows["cold shape cache"].append(child(d))
            rows["warm shape cache"].append(child(d))
    print(f"load average {os.getloadavg()[0]:.2f}; median of {args.repeats} fresh processes (seconds)")
    print(f"{'case':<18} {'import':>7} {'pipeline':>9} {'judges':>7} {'both':>6}")
    for name, rs in rows.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        both = statistics.median(r["pipeline_s"] + r["judges_s"] for r in rs)
        print(f"{name:<18} {med['import_s']:7.2f} {med['pipeline_s']:9.2f} {med['judges_s']:7.2f} {both:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
