"""``python -m dekag_jax.train``: DeKA-g's Algorithm 1 end to end (the main job).

    python -m dekag_jax.train                                    # configs/default.py, runs/dekag
    python -m dekag_jax.train --config configs/smoke.py --workdir runs/smoke
    python -m dekag_jax.train --config.subjects=all --workdir runs/all   # dotted overrides

Algorithm 1 per subject, in banner-marked stages below (names as the paper's):

1. **S_CG** from the cloud (``ka.scg.build_scg``; cached in ``DIR/<subject>/``).
2. **MAKD**: the metaword mu* (eq. 8; = the TI baseline), then the LoRA Delta Theta_G with mu* frozen
   (eq. 9); the DB baseline (eq. 9's LoRA under the random metaword, with its own ``gka.db`` settings,
   equal to ``gka.lora`` by default). LB and UB need no training.
3. **Edge images and S_EG** from the aligned edge: the eg_test latents of LB/TI/DB/MAKD (eq. 5 "edge"
   scores) and the 100 eg_train latents of MAKD's edge ("mu v", LoRA merged): S_EG = {z, x = f_LD(z)}
   (eq. 7); its 30 eg_test latents are MAKD's eg_test latents.
4. **CALA** (eq. 10) on S_EG, with the T-KA baselines No-KA and LoRA (Full-FT when configured).
5. **Evaluation**: T-KA PSNR over Phi_EU and DINO/CLIP of the received images; eq. 5 of the G-KA
   methods' images after the CALA-aligned codec ("received"); Fig. 4 images (tau = 1/32, 10 dB,
   3000 ns, with JPEG-LDPC and Latent-LDPC); Fig. 13 points; then ``report.write_report(DIR)``.
6. **Studies** (optional, run only when ``studies.<fig>`` is on: off in configs/default.py and smoke.py,
   on in configs/studies.py): Fig. 8 (G-KA training depth, ``ka.gka_studies.depth_study``) and Fig. 9
   (LoRA rank vs precision, ``rank_bits_study``) on ``gka.studies.subject``, once per run; Fig. 11 (T-KA
   rank budget, ``ka.tka_studies.fig11_data``) on the first subject's S_EG, once per run; Fig. 12 (PSNR
   and FID vs bpp, ``fig12_data``) per subject after its Fig. 13 (the first subject's points are the
   contract's ``fig12``, every subject's under ``fig12.per_subject``). Settings and seconds of each study
   go to metrics.json ``studies_info``. A study stage killed midway reruns from its start (Fig. 11 keeps
   each finished training in ``DIR/<subject>/ckpt/fig11/``).

Writes (the contract of the main-job helpers): ``DIR/config.json``, ``DIR/state.json`` (finished stages),
``DIR/metrics.json`` (rewritten after every stage), ``DIR/<subject>/ckpt/<stage>/`` (orbax checkpoints,
every ``checkpoint_every_epochs`` epochs of a training stage; the last is kept: it is the stage's
output), ``DIR/<subject>/transmitted/`` (what the cloud sends, sizes in metrics.json
``artefacts``), ``DIR/<subject>/images/*.npz``, ``DIR/report.md`` and ``DIR/figures/``.

Resume: run the same command with the same ``--workdir``: finished stages are skipped (``state.json``),
an unfinished training stage restarts from its last checkpoint (trainable, optimiser state, epoch,
history; the data order and noise streams are fast-forwarded, so the numbers equal an uninterrupted
run's). A config that differs from ``DIR/config.json`` is refused naming the fields (a config.json from
before ``gka.db`` existed reads as ``gka.db = gka.lora``, what DB trained with then). A NaN/inf loss
stops the run with one line naming the stage and subject; everything finished stays.

Prints one summary line per stage (and a progress bar on stderr for long stages when it is a TTY).
"""
from __future__ import annotations

import json
import os
import platform
import signal
import sys
import time
from typing import Callable

import numpy as np

from dekag_jax.errors import NonFiniteLossError, UsageError, parse_config_flags, prepare_output_dir, \
    remove_if_empty

__all__ = ["main", "run", "config_diff", "check_studies", "StageCheckpoint", "SUBJECT_STAGES", "STUDIES",
           "DEFAULT_WORKDIR"]

DEFAULT_WORKDIR = "runs/dekag"
#: Fault injection (tests): ``<stage>:<epoch>`` makes the process SIGKILL itself right after that checkpoint
#: of a training stage is written, i.e. a hard kill mid-stage at a known point (tests/test_train.py).
KILL_ENV = "DEKAG_JAX_KILL_AFTER_CHECKPOINT"
_REPO_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "default.py")
SUBJECT_STAGES = ("scg", "metaword", "lora_db", "lora_makd", "edge", "seg", "tka_noka", "tka_lora", "tka_cala",
                  "tka_fullft", "received", "fig13", "fig12")
#: Optional study stages (``studies.<name>``): fig8, fig9, fig11 once per run, fig12 per subject.
STUDIES = ("fig8", "fig9", "fig11", "fig12")
GKA_METHODS = ("lb", "ti", "db", "makd", "ub")
METHODS_WITH_IMAGES = ("lb", "ti", "db", "makd")


# ============================================================================ run directory helpers


def _is_main() -> bool:
    """True on process 0 of a multi-process (``jax.distributed``) run, and in a single-process run.
    Only process 0 writes the run directory; the others compute the same values, keep them in
    memory and read what process 0 wrote after the barrier that ends each stage (``Job.stage``)."""
    from dekag_jax import parallel

    return parallel.is_main_process()


def _write_json(path: str, obj) -> None:
    """Atomic JSON write (a kill mid-write never leaves a half file); process 0 only."""
    if not _is_main():
        return
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def _flatten(d, prefix: str = "") -> dict:
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = d
    return out


def config_diff(old: dict, new: dict) -> list[str]:
    """Dotted fields whose values differ between two config dicts (missing on one side included)."""
    a, b = _flatten(old), _flatten(new)
    return sorted(k for k in set(a) | set(b) if a.get(k, "<absent>") != b.get(k, "<absent>"))


class StageCheckpoint:
    """Orbax checkpoints of one training stage in ``path`` (the latest one kept): the state pytree
    (trainable + optimiser state) saved as its flat leaf list, and a JSON part ``{"epoch", "history"}``.
    Restoring needs a template of the same structure (a freshly initialised state): the tree is
    rebuilt from the template's treedef, so optax's namedtuple states round-trip exactly."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)

    def _mgr(self):
        import orbax.checkpoint as ocp

        return ocp.CheckpointManager(self.path, options=ocp.CheckpointManagerOptions(
            max_to_keep=1, enable_async_checkpointing=False, create=True))

    def save(self, epoch: int, tree, meta: dict) -> None:
        import jax
        import orbax.checkpoint as ocp

        leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(tree))]
        mgr = self._mgr()
        mgr.save(int(epoch), args=ocp.args.Composite(
            state=ocp.args.StandardSave({"leaves": {f"{i:06d}": x for i, x in enumerate(leaves)}}),
            meta=ocp.args.JsonSave(dict(meta, epoch=int(epoch)))))
        mgr.wait_until_finished()
        mgr.close()

    def restore(self, template):
        """``(tree, meta)`` of the latest checkpoint, or None when there is none."""
        import jax
        import orbax.checkpoint as ocp

        if not os.path.isdir(self.path):
            return None
        mgr = self._mgr()
        step = mgr.latest_step()
        if step is None:
            mgr.close()
            return None
        leaves, treedef = jax.tree_util.tree_flatten(template)
        like = {"leaves": {f"{i:06d}": np.zeros(np.shape(x), np.asarray(x).dtype) for i, x in enumerate(leaves)}}
        r = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(like),
                                                        meta=ocp.args.JsonRestore()))
        mgr.close()
        got = [np.asarray(r.state["leaves"][f"{i:06d}"]) for i in range(len(leaves))]
        return jax.tree_util.tree_unflatten(treedef, got), dict(r.meta)


class _Progress:
    """A progress bar on stderr when it is a terminal (tqdm), otherwise nothing."""

    def __init__(self, total: int, desc: str, initial: int = 0):
        self.bar = None
        if sys.stderr.isatty() and total > 0:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, file=sys.stderr, leave=False)

    def update(self, n: int = 1):
        if self.bar is not None:
            self.bar.update(n)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class RunDir:
    """``DIR``: config.json, state.json, metrics.json and the per-subject folders."""

    def __init__(self, workdir: str, config, log: Callable[[str], None]):
        self.dir, self.config, self.log = workdir, config, log
        self.state_path = os.path.join(workdir, "state.json")
        self.metrics_path = os.path.join(workdir, "metrics.json")
        self.state = {"done": {}, "global": []}
        if os.path.isfile(self.state_path):
            with open(self.state_path) as f:
                self.state = json.load(f)
        self.metrics: dict = {}
        if os.path.isfile(self.metrics_path):   # resuming: keep what finished stages measured
            with open(self.metrics_path) as f:
                self.metrics = json.load(f)

    def sub(self, subject: str, *parts: str) -> str:
        p = os.path.join(self.dir, subject, *parts)
        os.makedirs(p if not os.path.splitext(p)[1] else os.path.dirname(p), exist_ok=True)
        return p

    def done(self, subject: str, stage: str) -> bool:
        if subject == "_global":
            return stage in self.state["global"]
        return stage in self.state["done"].get(subject, [])

    def finish(self, subject: str, stage: str, seconds: float, summary: str) -> None:
        self.metrics.setdefault("stages", {}).setdefault(subject, {})[stage] = {"seconds": round(seconds, 2),
                                                                                 "summary": summary}
        self.save_metrics()
        if subject == "_global":
            self.state["global"].append(stage)
        else:
            self.state["done"].setdefault(subject, []).append(stage)
        _write_json(self.state_path, self.state)
        self.log(f"[{subject}] {stage}: {summary} ({seconds:.1f} s, load {os.getloadavg()[0]:.1f})")

    def save_metrics(self) -> None:
        _write_json(self.metrics_path, self.metrics)

    def artefact(self, subject: str, path: str) -> int:
        n = os.path.getsize(path)
        self.metrics.setdefault("artefacts", {}).setdefault(subject, {})[os.path.basename(path)] = {
            "path": os.path.relpath(path, self.dir), "bytes": int(n)}
        return n


def _save_images(path: str, images) -> None:
    if not _is_main():   # process 0 writes the run directory
        return
    x = np.asarray(images)
    if x.dtype != np.uint8:
        x = (np.clip(x.astype(np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    tmp = path[:-4] + ".tmp.npz"
    np.savez(tmp, images=x)
    os.replace(tmp, path)


def _ints(text) -> list[int]:
    """``"0,5,15"`` -> ``[0, 5, 15]`` (the list fields of ``gka.studies``)."""
    return [int(x) for x in str(text).split(",") if x.strip()]


def _score(s: dict) -> dict:
    """eq. 5 score dict as the contract's SCORE (mean, std per judge and their sum)."""
    return {k: {"mean": float(s[k]["mean"]), "std": float(s[k]["std"])} for k in ("dino", "clip", "total")}


# ============================================================================ the job


class Job:
    """One run of Algorithm 1 over ``config.subjects`` in ``workdir`` (see the module doc)."""

    def __init__(self, config, workdir: str, log: Callable[[str], None] = print):
        import jax

        from dekag_jax import parallel
        from dekag_jax.ka import gka, sources, tka
        from dekag_jax.ka.transmission import LinkConfig
        from dekag_jax.ka.objective import LossWeights

        self.c, self.log = config, log
        self.rd = RunDir(workdir, config, log)
        self.main = parallel.is_main_process()   # only process 0 writes files (multi-process runs)
        self.prompts = sources.subject_prompts(str(config.subjects), str(config.prompts))
        self.subjects = list(self.prompts)
        self.mesh = parallel.make_mesh()
        self.ndev = int(self.mesh.size)
        for field, b in (("gka.metaword.batch", config.gka.metaword.batch), ("gka.lora.batch", config.gka.lora.batch),
                         ("gka.db.batch", gka.lora_settings(config.gka, "db").batch),
                         ("tka.train.batch", config.tka.train.batch)):
            if int(b) % self.ndev:
                raise UsageError(f"config.{field}={b} is not divisible by the {self.ndev} devices "
                                 f"(pick a multiple of {self.ndev})")
        self.train_mesh = self.mesh if self.ndev > 1 else None
        self.pipe = sources.load_edge(str(config.edge))
        self.judges = gka.judge_feature_fns(sources.load_judges(str(config.judges)))
        ss = self.pipe.unet.config.sample_size
        self.codec, self.codec_params, self.codec_source = sources.load_codec(str(config.codec), (ss, ss),
                                                                              seed=int(config.seed))
        self.codec_name = os.path.basename(os.path.normpath(self.codec_source)) if os.path.isdir(
            self.codec_source) else str(config.codec).replace(":", "_")
        t = config.tka
        self.grid = tka.grid_from_config(t.conditions)
        self.link = LinkConfig(qam_order=t.link.qam_order, quantizer=t.link.quantizer,
                               temperature=t.link.temperature, channel=t.link.channel)
        self.weights = LossWeights(latent=t.loss.latent, image=t.loss.image, perceptual=t.loss.perceptual,
                                   constellation=t.loss.constellation)
        self.tka_frozen = tka.frozen_tree(self.codec_params, self.pipe.vae_params)
        g = config.gka
        self.gka_methods = [m for m in GKA_METHODS if m in str(g.methods).split(",")]
        self.tka_methods = [m for m in tka.METHODS if m in str(t.methods).split(",")]
        key = jax.random.fold_in(jax.random.key(int(config.seed)), 0)   # as ka.gka.run_subject
        self.key = key
        from dekag_jax.adapt import metaword

        dim = self.pipe.text_encoder.config.hidden_size
        # the random metaword TI/MAKD start from and DB keeps (as ka.gka.run_subject draws it)
        self.mu0 = metaword.init_metaword(jax.random.fold_in(key, 1), dim, int(g.metaword.n_tokens),
                                          init=str(g.metaword.init))[None]
        self.lora0, self.specs = gka.init_lora(self.pipe, jax.random.fold_in(key, 2), rank=g.lora.rank,
                                               alpha=g.lora.alpha, targets=str(g.lora.targets))
        # DB's LoRA (gka.db.*): its own adapters and specs when its rank/alpha/targets differ from MAKD's
        # (the same key: equal settings give the identical draw, DB and MAKD's shared start by default)
        self.db_settings = gka.lora_settings(g, "db")
        d = self.db_settings
        same = (int(d.rank), float(d.alpha), str(d.targets)) == (int(g.lora.rank), float(g.lora.alpha),
                                                                 str(g.lora.targets))
        self.lora0_db, self.specs_db = (self.lora0, self.specs) if same else gka.init_lora(
            self.pipe, jax.random.fold_in(key, 2), rank=d.rank, alpha=d.alpha, targets=str(d.targets))
        # chunk = the eq. 5 image count: eg_test (30) and S_EG (100 = 4 chunks of 30, the last padded)
        # run one sampler shape, so the DDIM program compiles once per run
        self.gen = gka.Generator(self.pipe, self.specs, num_steps=int(g.eval.num_steps),
                                 guidance_scale=float(g.eval.guidance), chunk=max(1, min(64, int(g.eval.n_images))))
        # DB samples with its own specs (a second sampler program only when they differ)
        self.gen_db = self.gen if same else gka.Generator(
            self.pipe, self.specs_db, num_steps=int(g.eval.num_steps), guidance_scale=float(g.eval.guidance),
            chunk=max(1, min(64, int(g.eval.n_images))))
        self.frozen = {"unet": self.pipe.unet_params, "text": self.pipe.text_params}
        # eq. 5 after the channel: a fixed-seed subset of K conditions of Phi_EU (the same for every
        # image, method and subject), so "received" is comparable across methods
        units, snrs, omegas = self.grid
        conds = [(u, s, w) for u in units for s in snrs for w in omegas]   # tka.evaluate's order
        k = min(int(config.eval.received_conditions), len(conds))
        rng = np.random.default_rng(int(config.eval.seed))
        self.rx_index = sorted(rng.choice(len(conds), k, replace=False).tolist())
        self.rx_conditions = [conds[i] for i in self.rx_index]
        self._fwd: dict = {}

    # ------------------------------------------------------------------ bookkeeping

    def stage(self, subject: str, name: str, fn: Callable[[], str]) -> None:
        """Run ``fn`` (returns the summary line) unless ``name`` is finished for ``subject``."""
        if self.rd.done(subject, name):
            return
        t0 = time.time()
        try:
            summary = fn()
        except NonFiniteLossError as e:
            raise NonFiniteLossError(f"stage {name}, subject {subject}: {e}; finished stages are kept "
                                     f"({self.rd.state_path})") from None
        self.rd.finish(subject, name, time.time() - t0, summary)
        # multi-process: the others read what process 0 wrote in this stage only after it is written
        from dekag_jax import parallel

        parallel.barrier(f"dekag_jax.train stage {subject}/{name}")

    def metrics_header(self) -> None:
        import jax

        m = self.rd.metrics
        m["schema"] = 1
        m["config"] = json.loads(self.c.to_json())
        m["machine"] = {"backend": jax.default_backend(), "devices": jax.device_count(),
                        "processes": jax.process_count(), "cpu_count": os.cpu_count(),
                        "platform": platform.platform(), "load_avg_start": os.getloadavg()[0]}
        m["subjects"] = self.subjects
        m["sources"] = {"edge": str(self.c.edge), "judges": str(self.c.judges), "codec": self.codec_source,
                        "cloud": str(self.c.scg.source)}
        m["received_conditions"] = {
            "what": "eq. 5 after the channel: every eg_test image sent once under each of these conditions of "
                    "Phi_EU (a fixed-seed subset, config eval.received_conditions / eval.seed)",
            "conditions": [{"tau": f"{u}/64", "snr_db": s, "delay_spread_ns": round(w * 1e9, 3)}
                           for u, s, w in self.rx_conditions]}
        for k in ("stages", "gka", "tka", "fig13", "artefacts"):
            m.setdefault(k, {})
        self.rd.save_metrics()

    # ------------------------------------------------------------------ training with checkpoints

    def _train(self, subject: str, stage: str, template: dict, epochs: int, run_fn) -> tuple[dict, list]:
        """Resumable training: restore the stage's last checkpoint (if any) and continue to ``epochs``.
        ``run_fn(trainable, opt_state, start_epoch, on_checkpoint, progress) -> (trainable, history)``."""
        ck = StageCheckpoint(self.rd.sub(subject, "ckpt", stage))
        r = ck.restore(template)
        start, prev = 0, []
        trainable, opt_state = template["trainable"], None
        if r is not None:
            tree, meta = r
            start, prev = int(meta["epoch"]), list(meta["history"])
            trainable, opt_state = tree["trainable"], tree["opt_state"]
            if start >= epochs:
                return trainable, prev
            self.log(f"[{subject}] {stage}: resuming at epoch {start}/{epochs} ({ck.path})")
        bar = _Progress(epochs, f"{subject} {stage}", start)

        def on_checkpoint(ep, tr, st, hist):
            ck.save(ep, {"trainable": tr, "opt_state": st}, {"history": prev + list(hist)})
            if os.environ.get(KILL_ENV) == f"{stage}:{ep}":   # fault injection for the resume test
                os.kill(os.getpid(), signal.SIGKILL)

        try:
            trainable, hist = run_fn(trainable, opt_state, start, on_checkpoint, bar)
        finally:
            bar.close()
        return trainable, prev + list(hist)

    def train_gka(self, subject: str, stage: str, data, trainable0: dict, frozen: dict, specs, sub, seed: int):
        import optax

        from dekag_jax.ka import gka

        template = {"trainable": trainable0, "opt_state": optax.adam(float(sub.lr)).init(trainable0)}

        def run_fn(trainable, opt_state, start, on_checkpoint, bar):
            return gka.train_stage(self.pipe, data, trainable, frozen, specs, epochs=int(sub.epochs),
                                   batch=int(sub.batch), lr=float(sub.lr), seed=seed, mesh=self.train_mesh,
                                   start_epoch=start, opt_state=opt_state,
                                   checkpoint_every=int(self.c.checkpoint_every_epochs),
                                   on_checkpoint=on_checkpoint, on_epoch=lambda ep, tr: bar.update(1))

        return self._train(subject, stage, template, int(sub.epochs), run_fn)

    # ------------------------------------------------------------------ per-subject data

    def scg(self, subject: str):
        from dekag_jax.ka import sources
        from dekag_jax.ka.scg import build_scg

        return build_scg(self.pipe, subject, source=str(self.c.scg.source), prompt=self.prompts[subject],
                         cache_dir=self.rd.sub(subject) if self.main else None,  # process 0 writes the cache
                         cloud=sources.cloud_options(self.c))

    def trained(self, subject: str, upto: str = "lora_makd") -> dict:
        """mu* (TI), the DB and MAKD LoRAs of a subject, in this order up to ``upto``: trained now (from the
        last checkpoint) or restored from their final checkpoints."""
        from dekag_jax.ka import gka

        s, c = subject, self.c.gka
        order = ("metaword", "lora_db", "lora_makd")
        want = order[:order.index(upto) + 1]
        out = {"mu0": self.mu0}
        data = gka.make_data(self.pipe, [self.scg(s)])
        if "metaword" in want and any(m in self.gka_methods for m in ("ti", "makd")):
            tr, hist = self.train_gka(s, "metaword", data, {"metaword": self.mu0}, self.frozen, None, c.metaword,
                                      int(self.c.seed) + 1)
            out["mu"], out["hist_metaword"] = tr["metaword"], hist
        lora_sets = {"db": (self.mu0, self.lora0_db, self.specs_db, self.db_settings),
                     "makd": (out.get("mu"), self.lora0, self.specs, c.lora)}
        for name, (mu, lora0, specs, sub) in lora_sets.items():
            if f"lora_{name}" in want and name in self.gka_methods:
                tr, hist = self.train_gka(s, f"lora_{name}", data, {"lora": lora0},
                                          {**self.frozen, "metaword": mu}, specs, sub, int(self.c.seed) + 2)
                out[name], out[f"hist_{name}"] = tr["lora"], hist
        return out

    def edge_latents(self, subject: str) -> dict:
        path = os.path.join(self.rd.dir, subject, "edge_latents.npz")
        with np.load(path) as d:
            return {k: d[k] for k in d.files}

    def seg(self, subject: str) -> dict:
        with np.load(os.path.join(self.rd.dir, subject, "seg.npz")) as d:
            return {k: d[k] for k in d.files}

    # ------------------------------------------------------------------ T-KA pieces

    def adapter_kw(self) -> dict:
        """``tka.make_setup``'s adapter options from ``tka.adapter`` (all but the rank)."""
        a = self.c.tka.adapter
        return dict(codec_targets=a.codec_targets, decoder_targets=a.decoder_targets,
                    fullft_decoder=a.fullft_decoder, cala_phi=a.cala_phi, cala_gate=a.cala_gate)

    def setup_for(self, method: str):
        from dekag_jax.ka import tka

        return tka.make_setup(method, self.codec, self.codec_params, self.pipe.vae, self.pipe.vae_params,
                              link=self.link, rank=self.c.tka.adapter.rank, **self.adapter_kw())

    def tka_trained(self, subject: str, method: str, seg: dict | None = None):
        """``(setup, trainable, history)`` of a T-KA method (trained now or restored)."""
        import jax

        from dekag_jax.ka import tka

        t = self.c.tka
        setup = self.setup_for(method)
        trainable0 = tka.init_method(setup, jax.random.key(int(self.c.seed)), self.codec_params, self.pipe.vae_params)
        if method == "noka":
            return setup, trainable0, []
        tx = tka.make_tx(method, float(t.train.lr), weight_decay=float(t.train.weight_decay),
                         gate_lr_mult=float(t.train.gate_lr_mult))
        template = {"trainable": trainable0, "opt_state": tx.init(trainable0)}
        seg = seg if seg is not None else self.seg(subject)

        def run_fn(trainable, opt_state, start, on_checkpoint, bar):
            n_steps = len(range(0, len(seg["z_train"]) - min(int(t.train.batch), len(seg["z_train"])) + 1,
                                min(int(t.train.batch), len(seg["z_train"]))))
            steps = {"k": 0}

            def on_step(row):
                steps["k"] += 1
                if steps["k"] % max(n_steps, 1) == 0:
                    bar.update(1)

            return tka.train(setup, trainable, self.tka_frozen, seg["z_train"], seg["x_train"], grid=self.grid,
                             weights=self.weights, epochs=int(t.train.epochs), batch=int(t.train.batch),
                             lr=float(t.train.lr), weight_decay=float(t.train.weight_decay), seed=int(self.c.seed),
                             log=None, gate_lr_mult=float(t.train.gate_lr_mult), mesh=self.train_mesh,
                             start_epoch=start, opt_state=opt_state,
                             checkpoint_every=int(self.c.checkpoint_every_epochs), on_checkpoint=on_checkpoint,
                             on_step=on_step)

        trainable, hist = self._train(subject, f"tka_{method}", template, int(t.train.epochs), run_fn)
        return setup, trainable, hist

    def transmit(self, setup, trainable, z, conditions, seed: int, chunk: int = 64) -> np.ndarray:
        """Received images ``[len(conditions), N, H, W, 3]`` float32: every latent of z ``[N, h, w, 4]``
        under every condition ``(rate units, snr dB, omega s)``; channel key per chunk from ``seed``."""
        import jax
        import jax.numpy as jnp

        from dekag_jax.ka import tka
        from dekag_jax.ka.transmission import delay_spread_index

        if id(setup) not in self._fwd:
            self._fwd[id(setup)] = (setup, jax.jit(
                lambda tr, fr, zb, key, n, s, w: tka.forward(setup, tr, fr, zb, key, n, s, w)[1]))
        fwd = self._fwd[id(setup)][1]
        N = len(z)
        widx = delay_spread_index([w for _, _, w in conditions], setup.link)
        ci = np.repeat(np.arange(len(conditions)), N)
        ii = np.tile(np.arange(N), len(conditions))
        nn = np.asarray([conditions[c][0] for c in ci], np.int32)
        ss = np.asarray([conditions[c][1] for c in ci], np.float32)
        ww = np.asarray([widx[c] for c in ci], np.int32)
        out = []
        for j, a in enumerate(range(0, len(ci), chunk)):
            sl = np.arange(a, min(a + chunk, len(ci)))
            pad = chunk - len(sl)
            slp = np.concatenate([sl, np.full(pad, sl[-1])]) if pad else sl
            x = fwd(trainable, self.tka_frozen, jnp.asarray(np.asarray(z)[ii[slp]]),
                    jax.random.fold_in(jax.random.key(seed), j), jnp.asarray(nn[slp]), jnp.asarray(ss[slp]),
                    jnp.asarray(ww[slp]))
            out.append(np.asarray(x, np.float32)[:len(sl)])
        return np.concatenate(out).reshape(len(conditions), N, *out[0].shape[1:])

    # ================================================================== Algorithm 1, one subject

    def run_subject(self, s: str) -> None:
        import jax

        from dekag_jax.ka import gka, tka

        c, rd = self.c, self.rd
        self.log(f"=== subject {s}: {self.prompts[s]!r}")

        # ------------------------------------------------------------ (1) S_CG from the cloud (eq. 6's data)
        def st_scg():
            scg = self.scg(s)
            _save_images(rd.sub(s, "images", "cloud.npz"), scg.test_images)
            return (f"{len(scg.train_latents)} cg_train latents {tuple(scg.train_latents.shape[1:])}, "
                    f"{len(scg.test_images)} cg_test images ({scg.source})")

        self.stage(s, "scg", st_scg)

        # ------------------------------------------------------------ (2) MAKD: metaword (eq. 8), LoRA (eq. 9)
        def st_train(name):
            def fn():
                out = self.trained(s, "metaword" if name == "metaword" else f"lora_{name}")
                hist = out.get(f"hist_{name}", [])
                return (f"{len(hist)} epochs, train loss {hist[0]:.4f} -> {hist[-1]:.4f}" if hist
                        else "0 epochs (nothing to train)")
            return fn

        if any(m in self.gka_methods for m in ("ti", "makd")):
            self.stage(s, "metaword", st_train("metaword"))
        for name in ("db", "makd"):
            if name in self.gka_methods:
                self.stage(s, f"lora_{name}", st_train(name))

        # ------------------------------------------------------------ (3) edge images (eq. 5 "edge") and S_EG (eq. 7)
        def st_edge():
            scg, tr = self.scg(s), self.trained(s)
            from dekag_jax.ka.scg import subject_seeds

            seeds = subject_seeds(s, "eg_test")[:int(c.gka.eval.n_images)]
            prompt = self.prompts[s]
            args = {"lb": (None, None), "ti": (tr.get("mu"), None), "db": (self.mu0, tr.get("db")),
                    "makd": (tr.get("mu"), tr.get("makd"))}
            zs, parts = {}, []
            gk = rd.metrics["gka"].setdefault(s, {})
            for m in METHODS_WITH_IMAGES:
                if m not in self.gka_methods:
                    continue
                mu, ad = args[m]
                gen = self.gen_db if m == "db" else self.gen   # DB's LoRA applied with DB's specs
                z = gen.latents(prompt, seeds, None if mu is None else mu[0], ad)
                imgs = gen.decode(z)
                zs[m] = z
                _save_images(rd.sub(s, "images", f"{m}.npz"), imgs)
                row = {"edge": _score(gka.score_subject(self.judges, imgs, scg.test_images)), "received": None,
                       "fid": None, "kid": None}
                if c.eval.fid:
                    d = gka.distribution_scores(self.judges, imgs, gka.fid_reference(scg), seed=int(c.seed))
                    row["fid"], row["kid"] = float(d["fid"]), {"mean": float(d["kid"]["mean"]),
                                                               "std": float(d["kid"]["std"])}
                gk[m] = row
                parts.append(f"{m.upper()} {row['edge']['total']['mean']:.3f}")
            if "ub" in self.gka_methods:
                gk["ub"] = {"edge": _score(gka.ub_subject(self.judges, scg.test_images)), "received": None,
                            "fid": None, "kid": None}
                parts.append(f"UB {gk['ub']['edge']['total']['mean']:.3f}")
            if self.main:   # process 0 writes the run directory
                np.savez(os.path.join(rd.dir, s, "edge_latents.npz"), **zs)
                self._write_gka_transmitted(s, tr)
            self._gka_summary()
            return f"eq. 5 DINO+CLIP (edge, {len(seeds)} images): " + ", ".join(parts)

        self.stage(s, "edge", st_edge)

        def st_seg():
            tr = self.trained(s)
            from dekag_jax.ka.scg import subject_seeds

            if "makd" in self.gka_methods:
                mu, ad, what = tr["mu"][0], tr["makd"], "aligned edge (mu* v, MAKD LoRA merged)"
            else:  # no MAKD in this run: the plain edge (stated in metrics)
                mu, ad, what = None, None, "non-aligned edge (plain prompt)"
            seeds = subject_seeds(s, "eg_train")[:int(c.tka.seg.n_train)]
            z_tr = self.gen.latents(self.prompts[s], seeds, mu, ad)
            x_tr = self.gen.decode(z_tr)
            zt = self.edge_latents(s).get("makd")
            if zt is None:
                zt = self.gen.latents(self.prompts[s], subject_seeds(s, "eg_test")[:int(c.tka.seg.n_test)], mu, ad)
            zt = zt[:int(c.tka.seg.n_test)]
            xt = self.gen.decode(zt)
            if self.main:   # process 0 writes the run directory
                np.savez(os.path.join(rd.dir, s, "seg.npz"), z_train=z_tr, x_train=x_tr, z_test=zt, x_test=xt)
            rd.metrics.setdefault("seg", {})[s] = {"source": what, "n_train": len(z_tr), "n_test": len(zt)}
            return f"S_EG from the {what}: {len(z_tr)} eg_train + {len(zt)} eg_test latents"

        self.stage(s, "seg", st_seg)

        # ------------------------------------------------------------ (4) CALA (eq. 10) and the T-KA baselines
        for m in self.tka_methods:
            def st_tka(m=m):
                seg = self.seg(s)
                setup, trainable, hist = self.tka_trained(s, m, seg)
                counts = tka.adapter_counts(setup, self.codec_params, self.pipe.vae_params)
                kw = {"mesh": self.mesh} if self.ndev > 1 else {}
                ev = tka.evaluate(setup, trainable, self.tka_frozen, seg["z_test"], seg["x_test"], grid=self.grid,
                                  seed=int(c.tka.eval.seed), chunk=int(c.tka.eval.chunk), return_images=True, **kw)
                imgs = np.asarray(ev["images"], np.float32)[self.rx_index]      # [K, N, H, W, 3]
                sc = _score(gka.score_subject(self.judges, imgs.reshape(-1, *imgs.shape[2:]), self.scg(s).test_images))
                row = {"psnr": ev["psnr_mean"], "dino": sc["dino"]["mean"], "clip": sc["clip"]["mean"],
                       "score": sc, "by_snr": ev["by_snr"], "by_rate": ev["by_rate"],
                       "by_delay_spread": ev["by_delay_spread"], "conditions": ev["conditions"],
                       "update_params": int(counts["update_params"]), "update_bytes": int(counts["update_fp16_bytes"]),
                       "ratio": float(counts["ratio"]), "steps": len(hist),
                       "loss_first": hist[0]["loss"] if hist else None, "loss_last": hist[-1]["loss"] if hist else None}
                rd.metrics["tka"].setdefault(self.codec_name, {}).setdefault(s, {})[m] = row
                if m == "cala" and self.main:   # process 0 writes the run directory
                    p = rd.sub(s, "transmitted", "j_lora_cala.safetensors")
                    tka.save_checkpoint(p, setup, jax.device_get(trainable), extra={"subject": s,
                                                                                    "codec": self.codec_source})
                    rd.artefact(s, p)
                    rd.metrics.setdefault("update_sizes", {})["t_ka"] = {
                        "bytes": int(counts["update_fp16_bytes"]), "params": int(counts["update_params"]),
                        "ratio": float(counts["ratio"])}
                return (f"{len(hist)} steps; PSNR over Phi_EU {ev['psnr_mean']:.2f} dB; received DINO "
                        f"{row['dino']:.3f} CLIP {row['clip']:.3f}; update {row['update_params']} params "
                        f"({100 * row['ratio']:.2f}%)")

            self.stage(s, f"tka_{m}", st_tka)

        # ------------------------------------------------------------ (5) evaluation after the channel, Fig. 4
        def st_received():
            from dekag_jax.channel.condition import Condition

            if "cala" in self.tka_methods:
                setup, trainable, _ = self.tka_trained(s, "cala")
                aligned = "CALA"
            else:   # no CALA in this run: the pretrained codec (stated in metrics)
                setup, trainable, _ = self.tka_trained(s, "noka")
                aligned = "No-KA"
            scg, zs = self.scg(s), self.edge_latents(s)
            f4 = c.fig4
            u4 = int(str(f4.rate).split("/")[0])
            fig4 = [(u4, float(f4.snr_db), float(f4.delay_spread_ns) * 1e-9)]
            parts = []
            for m, z in zs.items():
                rx = self.transmit(setup, trainable, z, self.rx_conditions, int(c.eval.seed))
                sc = _score(gka.score_subject(self.judges, rx.reshape(-1, *rx.shape[2:]), scg.test_images))
                rd.metrics["gka"][s][m]["received"] = sc
                rx4 = self.transmit(setup, trainable, z, fig4, int(c.eval.seed) + 1)[0]
                _save_images(rd.sub(s, "images", f"rx_{m}.npz"), rx4)
                parts.append(f"{m.upper()} {sc['total']['mean']:.3f}")
            n4 = int(f4.n_images)
            if f4.baselines and "makd" in zs and n4 > 0:
                cond = Condition(str(f4.rate), float(f4.snr_db), float(f4.delay_spread_ns) * 1e-9)
                z = zs["makd"][:n4]
                edge = self.gen.decode(z)
                jp, lt = self._ldpc_baselines(z, edge, cond, int(c.eval.seed) + 2)
                _save_images(rd.sub(s, "images", "jpeg_ldpc.npz"), jp)
                _save_images(rd.sub(s, "images", "latent_ldpc.npz"), lt)
            self._gka_summary()
            return (f"eq. 5 DINO+CLIP after the {aligned}-aligned codec ({len(self.rx_conditions)} conditions): "
                    + ", ".join(parts))

        if any(m in self.gka_methods for m in METHODS_WITH_IMAGES):
            self.stage(s, "received", st_received)

        # ------------------------------------------------------------ Fig. 13: PSNR vs SNR, CALA vs LDPC baselines
        def st_fig13():
            from dekag_jax.ka import tka_studies

            f = c.fig13
            seg = self.seg(s)
            z, x = seg["z_test"][:int(f.n_images)], seg["x_test"][:int(f.n_images)]
            # the aligned codec (CALA; No-KA when the run has no CALA, labelled "cala" by fig13_data: stated here)
            setup, trainable, _ = self.tka_trained(s, "cala" if "cala" in self.tka_methods else "noka")
            rows = tka_studies.fig13_data(setup, trainable, self.tka_frozen, z, x, snrs_db=tuple(f.snrs_db),
                                          delay_spreads_ns=tuple(f.delay_spreads_ns),
                                          rates=tuple(r.strip() for r in str(f.rates).split(",") if r.strip()),
                                          seed=int(c.eval.seed) + 3)
            rd.metrics["fig13"][s] = rows
            mean = {sch: np.mean([r["psnr_mean"] for r in rows if r["scheme"] == sch])
                    for sch in dict.fromkeys(r["scheme"] for r in rows)}
            return (f"{len(rows)} points ({len(z)} images each); mean PSNR " +
                    ", ".join(f"{k} {v:.2f} dB" for k, v in mean.items()))

        if int(c.fig13.n_images) > 0:
            self.stage(s, "fig13", st_fig13)

        # ------------------------------------------------------------ (6) study: Fig. 12, PSNR and FID vs bpp
        if self.study_on("fig12"):
            self.stage(s, "fig12", lambda: self._fig12(s))

    def _ldpc_baselines(self, z, edge_images, cond, seed: int):
        """JPEG-LDPC of the edge images and Latent-LDPC of their latents (decoded by the edge VAE) under
        one condition: ``(jpeg uint8 [n, H, W, 3], latent float32 [n, H, W, 3])``. A JPEG that does not fit
        the budget is a mid-grey image (nothing received)."""
        import jax

        from dekag_jax.baselines.jpeg_ldpc import jpeg_ldpc
        from dekag_jax.baselines.latent_ldpc import latent_ldpc

        imgs = (np.clip(np.asarray(edge_images, np.float32), 0, 1) * 255).round().astype(np.uint8)
        f = imgs.shape[1] // np.asarray(z).shape[1]
        jp, lt = [], []
        for i in range(len(imgs)):
            r = jpeg_ldpc(imgs[i], cond, jax.random.fold_in(jax.random.key(seed), i))
            jp.append(r["image"] if r["sent"] else np.full_like(imgs[i], 128))
            rl = latent_ldpc(np.asarray(z[i]), cond, jax.random.fold_in(jax.random.key(seed + 1), i),
                             pixels_per_element=f * f)
            lt.append(rl["latent"])
        return np.stack(jp), self.gen.decode(np.stack(lt))

    def _write_gka_transmitted(self, s: str, tr: dict) -> None:
        """What the cloud sends for G-KA: prompt, metaword, G-LoRA (quantised bytes counted, and its
        dequantised update written diffusers-loadable)."""
        import jax

        from dekag_jax.adapt import metaword, quant
        from dekag_jax.weights import adapters as AF
        from dekag_jax.weights.files import save_state_dict

        rd, bits = self.rd, int(self.c.gka.lora_bits)
        d = rd.sub(s, "transmitted")
        p = os.path.join(d, "prompt.txt")
        with open(p, "w") as f:
            f.write(self.prompts[s] + "\n")
        rd.artefact(s, p)
        sizes = {"lora_bits": bits}
        n_upd = 0
        if "mu" in tr:
            mu = np.asarray(tr["mu"][0])
            rd.artefact(s, AF.save_textual_inversion(d, metaword.DEFAULT_TOKEN, mu))
            sizes["metaword_bytes"] = int(2 * mu.size)   # float16 on the wire
            n_upd += int(mu.size)
        if "makd" in tr:
            ad = jax.device_get(tr["makd"])
            packed = quant.encode(ad, bits)
            flat = {f"{pth}/{k}": np.frombuffer(b, np.uint8) for pth, a in packed.items() for k, b in a.items()}
            p = os.path.join(d, "g_lora_q.safetensors")
            save_state_dict(flat, p, metadata={"format": "dekag-quant", "bits": str(bits),
                                               "shapes": json.dumps({f"{pth}/{k}": list(np.shape(v))
                                                                     for pth, a in ad.items() for k, v in a.items()})})
            rd.artefact(s, p)
            sizes["lora_bytes"] = int(sum(len(b) for a in packed.values() for b in a.values()))
            deq = quant.decode(packed, ad, bits)
            rd.artefact(s, AF.save_lora(d, deq, self.specs))
            n_upd += int(sum(np.size(v) for a in ad.values() for v in a.values()))
        unet = int(sum(np.size(x) for x in jax.tree_util.tree_leaves(self.pipe.unet_params)))
        sizes["params"] = n_upd
        sizes["ratio"] = n_upd / unet    # update parameters / edge UNet parameters (the paper's 0.2%)
        sizes["unet_params"] = unet
        rd.metrics.setdefault("update_sizes", {})["g_ka"] = sizes

    def _gka_summary(self) -> None:
        """Mean over subjects of each method's edge/received SCORE; ratio over LB = mean of per-subject
        ratios of the total (as ka.gka.run)."""
        g = self.rd.metrics["gka"]
        out = {}
        for m in GKA_METHODS:
            rows = [g[s][m] for s in g if m in g[s]]
            if not rows:
                continue
            e = {}
            for where in ("edge", "received"):
                vals = [r[where] for r in rows if r.get(where) is not None]
                e[where] = ({n: {k: float(np.mean([v[n][k] for v in vals])) for k in ("mean", "std")}
                             for n in ("dino", "clip", "total")} if vals and len(vals) == len(rows) else None)
            ratio = {}
            for where in ("edge", "received"):
                rs = [g[s][m][where]["total"]["mean"] / g[s]["lb"][where]["total"]["mean"] for s in g
                      if m in g[s] and "lb" in g[s] and g[s][m].get(where) and g[s]["lb"].get(where)]
                ratio[where] = float(np.mean(rs)) if rs and len(rs) == len(rows) else None
            e["ratio_over_lb"] = ratio
            out[m] = e
        self.rd.metrics["gka_summary"] = out

    # ================================================================== all subjects, then the report

    def run(self) -> dict:
        from dekag_jax import parallel

        # every process has read state.json (RunDir) before process 0 writes anything of this run
        parallel.barrier("dekag_jax.train start")
        t0 = time.time()
        self.metrics_header()
        for s in self.subjects:
            self.run_subject(s)
        if self.c.multi_subject:
            self.stage("_global", "multi_makd", self._multi_subject)
        # ------------------------------------------------------------ (6) studies: Figs. 8, 9, 11
        for fig, fn in (("fig8", self._fig8), ("fig9", self._fig9), ("fig11", self._fig11)):
            if self.study_on(fig):
                self.stage("_global", fig, fn)

        def st_report():
            from dekag_jax import report

            if not self.main:   # process 0 writes the run directory
                return "written by process 0"
            path = report.write_report(self.rd.dir)
            return f"wrote {path}"

        self.rd.metrics["seconds"] = round(time.time() - t0, 1)
        self.rd.metrics["machine"]["load_avg_end"] = os.getloadavg()[0]
        self.rd.save_metrics()
        self.stage("_global", "report", st_report)
        return self.rd.metrics

    def _multi_subject(self) -> str:
        """Fig. 7 (``ka.gka_studies.run_multi``) over the run's subjects, reusing their per-subject MAKD."""
        from dekag_jax.ka import gka_studies

        if len(self.subjects) < 2 or "makd" not in self.gka_methods:
            return "multi-subject MAKD skipped: needs two or more subjects and MAKD"
        g = self._gka_study_config()
        per = {}
        for s in self.subjects:
            tr = self.trained(s)
            per[s] = {"metaword": tr["mu"], "lora": tr["makd"]}
        res = gka_studies.run_multi(self.pipe, self.judges, self.subjects, g, per_subject=per, log=self.log)
        self.rd.metrics["fig7"] = {s: {k: _score(v) for k, v in r.items()} for s, r in res.items()}
        mm = np.mean([r["multi_makd"]["total"]["mean"] for r in res.values()])
        return f"multi-subject MAKD over {len(self.subjects)} subjects: mean DINO+CLIP {mm:.3f}"

    # ================================================================== (6) optional studies

    def study_on(self, fig: str) -> bool:
        """Whether ``studies.<fig>`` is on (a config without a ``studies`` section runs none)."""
        st = self.c.get("studies")
        return bool(st is not None and st.get(fig, False))

    def _gka_study_config(self):
        """The G-KA config ``ka.gka_studies`` reads (``configs/gka.py``'s layout): this run's ``gka``
        section with its seed and cloud."""
        import ml_collections

        g = ml_collections.ConfigDict(json.loads(self.c.gka.to_json()))
        g.seed, g.scg = int(self.c.seed), ml_collections.ConfigDict(json.loads(self.c.scg.to_json()))
        return g

    def _study_info(self, fig: str, info: dict) -> None:
        self.rd.metrics.setdefault("studies_info", {})[fig] = json.loads(json.dumps(info, default=float))

    def _fig8(self) -> str:
        """Fig. 8: eq. 5 against training depth of the metaword and the LoRA (one run each, scored at
        ``gka.studies`` depths), with the held-out automatic pick."""
        from dekag_jax.ka import gka_studies

        st, info = self.c.gka.studies, {}
        res = gka_studies.depth_study(self.pipe, self.judges, str(st.subject), self._gka_study_config(),
                                      metaword_epochs=_ints(st.metaword_epochs),
                                      lora_epochs=_ints(st.lora_epochs), n_heldout=int(st.n_heldout),
                                      n_images=int(st.n_images), num_steps=int(st.num_steps), info=info,
                                      log=self.log)
        self.rd.metrics["fig8"] = res
        self._study_info("fig8", info)
        return (f"{st.subject}: depth picked by held-out eq. 5: metaword {res['chosen']['metaword']} epochs, "
                f"LoRA {res['chosen']['lora']} epochs")

    def _fig9(self) -> str:
        """Fig. 9: MAKD with rank-r float16 LoRAs against the top rank quantised (``gka.studies`` ranks and
        bits). The metaword mu* is this run's (its ``metaword`` stage) when the subject is one of the run's
        subjects, else trained by the study with the same config."""
        from dekag_jax.ka import gka_studies

        st, info = self.c.gka.studies, {}
        subject = str(st.subject)
        mu = self.trained(subject, "metaword").get("mu") if subject in self.subjects else None
        info["metaword"] = "this run's metaword stage" if mu is not None else "trained by the study"
        rows = gka_studies.rank_bits_study(self.pipe, self.judges, subject, self._gka_study_config(),
                                           ranks=_ints(st.ranks), bits=_ints(st.bits),
                                           mu_star=mu, n_images=int(st.n_images), num_steps=int(st.num_steps),
                                           info=info, log=self.log)
        self.rd.metrics["fig9"] = rows
        self._study_info("fig9", info)
        best = max((r for r in rows if r["rank"] > 0), key=lambda r: r["total"])
        return (f"{subject}: {len(rows)} points; best DINO+CLIP {best['total']:.3f} at rank {best['rank']}, "
                f"{best['bits']} bits ({best['bytes']} bytes)")

    def _fig11(self) -> str:
        """Fig. 11: LoRA and CALA at each ``fig11.ranks`` and Full-FT, trained ``fig11.epochs`` on the first
        subject's S_EG (checkpoints in ``DIR/<subject>/ckpt/fig11/``), PSNR over the ``fig11`` grid."""
        from dekag_jax.ka import tka, tka_studies

        f, s = self.c.fig11, self.subjects[0]
        seg = self.seg(s)
        t0 = time.time()
        rows = tka_studies.fig11_data(
            self.codec, self.codec_params, self.pipe.vae, self.pipe.vae_params, seg["z_train"], seg["x_train"],
            seg["z_test"], seg["x_test"], grid=self.grid, eval_grid=tka.grid_from_config(f), weights=self.weights,
            tcfg={**self.c.tka.train.to_dict(), "epochs": int(f.epochs)}, link=self.link,
            ranks=tuple(int(r) for r in f.ranks), methods=tuple(m.strip() for m in str(f.methods).split(",") if m.strip()),
            adapter_kw=self.adapter_kw(), eval_seed=int(self.c.tka.eval.seed), chunk=int(self.c.tka.eval.chunk),
            ckpt_dir=self.rd.sub(s, "ckpt", "fig11"), codec_source=self.codec_source, subject=s,
            seed=int(self.c.seed), log=self.log)
        self.rd.metrics["fig11"] = rows
        self._study_info("fig11", {"subject": s, "codec": self.codec_name, "epochs": int(f.epochs),
                                   "seconds": round(time.time() - t0, 1),
                                   "flops": "XLA cost analysis of the compiled training step (flops_jaxpr: "
                                            "perf.count_flops, model FLOPs)"})
        top = max(int(r) for r in f.ranks)
        psnr = {r["method"]: r["psnr"] for r in rows if r["rank"] == top}
        ratios = [r["update_ratio"] for r in rows if r["method"] != "fullft"]
        return (f"{s}: {len(rows)} rows; at rank {top} PSNR " + ", ".join(f"{m} {v:.2f} dB" for m, v in psnr.items())
                + f"; adapter update / Full-FT {min(ratios):.4f} to {max(ratios):.4f}")

    def _fig12(self, s: str) -> str:
        """Fig. 12 for subject ``s``: PSNR and FID/KID against bpp per SNR of ``fig12.schemes``' received
        images over the T-KA grid (the same evaluation as the T-KA stages: same seed, same draws),
        reference set x = f_LD(z) of the test latents, feature ``fig12.feature``'s judge."""
        from dekag_jax.ka import tka, tka_studies

        f, seg = self.c.fig12, self.seg(s)
        schemes = [m.strip() for m in str(f.schemes).split(",") if m.strip()]
        kw = {"mesh": self.mesh} if self.ndev > 1 else {}
        evs = {}
        for m in schemes:
            setup, trainable, _ = self.tka_trained(s, m, seg)
            evs[m] = tka.evaluate(setup, trainable, self.tka_frozen, seg["z_test"], seg["x_test"], grid=self.grid,
                                  seed=int(self.c.tka.eval.seed), chunk=int(self.c.tka.eval.chunk),
                                  return_images=True, **kw)
        slope = "cala" if "cala" in schemes else schemes[0]
        d = tka_studies.fig12_data(evs, seg["x_test"], feature_fn=self.judges[str(f.feature)], slope_scheme=slope,
                                   kid_subsets=int(f.kid_subsets), seed=int(self.c.seed))
        m = self.rd.metrics
        per = {**(m.get("fig12") or {}).get("per_subject", {}), s: {"points": d["points"], "slopes": d["slopes"]}}
        first = next(x for x in self.subjects if x in per)   # the contract's fig12: the first subject's points
        m["fig12"] = {**per[first], "slope_scheme": slope, "reference": d["reference"], "subject": first,
                      "codec": self.codec_name, "feature": str(f.feature), "per_subject": per}
        sl = d["slopes"]
        fid = "n/a" if sl["fid_pct_per_db"] is None else f"{sl['fid_pct_per_db']:.1f}%"
        return (f"{len(d['points'])} points; {slope}: {sl['psnr_db_per_db']:.3f} dB PSNR and {fid} FID per dB of SNR "
                "(least squares)")


def run(config, workdir: str, *, log: Callable[[str], None] = print) -> dict:
    """Algorithm 1 for ``config`` in ``workdir`` (resuming what is there); returns metrics.json's dict."""
    return Job(config, workdir, log).run()


# ============================================================================ command line


def _parse(argv):
    argv = list(argv)
    if not any(a == "--config" or a.startswith("--config=") for a in argv):
        default = "configs/default.py" if os.path.isfile("configs/default.py") else _REPO_CONFIG
        argv = ["--config", default] + argv

    def define(flags, fv):
        flags.DEFINE_string("workdir", DEFAULT_WORKDIR, "run directory (created; rerun with the same one to resume)",
                            flag_values=fv)

    fv, config, _ = parse_config_flags(argv, prog="dekag_jax.train", what="main-job config (configs/default.py)",
                                       example="configs/smoke.py", define=define,
                                       usage="python -m dekag_jax.train [--config FILE[:variant]] "
                                             "[--config.FIELD=VALUE ...] [--workdir DIR] [--debug]",
                                       doc=__doc__.split("\n\n")[0])
    from dekag_jax.ka import sources, tka

    try:
        sources.check_specs(config)
        tka.grid_from_config(config.tka.conditions)
        check_studies(config)
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    return fv, config


def check_studies(config) -> None:
    """The settings of the study stages that are on (``studies.<fig>``), one ValueError line each."""
    st = config.get("studies")
    if st is None:
        return
    methods = [m.strip() for m in str(config.tka.methods).split(",") if m.strip()]
    if st.get("fig8") or st.get("fig9"):
        g = config.gka.studies
        for k in ("metaword_epochs", "lora_epochs", "ranks", "bits"):
            try:
                vals = _ints(g[k])
            except ValueError:
                raise ValueError(f"gka.studies.{k}={g[k]!r}: expected comma-separated integers") from None
            if not vals or min(vals) < 0:
                raise ValueError(f"gka.studies.{k}={g[k]!r}: expected non-negative integers")
    if st.get("fig11"):
        from dekag_jax.ka import tka

        f = config.fig11
        tka.grid_from_config(f)
        bad = [m for m in str(f.methods).split(",") if m.strip() not in ("lora", "cala")]
        if bad or not str(f.methods).strip():
            raise ValueError(f"fig11.methods={f.methods!r}: expected a comma list of lora, cala")
        if not len(f.ranks) or min(int(r) for r in f.ranks) < 1 or int(f.epochs) < 1:
            raise ValueError(f"fig11: ranks {tuple(f.ranks)} and epochs {f.epochs} must be >= 1")
    if st.get("fig12"):
        f = config.fig12
        schemes = [m.strip() for m in str(f.schemes).split(",") if m.strip()]
        bad = [m for m in schemes if m not in methods]
        if bad or not schemes:
            raise ValueError(f"fig12.schemes={f.schemes!r}: each must be one of tka.methods ({', '.join(methods)})")
        if f.feature not in ("dino", "clip"):
            raise ValueError(f"fig12.feature={f.feature!r}: expected dino or clip")
        if len(set(config.tka.conditions.snrs_db)) < 2:
            raise ValueError("fig12 fits slopes against SNR: tka.conditions.snrs_db needs two or more values")


def check_config(workdir: str, config) -> None:
    """Refuse a config that differs from ``DIR/config.json`` (one line naming the dotted fields)."""
    path = os.path.join(workdir, "config.json")
    new = json.loads(config.to_json())
    if os.path.isfile(path):
        with open(path) as f:
            old = json.load(f)
        og = old.get("gka")
        if isinstance(og, dict) and "lora" in og and "db" not in og and "db" in new.get("gka", {}):
            # a run from before gka.db existed trained DB with gka.lora: the same run when db.* equals it
            og["db"] = {k: og["lora"][k] for k in new["gka"]["db"] if k in og["lora"]}
        diff = config_diff(old, new)
        if diff:
            shown = ", ".join(diff[:8]) + (f" (+{len(diff) - 8} more)" if len(diff) > 8 else "")
            raise UsageError(f"{workdir} was run with another config (differs in {shown}); resume with the same "
                             f"config or use a new --workdir")


def main(argv=None) -> int:
    fv, config = _parse(list(sys.argv[1:] if argv is None else argv))
    workdir = fv.workdir
    check_config(workdir, config)
    created = prepare_output_dir(workdir, "--workdir")
    from dekag_jax import parallel, runtime

    try:
        runtime.setup()
        if parallel.is_main_process() and not os.path.isfile(os.path.join(workdir, "config.json")):
            _write_json(os.path.join(workdir, "config.json"), json.loads(config.to_json()))
        log = (lambda m: print(m, flush=True)) if parallel.is_main_process() else (lambda m: None)
        res = run(config, workdir, log=log)
    except BaseException:
        remove_if_empty(created)
        raise
    print(f"done in {res['seconds']} s: {os.path.join(workdir, 'metrics.json')}, "
          f"{os.path.join(workdir, 'report.md')}")
    return 0


if __name__ == "__main__":
    from dekag_jax.errors import cli_main

    sys.exit(cli_main(main))
