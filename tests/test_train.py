"""The main job ``python -m dekag_jax.train`` (issue 20): the smoke config end to end (one shared run per
test session), kill-and-resume equal to an uninterrupted run, NaN stops naming stage and subject, a
changed config is refused naming the field, and the checkpoint format round-trips optax states.

The runs are subprocesses (a real SIGKILL, a real exit status) sharing one persistent compilation
cache in the session's temporary folder, so the later runs compile little.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "smoke.py")
SUBJECT = "animal_00"


@pytest.fixture(scope="session")
def env(tmp_path_factory):
    e = dict(os.environ)
    e["DEKAG_JAX_CACHE_DIR"] = str(tmp_path_factory.mktemp("train_cache"))
    e.setdefault("OPENBLAS_NUM_THREADS", "1")
    e.pop("DEKAG_JAX_KILL_AFTER_CHECKPOINT", None)
    return e


def _train(args, env, timeout=2400, extra_env=None):
    e = dict(env, **(extra_env or {}))
    return subprocess.run([sys.executable, "-m", "dekag_jax.train", *args], cwd=ROOT, env=e, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, env):
    """One uninterrupted smoke run per session: ``(workdir, completed process)``."""
    d = str(tmp_path_factory.mktemp("smoke") / "run")
    p = _train(["--config", SMOKE, "--workdir", d], env)
    assert p.returncode == 0, p.stderr[-3000:]
    return d, p


def _metrics(d):
    with open(os.path.join(d, "metrics.json")) as f:
        return json.load(f)


def _numbers(m):
    """Every number of metrics.json that a rerun must reproduce (times, loads and paths excluded)."""
    keep = {k: m[k] for k in ("gka", "gka_summary", "tka", "fig13", "update_sizes")}
    out = {}

    def walk(x, p):
        if isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{p}/{k}")
        elif isinstance(x, list):
            for i, v in enumerate(x):
                walk(v, f"{p}/{i}")
        elif isinstance(x, (int, float)) and not isinstance(x, bool):
            out[p] = float(x)

    walk(keep, "")
    return out


def test_smoke_writes_the_run_directory(smoke_run):
    d, p = smoke_run
    m = _metrics(d)
    assert m["schema"] == 1 and m["subjects"] == [SUBJECT]
    assert m["machine"]["backend"] == "cpu" and m["machine"]["devices"] >= 1
    # one summary line per stage on stdout
    for st in ("scg", "metaword", "lora_db", "lora_makd", "edge", "seg", "tka_noka", "tka_lora", "tka_cala",
               "received", "fig13"):
        assert f"[{SUBJECT}] {st}: " in p.stdout, st
        assert m["stages"][SUBJECT][st]["seconds"] >= 0
    with open(os.path.join(d, "state.json")) as f:
        state = json.load(f)
    assert "fig13" in state["done"][SUBJECT] and "report" in state["global"]
    g = m["gka"][SUBJECT]
    for meth in ("lb", "ti", "db", "makd"):
        for where in ("edge", "received"):
            for judge in ("dino", "clip", "total"):
                assert np.isfinite(g[meth][where][judge]["mean"]) and g[meth][where][judge]["std"] >= 0
        assert g[meth]["fid"] is not None and g[meth]["kid"]["mean"] == g[meth]["kid"]["mean"]
    assert g["ub"]["received"] is None and g["ub"]["edge"]["total"]["mean"] > 0
    assert m["gka_summary"]["lb"]["ratio_over_lb"]["edge"] == pytest.approx(1.0)
    tk = m["tka"]["jscc_mt"][SUBJECT]
    assert set(tk) == {"noka", "lora", "cala"}
    assert tk["noka"]["update_params"] == 0 and tk["cala"]["update_params"] > tk["lora"]["update_params"] > 0
    assert set(tk["cala"]["by_snr"]) == {"0.0", "20.0"} and np.isfinite(tk["cala"]["psnr"])
    assert {r["scheme"] for r in m["fig13"][SUBJECT]} == {"cala", "jpeg_ldpc", "latent_ldpc"}
    # transmitted artefacts: sizes in metrics equal the files
    art = m["artefacts"][SUBJECT]
    for name in ("prompt.txt", "learned_embeds.safetensors", "pytorch_lora_weights.safetensors",
                 "g_lora_q.safetensors", "j_lora_cala.safetensors"):
        assert art[name]["bytes"] == os.path.getsize(os.path.join(d, art[name]["path"])) > 0, name
    us = m["update_sizes"]
    assert us["g_ka"]["lora_bits"] == 16 and us["g_ka"]["metaword_bytes"] > 0 and 0 < us["g_ka"]["ratio"] < 1
    assert us["t_ka"]["params"] == tk["cala"]["update_params"]
    # images: uint8 [n, H, W, 3]
    for name, n in (("cloud", 10), ("lb", 4), ("makd", 4), ("rx_makd", 4), ("jpeg_ldpc", 2), ("latent_ldpc", 2)):
        with np.load(os.path.join(d, SUBJECT, "images", f"{name}.npz")) as f:
            x = f["images"]
        assert x.dtype == np.uint8 and x.shape[0] == n and x.shape[-1] == 3, name
    # the dequantised G-LoRA is diffusers-loadable by our own reader (PEFT keys)
    from dekag_jax.weights.adapters import load_textual_inversion

    tok, emb = load_textual_inversion(os.path.join(d, art["learned_embeds.safetensors"]["path"]))
    assert emb.ndim == 2 and np.isfinite(emb).all()
    assert os.path.isfile(os.path.join(d, "report.md"))


def test_kill_mid_stage_and_resume_gives_the_uninterrupted_numbers(smoke_run, tmp_path, env):
    """SIGKILL right after the first checkpoint of the metaword stage, restart; SIGKILL again after the
    first checkpoint of CALA, restart; the finished run equals the uninterrupted one (same seed, same
    numbers: this is also the determinism test)."""
    d0, _ = smoke_run
    d = str(tmp_path / "run")
    args = ["--config", SMOKE, "--workdir", d]
    p = _train(args, env, extra_env={"DEKAG_JAX_KILL_AFTER_CHECKPOINT": "metaword:1"})
    assert p.returncode == -9, p.stderr[-2000:]
    with open(os.path.join(d, "state.json")) as f:
        assert json.load(f)["done"][SUBJECT] == ["scg"]     # metaword not finished
    assert os.path.isdir(os.path.join(d, SUBJECT, "ckpt", "metaword", "1"))
    p = _train(args, env, extra_env={"DEKAG_JAX_KILL_AFTER_CHECKPOINT": "tka_cala:1"})
    assert p.returncode == -9, p.stderr[-2000:]
    assert "metaword: resuming at epoch 1/2" in p.stdout
    with open(os.path.join(d, "state.json")) as f:
        done = json.load(f)["done"][SUBJECT]
    assert "tka_lora" in done and "tka_cala" not in done
    p = _train(args, env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "tka_cala: resuming at epoch 1/2" in p.stdout
    assert f"[{SUBJECT}] metaword: " not in p.stdout          # finished stages are skipped
    a, b = _numbers(_metrics(d0)), _numbers(_metrics(d))
    assert a.keys() == b.keys()
    bad = {k: (a[k], b[k]) for k in a if not np.isclose(a[k], b[k], rtol=1e-6, atol=1e-9)}
    assert not bad, list(bad.items())[:5]


def test_nan_loss_stops_naming_stage_and_subject(tmp_path, env):
    d = str(tmp_path / "run")
    p = _train(["--config", SMOKE + ":gka", "--config.gka.metaword.lr=inf", "--workdir", d], env)
    assert p.returncode != 0
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "stage metaword" in last and SUBJECT in last, p.stderr[-2000:]
    with open(os.path.join(d, "state.json")) as f:
        assert json.load(f)["done"][SUBJECT] == ["scg"]      # what finished is kept
    assert os.path.isfile(os.path.join(d, "metrics.json"))


def test_changed_config_is_refused_naming_the_fields(tmp_path, capsys):
    from dekag_jax.errors import cli_main
    from dekag_jax.train import config_diff, main

    import importlib.util

    d = tmp_path / "run"
    d.mkdir()

    spec = importlib.util.spec_from_file_location("_smoke", SMOKE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    (d / "config.json").write_text(mod.get_config().to_json())
    rc = cli_main(main, ["--config", SMOKE, "--workdir", str(d), "--config.seed=3", "--config.tka.train.lr=0.5"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "seed" in err and "tka.train.lr" in err and "new --workdir" in err
    assert not (d / "state.json").exists()                    # refused before any work
    assert config_diff({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}, "d": 0}) == ["a.c", "d"]


def test_stage_checkpoint_round_trips_optax_state(tmp_path):
    import jax.numpy as jnp
    import optax

    from dekag_jax.train import StageCheckpoint

    tx = optax.adam(1e-3)
    tr = {"lora": {"a/kernel": {"lora_A": jnp.arange(6.0).reshape(2, 3), "lora_B": jnp.ones((3, 2))}}}
    st = tx.init(tr)
    _, st = tx.update(tr, st, tr)
    ck = StageCheckpoint(str(tmp_path / "ck"))
    assert ck.restore({"trainable": tr, "opt_state": st}) is None
    ck.save(1, {"trainable": tr, "opt_state": st}, {"history": [0.5]})
    ck.save(2, {"trainable": tr, "opt_state": st}, {"history": [0.5, 0.25]})
    tree, meta = ck.restore({"trainable": tr, "opt_state": tx.init(tr)})
    assert meta == {"epoch": 2, "history": [0.5, 0.25]}
    assert sorted(os.listdir(tmp_path / "ck")) == ["2"]       # the latest kept
    assert type(tree["opt_state"][0]) is type(st[0]) and int(tree["opt_state"][0].count) == 1
    np.testing.assert_array_equal(tree["opt_state"][0].mu["lora"]["a/kernel"]["lora_A"],
                                  np.asarray(st[0].mu["lora"]["a/kernel"]["lora_A"]))


def test_db_has_its_own_lora_settings_in_the_main_job(tmp_path, monkeypatch):
    """gka.db routes DB's stage (settings, initial LoRA, specs) in Job.trained; MAKD keeps gka.lora; a
    config.json from before gka.db existed resumes when db.* equals its gka.lora, else is refused."""
    import importlib.util

    import jax

    from dekag_jax.errors import UsageError
    from dekag_jax.ka import gka
    from dekag_jax.train import Job, check_config

    spec = importlib.util.spec_from_file_location("_smoke", SMOKE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config()
    assert c.gka.db.to_dict() == c.gka.lora.to_dict()          # default: the paper's one recipe
    old = json.loads(c.to_json())
    del old["gka"]["db"]
    (tmp_path / "config.json").write_text(json.dumps(old))
    check_config(str(tmp_path), c)                              # the same run: accepted
    c.unlock()
    c.gka.db.lr = 1e-3
    with pytest.raises(UsageError, match=r"differs in gka\.db\.lr\)"):
        check_config(str(tmp_path), c)

    # Job.trained on a stand-in Job: which settings, adapters and specs each LoRA stage gets
    job = object.__new__(Job)
    job.c, job.gka_methods = c, ["db", "makd"]
    job.mu0, job.frozen = np.zeros((1, 1, 4), np.float32), {}
    job.lora0, job.specs = {"attn": 1}, {"attn": "spec"}
    job.lora0_db, job.specs_db, job.db_settings = {"wide": 2}, {"wide": "spec"}, c.gka.db
    job.scg = lambda s: None
    monkeypatch.setattr(gka, "make_data", lambda pipe, scgs: None)
    job.pipe = None
    seen = {}

    def train_gka(subject, stage, data, trainable0, frozen, specs, sub, seed):
        seen[stage] = (trainable0, specs, float(sub.lr))
        return ({"metaword": jax.numpy.ones((1, 1, 4))} if stage == "metaword" else trainable0), [1.0]

    job.train_gka = train_gka
    out = job.trained(SUBJECT)
    assert seen["lora_db"] == ({"lora": {"wide": 2}}, {"wide": "spec"}, 1e-3)
    assert seen["lora_makd"] == ({"lora": {"attn": 1}}, {"attn": "spec"}, float(c.gka.lora.lr))
    assert out["db"] == {"wide": 2} and out["makd"] == {"attn": 1}


@pytest.mark.slow
def test_db_with_other_targets_runs_end_to_end(tmp_path, env):
    """The smoke job with DB's own targets and rank (gka.db): DB trains, samples and is scored with its
    own specs (a LoRA on the feed-forward kernels too), MAKD with gka.lora's."""
    wide = r".*/(attn[12]/to_(q|k|v|out\.0)|ff/net\.(0/proj|2)|proj_(in|out))/kernel"
    d = str(tmp_path / "run")
    p = _train(["--config", SMOKE + ":gka", "--workdir", d, "--config.gka.methods=db,makd,ub",
                f"--config.gka.db.targets={wide}", "--config.gka.db.rank=4", "--config.gka.db.alpha=4.0",
                "--config.gka.db.lr=1e-3"], env)
    assert p.returncode == 0, p.stderr[-3000:]
    m = _metrics(d)
    assert {"db", "makd"} <= set(m["gka"][SUBJECT])
    assert np.isfinite(m["gka"][SUBJECT]["db"]["edge"]["total"]["mean"])
    with open(os.path.join(d, "state.json")) as f:
        assert {"lora_db", "lora_makd", "edge"} <= set(json.load(f)["done"][SUBJECT])
