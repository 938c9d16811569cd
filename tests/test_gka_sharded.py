"""G-KA's step data-parallel over a device mesh (issue 19 item 6): ``gka.train_stage(..., mesh=)``
on 4 forced host devices gives the one-device loss trajectory up to reduction order.

Runs in a subprocess, because ``--xla_force_host_platform_device_count`` must be set before JAX
starts. One subject, one step per epoch (8 latents, batch 8), so the returned per-epoch history is
the per-step loss trajectory. The eq. 8 (metaword) stage runs in the default suite, the eq. 9
(LoRA) stage in the slow one. Both runs use ``--xla_backend_optimization_level=0``: compiling is
most of the test's time (34 s -> 24 s on the 2-core CI machine) and both sides compile alike."""
import os
import subprocess
import sys

import pytest

_SCRIPT = r"""
import sys
import jax
import jax.numpy as jnp
import numpy as np
from dekag_jax import parallel
from dekag_jax.adapt import metaword
from dekag_jax.ka import gka, scg as S
from dekag_jax.world.models import load_edge_pipeline

stage = sys.argv[1]
assert jax.device_count() == 4, jax.devices()
pipe = load_edge_pipeline()
full = gka.make_data(pipe, [S.build_scg(pipe, "animal_00")])
B = 8
data = gka.Data(full.z[:B], full.sid[:B], full.ids)
mu0 = metaword.init_metaword(jax.random.key(0), pipe.text_encoder.config.hidden_size)[None]  # [1, 1, D]
frozen = {"unet": pipe.unet_params, "text": pipe.text_params}
mesh = parallel.make_mesh()
if stage == "metaword":
    tr0, fr, specs, lr = {"metaword": mu0}, frozen, None, 2e-2
else:
    ad0, specs = gka.init_lora(pipe, jax.random.key(5), rank=4, alpha=4.0,
                               targets=r".*/attn[12]/to_(q|k|v|out\.0)/kernel")
    tr0, fr, lr = {"lora": ad0}, {**frozen, "metaword": mu0}, 1e-3

# a batch the mesh cannot split is refused before anything compiles
try:
    gka.train_stage(pipe, data, tr0, fr, specs, epochs=1, batch=6, lr=lr, seed=3, mesh=mesh)
    raise SystemExit("batch 6 on 4 devices was accepted")
except ValueError as e:
    assert "not divisible by the 4 devices" in str(e), e

runs = [gka.train_stage(pipe, data, tr0, fr, specs, epochs=4, batch=B, lr=lr, seed=3, mesh=m) for m in (None, mesh)]
(tr1, h1), (tr4, h4) = runs
h1, h4 = np.asarray(h1), np.asarray(h4)
assert h1.shape == (4,) and np.all(np.isfinite(h1)), h1
rel = float(np.max(np.abs(h4 - h1) / np.abs(h1)))
assert rel <= 1e-5, (h1, h4, rel)
# the stage trained (the trajectory is not one repeated value) and the caller's arrays survived the donation
assert np.ptp(h1) > 1e-3, h1
assert all(not x.is_deleted() for x in jax.tree.leaves(tr0))
leaves1, leaves4 = jax.tree.leaves(tr1), jax.tree.leaves(tr4)
for a in leaves4:  # the trained state lives replicated on all 4 devices
    assert a.sharding.is_fully_replicated and len(a.sharding.device_set) == 4, a.sharding
moved = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(leaves1, jax.tree.leaves(tr0)))
diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(leaves1, leaves4))
assert moved > 0 and diff <= 1e-4 * max(1.0, moved), (diff, moved)
print(f"OK {stage} loss max rel diff {rel:.3g}, param max abs diff {diff:.3g} (moved {moved:.3g})")
"""


def _run(stage: str) -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([os.path.dirname(here), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", _SCRIPT, stage], env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0 and f"OK {stage}" in r.stdout, (r.stdout[-2000:], r.stderr[-4000:])
    return r.stdout


def test_metaword_stage_on_4_devices_matches_one_device():
    print(_run("metaword"))


@pytest.mark.slow
def test_lora_stage_on_4_devices_matches_one_device():
    print(_run("lora"))
