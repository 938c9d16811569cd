"""``python -m dekag_jax.report DIR``: the main job's ``report.md`` and every paper figure.

Entry point (may import any layer; nothing imports it but the other entry points). It reads only
files: ``DIR/metrics.json`` and ``DIR/<subject>/images/<name>.npz`` (key ``images``: uint8
``[n, H, W, 3]``; names cloud, lb, ti, db, makd, rx_makd, jpeg_ldpc, latent_ldpc). No JAX work
happens here, so a report can be regenerated anywhere from a copied run directory.

metrics.json (schema 1, written by ``python -m dekag_jax.train``; only ``schema`` and ``subjects``
are required, every other section is drawn when present, so a partial run reports what finished)::

    subjects: [str]; machine: {...}; config: {...}
    stages: {subject | "_global": {stage: {seconds, summary}}}
    gka: {subject: {lb|ti|db|makd|ub: {edge: SCORE, received: SCORE|null, fid: f|null, kid: {mean, std}|null}}}
    gka_summary: {method: {edge, received, ratio_over_lb: {edge, received}}}
    tka: {codec: {subject: {noka|lora|cala|fullft: {psnr, dino|null, clip|null, by_snr: {snr: psnr},
          by_rate: {"i/64": psnr}, by_delay_spread: {ns: psnr}, update_params, update_bytes, ratio}}}}
    fig13: {subject: [{scheme: cala|jpeg_ldpc|latent_ldpc, snr_db, delay_spread_ns, spp, psnr_mean, psnr_std, n}]}
    update_sizes: {g_ka: {metaword_bytes, lora_bytes, lora_bits, ratio}, t_ka: {bytes, params, ratio}}
    artefacts: {subject: {file: {path (relative to DIR), bytes}}}
    fig7 / fig8 / fig9 / fig11 / fig12: the studies (see each plot function)
    SCORE = {dino|clip|total: {mean, std}}

API (each ``plot_figN`` takes the metrics.json piece of the same name, validates it first and raises
one ``ValueError`` naming the first missing key or bad value, then writes one PNG with matplotlib's
Agg canvas, never pyplot, so no global backend state is touched):

* :func:`plot_fig4` ``(rows, path, columns=None)``: image grid, one labelled row per method
  (cloud | non-aligned (LB) | TI | DB | MAKD | received | JPEG-LDPC | Latent-LDPC), one column per
  image (the main job puts one image per subject). The paper's Fig. 4 is the transpose (methods as
  columns); rows keep the labels readable for many methods.
* :func:`plot_fig5` ``(gka or gka_summary, path)``: eq. 5 consistency bars LB/TI/DB/MAKD/UB with
  std error bars, (a) DINO and (b) CLIP panels; per-subject input gives one group per subject plus
  their mean, a second row of panels for the received images when any exist.
* :func:`plot_fig7` (multi-subject G-KA), :func:`plot_fig8` (scores vs training depth, chosen depth
  marked), :func:`plot_fig9` (rank budget vs precision at equal bytes, metaword-only reference),
  :func:`plot_fig10` (codecs x T-KA methods x {PSNR, DINO, CLIP}), :func:`plot_fig11` (update and
  FLOPs ratio to Full-FT and PSNR vs rank), :func:`plot_fig12` (PSNR and FID vs bpp per SNR, with
  the slopes), :func:`plot_fig13` (PSNR mean +- std vs symbols per pixel, one panel per SNR,
  delay spreads side by side as in the paper).
* :func:`claims` ``(metrics) -> list[dict]``: our numbers next to the paper's Sec. VI-B claims,
  computed from metrics.json (never typed in), with "holds?" and "where ours differ".
* :func:`write_report` ``(run_dir) -> path``: draws every figure whose data exist into
  ``DIR/figures/`` and writes ``DIR/report.md``; figures without data are named with the reason.

Readings (documented where used): "improvement over LB/TI" is the mean over subjects of per-subject
ratios of the eq. 5 total (the paper averages over subjects; ratios keep one easy subject from
dominating); a std change is the mean over subjects of per-subject std ratios; T-KA gains are PSNR
differences of the same codec, subject and condition; update-size ``ratio`` fields are fractions.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = ["GKA_METHODS", "TKA_METHODS", "FIG4_ROWS", "plot_fig4", "plot_fig5", "plot_fig7", "plot_fig8",
           "plot_fig9", "plot_fig10", "plot_fig11", "plot_fig12", "plot_fig13", "claims", "write_report",
           "main"]

GKA_METHODS = ("lb", "ti", "db", "makd", "ub")
GKA_LABELS = {"lb": "LB", "ti": "TI", "db": "DB", "makd": "MAKD", "ub": "UB"}
TKA_METHODS = ("noka", "lora", "cala", "fullft")
TKA_LABELS = {"noka": "No-KA", "lora": "LoRA", "cala": "CALA", "fullft": "Full-FT"}
CODEC_LABELS = {"jscc_mt": "JSCC(MT)", "jscc_at": "JSCC(AT)", "rc_jscc": "RC-JSCC", "vj_mae": "VJ-MAE"}
#: Fig. 13 schemes: the JSCC codec after T-KA ("cala"; a run without CALA reports its "noka" codec),
#: and the two LDPC baselines.
SCHEME_LABELS = {"cala": "CALA-JSCC", "noka": "No-KA JSCC", "jpeg_ldpc": "JPEG-LDPC", "latent_ldpc": "Latent-LDPC"}
#: Fig. 4 rows in the paper's order: npz name -> label. "received" is MAKD's images after the
#: CALA-aligned codec at the Fig. 4 condition (tau = 1/32, 10 dB, 3000 ns).
FIG4_ROWS = {"cloud": "Cloud", "lb": "Non-aligned (LB)", "ti": "TI", "db": "DB", "makd": "MAKD",
             "rx_makd": "Received (MAKD, codec)", "jpeg_ldpc": "JPEG-LDPC", "latent_ldpc": "Latent-LDPC"}
FIG7_CASES = {"multi_lora": "Multi-subject LoRA", "makd": "Per-subject MAKD", "multi_makd": "Multi-subject MAKD"}
_COLORS = ["#7f7f7f", "#1f77b4", "#ff7f0e", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]


# ----------------------------------------------------------------------------- validation

def _need(d: Any, key: str, where: str) -> Any:
    """``d[key]``, or one ValueError naming the missing key and where it was expected."""
    if not isinstance(d, Mapping):
        raise ValueError(f"{where}: expected a mapping with key {key!r}, got {type(d).__name__}")
    if key not in d:
        raise ValueError(f"{where}: missing key {key!r}")
    return d[key]


def _num(x: Any, where: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ValueError(f"{where}: expected a number, got {x!r}")
    return float(x)


def _opt_num(x: Any, where: str) -> float | None:
    return None if x is None else _num(x, where)


def _score(s: Any, where: str) -> dict:
    """A SCORE ``{"dino"|"clip"|"total": {"mean", "std"}}`` as floats (validated)."""
    return {k: {m: _num(_need(_need(s, k, where), m, f"{where}.{k}"), f"{where}.{k}.{m}")
                for m in ("mean", "std")} for k in ("dino", "clip", "total")}


def _list(x: Any, where: str, nonempty: bool = True) -> list:
    if not isinstance(x, (list, tuple)):
        raise ValueError(f"{where}: expected a list, got {type(x).__name__}")
    if nonempty and not x:
        raise ValueError(f"{where}: empty list")
    return list(x)


def _mapping(x: Any, where: str, nonempty: bool = True) -> Mapping:
    if not isinstance(x, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {type(x).__name__}")
    if nonempty and not x:
        raise ValueError(f"{where}: empty")
    return x


def _check_gka_method(m: Any, where: str) -> dict:
    """One G-KA method entry: edge SCORE, received SCORE or null, optional fid/kid."""
    out = {"edge": _score(_need(m, "edge", where), f"{where}.edge"),
           "received": None if m.get("received") is None else _score(m["received"], f"{where}.received"),
           "fid": _opt_num(m.get("fid"), f"{where}.fid"), "kid": None}
    if m.get("kid") is not None:
        out["kid"] = {k: _num(_need(m["kid"], k, f"{where}.kid"), f"{where}.kid.{k}") for k in ("mean", "std")}
    return out


def _check_gka(gka: Any, where: str = "gka") -> dict:
    """``{subject: {method: entry}}`` validated; methods outside LB/TI/DB/MAKD/UB are refused."""
    out = {}
    for s, per in _mapping(gka, where).items():
        out[s] = {}
        for m, e in _mapping(per, f"{where}.{s}", nonempty=False).items():  # a subject in progress
            if m not in GKA_METHODS:
                raise ValueError(f"{where}.{s}: unknown G-KA method {m!r} (expected {', '.join(GKA_METHODS)})")
            out[s][m] = _check_gka_method(e, f"{where}.{s}.{m}")
    return out


def _check_tka(tka: Any, where: str = "tka") -> dict:
    out = {}
    for c, per_s in _mapping(tka, where).items():
        out[c] = {}
        for s, per_m in _mapping(per_s, f"{where}.{c}", nonempty=False).items():
            out[c][s] = {}
            for m, e in _mapping(per_m, f"{where}.{c}.{s}", nonempty=False).items():
                if m not in TKA_METHODS:
                    raise ValueError(f"{where}.{c}.{s}: unknown T-KA method {m!r} "
                                     f"(expected {', '.join(TKA_METHODS)})")
                w = f"{where}.{c}.{s}.{m}"
                r = {"psnr": _num(_need(e, "psnr", w), f"{w}.psnr"),
                     "dino": _opt_num(e.get("dino"), f"{w}.dino"), "clip": _opt_num(e.get("clip"), f"{w}.clip")}
                for k in ("by_snr", "by_rate", "by_delay_spread"):
                    r[k] = {str(q): _num(v, f"{w}.{k}.{q}") for q, v in _mapping(e.get(k) or {}, f"{w}.{k}",
                                                                               nonempty=False).items()}
                for k in ("update_params", "update_bytes", "ratio"):
                    r[k] = _opt_num(e.get(k), f"{w}.{k}")
                out[c][s][m] = r
    return out


# ----------------------------------------------------------------------------- drawing helpers

def _figure(nrows: int, ncols: int, w: float, h: float):
    from matplotlib.figure import Figure  # Agg canvas through savefig(.png); no pyplot state

    fig = Figure(figsize=(w * ncols, h * nrows), dpi=100)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig, path: str, legend_ax=None, note: str = "") -> str:
    """Write the PNG; ``legend_ax``'s legend goes above all panels (never over a bar), ``note``
    below them."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    top, bottom = 1.0, 0.0
    if note:
        fig.text(0.5, 0.01, note, ha="center", va="bottom", fontsize=7)
        bottom = 0.3 / fig.get_figheight()
    if legend_ax is not None:
        handles, labels = legend_ax.get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6), fontsize=8, frameon=False)
            top = 1.0 - 0.4 / fig.get_figheight()
    fig.tight_layout(rect=(0, bottom, 1, top))
    fig.savefig(path, format="png")
    return path


def _bars(ax, groups: Sequence[str], series: Sequence[tuple[str, Sequence[float | None], Sequence[float | None]]],
          ylabel: str, title: str, colors: Sequence[str] | None = None):
    """Grouped bars: ``series`` = (label, values per group, error per group or None); None = no bar.
    ``colors``: one per series (a method keeps its colour when others are absent)."""
    n = max(len(series), 1)
    width = 0.8 / n
    x = np.arange(len(groups))
    for i, (label, vals, errs) in enumerate(series):
        xs = [x[g] - 0.4 + width * (i + 0.5) for g in range(len(groups)) if vals[g] is not None]
        ys = [vals[g] for g in range(len(groups)) if vals[g] is not None]
        es = [errs[g] if errs is not None and errs[g] is not None else 0.0
              for g in range(len(groups)) if vals[g] is not None]
        if xs:
            ax.bar(xs, ys, width, yerr=es if errs is not None else None, capsize=2, label=label,
                   color=(colors[i] if colors else _COLORS[i % len(_COLORS)]))
    ax.set_xticks(x)
    ax.set_xticklabels(groups, rotation=20 if len(groups) > 4 else 0, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)


# ----------------------------------------------------------------------------- Fig. 4

def plot_fig4(rows: Mapping[str, np.ndarray], path: str, columns: Sequence[str] | None = None) -> str:
    """Fig. 4 image grid. ``rows``: name -> uint8 ``[n, H, W, 3]`` (every row the same n; H, W may
    differ between rows), drawn top to bottom in the dict's order and labelled with
    :data:`FIG4_ROWS` (unknown names as given). ``columns``: n column titles (e.g. subjects)."""
    _mapping(rows, "fig4 rows")
    n = None
    for name, a in rows.items():
        a = np.asarray(a)
        if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3 or a.shape[0] == 0:
            raise ValueError(f"fig4: row {name!r} must be uint8 [n, H, W, 3] with n >= 1, "
                             f"got {a.dtype} {tuple(a.shape)}")
        if n is None:
            n = a.shape[0]
        elif a.shape[0] != n:
            raise ValueError(f"fig4: row {name!r} has {a.shape[0]} images, the first row {n}")
    if columns is not None and len(columns) != n:
        raise ValueError(f"fig4: {len(columns)} column titles for {n} columns")
    fig, axes = _figure(len(rows), n, 1.6, 1.6)
    for r, (name, a) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(np.asarray(a)[c], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(FIG4_ROWS.get(name, name), fontsize=8)
            if r == 0 and columns is not None:
                ax.set_title(str(columns[c]), fontsize=8)
    return _save(fig, path)


# ----------------------------------------------------------------------------- Fig. 5

def _is_summary(d: Mapping) -> bool:
    return bool(d) and set(d) <= set(GKA_METHODS)


def plot_fig5(d: Mapping, path: str) -> str:
    """Fig. 5: DINO (a) and CLIP (b) consistency per G-KA method (LB, TI, DB, MAKD, UB), mean with a
    std error bar. ``d`` is metrics.json's ``gka`` (per subject: one bar group per subject and one
    "mean" group = mean over subjects of the means and of the stds) or ``gka_summary`` (the mean
    group only). A second row shows the received images when any method has them (UB never: it is
    cloud against cloud)."""
    _mapping(d, "fig5")
    if _is_summary(d):
        per = {"mean": {m: _check_gka_method(e, f"gka_summary.{m}") for m, e in d.items()}}
        groups = ["mean"]
    else:
        per = _check_gka(d)
        groups = list(per) + (["mean"] if len(per) > 1 else [])
        per = dict(per)
        if len(d) > 1:
            mean = {}
            for m in GKA_METHODS:
                for where in ("edge", "received"):
                    got = [per[s][m][where] for s in d if m in per[s] and per[s][m][where] is not None]
                    if got:
                        mean.setdefault(m, {"edge": None, "received": None})[where] = {
                            k: {q: float(np.mean([g[k][q] for g in got])) for q in ("mean", "std")}
                            for k in ("dino", "clip", "total")}
            per["mean"] = mean
    methods = [m for m in GKA_METHODS if any(m in per[g] for g in groups)]
    wheres = ["edge"] + (["received"] if any(per[g][m]["received"] is not None for g in groups
                                             for m in methods if m in per[g]) else [])
    fig, axes = _figure(len(wheres), 2, max(3.4, 0.9 + 0.9 * len(groups)), 3.0)
    for r, where in enumerate(wheres):
        for c, (k, name) in enumerate((("dino", "(a) DINO-score"), ("clip", "(b) CLIP-score"))):
            series = []
            for m in methods:
                got = [per[g].get(m, {}).get(where) for g in groups]
                series.append((GKA_LABELS[m], [x[k]["mean"] if x else None for x in got],
                               [x[k]["std"] if x else None for x in got]))
            panel = "abcd"[2 * r + c]
            _bars(axes[r][c], groups, series, name.split(" ", 1)[1], f"({panel}) {name[4:]}, {where} images",
                  colors=[_COLORS[GKA_METHODS.index(m)] for m in methods])
    return _save(fig, path, legend_ax=axes[0][0])


# ----------------------------------------------------------------------------- Figs. 7, 8, 9

def plot_fig7(d: Mapping, path: str) -> str:
    """Fig. 7a: per subject, DINO and CLIP of multi-subject LoRA, per-subject MAKD and multi-subject
    MAKD (``{subject: {"multi_lora"|"makd"|"multi_makd": SCORE}}``), std error bars."""
    _mapping(d, "fig7")
    per = {s: {c: _score(_need(v, c, f"fig7.{s}"), f"fig7.{s}.{c}") for c in FIG7_CASES}
           for s, v in d.items()}
    groups = list(per)
    fig, axes = _figure(1, 2, max(3.4, 1.2 + 1.2 * len(groups)), 3.0)
    for c, (k, name) in enumerate((("dino", "(a) DINO-score"), ("clip", "(b) CLIP-score"))):
        series = [(lab, [per[s][case][k]["mean"] for s in groups], [per[s][case][k]["std"] for s in groups])
                  for case, lab in FIG7_CASES.items()]
        _bars(axes[0][c], groups, series, name.split(" ")[-1], name)
    return _save(fig, path, legend_ax=axes[0][0])


def _depth_rows(rows: Any, where: str) -> list[dict]:
    out = []
    for i, r in enumerate(_list(rows, where)):
        w = f"{where}[{i}]"
        out.append({k: _num(_need(r, k, w), f"{w}.{k}") for k in ("epoch", "dino", "clip", "total", "heldout_loss")})
    return sorted(out, key=lambda r: r["epoch"])


def plot_fig8(d: Mapping, path: str) -> str:
    """Fig. 8 as curves: eq. 5 scores (left axis) and held-out loss (right axis) against training
    depth for the metaword and for LoRA; the chosen depth (``chosen``) is a vertical line. Too few
    epochs under-align, too many overfit S_CG (the paper's point), so the curves should peak."""
    _mapping(d, "fig8")
    curves = {k: _depth_rows(_need(d, k, "fig8"), f"fig8.{k}") for k in ("metaword", "lora")}
    chosen = _need(d, "chosen", "fig8")
    chosen = {k: _num(_need(chosen, k, "fig8.chosen"), f"fig8.chosen.{k}") for k in ("metaword", "lora")}
    fig, axes = _figure(1, 2, 4.2, 3.2)
    for c, (k, title) in enumerate((("metaword", "metaword (eq. 8)"), ("lora", "LoRA (eq. 9)"))):
        ax, rows = axes[0][c], curves[k]
        ep = [r["epoch"] for r in rows]
        for i, q in enumerate(("dino", "clip", "total")):
            ax.plot(ep, [r[q] for r in rows], marker="o", ms=3, color=_COLORS[i + 1], label=f"{q.upper()}-score"
                    if q != "total" else "total")
        ax2 = ax.twinx()
        ax2.plot(ep, [r["heldout_loss"] for r in rows], ls="--", color="k", label="held-out loss")
        ax2.set_ylabel("held-out loss", fontsize=8)
        ax.axvline(chosen[k], color="r", ls=":", label=f"chosen: {chosen[k]:g}")
        ax.set_xlabel("training epochs")
        ax.set_ylabel("consistency (eq. 5)")
        ax.set_title(f"Training depth: {title}", fontsize=10)
        ax.grid(alpha=0.3)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7)
    return _save(fig, path)


def plot_fig9(rows: Sequence[Mapping], path: str) -> str:
    """Fig. 9 as curves against update bytes: lowering the rank (at the highest precision) versus
    lowering the precision (at the highest rank), scores DINO / CLIP / total; ``rank 0`` rows are
    the metaword alone (a horizontal reference line)."""
    rs = []
    for i, r in enumerate(_list(rows, "fig9")):
        w = f"fig9[{i}]"
        rs.append({k: _num(_need(r, k, w), f"{w}.{k}") for k in ("rank", "bits", "bytes", "dino", "clip", "total")})
    lora = [r for r in rs if r["rank"] > 0]
    if not lora:
        raise ValueError("fig9: no row with rank > 0 (only the metaword)")
    top_bits, top_rank = max(r["bits"] for r in lora), max(r["rank"] for r in lora)
    by_rank = sorted((r for r in lora if r["bits"] == top_bits), key=lambda r: r["bytes"])
    by_bits = sorted((r for r in lora if r["rank"] == top_rank), key=lambda r: r["bytes"])
    meta = [r for r in rs if r["rank"] == 0]
    from matplotlib.ticker import NullFormatter

    fig, axes = _figure(1, 3, 3.4, 3.0)
    for c, k in enumerate(("dino", "clip", "total")):
        ax = axes[0][c]
        ax.plot([r["bytes"] for r in by_rank], [r[k] for r in by_rank], "o-", color=_COLORS[1],
                label=f"rank budget ({top_bits:g}-bit)")
        for r in by_rank:
            ax.annotate(f"r={r['rank']:g}", (r["bytes"], r[k]), fontsize=6, xytext=(2, 3), textcoords="offset points")
        ax.plot([r["bytes"] for r in by_bits], [r[k] for r in by_bits], "s--", color=_COLORS[3],
                label=f"precision (rank {top_rank:g})")
        for r in by_bits:
            ax.annotate(f"{r['bits']:g}b", (r["bytes"], r[k]), fontsize=6, xytext=(2, -8), textcoords="offset points")
        for r in meta:
            ax.axhline(r[k], color="k", ls=":", label="metaword only")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # "2x10^3 3x10^3 ..." overlap on a short axis
        ax.set_xlabel("update bytes")
        ax.set_title({"dino": "DINO-score", "clip": "CLIP-score", "total": "DINO + CLIP"}[k], fontsize=10)
        ax.grid(alpha=0.3)
    return _save(fig, path, legend_ax=axes[0][0])


# ----------------------------------------------------------------------------- Figs. 10-13

def _codec_label(c: str) -> str:
    return CODEC_LABELS.get(c, c)


def plot_fig10(tka: Mapping, path: str, note: str = "") -> str:
    """Fig. 10: per codec (groups) and T-KA method (bars), (a) PSNR, (b) DINO-score, (c) CLIP-score,
    each the mean over subjects; the error bar is the std over subjects (0 with one subject).
    DINO/CLIP bars are left out where they were not measured (null). ``note``: a line below the
    panels (e.g. the training depth)."""
    t = _check_tka(tka)
    codecs = list(t)
    methods = [m for m in TKA_METHODS if any(m in t[c][s] for c in codecs for s in t[c])]
    fig, axes = _figure(1, 3, max(3.2, 1.0 + 1.1 * len(codecs)), 3.0)
    for i, (k, name) in enumerate((("psnr", "(a) PSNR [dB]"), ("dino", "(b) DINO-score"), ("clip", "(c) CLIP-score"))):
        series = []
        for m in methods:
            vals, errs = [], []
            for c in codecs:
                got = [t[c][s][m][k] for s in t[c] if m in t[c][s] and t[c][s][m][k] is not None]
                vals.append(float(np.mean(got)) if got else None)
                errs.append(float(np.std(got)) if got else None)
            series.append((TKA_LABELS[m], vals, errs))
        _bars(axes[0][i], [_codec_label(c) for c in codecs], series, name.split(" ", 1)[1], name,
              colors=[_COLORS[TKA_METHODS.index(m)] for m in methods])
    return _save(fig, path, legend_ax=axes[0][0], note=note)


def plot_fig11(rows: Sequence[Mapping], path: str, note: str = "") -> str:
    """Fig. 11: (a) update size / Full-FT's, (b) training FLOPs / Full-FT's, (c) PSNR, against the
    rank budget, for LoRA and CALA; Full-FT is flat in rank (a line across all ranks). ``note``: a
    line below the panels (e.g. the training depth)."""
    rs = []
    for i, r in enumerate(_list(rows, "fig11")):
        w = f"fig11[{i}]"
        m = _need(r, "method", w)
        if m not in ("lora", "cala", "fullft"):
            raise ValueError(f"{w}.method: {m!r} is not one of lora, cala, fullft")
        rs.append({"method": m, **{k: _num(_need(r, k, w), f"{w}.{k}")
                                   for k in ("rank", "update_ratio", "flops_ratio", "psnr")}})
    ranks = sorted({r["rank"] for r in rs if r["method"] != "fullft"})
    fig, axes = _figure(1, 3, 3.4, 3.0)
    for i, (k, name) in enumerate((("update_ratio", "(a) update size / Full-FT"),
                                   ("flops_ratio", "(b) training FLOPs / Full-FT"), ("psnr", "(c) PSNR [dB]"))):
        ax = axes[0][i]
        for j, m in enumerate(("lora", "cala", "fullft")):
            pts = sorted((r for r in rs if r["method"] == m), key=lambda r: r["rank"])
            if not pts:
                continue
            if m == "fullft":
                y = float(np.mean([p[k] for p in pts]))
                xs = ranks or [p["rank"] for p in pts]
                ax.plot([min(xs), max(xs)], [y, y], ls="--", color=_COLORS[j + 1], label=TKA_LABELS[m])
            else:
                ax.plot([p["rank"] for p in pts], [p[k] for p in pts], "o-", color=_COLORS[j + 1],
                        label=TKA_LABELS[m])
        if k == "update_ratio":
            ax.set_yscale("log")
        if ranks and min(ranks) > 0:
            ax.set_xscale("log", base=2)
        ax.set_xlabel("rank budget R")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
    return _save(fig, path, legend_ax=axes[0][0], note=note)


def plot_fig12(d: Mapping, path: str) -> str:
    """Fig. 12: (a) PSNR and (b) FID against bpp (= 6 x symbols per pixel, 64-QAM), one curve per
    SNR (and scheme, if several); the titles carry the slopes as metrics.json gives them (reading:
    ``psnr_db_per_db`` = dB of PSNR lost per dB of SNR lost, ``fid_pct_per_db`` = % FID rise per dB
    of SNR lost, as :func:`dekag_jax.ka.tka_studies.fit_slopes` defines them; the paper: 0.34 and
    9.0). A null FID (point or slope) is not drawn."""
    _mapping(d, "fig12")
    pts = []
    for i, p in enumerate(_list(_need(d, "points", "fig12"), "fig12.points")):
        w = f"fig12.points[{i}]"
        pts.append({"scheme": str(_need(p, "scheme", w)),
                    **{k: _num(_need(p, k, w), f"{w}.{k}") for k in ("snr_db", "bpp", "psnr")},
                    "fid": _opt_num(_need(p, "fid", w), f"{w}.fid")})
    slopes = _need(d, "slopes", "fig12")
    sl = {k: _opt_num(_need(slopes, k, "fig12.slopes"), f"fig12.slopes.{k}") for k in ("psnr_db_per_db",
                                                                                        "fid_pct_per_db")}
    if sl["psnr_db_per_db"] is None:
        raise ValueError("fig12.slopes.psnr_db_per_db: null")
    fid_slope = "not measured" if sl["fid_pct_per_db"] is None else f"slope {sl['fid_pct_per_db']:.1f}% per dB SNR"
    schemes = sorted({p["scheme"] for p in pts})
    keys = sorted({(p["scheme"], p["snr_db"]) for p in pts})
    fig, axes = _figure(1, 2, 4.0, 3.2)
    for i, (k, name) in enumerate((("psnr", f"(a) PSNR vs bpp (slope {sl['psnr_db_per_db']:.2f} dB per dB SNR)"),
                                   ("fid", f"(b) FID vs bpp ({fid_slope})"))):
        ax = axes[0][i]
        for j, (s, snr) in enumerate(keys):
            q = sorted((p for p in pts if p["scheme"] == s and p["snr_db"] == snr and p[k] is not None),
                       key=lambda p: p["bpp"])
            lab = f"γ = {snr:g} dB" if len(schemes) == 1 else f"{SCHEME_LABELS.get(s, s)}, γ = {snr:g} dB"
            ax.plot([p["bpp"] for p in q], [p[k] for p in q], "o-", ms=3, color=_COLORS[j % len(_COLORS)], label=lab)
        ax.set_xlabel("bpp")
        ax.set_ylabel("PSNR [dB]" if k == "psnr" else "FID")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    return _save(fig, path, legend_ax=axes[0][0])


def _fig13_rows(d: Mapping) -> list[dict]:
    rows = []
    for s, lst in _mapping(d, "fig13").items():
        for i, r in enumerate(_list(lst, f"fig13.{s}")):
            w = f"fig13.{s}[{i}]"
            sch = _need(r, "scheme", w)
            if sch not in SCHEME_LABELS:
                raise ValueError(f"{w}.scheme: {sch!r} is not one of {', '.join(SCHEME_LABELS)}")
            rows.append({"subject": s, "scheme": sch, **{k: _num(_need(r, k, w), f"{w}.{k}") for k in
                         ("snr_db", "delay_spread_ns", "spp", "psnr_mean", "psnr_std", "n")}})
    return rows


def _pool13(rows: list[dict]) -> dict:
    """Pool subjects per (scheme, snr, delay spread, spp): the mean and std of all n images together
    (n-weighted mean; variance = within-subject + between-subject parts)."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["scheme"], r["snr_db"], r["delay_spread_ns"], round(r["spp"], 9)), []).append(r)
    out = {}
    for k, g in groups.items():
        n = np.array([max(r["n"], 1.0) for r in g])
        m = np.array([r["psnr_mean"] for r in g])
        s = np.array([r["psnr_std"] for r in g])
        mu = float(np.sum(n * m) / np.sum(n))
        out[k] = (mu, float(np.sqrt(np.sum(n * (s ** 2 + (m - mu) ** 2)) / np.sum(n))))
    return out


def plot_fig13(d: Mapping, path: str) -> str:
    """Fig. 13: one panel per SNR (paper: 0, 10, 20 dB); PSNR mean against symbols per pixel for
    CALA-JSCC, JPEG-LDPC and Latent-LDPC, pooled over subjects. Error bars are the std; as in the
    paper, the smallest delay spread's bar sits left (solid), the largest's right (dotted), others
    between; the line joins the means over delay spreads."""
    pooled = _pool13(_fig13_rows(d))
    snrs = sorted({k[1] for k in pooled})
    omegas = sorted({k[2] for k in pooled})
    fig, axes = _figure(1, len(snrs), 3.6, 3.2)
    for i, snr in enumerate(snrs):
        ax = axes[0][i]
        for j, sch in enumerate(SCHEME_LABELS):
            ks = [k for k in pooled if k[0] == sch and k[1] == snr]
            if not ks:
                continue
            spps = sorted({k[3] for k in ks})
            span = max(spps) - min(spps)
            ref = span or max(spps) or 1.0
            step = 0.02 * ref if span else 0.08 * ref  # one spp only: a wider spread, x limits set below
            color = _COLORS[[1, 0, 3, 2][j]]
            means = [float(np.mean([pooled[k][0] for k in ks if k[3] == x])) for x in spps]
            ax.plot(spps, means, "o-", ms=3, color=color, label=SCHEME_LABELS[sch])
            for o_i, om in enumerate(omegas):
                off = (o_i - (len(omegas) - 1) / 2) * step + (j - 1.5) * 0.25 * step  # schemes apart too
                pts = [(k[3], pooled[k]) for k in ks if k[2] == om]
                if pts:
                    eb = ax.errorbar([p[0] + off for p in pts], [p[1][0] for p in pts], yerr=[p[1][1] for p in pts],
                                     fmt="none", ecolor=color, capsize=2, elinewidth=1)
                    if o_i == len(omegas) - 1 and len(omegas) > 1:
                        for line in eb[2]:
                            line.set_linestyle(":")
        xs = sorted({k[3] for k in pooled if k[1] == snr})
        if len(xs) == 1:
            ax.set_xlim(xs[0] * 0.6, xs[0] * 1.4)
        ax.set_xlabel("symbols per pixel")
        ax.set_ylabel("PSNR [dB]")
        ax.set_title(f"({'abcdefgh'[i % 8]}) γ = {snr:g} dB", fontsize=10)
        ax.grid(alpha=0.3)
    note = ("std error bars left to right: ω = " + ", ".join(f"{o:g} ns" for o in omegas) + " (largest dotted)"
            if len(omegas) > 1 else f"std error bars at ω = {omegas[0]:g} ns")
    return _save(fig, path, legend_ax=axes[0][0], note=note)


# ----------------------------------------------------------------------------- claims

def _pct(x: float | None) -> str:
    if x is None:
        return "—"
    v = round(100 * x, 1)
    return f"{v if v else 0.0:+.1f}%"  # no "-0.0%"


def _db(x: float | None) -> str:
    return "—" if x is None else f"{x:+.2f} dB"


def _gka_ratio(gka: dict, a: str, b: str, where: str, k: str, q: str = "mean") -> dict:
    """Per subject ``a/b`` of ``gka[s][m][where][k][q]`` where both exist (b nonzero)."""
    out = {}
    for s, per in gka.items():
        if a in per and b in per and per[a][where] is not None and per[b][where] is not None:
            den = per[b][where][k][q]
            if den != 0:
                out[s] = per[a][where][k][q] / den
    return out


def _tka_diffs(tka: dict, a: str, b: str) -> list[tuple[str, str, str, float]]:
    """(codec, subject, condition, PSNR_a - PSNR_b) for the overall PSNR ("all") and every
    by_snr/by_rate/by_delay_spread condition both methods report."""
    out = []
    for c, per_s in tka.items():
        for s, per_m in per_s.items():
            if a not in per_m or b not in per_m:
                continue
            ea, eb = per_m[a], per_m[b]
            out.append((c, s, "all", ea["psnr"] - eb["psnr"]))
            for k, unit in (("by_snr", "SNR {} dB"), ("by_rate", "rate {}"), ("by_delay_spread", "ω {} ns")):
                for q in ea[k]:
                    if q in eb[k]:
                        out.append((c, s, unit.format(q), ea[k][q] - eb[k][q]))
    return out


def _gka_size_parts(u: Mapping) -> str:
    out = f"metaword {u.get('metaword_bytes')} B + LoRA {u.get('lora_bytes')} B at {u.get('lora_bits')} bits"
    if isinstance(u.get("unet_params"), int):
        out += f"; over {u['unet_params']:,} edge UNet parameters (paper: 2.7 M over SD2.1's 1.21 B)"
    return out


def claims(metrics: Mapping) -> list[dict]:
    """Our numbers beside the paper's Sec. VI-B claims, from metrics.json only.

    Each row: ``claim``, ``paper`` (text), ``ours`` (float or None when not measured), ``text``
    (ours formatted), ``holds`` (True/False/None), ``note`` (where ours differ, from the data).
    "holds?" asks whether the *direction* of the claim holds on our data (MAKD above LB, CALA
    above No-KA, ...); for "CALA close to Full-FT" it is "at most 0.8 dB below", for update sizes
    "at most the paper's share with its rounding" (0.2% -> < 0.25%, "about 1%" -> < 1.5%).
    """
    out: list[dict] = []

    def row(claim, paper, ours, text, holds, note):
        out.append({"claim": claim, "paper": paper, "ours": ours, "text": text, "holds": holds, "note": note})

    gka = _check_gka(metrics["gka"]) if metrics.get("gka") else {}
    wheres = ["edge"] + (["received"] if any(e["received"] is not None for p in gka.values() for e in p.values())
                         else [])
    g_claims = [("MAKD over LB, DINO + CLIP", .44, "makd", "lb", "total", "mean", ("edge", "received")),
                ("MAKD over TI, DINO + CLIP", .063, "makd", "ti", "total", "mean", ("edge", "received")),
                ("MAKD over TI, DINO", .097, "makd", "ti", "dino", "mean", ("edge",)),
                ("MAKD over TI, CLIP", .028, "makd", "ti", "clip", "mean", ("edge",)),
                ("std of DINO, MAKD vs TI", -.56, "makd", "ti", "dino", "std", ("edge",)),
                ("std of CLIP, MAKD vs TI", -.38, "makd", "ti", "clip", "std", ("edge",))]
    for claim, paper_v, a, b, k, q, allowed in g_claims:
        paper = f"{100 * paper_v:+.2g}%".replace("-", "−")
        for where in (w for w in wheres if w in allowed):
            r = _gka_ratio(gka, a, b, where, k, q)
            name = f"{claim} ({where})"
            if not r:
                row(name, paper, None, "—", None, f"not measured ({GKA_LABELS[a]} or {GKA_LABELS[b]} missing)")
                continue
            ours = float(np.mean(list(r.values()))) - 1.0
            want_up = q == "mean"
            holds = ours > 0 if want_up else ours < 0
            bad = [s for s, v in r.items() if (v <= 1.0 if want_up else v >= 1.0)]
            per = ", ".join(f"{s} {_pct(v - 1)}" for s, v in r.items())
            if bad:
                what = "below" if want_up else "not below"
                note = f"{GKA_LABELS[a]} {what} {GKA_LABELS[b]} on {', '.join(bad)}; per subject: {per}"
            else:
                note = f"{'larger' if abs(ours) >= abs(paper_v) else 'smaller'} than the paper's; per subject: {per}"
            row(name, paper, ours, _pct(ours), holds, note)

    tka = _check_tka(metrics["tka"]) if metrics.get("tka") else {}
    d_noka = _tka_diffs(tka, "cala", "noka")
    if d_noka:
        c, s, cond, best = max(d_noka, key=lambda x: x[3])
        worse = sorted({f"{_codec_label(x[0])}/{x[1]}" for x in d_noka if x[2] == "all" and x[3] <= 0})
        row("CALA over No-KA, PSNR, largest (codec, subject, condition)", "up to +6.5 dB", best, _db(best), best > 0,
            f"largest on {_codec_label(c)}, {s}, {cond}" + (f"; CALA ≤ No-KA on {', '.join(worse)}" if worse else ""))
        alls = [x for x in d_noka if x[2] == "all"]
        m = float(np.mean([x[3] for x in alls]))
        per_codec = ", ".join(f"{_codec_label(cc)} {_db(float(np.mean([x[3] for x in alls if x[0] == cc])))}"
                              for cc in tka if any(x[0] == cc for x in alls))
        row("CALA over No-KA, PSNR, mean over codecs and subjects", "+6.5 dB (largest codec)", m, _db(m), m > 0,
            f"per codec: {per_codec}")
    else:
        row("CALA over No-KA, PSNR", "up to +6.5 dB", None, "—", None, "not measured (CALA or No-KA missing)")
    for other, paper, test, txt in (("lora", "+1.2 dB", lambda v: v > 0, "CALA ≤ LoRA"),
                                    ("fullft", "−0.8 dB", lambda v: v >= -0.8,
                                     "CALA more than 0.8 dB below Full-FT")):
        alls = [x for x in _tka_diffs(tka, "cala", other) if x[2] == "all"]
        name = f"CALA − {TKA_LABELS[other]}, PSNR, mean over codecs and subjects"
        if not alls:
            row(name, paper, None, "—", None, f"not measured (CALA or {TKA_LABELS[other]} missing)")
            continue
        m = float(np.mean([x[3] for x in alls]))
        bad = [f"{_codec_label(x[0])}/{x[1]} ({_db(x[3])})" for x in alls if not test(x[3])]
        per = ", ".join(f"{_codec_label(x[0])}/{x[1]} {_db(x[3])}" for x in alls)
        row(name, paper, m, _db(m), test(m), (f"{txt} on {', '.join(bad)}" if bad else f"per codec/subject: {per}"))

    us = metrics.get("update_sizes") or {}
    for key, claim, paper, bar, parts in (
            ("g_ka", "G-KA update / edge-GAI parameters", "0.2%", 0.0025,
             _gka_size_parts),
            ("t_ka", "T-KA update / JSCC codec parameters", "about 1%", 0.015,
             lambda u: f"{u.get('params')} parameters, {u.get('bytes')} B")):
        u = us.get(key)
        if not u:
            row(claim, paper, None, "—", None, "not measured (update_sizes missing)")
            continue
        r = _num(_need(u, "ratio", f"update_sizes.{key}"), f"update_sizes.{key}.ratio")
        holds = r < bar
        row(claim, paper, r, f"{100 * r:.3g}%", holds,
            parts(u) + ("" if holds else "; a larger share than the paper's: the update's rank is fixed, so its share "
                                         "grows as the model shrinks"))

    f12 = metrics.get("fig12")
    if f12:
        sl = _need(f12, "slopes", "fig12")
        p = _num(_need(sl, "psnr_db_per_db", "fig12.slopes"), "fig12.slopes.psnr_db_per_db")
        f = _opt_num(_need(sl, "fid_pct_per_db", "fig12.slopes"), "fig12.slopes.fid_pct_per_db")
        row("PSNR lost per dB of SNR lost (Fig. 12a)", "0.34 dB", p, f"{p:.2f} dB", 0 < p <= 1.0,
            "holds = PSNR falls with SNR, by at most 1 dB per dB (no abrupt drop)")
        if f is None:
            row("FID rise per dB of SNR lost (Fig. 12b)", "9.0%", None, "—", None, "not measured (null slope)")
        else:
            row("FID rise per dB of SNR lost (Fig. 12b)", "9.0%", f, f"{f:.1f}%", f > 0,
                "holds = FID rises as SNR falls")

    if metrics.get("fig13"):
        pooled = _pool13(_fig13_rows(metrics["fig13"]))
        for base, claim, paper, sel in (
                ("jpeg_ldpc", "CALA-JSCC above JPEG-LDPC (share of Fig. 13 conditions)", "most conditions",
                 lambda k: True),
                ("latent_ldpc", "CALA-JSCC above Latent-LDPC at γ ≤ 10 dB, fewest symbols (share)",
                 "clear advantage", None)):
            ks = [k for k in pooled if k[0] == "cala" and (base, *k[1:]) in pooled]
            if sel is None:  # low-to-medium SNR with the scarcest spectrum: the smallest spp per (snr, omega)
                lo = {}
                for k in ks:
                    if k[1] <= 10:
                        lo[(k[1], k[2])] = min(lo.get((k[1], k[2]), k[3]), k[3])
                ks = [k for k in ks if k[1] <= 10 and k[3] == lo[(k[1], k[2])]]
            if not ks:
                row(claim, paper, None, "—", None, f"no condition with both CALA-JSCC and {SCHEME_LABELS[base]}")
                continue
            wins = [k for k in ks if pooled[k][0] > pooled[(base, *k[1:])][0]]
            share = len(wins) / len(ks)
            lost = [f"γ {k[1]:g} dB/ω {k[2]:g} ns/spp {k[3]:.4g}" for k in ks if k not in wins]
            row(claim, paper, share, f"{100 * share:.0f}% of {len(ks)}", share > 0.5,
                ("below on " + "; ".join(lost[:6]) + (" ..." if len(lost) > 6 else "")) if lost else "above everywhere")
    return out


# ----------------------------------------------------------------------------- report.md

def _qkey(q: str):
    """Sort condition keys numerically ("2/64" by 2, "10" by 10), anything else after, by text."""
    try:
        return (0, float(str(q).split("/")[0]), str(q))
    except ValueError:
        return (1, 0.0, str(q))


def _mean_known(v: Sequence[float | None]) -> float | None:
    """Mean of the values that were measured (None = not measured); None when none were."""
    v = [x for x in v if x is not None]
    return float(np.mean(v)) if v else None


def _f(x: float | None, nd: int = 3) -> str:
    return "—" if x is None else f"{x:.{nd}f}"


def _ms(s: dict | None, k: str) -> str:
    return "—" if s is None else f"{s[k]['mean']:.3f} ± {s[k]['std']:.3f}"


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    def cell(x):
        return str(x).replace("|", "\\|").replace("\n", " ")
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(cell(x) for x in r) + " |" for r in rows]
    return out + [""]


def _flat(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(d, Mapping):
        out = []
        for k, v in d.items():
            out += _flat(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [(prefix, d)]


#: Config leaves shown in the report's first lines (substring of the leaf's own name); the rest folds.
_HIGHLIGHT = ("subjects", "epochs", "steps", "rank", "bits", "lr", "learning_rate", "n_", "methods", "codec",
              "guidance", "seed", "resolution", "snr", "delay", "rate", "source", "model")


def _load_images(run_dir: str, subjects: Sequence[str], max_columns: int = 4) -> tuple[dict, list[str], list[str]]:
    """Fig. 4 rows from ``<subject>/images/<name>.npz``: per row, the first k images of each subject
    (k = max(1, max_columns // subjects): one subject shows several samples, many show one each;
    columns = subject x sample). A cell missing for a subject is mid-grey (named in the report)."""
    found: dict = {}
    for s in subjects:
        for name in FIG4_ROWS:
            p = os.path.join(run_dir, s, "images", f"{name}.npz")
            if os.path.isfile(p):
                with np.load(p, allow_pickle=False) as z:
                    if "images" not in z.files:
                        raise ValueError(f"{p}: missing key 'images'")
                    a = z["images"]
                if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3 or not len(a):
                    raise ValueError(f"{p}: images must be uint8 [n, H, W, 3], got {a.dtype} {a.shape}")
                found.setdefault(name, {})[s] = a
    subs = [s for s in subjects if any(s in v for v in found.values())]
    k = max(1, max_columns // max(len(subs), 1))
    k = min([k] + [len(a) for v in found.values() for a in v.values()])  # every present cell filled
    cols = [s if k == 1 else f"{s} #{i + 1}" for s in subs for i in range(k)]
    rows, grey = {}, []
    for name in FIG4_ROWS:
        if name not in found:
            continue
        shape = next(iter(found[name].values())).shape[1:]
        cells = []
        for s in subs:
            a = found[name].get(s)
            if a is None or a.shape[1:] != shape:
                grey.append(f"{FIG4_ROWS[name]} / {s}")
                a = np.full((k, *shape), 128, np.uint8)
            cells.extend(a[:k])
        rows[name] = np.stack(cells)
    return rows, cols, grey


def write_report(run_dir: str) -> str:
    """Write ``run_dir/report.md`` and ``run_dir/figures/figN.png`` for every figure whose data are in
    ``run_dir/metrics.json`` (and the images); returns the report's path. Raises FileNotFoundError
    without metrics.json and ValueError (naming the key) for a metrics.json off the schema."""
    mpath = os.path.join(run_dir, "metrics.json")
    if not os.path.isfile(mpath):
        raise FileNotFoundError(f"no metrics.json in {run_dir!r}")
    with open(mpath, encoding="utf-8") as fh:
        try:
            m = json.load(fh)
        except json.JSONDecodeError as e:
            raise ValueError(f"{mpath}: not valid JSON ({e})") from None
    _mapping(m, "metrics.json")
    if _need(m, "schema", "metrics.json") != 1:
        raise ValueError(f"metrics.json: schema {m['schema']!r} is not 1")
    subjects = [str(s) for s in _list(_need(m, "subjects", "metrics.json"), "metrics.json.subjects")]
    fig_dir = os.path.join(run_dir, "figures")
    drawn: dict[str, str] = {}
    missing: dict[str, str] = {}

    def draw(n: str, key: str, fn, reason: str):
        if not m.get(key):
            missing[n] = reason
        else:
            drawn[n] = fn(m[key], os.path.join(fig_dir, f"fig{n}.png"))

    rows, cols, grey = _load_images(run_dir, subjects)
    if rows:
        drawn["4"] = plot_fig4(rows, os.path.join(fig_dir, "fig4.png"), columns=cols)
    else:
        missing["4"] = "no images under <subject>/images/ (the evaluation stage has not run)"
    draw("5", "gka", plot_fig5, "no G-KA scores yet (metrics.json has no 'gka')")
    missing["6"] = "not produced by this job (extended-prompt generations are a qualitative check)"
    draw("7", "fig7", plot_fig7, "not run (metrics.json has no 'fig7': the multi-subject G-KA study)")
    draw("8", "fig8", plot_fig8, "not run (metrics.json has no 'fig8': the training-depth study)")
    draw("9", "fig9", plot_fig9, "not run (metrics.json has no 'fig9': the rank-vs-precision study)")
    draw("10", "tka", plot_fig10, "no T-KA results yet (metrics.json has no 'tka')")
    draw("11", "fig11", plot_fig11, "not run (metrics.json has no 'fig11': the rank-budget study)")
    draw("12", "fig12", plot_fig12, "not run (metrics.json has no 'fig12': the bitrate-distortion study)")
    draw("13", "fig13", plot_fig13, "no comparison with the LDPC baselines yet (metrics.json has no 'fig13')")

    L: list[str] = ["# DeKA-g run report", "",
                    f"Regenerate with `python -m dekag_jax.report {run_dir}`. Everything below is read from "
                    "`metrics.json` and the image files of this run directory.", ""]
    # --- what was run
    mach = m.get("machine") or {}
    src = m.get("sources") or {}
    L += ["## What was run", "", f"- subjects: {', '.join(subjects)}"]
    if isinstance(src, Mapping) and src:
        L.append("- models: " + ", ".join(f"{k} {v}" for k, v in src.items()))
    L.append("- machine: " + (", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                        for k, v in mach.items()) if mach else "not recorded"))
    cfg = _flat(m.get("config") or {})
    studies = any(m.get(k) for k in ("fig7", "fig8", "fig9", "fig11", "fig12"))
    hl = [(k, v) for k, v in cfg if any(h in k.split(".")[-1].lower() for h in _HIGHLIGHT)
          and (studies or "studies" not in k.split("."))]
    if hl:  # one line per top-level section
        L.append("- config highlights:")
        sections: dict = {}
        for k, v in hl:
            head, _, rest = k.partition(".")
            sections.setdefault(head if rest else "", []).append(f"{rest or head} = {json.dumps(v)}")
        L += [f"  - {head + ': ' if head else ''}{', '.join(items)}" for head, items in sections.items()]
    if cfg:
        L += ["", "<details><summary>full config</summary>", "", "```"] + [f"{k} = {json.dumps(v)}" for k, v in cfg] + \
             ["```", "", "</details>"]
    L.append("")
    st = m.get("stages") or {}
    if st:
        srows, total = [], 0.0
        for who, stages in st.items():
            for name, e in _mapping(stages, f"stages.{who}", nonempty=False).items():
                sec = _num(_need(e, "seconds", f"stages.{who}.{name}"), f"stages.{who}.{name}.seconds")
                total += sec
                srows.append((who, name, f"{sec:.1f}", e.get("summary", "")))
        L += ["### Time per stage", ""] + _table(("subject", "stage", "seconds", "summary"), srows) + \
             [f"Total: {total:.1f} s ({total / 3600:.2f} h).", ""]

    # --- G-KA
    L += ["## G-KA: consistency with the cloud (eq. 5)", ""]
    if m.get("gka"):
        gka = _check_gka(m["gka"])
        grows = []
        for s, per in gka.items():
            for meth in GKA_METHODS:
                if meth in per:
                    e = per[meth]
                    kid = "—" if e["kid"] is None else f"{e['kid']['mean']:.4f} ± {e['kid']['std']:.4f}"
                    grows.append((s, GKA_LABELS[meth], _ms(e["edge"], "dino"), _ms(e["edge"], "clip"),
                                  _ms(e["edge"], "total"), _ms(e["received"], "dino"), _ms(e["received"], "clip"),
                                  _ms(e["received"], "total"), _f(e["fid"], 2), kid))
        rc = m.get("received_conditions") or {}
        conds = "; ".join(f"τ {c.get('tau')}, {c.get('snr_db')} dB, {c.get('delay_spread_ns')} ns"
                          for c in rc.get("conditions", []) if isinstance(c, Mapping))
        L += ["Mean ± std over each subject's test images; edge = generated at the edge, received = after the "
              "aligned codec and the channel" + (f" ({conds})" if conds else "") +
              "; UB = cloud against cloud (no self-pairs).", ""]
        L += _table(("subject", "method", "DINO edge", "CLIP edge", "sum edge", "DINO received", "CLIP received",
                     "sum received", "FID", "KID"), grows)
        imp = []
        for meth in GKA_METHODS:
            if meth == "lb":
                continue
            vals = []
            for where in ("edge", "received"):
                r = _gka_ratio(gka, meth, "lb", where, "total")
                vals.append(_pct(float(np.mean(list(r.values()))) - 1) if r else "—")
            summ = (m.get("gka_summary") or {}).get(meth) or {}
            given = [summ.get("ratio_over_lb", {}).get(w) for w in ("edge", "received")]
            imp.append((GKA_LABELS[meth], *vals, *("—" if g is None else _pct(_num(g, "ratio_over_lb") - 1)
                                                    for g in given)))
        L += ["Improvement over LB: the **mean over subjects of per-subject ratios** of the sum DINO + CLIP, minus 1 "
              "(recomputed here from the per-subject scores; the last two columns are the run's own `gka_summary`, "
              "which must agree).", ""]
        L += _table(("method", "over LB, edge", "over LB, received", "gka_summary, edge", "gka_summary, received"),
                    imp)
    else:
        L += ["Not run yet (metrics.json has no `gka`).", ""]

    # --- T-KA
    L += ["## T-KA: the JSCC codec under Φ_EU", ""]
    if m.get("tka"):
        tka = _check_tka(m["tka"])
        trows, cond = [], {"by_snr": {}, "by_rate": {}, "by_delay_spread": {}}
        for c, per_s in tka.items():
            for meth in TKA_METHODS:
                es = [per_s[s][meth] for s in per_s if meth in per_s[s]]
                if not es:
                    continue
                mean = {k: _mean_known([e[k] for e in es]) for k in
                        ("psnr", "dino", "clip", "update_params", "update_bytes", "ratio")}
                trows.append((_codec_label(c), TKA_LABELS[meth], _f(mean["psnr"], 2), _f(mean["dino"]),
                              _f(mean["clip"]), _f(mean["update_params"], 0), _f(mean["update_bytes"], 0),
                              "—" if mean["ratio"] is None else f"{100 * mean['ratio']:.3g}%"))
                for k in cond:
                    for q in sorted({q for e in es for q in e[k]}, key=_qkey):
                        v = [e[k][q] for e in es if q in e[k]]
                        cond[k].setdefault((_codec_label(c), TKA_LABELS[meth]), {})[q] = float(np.mean(v))
        L += [f"Mean over subjects ({', '.join(sorted({s for p in tka.values() for s in p}))}); PSNR on the "
              "decoded images, DINO/CLIP against the cloud's (eq. 5 on received images).", ""]
        L += _table(("codec", "method", "PSNR [dB]", "DINO", "CLIP", "update params", "update bytes", "update share"),
                    trows)
        for k, title, unit in (("by_snr", "PSNR by SNR", "dB"), ("by_rate", "PSNR by rate τ", ""),
                               ("by_delay_spread", "PSNR by delay spread", "ns")):
            if not cond[k]:
                continue
            qs = sorted({q for v in cond[k].values() for q in v}, key=_qkey)
            L += [f"### {title}", ""] + _table(("codec", "method") + tuple(f"{q} {unit}".strip() for q in qs),
                                               (key + tuple(_f(v.get(q), 2) for q in qs) for key, v in cond[k].items()))
    else:
        L += ["Not run yet (metrics.json has no `tka`).", ""]

    # --- transmitted artefacts and update sizes
    L += ["## What the cloud transmits", ""]
    art = m.get("artefacts") or {}
    if art:
        arows = []
        for s, files in art.items():
            for fname, e in _mapping(files, f"artefacts.{s}", nonempty=False).items():
                w = f"artefacts.{s}.{fname}"
                arows.append((s, f"[{fname}]({_need(e, 'path', w)})", int(_num(_need(e, "bytes", w), f"{w}.bytes"))))
        L += _table(("subject", "file", "bytes"), arows)
    else:
        L += ["No artefacts recorded yet.", ""]
    us = m.get("update_sizes") or {}
    if us.get("g_ka"):
        u = us["g_ka"]
        L += [f"- G-KA update: metaword {u.get('metaword_bytes')} B, LoRA {u.get('lora_bytes')} B at "
              f"{u.get('lora_bits')} bits; {100 * _num(_need(u, 'ratio', 'update_sizes.g_ka'), 'ratio'):.3g}% of the "
              "edge model's parameters."]
    if us.get("t_ka"):
        u = us["t_ka"]
        L += [f"- T-KA update: {u.get('params')} parameters, {u.get('bytes')} B; "
              f"{100 * _num(_need(u, 'ratio', 'update_sizes.t_ka'), 'ratio'):.3g}% of the JSCC codec's parameters."]
    L.append("")

    # --- ours vs paper
    L += ["## Ours next to the paper's claims (Sec. VI-B)", "",
          "\"direction holds?\" asks only whether the claim's direction holds on our data (MAKD above LB, CALA "
          "above LoRA, ...; see `dekag_jax.report.claims` for each test), not its size: compare \"ours\" with "
          "\"paper\" for that. The last column says where ours differ, from the data.", ""]
    yes = {True: "yes", False: "**no**", None: "—"}
    L += _table(("claim", "paper", "ours", "direction holds?", "where ours differ and why"),
                ((c["claim"], c["paper"], c["text"], yes[c["holds"]], c["note"]) for c in claims(m)))

    # --- figures
    L += ["## Figures", ""]
    for n in sorted(set(drawn) | set(missing), key=int):
        if n in drawn:
            L += [f"### Fig. {n}", "", f"![Fig. {n}](figures/fig{n}.png)", ""]
            if n == "4" and grey:
                L += [f"Grey cells: not produced ({'; '.join(grey)}).", ""]
    for n in sorted(missing, key=int):
        L.append(f"- Fig. {n}: {missing[n]}")
    L.append("")
    path = os.path.join(run_dir, "report.md")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(L))
    return path


# ----------------------------------------------------------------------------- command line

def main(argv=None) -> int:
    from dekag_jax import errors, runtime

    p = errors.ArgumentParser(prog="python -m dekag_jax.report",
                              description="Regenerate report.md and the figures of a DeKA-g run directory.")
    p.add_argument("run_dir", help="run directory of python -m dekag_jax.train (holds metrics.json)")
    args = p.parse_args(argv)
    if not os.path.isdir(args.run_dir):
        raise errors.UsageError(f"run directory {args.run_dir!r} does not exist")
    if not os.path.isfile(os.path.join(args.run_dir, "metrics.json")):
        raise errors.UsageError(f"no metrics.json in {args.run_dir!r} (run python -m dekag_jax.train "
                                f"--workdir {args.run_dir} first)")
    errors.prepare_output_dir(os.path.join(args.run_dir, "figures"), "figures folder")
    runtime.setup()
    try:
        path = write_report(args.run_dir)
    except ValueError as e:
        raise errors.UsageError(str(e)) from None
    print(path)
    return 0


if __name__ == "__main__":
    from dekag_jax.errors import cli_main

    sys.exit(cli_main(main))
