"""scripts/pretrain_world_v2.sh (tiny world v2, issue 17): its plan fits the device budget, the
pool rendering is the same in several processes, and (slow) a CPU dry run of every stage writes a
complete v2 asset root whose gates can be measured, and a rerun resumes (skips what is done)."""
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "pretrain_world_v2.sh"
STAGES = ["vae", "clip", "dino", "unet1", "unet2", "jscc_mt", "jscc_at", "rc_jscc", "vj_mae", "gates"]


def _run(*args, timeout=60, env=None):
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_plan_lists_every_stage_within_the_device_budget(tmp_path):
    dest = tmp_path / "never_created"
    r = _run("--plan", "--dest", str(dest))
    assert r.returncode == 0, r.stdout + r.stderr
    assert not dest.exists()                                   # --plan runs and creates nothing
    rows = re.findall(r"^(\w+)\s+timeout\s+(\d+)s\s+(.*)$", r.stdout, re.M)
    assert [n for n, _, _ in rows] == STAGES
    limit = {n: int(t) for n, t, _ in rows}
    cmd = {n: c for n, _, c in rows}
    for n in STAGES[:5]:
        assert "--world-version 2" in cmd[n] and "--max-train-s" in cmd[n], n
    assert f"--init-from {dest}/assets/edge_pipeline/unet" in cmd["unet2"]
    assert f"--assets {dest}/assets" in cmd["gates"]
    # Side-by-side groups: part 1 = max(vae, clip) + max(dino, unet1); part 2 = max(unet2, jscc) + gates.
    part1 = max(limit["vae"], limit["clip"]) + max(limit["dino"], limit["unet1"])
    part2 = max(limit[n] for n in ("unet2", "jscc_mt", "jscc_at", "rc_jscc", "vj_mae")) + limit["gates"]
    assert part1 <= 450 and part2 <= 270 and part1 + part2 <= 720     # two calls + one start in 15 min
    for n in STAGES[:5]:   # the budget guard stops training well before the hard timeout
        assert float(re.search(r"--max-train-s (\d+)", cmd[n]).group(1)) <= limit[n] - 50, n
    bad = _run("--part", "3")
    assert bad.returncode == 2 and "--part must be 1, 2 or all" in bad.stdout


def test_render_pool_same_images_in_several_processes(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "scripts"))   # spawned workers import world_data too
    import world_data as W
    specs = W.spec_pool(20, 3, version=2)
    assert any(s.interaction != "none" for s in specs)
    one = W.render_pool(specs, 5, "cloud", chunk=8, workers=1)
    two = W.render_pool(specs, 5, "cloud", chunk=8, workers=2)
    assert one.shape == (20, 64, 64, 3) and np.array_equal(one, two)


@pytest.mark.slow
def test_smoke_run_writes_a_v2_world_and_resumes(tmp_path):
    dest = tmp_path / "v2"
    r = _run("--smoke", "--dest", str(dest), timeout=1800)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    root = dest / "assets"
    for d in ("edge_pipeline/unet", "edge_pipeline/vae", "edge_pipeline/text_encoder", "edge_pipeline/tokenizer",
              "judges/dino", "judges/clip", "jscc/jscc_smoke"):
        assert (root / d).is_dir(), d
    for name in ("vae", "clip", "dino", "unet", "unet_v2_stage2"):
        log = json.loads((root / "training" / f"{name}.json").read_text())
        assert log["config"]["world_version"] == 2 and log["steps_done"] == 2, name
        assert log["machine"]["jax_backend"] and log["wall_time_s"] > 0, name
    vocab = json.loads((root / "edge_pipeline" / "tokenizer" / "vocab.json").read_text())
    assert "balloon</w>" in vocab and "next</w>" in vocab       # the v2 tokenizer went into the pipeline
    gates = json.loads((root / "training" / "gates.json").read_text())
    assert {"vae_psnr_db", "edge_prompt_top1", "consistency_edge_vs_cloud", "interaction_top1"} <= set(gates)
    assert 0 <= gates["interaction_top1"]["edge_model"] <= 1 and gates["interaction_top1"]["n_images"] == 80
    # the shipped v1 assets were not touched: its logs are not the smoke run's
    shipped = json.loads((REPO / "dekag_jax" / "world" / "assets" / "training" / "unet.json").read_text())
    assert shipped["steps"] != 2
    again = _run("--smoke", "--dest", str(dest), timeout=600)
    assert again.returncode == 0, again.stdout[-3000:]
    assert again.stdout.count("skipped") == 7, again.stdout     # every stage (no JSCC(AT) in the smoke) and the gates
