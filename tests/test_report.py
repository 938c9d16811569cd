"""report.py: report.md, the figures and the ours-vs-paper table from a synthetic run directory.

The metrics are made up but self-consistent (totals = DINO + CLIP); every "ours" value the claims
table shows is recomputed here by hand from the literal numbers, so a hard-coded number fails.
"""
import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dekag_jax import report
from dekag_jax.errors import cli_main


def S(d, ds, c, cs, ts):
    return {"dino": {"mean": d, "std": ds}, "clip": {"mean": c, "std": cs}, "total": {"mean": d + c, "std": ts}}


def _gka():
    h = {"lb": (S(.30, .10, .60, .05, .12), S(.28, .10, .58, .05, .12)),
         "ti": (S(.40, .08, .70, .04, .10), S(.38, .08, .68, .04, .10)),
         "db": (S(.38, .09, .66, .05, .11), S(.36, .09, .64, .05, .11)),
         "makd": (S(.45, .04, .72, .03, .05), S(.44, .04, .70, .03, .05)),
         "ub": (S(.60, .05, .80, .02, .05), None)}
    b = {"lb": (S(.25, .06, .55, .05, .08), S(.24, .06, .54, .05, .08)),
         "ti": (S(.40, .05, .60, .04, .07), S(.39, .05, .59, .04, .07)),
         "db": (S(.33, .07, .58, .05, .09), S(.32, .07, .57, .05, .09)),
         "makd": (S(.35, .06, .60, .02, .06), S(.34, .06, .59, .02, .06)),   # MAKD below TI here
         "ub": (S(.55, .04, .75, .02, .04), None)}
    out = {}
    for s, per in (("human_00", h), ("building_00", b)):
        out[s] = {m: {"edge": e, "received": r, "fid": 100.0 + i, "kid": {"mean": 0.01 * i, "std": 0.001}}
                  for i, (m, (e, r)) in enumerate(per.items())}
    return out


def _tka_entry(psnr, dino, clip, params, ratio):
    return {"psnr": psnr, "dino": dino, "clip": clip,
            "by_snr": {"0": psnr - 3, "10": psnr, "20": psnr + 1}, "by_rate": {"2/64": psnr - 1, "6/64": psnr + 1},
            "by_delay_spread": {"30": psnr - .5, "3000": psnr + .5},
            "update_params": params, "update_bytes": 2 * params, "ratio": ratio}


def _tka():
    def codec(noka, lora, cala, ft):
        return {s: {"noka": _tka_entry(noka + k, .5, .6, 0, 0.0), "lora": _tka_entry(lora + k, .6, .7, 1000, .009),
                    "cala": _tka_entry(cala + k, .62, .71, 1040, .0094),
                    "fullft": _tka_entry(ft + k, .63, .72, 110000, 1.0)}
                for k, s in ((0.0, "human_00"), (1.0, "building_00"))}
    t = {"jscc_mt": codec(20.0, 24.0, 25.0, 25.5), "rc_jscc": codec(22.0, 23.0, 22.5, 24.0)}
    t["jscc_mt"]["human_00"]["cala"]["by_snr"]["0"] = 30.0  # the largest single-condition gain: 30 - 17 = 13 dB
    return t


def _fig13():
    rows = []
    for scheme, base in (("cala", 25.0), ("jpeg_ldpc", 22.0), ("latent_ldpc", 24.0)):
        for snr in (0.0, 10.0, 20.0):
            for om in (30.0, 3000.0):
                for spp in (1 / 64, 1 / 32):
                    mean = base + snr / 10 + 100 * spp
                    if scheme == "latent_ldpc" and snr == 20.0:
                        mean += 5  # Latent-LDPC wins at high SNR, as in the paper
                    if scheme == "jpeg_ldpc" and snr == 0.0 and spp == 1 / 64 and om == 30.0:
                        mean += 10  # the one condition JPEG-LDPC wins
                    rows.append({"scheme": scheme, "snr_db": snr, "delay_spread_ns": om, "spp": spp,
                                 "psnr_mean": mean, "psnr_std": 1.0 + om / 3000, "n": 4})
    return {"human_00": rows, "building_00": [dict(r, psnr_mean=r["psnr_mean"] - 1) for r in rows]}


def _summary(gka):
    """gka_summary as the main job writes it: mean over subjects of per-subject total ratios."""
    out = {}
    for m in ("lb", "ti", "db", "makd", "ub"):
        def ratio(w):
            r = [per[m][w]["total"]["mean"] / per["lb"][w]["total"]["mean"] for per in gka.values()
                 if per[m][w] is not None]
            return float(np.mean(r)) if r else None
        out[m] = {"edge": gka["human_00"][m]["edge"], "received": gka["human_00"][m]["received"],
                  "ratio_over_lb": {"edge": ratio("edge"), "received": ratio("received")}}
    return out


def _metrics():
    subjects = ["human_00", "building_00"]
    return {
        "schema": 1, "config": {"subjects": "human_00,building_00", "gka": {"metaword_epochs": 40, "lora_rank": 8}},
        "machine": {"backend": "cpu", "devices": 1, "processes": 1, "cpu_count": 2, "platform": "test"},
        "subjects": subjects,
        "stages": {"human_00": {"scg": {"seconds": 12.5, "summary": "40 images"},
                                "metaword": {"seconds": 30.0, "summary": "loss 0.1"}},
                   "_global": {"tka": {"seconds": 100.0, "summary": "4 methods"}}},
        "gka": _gka(), "gka_summary": _summary(_gka()),
        "tka": _tka(),
        "fig13": _fig13(),
        "update_sizes": {"g_ka": {"metaword_bytes": 2048, "lora_bytes": 40000, "lora_bits": 8, "ratio": 0.0031},
                         "t_ka": {"bytes": 2080, "params": 1040, "ratio": 0.0094}},
        "artefacts": {s: {"learned_embeds.safetensors": {"path": f"{s}/transmitted/learned_embeds.safetensors",
                                                         "bytes": 2048}} for s in subjects},
        "fig7": {s: {"multi_lora": S(.3, .1, .6, .1, .1), "makd": S(.4, .1, .7, .1, .1),
                     "multi_makd": S(.45, .1, .72, .1, .1)} for s in subjects[:1]},
        "fig8": {k: [{"epoch": e, "dino": .3 + .01 * e - .0002 * e * e, "clip": .6, "total": .9 + .01 * e,
                      "heldout_loss": 1.0 / (1 + e)} for e in (0, 10, 20, 40)] for k in ("metaword", "lora")}
        | {"chosen": {"metaword": 20, "lora": 10}},
        "fig9": [{"rank": r, "bits": b, "bytes": 100 * r * b, "dino": .3 + .01 * r + .001 * b, "clip": .6,
                  "total": .9 + .01 * r} for r, b in ((8, 16), (4, 16), (2, 16), (1, 16), (8, 8), (8, 4), (8, 2))]
        + [{"rank": 0, "bits": 32, "bytes": 4096, "dino": .3, "clip": .6, "total": .9}],
        "fig11": [{"rank": r, "method": m, "update_ratio": (r / 1000 if m != "fullft" else 1.0),
                   "flops_ratio": (0.5 + r / 64 if m != "fullft" else 1.0), "psnr": 24 + r / 8 + (m == "cala")}
                  for r in (4, 8, 16, 32) for m in ("lora", "cala", "fullft")],
        "fig12": {"points": [{"scheme": "cala", "snr_db": g, "bpp": bpp, "psnr": 20 + g / 3 + 10 * bpp,
                              "fid": 100 - g - 50 * bpp, "kid": 0.01}
                             for g in (0.0, 10.0, 20.0) for bpp in (.2, .4, .6)],
                  "slopes": {"psnr_db_per_db": 0.33, "fid_pct_per_db": 1.5}},
    }


def _run_dir(tmp_path, metrics=None):
    d = tmp_path / "run"
    rng = np.random.default_rng(0)
    for s in ("human_00", "building_00"):
        (d / s / "images").mkdir(parents=True)
        for name in ("cloud", "lb", "ti", "db", "makd", "rx_makd", "jpeg_ldpc", "latent_ldpc"):
            if s == "building_00" and name == "jpeg_ldpc":
                continue  # a missing cell: drawn grey and named
            np.savez(d / s / "images" / f"{name}.npz", images=rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8))
    (d / "metrics.json").write_text(json.dumps(_metrics() if metrics is None else metrics))
    return d


def _row(cl, start):
    hits = [c for c in cl if c["claim"].startswith(start)]
    assert len(hits) == 1, (start, [c["claim"] for c in cl])
    return hits[0]


def test_write_report_draws_every_figure_and_the_tables(tmp_path):
    d = _run_dir(tmp_path)
    path = report.write_report(str(d))
    assert path == str(d / "report.md")
    text = open(path).read()
    for n in (4, 5, 7, 8, 9, 10, 11, 12, 13):
        png = d / "figures" / f"fig{n}.png"
        with Image.open(png) as im:
            assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 150, n
        assert f"![Fig. {n}](figures/fig{n}.png)" in text
    assert "Fig. 6: not produced" in text and "figures/fig6.png" not in text
    assert "Grey cells: not produced (JPEG-LDPC / building_00)" in text
    # G-KA table row (edge and received), T-KA tables, stage times, artefacts
    assert "| human_00 | MAKD | 0.450 ± 0.040 | 0.720 ± 0.030 | 1.170 ± 0.050 | 0.440 ± 0.040 |" in text
    assert "| JSCC(MT) | CALA | 25.50 |" in text  # mean over the two subjects: (25 + 26) / 2
    assert "### PSNR by SNR" in text and "### PSNR by rate τ" in text
    assert "Total: 142.5 s" in text
    assert "[learned_embeds.safetensors](human_00/transmitted/learned_embeds.safetensors) | 2048 |" in text
    assert "mean over subjects of per-subject ratios" in text
    makd = ((.45 + .72) / (.30 + .60) + (.35 + .60) / (.25 + .55)) / 2 - 1  # = the run's own gka_summary
    makd_rx = ((.44 + .70) / (.28 + .58) + (.34 + .59) / (.24 + .54)) / 2 - 1
    assert f"| MAKD | {100 * makd:+.1f}% | {100 * makd_rx:+.1f}% | {100 * makd:+.1f}% | {100 * makd_rx:+.1f}% |" in text
    for row in report.claims(_metrics()):  # the claims table shows exactly claims()' values (checked below)
        assert f"| {row['claim']} | {row['paper']} | {row['text']} |" in text, row["claim"]


def test_claims_equal_hand_computation():
    m = _metrics()
    cl = report.claims(m)
    # G-KA (edge): per-subject ratios of totals, then their mean
    lb = _row(cl, "MAKD over LB, DINO + CLIP (edge)")
    assert lb["ours"] == pytest.approx(((.45 + .72) / (.30 + .60) + (.35 + .60) / (.25 + .55)) / 2 - 1)
    assert lb["holds"] is True and lb["paper"] == "+44%"
    ti = _row(cl, "MAKD over TI, DINO + CLIP (edge)")
    assert ti["ours"] == pytest.approx(((.45 + .72) / 1.10 + .95 / 1.00) / 2 - 1)
    assert "MAKD below TI on building_00" in ti["note"]
    rx = _row(cl, "MAKD over LB, DINO + CLIP (received)")
    assert rx["ours"] == pytest.approx(((.44 + .70) / (.28 + .58) + (.34 + .59) / (.24 + .54)) / 2 - 1)
    assert _row(cl, "MAKD over TI, DINO (edge)")["ours"] == pytest.approx((.45 / .40 + .35 / .40) / 2 - 1)
    sd = _row(cl, "std of DINO, MAKD vs TI (edge)")
    assert sd["ours"] == pytest.approx((.04 / .08 + .06 / .05) / 2 - 1)
    assert "not below TI on building_00" in sd["note"]
    assert _row(cl, "std of CLIP, MAKD vs TI (edge)")["ours"] == pytest.approx((.03 / .04 + .02 / .04) / 2 - 1)
    # T-KA: CALA - No-KA largest (jscc_mt human_00 SNR 0: 30 - 17) and mean over codecs x subjects
    big = _row(cl, "CALA over No-KA, PSNR, largest")
    assert big["ours"] == pytest.approx(13.0) and "JSCC(MT), human_00, SNR 0 dB" in big["note"]
    assert _row(cl, "CALA over No-KA, PSNR, mean")["ours"] == pytest.approx((5 + 5 + .5 + .5) / 4)
    lo = _row(cl, "CALA − LoRA")
    assert lo["ours"] == pytest.approx((1 + 1 - .5 - .5) / 4) and "RC-JSCC/human_00" in lo["note"]
    ft = _row(cl, "CALA − Full-FT")
    assert ft["ours"] == pytest.approx((-.5 - .5 - 1.5 - 1.5) / 4) and ft["holds"] is False  # -1.0 < -0.8
    g = _row(cl, "G-KA update")
    assert g["ours"] == 0.0031 and g["holds"] is False and g["text"] == "0.31%"
    t = _row(cl, "T-KA update")
    assert t["ours"] == 0.0094 and t["holds"] is True
    assert _row(cl, "PSNR lost per dB")["ours"] == 0.33 and _row(cl, "FID rise per dB")["ours"] == 1.5
    m3 = copy.deepcopy(m)
    m3["fig12"]["slopes"]["fid_pct_per_db"] = None  # tka_studies.fit_slopes gives null without FIDs
    assert _row(report.claims(m3), "FID rise per dB")["text"] == "—"
    # Fig. 13: CALA beats JPEG-LDPC in 11 of 12 pooled conditions; vs Latent-LDPC at <= 10 dB, fewest symbols
    j = _row(cl, "CALA-JSCC above JPEG-LDPC")
    assert j["ours"] == pytest.approx(11 / 12) and "γ 0 dB/ω 30 ns" in j["note"]
    assert _row(cl, "CALA-JSCC above Latent-LDPC")["ours"] == 1.0
    # changed data -> changed claims (nothing is typed in)
    m2 = copy.deepcopy(m)
    m2["gka"]["building_00"]["makd"]["edge"] = S(.50, .02, .70, .02, .03)
    assert _row(report.claims(m2), "MAKD over TI, DINO + CLIP (edge)")["ours"] == pytest.approx(
        ((.45 + .72) / 1.10 + 1.20 / 1.00) / 2 - 1)


def test_partial_run_names_missing_figures(tmp_path):
    m = _metrics()
    part = {k: m[k] for k in ("schema", "subjects", "gka")}
    d = tmp_path / "part"
    d.mkdir()
    (d / "metrics.json").write_text(json.dumps(part))
    text = open(report.write_report(str(d))).read()
    assert (d / "figures" / "fig5.png").exists() and not (d / "figures" / "fig10.png").exists()
    assert "- Fig. 10: no T-KA results yet" in text and "- Fig. 4: no images" in text
    assert "- Fig. 7: not run" in text and "| CALA over No-KA, PSNR | up to +6.5 dB | — | — |" in text


def test_missing_keys_give_one_clear_error(tmp_path):
    m = _metrics()
    del m["gka"]["human_00"]["makd"]["edge"]
    with pytest.raises(ValueError, match=r"^gka\.human_00\.makd: missing key 'edge'$"):
        report.claims(m)
    rows = copy.deepcopy(_fig13())
    del rows["building_00"][3]["spp"]
    with pytest.raises(ValueError, match=r"^fig13\.building_00\[3\]: missing key 'spp'$"):
        report.plot_fig13(rows, str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match=r"^fig8: missing key 'chosen'$"):
        report.plot_fig8({"metaword": _metrics()["fig8"]["metaword"], "lora": _metrics()["fig8"]["lora"]},
                         str(tmp_path / "x.png"))
    bad = copy.deepcopy(_tka())
    del bad["rc_jscc"]["building_00"]["lora"]["psnr"]
    with pytest.raises(ValueError, match=r"^tka\.rc_jscc\.building_00\.lora: missing key 'psnr'$"):
        report.plot_fig10(bad, str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match=r"fig4: row 'ti' must be uint8"):
        report.plot_fig4({"ti": np.zeros((1, 4, 4, 3), np.float32)}, str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match=r"fig11\[0\]: missing key 'flops_ratio'"):
        report.plot_fig11([{"rank": 4, "method": "lora", "update_ratio": .1, "psnr": 20}], str(tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()  # validation comes before drawing


def test_cli(tmp_path, capsys, monkeypatch):
    from dekag_jax import runtime

    calls = []  # in this process, setup() would change JAX's global config for later tests
    monkeypatch.setattr(runtime, "setup", lambda *a, **k: calls.append(1))
    d = _run_dir(tmp_path)
    assert cli_main(report.main, [str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == f"error: run directory {str(tmp_path / 'nope')!r} does not exist"
    (tmp_path / "empty").mkdir()
    assert cli_main(report.main, [str(tmp_path / "empty")]) == 2
    assert "error: no metrics.json in" in capsys.readouterr().err
    m = _metrics()
    del m["tka"]["jscc_mt"]["human_00"]["cala"]["psnr"]
    (d / "metrics.json").write_text(json.dumps(m))
    assert cli_main(report.main, [str(d)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: tka.jscc_mt.human_00.cala: missing key 'psnr'", err
    assert calls == [1]  # setup() only once the arguments were valid
    m = _metrics()
    (d / "metrics.json").write_text(json.dumps({k: m[k] for k in ("schema", "subjects", "gka")}))  # one figure: fast
    out = subprocess.run([sys.executable, "-m", "dekag_jax.report", str(d)], capture_output=True, text=True,
                         env={**os.environ, "JAX_PLATFORMS": "cpu", "DEKAG_JAX_CACHE_DIR": "off"}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == str(d / "report.md") and (d / "figures" / "fig5.png").exists()
    assert "## Ours next to the paper's claims" in (d / "report.md").read_text()
