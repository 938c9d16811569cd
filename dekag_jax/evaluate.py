"""``python -m dekag_jax.evaluate``: the paper's T-KA figures (Figs. 10-13, Sec. VI-B3) from one command.

    python -m dekag_jax.evaluate --config configs/tka_figures.py --workdir runs/tka_figures
    python -m dekag_jax.evaluate --config configs/tka_figures.py:smoke --workdir /tmp/tka_smoke

For the configured subjects: S_EG (``tka.cached_edge_latents``, cached in ``seg.cache_dir``), the
cloud test images (``ka.scg.cloud_images``), then

* Fig. 10: every codec directory of ``codecs`` x every method (trained, or read back from
  ``<workdir>/tka/<codec>/<subject>/<method>.safetensors`` when trained with the same settings),
  received-image PSNR over Phi_EU and eq. 5 on the received images;
* Fig. 12: PSNR and FID/KID against bpp per SNR from the Fig. 10 evaluations of ``fig12.codec``
  (CALA and No-KA), reference set x = f_LD(z), slopes by least squares;
* Fig. 13: the same codec's CALA against JPEG-LDPC and Latent-LDPC, per subject;
* Fig. 11: ranks x {LoRA, CALA} and Full-FT on the first subject and ``fig12.codec`` (one list in
  the contract), at ``fig11.epochs``.

Writes ``<workdir>/tka_figures.json`` (the contract's ``tka``, ``fig11``, ``fig12``, ``fig13`` pieces,
plus ``config``, ``machine``, ``seconds``), ``<workdir>/tka_figures.md`` (tables) and
``<workdir>/figures/fig10.png`` .. ``fig13.png`` through ``dekag_jax.report.plot_fig10`` .. ``13``.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from typing import Callable

import numpy as np

FIGURES = ("fig10", "fig11", "fig12", "fig13")


def _list(text) -> list[str]:
    return [t.strip() for t in str(text).split(",") if t.strip()]


def _codec_name(path: str) -> str:
    return os.path.basename(os.path.normpath(path)) if path != "random" else "random"


def _check(config) -> None:
    """Config problems as one UsageError line, before any work."""
    from dekag_jax.errors import UsageError
    from dekag_jax.ka import tka
    from dekag_jax.models.jscc import rate_units
    from dekag_jax.world.subjects import get_subject

    figs = _list(config.figures)
    bad = [f for f in figs if f not in FIGURES]
    if bad or not figs:
        raise UsageError(f"config.figures: unknown {bad}; choose from {', '.join(FIGURES)}")
    methods = _list(config.methods)
    bad = [m for m in methods if m not in tka.METHODS]
    if bad or not methods:
        raise UsageError(f"config.methods: unknown {bad}; known {list(tka.METHODS)}")
    for s in _list(config.subjects):
        try:
            get_subject(s)
        except (KeyError, ValueError) as e:
            raise UsageError(f"config.subjects: {e.args[0] if e.args else e}") from None
    if not _list(config.subjects):
        raise UsageError("config.subjects is empty")
    codecs = _list(config.codecs)
    if not codecs:
        raise UsageError("config.codecs is empty (comma-separated codec directories)")
    for c in codecs:
        if c != "random" and not os.path.isdir(c):
            raise UsageError(f"config.codecs: {c!r} is no directory (a save_codec folder, or 'random')")
    names = [_codec_name(c) for c in codecs]
    if len(set(names)) != len(names):
        raise UsageError(f"config.codecs: two codecs share a folder name {names}")
    if config.fig12.codec and config.fig12.codec not in codecs and config.fig12.codec not in names:
        raise UsageError(f"config.fig12.codec {config.fig12.codec!r} is not one of config.codecs")
    if ("fig12" in figs or "fig13" in figs) and "cala" not in methods:
        raise UsageError("fig12/fig13 need the CALA-aligned codec: add cala to config.methods")
    bad = [m for m in _list(config.fig11.methods) if m not in ("lora", "cala")]
    if bad:
        raise UsageError(f"config.fig11.methods: unknown {bad}; known ['lora', 'cala']")
    if config.fig12.feature not in ("dino", "clip"):
        raise UsageError(f"config.fig12.feature {config.fig12.feature!r}: expected dino or clip")
    bad = [s for s in _list(config.fig12.schemes) if s not in tka.METHODS or s not in methods]
    if bad:
        raise UsageError(f"config.fig12.schemes: {bad} not among config.methods")
    try:
        tka.grid_from_config(config.conditions)
        for r in _list(config.fig11.rates) + _list(config.fig13.rates):
            rate_units(r)
        if any(int(r) < 1 for r in config.fig11.ranks) or not len(config.fig11.ranks):
            raise ValueError("config.fig11.ranks must be positive integers")
    except ValueError as e:
        raise UsageError(str(e)) from None


def run(config, workdir: str, *, pipe=None, judges=None, log: Callable[[str], None] = print) -> dict:
    """Compute every configured figure's data; write json, tables and PNGs; return the result dict."""
    import jax

    from dekag_jax.ka import gka, tka, tka_studies as ts
    from dekag_jax.ka.objective import LossWeights
    from dekag_jax.ka.scg import cloud_images, edge_resolution
    from dekag_jax.ka.transmission import LinkConfig
    from dekag_jax.world.models import load_edge_pipeline, load_judges

    t_all = time.time()
    figs = _list(config.figures)
    methods = _list(config.methods)
    subjects = _list(config.subjects)
    pipe = pipe if pipe is not None else load_edge_pipeline()
    judges = judges if judges is not None else load_judges()
    fns = gka.judge_feature_fns(judges)
    ss = pipe.unet.config.sample_size
    grid = tka.grid_from_config(config.conditions)
    link = LinkConfig(qam_order=config.link.qam_order, quantizer=config.link.quantizer,
                      temperature=config.link.temperature, channel=config.link.channel)
    weights = LossWeights(latent=config.loss.latent, image=config.loss.image, perceptual=config.loss.perceptual,
                          constellation=config.loss.constellation)
    tcfg = config.train.to_dict()
    # Full-FT at its own lr when fullft.lr > 0 (reason: configs/tka_figures.py); the other methods' tcfg
    # (their checkpoints' identity) is unchanged
    ft = {"fullft": {**tcfg, "lr": float(config.fullft.lr)}} if float(config.fullft.lr) > 0 else {}
    adapter_kw = dict(fullft_decoder=bool(config.adapter.fullft_decoder), cala_phi=str(config.adapter.cala_phi),
                      cala_gate=str(config.adapter.get("cala_gate", "sigmoid2")))
    cache = str(config.seg.cache_dir) or os.path.join(workdir, "seg")

    codec_dirs = _list(config.codecs)
    codecs, codec_training = {}, {}
    for d in codec_dirs:
        class _C:   # tka.load_codec_for reads ``.codec`` of a config
            codec = d
        codec, params, source = tka.load_codec_for(_C, (ss, ss), int(config.seed))
        if d != "random":
            # the files' digest names the codec in checkpoints: a re-shipped codec retrains its adapters
            source = f"{source}@{ts.codec_fingerprint(d)}"
            try:
                with open(os.path.join(d, "config.json")) as f:
                    codec_training[_codec_name(d)] = json.load(f).get("training")
            except (OSError, ValueError):
                codec_training[_codec_name(d)] = None
        codecs[_codec_name(d)] = (codec, params, source)
    main_codec = _codec_name(config.fig12.codec) if config.fig12.codec else next(iter(codecs))

    data = {}
    size = edge_resolution(pipe)
    for sid in subjects:
        z_tr, x_tr = tka.cached_edge_latents(pipe, sid, "eg_train", config.seg.n_train, num_steps=config.seg.num_steps,
                                             guidance=config.seg.guidance, cache_dir=cache, log=log)
        z_te, x_te = tka.cached_edge_latents(pipe, sid, "eg_test", config.seg.n_test, num_steps=config.seg.num_steps,
                                             guidance=config.seg.guidance, cache_dir=cache, log=log)
        data[sid] = {"z_train": z_tr, "x_train": x_tr, "z_test": z_te, "x_test": x_te,
                     "cloud_test": cloud_images("world", sid, "cg_test", size)}

    res: dict = {"schema": 1, "config": json.loads(config.to_json()),
                 "machine": {"backend": jax.default_backend(), "devices": jax.device_count(),
                             "processes": jax.process_count(), "cpu_count": os.cpu_count(),
                             "platform": platform.platform(), "load_avg_start": os.getloadavg()[0]},
                 "subjects": subjects, "codecs": {n: c[2] for n, c in codecs.items()},
                 "codec_training": codec_training, "depth": depth_info(config, int(data[subjects[0]]["z_train"].shape[0])),
                 "seconds": {}}
    os.makedirs(workdir, exist_ok=True)

    def save():   # after every figure: nothing finished is lost when a later one fails or is stopped
        res["seconds"]["total"] = round(time.time() - t_all, 1)
        res["machine"]["load_avg_end"] = os.getloadavg()[0]
        tmp = os.path.join(workdir, "tka_figures.json.tmp")
        with open(tmp, "w") as f:
            json.dump(res, f, indent=1)
        os.replace(tmp, os.path.join(workdir, "tka_figures.json"))

    k_rx = int(config.eval.received_conditions)
    rx_conditions = ts.received_subset(grid, k_rx, int(config.eval.seed)) if k_rx > 0 else None
    if rx_conditions is not None:
        res["received_conditions"] = [{"tau": f"{u}/64", "snr_db": s_, "delay_spread_ns": round(w * 1e9, 3)}
                                      for u, s_, w in rx_conditions]
    need_fig10 = any(f in figs for f in ("fig10", "fig12", "fig13"))
    kept = {}
    if need_fig10:
        t0 = time.time()
        fig12_schemes = _list(config.fig12.schemes) if "fig12" in figs else []

        def keep(c, s, m):   # Fig. 12 needs its schemes' images, Fig. 13 the CALA-aligned codec
            return c == main_codec and (m in fig12_schemes or (m == "cala" and "fig13" in figs))

        # Figs. 12-13 need only the main codec: the others run only for Fig. 10
        cset = codecs if "fig10" in figs else {main_codec: codecs[main_codec]}
        mset = methods if "fig10" in figs else sorted(set(fig12_schemes) | {"cala"}, key=methods.index)
        tka_piece, info = ts.fig10_data(cset, data, methods=mset, vae=pipe.vae, vae_params=pipe.vae_params, grid=grid,
                                        weights=weights, tcfg=tcfg, link=link, rank=int(config.adapter.rank),
                                        adapter_kw=adapter_kw, feature_fns=fns, eval_seed=int(config.eval.seed),
                                        chunk=int(config.eval.chunk), ckpt_dir=os.path.join(workdir, "tka"),
                                        seed=int(config.seed), keep=keep, log=log,
                                        received_conditions=rx_conditions, method_tcfg=ft)
        kept = info["kept"]
        if "fig10" in figs:
            res["tka"] = tka_piece
        res["seconds"]["fig10"] = round(time.time() - t0, 1)
        res["seconds"]["fig10_cells"] = info["seconds"]
        save()
    if "fig12" in figs:
        t0 = time.time()
        feat = fns[str(config.fig12.feature)]
        per_subject = {}
        for sid in subjects:
            evs = {m: kept[(main_codec, sid, m)][2] for m in _list(config.fig12.schemes)}
            per_subject[sid] = ts.fig12_data(evs, data[sid]["x_test"], feature_fn=feat,
                                             kid_subsets=int(config.fig12.kid_subsets), seed=int(config.seed))
        # the contract's fig12 is one set of points: the first subject's; every subject is kept too
        first = per_subject[subjects[0]]
        res["fig12"] = {**first, "subject": subjects[0], "codec": main_codec, "feature": str(config.fig12.feature),
                        "per_subject": {s: {"points": v["points"], "slopes": v["slopes"]}
                                        for s, v in per_subject.items()}}
        res["seconds"]["fig12"] = round(time.time() - t0, 1)
        save()
        log(f"[fig12] slopes ({subjects[0]}, {main_codec}, CALA): {first['slopes']['psnr_db_per_db']:.3f} dB PSNR per dB "
            f"SNR, {first['slopes']['fid_pct_per_db']:.1f}% FID per dB SNR lost")
    if "fig13" in figs:
        t0 = time.time()
        res["fig13"] = {}
        for sid in subjects:
            setup, trainable, _ = kept[(main_codec, sid, "cala")]
            frozen = tka.frozen_tree(codecs[main_codec][1], pipe.vae_params)
            res["fig13"][sid] = ts.fig13_data(setup, trainable, frozen, data[sid]["z_test"], data[sid]["x_test"],
                                              snrs_db=tuple(config.fig13.snrs_db),
                                              delay_spreads_ns=tuple(config.fig13.delay_spreads_ns),
                                              rates=_list(config.fig13.rates), seed=int(config.eval.seed),
                                              chunk=int(config.eval.chunk), log=log)
        res["seconds"]["fig13"] = round(time.time() - t0, 1)
        save()
    if "fig11" in figs:
        t0 = time.time()
        sid = subjects[0]
        codec, cparams, source = codecs[main_codec]
        d = data[sid]
        eval_grid = tka.grid_from_config(config.fig11)
        # Fig. 10's checkpoints of the same models (R = adapter.rank, Full-FT) are read when their
        # settings match (same depth): train_or_load checks, so a different fig11.epochs retrains
        f10 = os.path.join(workdir, "tka", main_codec, sid)
        r10 = int(config.adapter.rank)
        reuse = {("lora", r10): os.path.join(f10, "lora.safetensors"), ("cala", r10): os.path.join(f10, "cala.safetensors"),
                 ("fullft", max(int(r) for r in config.fig11.ranks)): os.path.join(f10, "fullft.safetensors")}
        res["fig11"] = ts.fig11_data(codec, cparams, pipe.vae, pipe.vae_params, d["z_train"], d["x_train"], d["z_test"],
                                     d["x_test"], grid=grid, eval_grid=eval_grid, weights=weights,
                                     tcfg={**tcfg, "epochs": int(config.fig11.epochs)}, link=link,
                                     ranks=tuple(int(r) for r in config.fig11.ranks),
                                     methods=tuple(_list(config.fig11.methods)), adapter_kw=adapter_kw,
                                     eval_seed=int(config.eval.seed), chunk=int(config.eval.chunk),
                                     ckpt_dir=os.path.join(workdir, "tka", "fig11", main_codec, sid),
                                     codec_source=source, subject=sid, seed=int(config.seed),
                                     train=bool(config.fig11.train), reuse=reuse, log=log,
                                     method_tcfg={m: {**v, "epochs": int(config.fig11.epochs)} for m, v in ft.items()})
        res["fig11_info"] = {"subject": sid, "codec": main_codec, "epochs": int(config.fig11.epochs),
                             "flops": "XLA cost analysis of the compiled training step on "
                                      f"{jax.default_backend()} (flops_jaxpr: perf.count_flops, model FLOPs)"}
        res["seconds"]["fig11"] = round(time.time() - t0, 1)
    save()
    res["tables"] = format_tables(res)
    with open(os.path.join(workdir, "tka_figures.md"), "w") as f:
        f.write(res["tables"] + "\n")
    res["figures"] = draw(res, os.path.join(workdir, "figures"), log=log)
    return res


def depth_info(config, n_train: int) -> dict:
    """The training depths and the eq. 5 subset of a run, for the tables' and figures' labels."""
    def one(epochs):
        batch = min(int(config.train.batch), int(n_train))
        return {"epochs": int(epochs), "batch": batch, "steps": int(epochs) * (int(n_train) // batch),
                "lr": float(config.train.lr)}
    ft = float(config.fullft.lr)
    return {"fig10": {**one(config.train.epochs), "fullft_lr": ft if ft > 0 else None},
            "fig11": {**one(config.fig11.epochs), "fullft_lr": ft if ft > 0 else None},
            "received_conditions": int(config.eval.received_conditions)}


def _depth_line(d: dict | None) -> str:
    if not d:
        return ""
    ft = f" (Full-FT at lr {d['fullft_lr']:g})" if d.get("fullft_lr") else ""
    return f"{d['steps']} steps ({d['epochs']} epochs of batch {d['batch']}) at lr {d['lr']:g}{ft}"


def _rx_line(res: dict) -> str:
    k = (res.get("depth") or {}).get("received_conditions", 0)
    return (f"eq. 5 on a fixed-seed subset of {k} Phi_EU conditions per image" if k and k > 0 else
            "eq. 5 over every Phi_EU condition")


def draw(res: dict, out_dir: str, *, log: Callable[[str], None] = print) -> dict:
    """PNG per figure whose data exist, through ``dekag_jax.report.plot_fig10..13``: ``{name: path}``
    (Figs. 10 and 11 labelled with their training depth when ``res["depth"]`` has it)."""
    from dekag_jax import report

    os.makedirs(out_dir, exist_ok=True)
    out = {}
    depth = res.get("depth") or {}
    notes = {"fig10": f"T-KA depth {_depth_line(depth.get('fig10'))}; {_rx_line(res)}" if depth else "",
             "fig11": f"T-KA depth {_depth_line(depth.get('fig11'))}; subject "
                      f"{(res.get('fig11_info') or {}).get('subject', '')}, codec "
                      f"{(res.get('fig11_info') or {}).get('codec', '')}" if depth else ""}
    for name, key in (("fig10", "tka"), ("fig11", "fig11"), ("fig12", "fig12"), ("fig13", "fig13")):
        if key in res:
            path = os.path.join(out_dir, f"{name}.png")
            fn = getattr(report, f"plot_{name}")
            out[name] = fn(res[key], path, note=notes[name]) if notes.get(name) else fn(res[key], path)
    return out


def _f(v, fmt="{:.2f}") -> str:
    return "–" if v is None else fmt.format(v)


def format_tables(res: dict) -> str:
    """Markdown tables of every figure's data in ``res``."""
    out = []
    if "tka" in res:
        depth = res.get("depth") or {}
        out += ["### Fig. 10: T-KA methods per codec (received images; PSNR vs x = f_LD(z) over Phi_EU, eq. 5 vs the "
                "10 cloud test images)", ""]
        if depth:
            out += [f"T-KA depth: {_depth_line(depth.get('fig10'))}; {_rx_line(res)}.", ""]
        out += ["| codec | subject | method | PSNR (dB) | γ = 0 dB | γ = 20 dB | DINO | CLIP | update params | ratio |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for c, per_s in res["tka"].items():
            for s, per_m in per_s.items():
                for m, e in per_m.items():
                    bs = e.get("by_snr", {})
                    out.append(f"| {c} | {s} | {m} | {e['psnr']:.2f} | {_f(bs.get('0.0'))} | {_f(bs.get('20.0'))} | "
                               f"{_f(e['dino'], '{:.3f}')} | {_f(e['clip'], '{:.3f}')} | {e['update_params']} | "
                               f"{100 * e['ratio']:.2f}% |")
        out.append("")
    if "fig11" in res:
        d11 = (res.get("depth") or {}).get("fig11")
        out += ["### Fig. 11: update size and training FLOPs relative to Full-FT, PSNR", ""]
        if d11:
            out += [f"T-KA depth: {_depth_line(d11)}.", ""]
        out += ["| rank | method | update ratio | FLOPs ratio (XLA, compiled) | FLOPs/step | PSNR (dB) |",
                "|---|---|---|---|---|---|"]
        for r in res["fig11"]:
            out.append(f"| {r['rank']} | {r['method']} | {r['update_ratio']:.4f} | {r['flops_ratio']:.3f} | "
                       f"{r['flops']:.3e} | {_f(r['psnr'])} |")
        out.append("")
    if "fig12" in res:
        d = res["fig12"]
        sl = d["slopes"]
        out += [f"### Fig. 12: PSNR and FID/KID ({d['feature']} features; reference x = f_LD(z)) against bpp = 6τ, "
                f"{d['subject']}, {d['codec']}", "",
                f"Slopes ({d['slope_scheme']}, least squares within rates): {sl['psnr_db_per_db']:.3f} dB PSNR per dB "
                f"of SNR (paper 0.34), {_f(sl['fid_pct_per_db'], '{:.1f}')}% FID per dB of SNR lost (paper 9.0).", "",
                "| scheme | SNR (dB) | bpp | PSNR (dB) | FID | KID |", "|---|---|---|---|---|---|"]
        for p in d["points"]:
            out.append(f"| {p['scheme']} | {p['snr_db']:g} | {p['bpp']:.3f} | {p['psnr']:.2f} | {p['fid']:.4f} | "
                       f"{p['kid']:.4f} ± {p['kid_std']:.4f} |")
        out.append("")
    if "fig13" in res:
        out += ["### Fig. 13: CALA-aligned JSCC vs JPEG-LDPC and Latent-LDPC (PSNR vs x = f_LD(z), mean ± std over "
                "images)", "", "| subject | SNR (dB) | ω (ns) | spp | scheme | PSNR (dB) | n |",
                "|---|---|---|---|---|---|---|"]
        for s, rows in res["fig13"].items():
            for r in rows:
                out.append(f"| {s} | {r['snr_db']:g} | {r['delay_spread_ns']:g} | {r['spp']:.4f} | {r['scheme']} | "
                           f"{r['psnr_mean']:.2f} ± {r['psnr_std']:.2f} | {r['n']} |")
        out.append("")
    return "\n".join(out)


def _parse(argv):
    from dekag_jax.errors import UsageError, parse_config_flags

    def define(flags, fv):
        flags.DEFINE_string("workdir", None, "output folder (tka_figures.json, tables, figures, checkpoints)",
                            flag_values=fv)

    fv, config, _ = parse_config_flags(list(argv), prog="evaluate", what="T-KA figures config "
                                       "(configs/tka_figures.py[:variant])", example="configs/tka_figures.py:smoke",
                                       define=define, usage="python -m dekag_jax.evaluate --config "
                                       "configs/tka_figures.py[:smoke] --workdir DIR", doc=__doc__)
    if fv.workdir is None:
        raise UsageError("--workdir is required (the output folder)")
    _check(config)
    return fv, config


def main(argv=None) -> int:
    from dekag_jax.ka.command import run_stage

    fv, config = _parse(list(sys.argv[1:] if argv is None else argv))

    def wrote(res, workdir):
        return (f"wrote {os.path.join(workdir, 'tka_figures.json')}, tka_figures.md and "
                f"{', '.join(sorted(res['figures']))} PNGs in {os.path.join(workdir, 'figures')} "
                f"({res['seconds']['total']} s)")

    return run_stage(fv, config, run, lambda res: res["tables"], wrote)


if __name__ == "__main__":
    from dekag_jax.errors import cli_main

    sys.exit(cli_main(main))
