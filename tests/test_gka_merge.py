"""scripts/gka_merge.py: per-subject G-KA runs merged into one table (means, ratios, std ratios,
ordering counts), and runs of different configs refused."""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
import gka_merge  # noqa: E402


def _score(total, std, dino_std=0.1):
    return {"dino": {"mean": total / 2, "std": dino_std}, "clip": {"mean": total / 2, "std": 0.1},
            "total": {"mean": total, "std": std}}


def _write(tmp_path, subject, totals, config=None):
    d = tmp_path / subject
    d.mkdir()
    scores = {m: _score(t, 0.1 * (i + 1), dino_std=0.2 if m == "ti" else 0.1) for i, (m, t) in enumerate(totals.items())}
    r = {"config": {"subjects": subject, "metaword": {"epochs": 60}, **(config or {})},
         "per_subject": {subject: {"scores": scores}}}
    (d / "metrics.json").write_text(json.dumps(r))
    return str(d)


def test_merge_means_ratios_and_counts(tmp_path):
    a = _write(tmp_path, "human_00", {"lb": 1.0, "ti": 1.2, "makd": 1.5})
    b = _write(tmp_path, "building_00", {"lb": 2.0, "ti": 1.8, "makd": 1.9})
    per, _ = gka_merge.load_runs([a, b])
    s = gka_merge.summarise(per)
    m = s["groups"]["all"]["methods"]
    assert m["makd"]["total_mean"] == pytest.approx(1.7)
    assert m["makd"]["ratio_over_lb"] == pytest.approx((1.5 / 1.0 + 1.9 / 2.0) / 2)   # mean of per-subject ratios
    assert s["wins"] == {"makd>ti": 2, "makd>lb": 1, "ti>lb": 1}
    assert s["std_ratio_makd_ti"]["dino"] == pytest.approx(0.5)
    assert set(s["groups"]) == {"all", "human", "building"}
    out = tmp_path / "t.md"
    assert gka_merge.main([a, b, "--out", str(out)]) == 0
    assert "| human_00 |" in out.read_text() and (tmp_path / "t.json").is_file()


def test_merge_refuses_other_config_and_missing(tmp_path):
    a = _write(tmp_path, "human_00", {"lb": 1.0})
    b = _write(tmp_path, "human_01", {"lb": 1.0}, config={"metaword": {"epochs": 30}})
    with pytest.raises(SystemExit, match="another config.*metaword"):
        gka_merge.load_runs([a, b])
    with pytest.raises(SystemExit, match="missing"):
        gka_merge.load_runs([a, str(tmp_path / "nope")])
