"""Many devices (issue 20 item 4) on tiny random models: T-KA's Monte Carlo evaluation (and, in the
slow suite, its training step) sharded over a mesh give the one-device numbers, as two local
processes of one ``jax.distributed`` job (2 forced host devices each, ``parallel.launch_local``)
and on 4 forced host devices in one process.

Each case runs in fresh interpreters (``--xla_force_host_platform_device_count`` and
``jax.distributed`` must be set before JAX starts). Every process runs the sharded computation over
the global 4-device mesh; process 0 also computes the one-device reference (``mesh=None``, its own
default device; no collective) and checks:

* ``tka.evaluate(..., mesh=)``: per-condition PSNR and received images equal the one-device ones;
  the sharded run uses chunks of 5 pairs (padded to 8: the padding must be dropped), the
  reference one chunk of all 48 (a key per pair makes the layout irrelevant); another seed gives
  other draws; both processes get the same gathered result;
* ``tka.train(..., mesh=)`` (slow): two CALA steps, same losses and parameters;
* ``parallel.shard_local_batch``: each process's own rows land at its place in the global batch;
  ``parallel.barrier`` passes (twice under one name).

Both sides run with ``--xla_backend_optimization_level=0``: compiling is most of the time.
"""
import json
import os
import subprocess
import sys

import pytest

from dekag_jax import parallel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SCRIPT = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
from dekag_jax import parallel, runtime
runtime.setup(compilation_cache=False)
from dekag_jax.ka import tka
from dekag_jax.ka.objective import LossWeights
from dekag_jax.ka.transmission import decode_latents
from dekag_jax.models.jscc import JSCCCodec, JSCCConfig
from dekag_jax.models.vae import AutoencoderKL, VAEConfig

want, with_train = int(sys.argv[1]), "train" in sys.argv[2:]
# the one-device reference needs no collective: process 0 computes it, the others skip the compile
ref = jax.process_index() == 0
assert jax.device_count() == want, (jax.device_count(), want)
GRID = ((2, 6), (0.0, 20.0), (30e-9, 3000e-9))
codec = JSCCCodec(config=JSCCConfig(block_out_channels=(16,), norm_num_groups=4))
cp = jax.jit(codec.init)(jax.random.key(0), jnp.zeros((1, 4, 4, 4)))["params"]
vae = AutoencoderKL(config=VAEConfig(down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
                                     block_out_channels=(8,), norm_num_groups=4, scaling_factor=0.5, sample_size=4))
vp = jax.jit(vae.init)(jax.random.key(1), jnp.zeros((1, 4, 4, 3)), jax.random.key(2))["params"]
import time; T0 = time.time(); T = {}
z = np.asarray(jax.random.normal(jax.random.key(3), (6, 4, 4, 4)))
x = np.asarray(jax.jit(lambda p, z: decode_latents(vae, p, z))(vp, z))
frozen = tka.frozen_tree(cp, vp)
setup = tka.make_setup("cala", codec, cp, vae, vp, rank=4)
tr0 = tka.init_method(setup, jax.random.key(5), cp, vp)
leaves, tdef = jax.tree.flatten(tr0)   # non-zero B and gates: every adapter acts
tr0 = jax.tree.unflatten(tdef, [l + 0.05 * jax.random.normal(jax.random.key(i), l.shape) for i, l in enumerate(leaves)])
mesh = parallel.make_mesh()
out = {"process": jax.process_index(), "processes": jax.process_count(), "devices": jax.device_count()}

# the Monte Carlo: 6 latents x 8 conditions = 48 pairs in chunks of 5 (padded to 8 on 4 devices)
eN = tka.evaluate(setup, tr0, frozen, z, x, grid=GRID, chunk=5, return_images=True, mesh=mesh)
pN = np.asarray([r["psnr"] for r in eN["conditions"]])
assert eN["images"].shape == (8, 6, 4, 4, 3), eN["images"].shape
out["psnr_mean"] = eN["psnr_mean"]
if ref:   # one chunk of all 48 pairs: the key per pair makes the chunk layout irrelevant
    e1 = tka.evaluate(setup, tr0, frozen, z, x, grid=GRID, chunk=1000, return_images=True)
    p1 = np.asarray([r["psnr"] for r in e1["conditions"]])
    assert np.ptp(p1) > 0.1, p1   # the conditions differ (not one repeated value)
    out["eval_psnr_rel"] = float(np.max(np.abs(pN - p1) / np.abs(p1)))
    out["eval_img_abs"] = float(np.max(np.abs(eN["images"].astype(np.float32) - e1["images"].astype(np.float32))))
T["eval"] = time.time() - T0
# an explicit condition list: the grid's first two conditions, in order, are the same pairs and draws
first2 = [(int(r["tau"].split("/")[0]), r["snr_db"], r["delay_spread_ns"] * 1e-9) for r in eN["conditions"][:2]]
ec = tka.evaluate(setup, tr0, frozen, z, x, grid=None, conditions=first2, chunk=5, mesh=mesh)
assert [r["psnr"] for r in ec["conditions"]] == [r["psnr"] for r in eN["conditions"][:2]], (ec, eN["conditions"][:2])
# the seed picks the draws (same compiled program)
e99 = tka.evaluate(setup, tr0, frozen, z, x, grid=GRID, chunk=5, seed=99, mesh=mesh)
assert e99["psnr_mean"] != eN["psnr_mean"], e99["psnr_mean"]
try:
    tka.evaluate(setup, tr0, frozen, z, x, grid=GRID, chunk=0, mesh=mesh)
    raise SystemExit("chunk=0 was accepted")
except ValueError as e:
    assert "chunk=0" in str(e), e
# a mesh without the data axis is refused by name
try:
    tka.evaluate(setup, tr0, frozen, z, x, grid=GRID, mesh=jax.sharding.Mesh(np.asarray(jax.devices()), ("x",)))
    raise SystemExit("a mesh without the data axis was accepted")
except ValueError as e:
    assert "has no axis 'data'" in str(e), e

if with_train:
    # two CALA training steps (batch 4 of 6 latents: one step per epoch)
    W = LossWeights(latent=1.0, image=10.0, perceptual=0.0, constellation=0.05)
    kw = dict(grid=GRID, weights=W, epochs=2, batch=4, lr=1e-2, seed=3)
    copy = lambda t: jax.tree.map(lambda a: jnp.array(a, copy=True), t)   # train donates its input
    tN, hN = tka.train(setup, copy(tr0), frozen, z, x, mesh=mesh, **kw)
    aN = parallel.to_host(jax.tree.leaves(tN))
    T["train"] = time.time() - T0
    if ref:
        t1, h1 = tka.train(setup, copy(tr0), frozen, z, x, **kw)
        l1, lN = np.asarray([h["loss"] for h in h1]), np.asarray([h["loss"] for h in hN])
        assert l1.shape == (2,) and np.all(np.isfinite(l1)), l1
        out["train_loss_rel"] = float(np.max(np.abs(lN - l1) / np.abs(l1)))
        a1 = [np.asarray(a) for a in jax.tree.leaves(t1)]
        out["train_moved"] = max(float(np.max(np.abs(a - np.asarray(b)))) for a, b in zip(a1, jax.tree.leaves(tr0)))
        out["train_param_abs"] = float(max(np.max(np.abs(a - b)) for a, b in zip(a1, aN)))

# host-local rows assembled into one global batch
n_loc = jax.local_device_count()
rows = np.arange(n_loc * 3, dtype=np.float32).reshape(n_loc, 3) + 100 * jax.process_index()
g = parallel.shard_local_batch(rows, mesh)
assert g.shape == (jax.device_count(), 3), g.shape
want_g = np.concatenate([np.arange(n_loc * 3, dtype=np.float32).reshape(n_loc, 3) + 100 * p
                         for p in range(jax.process_count())])
assert np.array_equal(parallel.to_host(g), want_g), parallel.to_host(g)
# the coordination-service barrier, reusable under one name (ids are made unique per call)
parallel.barrier("test")
parallel.barrier("test")
out["seconds"] = {k: round(v, 1) for k, v in T.items()}
print("RESULT " + json.dumps(out), flush=True)
"""


def _env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES",
                                                             "JAX_PROCESS_ID")}
    env.update(JAX_PLATFORMS="cpu", DEKAG_JAX_CACHE_DIR="off",
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    env.update(extra or {})
    return env


def _result(stdout: str) -> dict:
    lines = [l for l in stdout.splitlines() if l.startswith("RESULT ")]
    assert lines, stdout[-2000:]
    return json.loads(lines[-1][len("RESULT "):])


def _check(r: dict, devices: int, processes: int, train: bool):
    assert r["devices"] == devices and r["processes"] == processes, r
    if r["process"] != 0:   # process 0 holds the one-device reference
        return
    assert r["eval_psnr_rel"] <= 1e-5, r          # reductions reorder; the draws are the same
    assert r["eval_img_abs"] <= 2e-3, r            # float16 images in [0, 1]
    if train:
        assert r["train_loss_rel"] <= 1e-5, r
        assert r["train_moved"] > 1e-4 and r["train_param_abs"] <= 1e-4 * max(1.0, r["train_moved"]), r


# compiling is most of these tests' time, and both sides compile alike
_FAST_XLA = "--xla_backend_optimization_level=0"


def _four_devices(train: bool):
    env = _env({"XLA_FLAGS": f"--xla_force_host_platform_device_count=4 {_FAST_XLA}"})
    p = subprocess.run([sys.executable, "-c", _SCRIPT, "4"] + (["train"] if train else []), env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, (p.stdout[-2000:], p.stderr[-4000:])
    r = _result(p.stdout)
    _check(r, devices=4, processes=1, train=train)
    print(r)


def _two_processes(train: bool):
    res = parallel.launch_local([sys.executable, "-c", _SCRIPT, "4"] + (["train"] if train else []), 2,
                                devices_per_process=2, env=_env({"XLA_FLAGS": _FAST_XLA}), cwd=ROOT, timeout=900)
    for i, p in enumerate(res):
        assert p.returncode == 0, (i, p.stdout[-2000:], p.stderr[-4000:])
    rs = [_result(p.stdout) for p in res]
    assert [r["process"] for r in rs] == [0, 1]
    for r in rs:
        _check(r, devices=4, processes=2, train=train)
    assert rs[0]["psnr_mean"] == rs[1]["psnr_mean"], rs   # both processes see the same gathered result
    print(rs)


def test_tka_evaluate_as_two_jax_distributed_processes_matches_one_device():
    _two_processes(train=False)


@pytest.mark.slow
def test_tka_evaluate_and_train_as_two_jax_distributed_processes_match_one_device():
    _two_processes(train=True)


@pytest.mark.slow
def test_tka_evaluate_and_train_on_4_forced_devices_match_one_device():
    _four_devices(train=True)


def test_launch_local_stops_the_others_when_one_fails():
    # process 1 fails at once; process 0 would wait forever for it in jax.distributed.initialize
    code = ("import os, sys, time\n"
            "if os.environ['JAX_PROCESS_ID'] == '1': sys.exit(3)\n"
            "time.sleep(120)\n")
    res = parallel.launch_local([sys.executable, "-c", code], 2, env=_env(), timeout=60)
    assert res[1].returncode == 3 and res[0].returncode != 0, [r.returncode for r in res]
    with pytest.raises(ValueError, match="must be >= 1"):
        parallel.launch_local([sys.executable, "-c", "pass"], 0)
