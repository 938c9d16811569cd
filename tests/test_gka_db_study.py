"""scripts/gka_db_study.py (the DB study of README "G-KA"): bad arguments are refused before any
model loads, and the pick helper reads the right row."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
import gka_db_study  # noqa: E402


@pytest.mark.parametrize("args, msg", [
    (["--checkpoints", "5,90", "--epochs", "60"], "--checkpoints must lie in 1..60"),
    (["--checkpoints", "0,5"], "--checkpoints must lie in 1..60"),
    (["--phases", "A,X"], "--phases: unknown ['X']"),
])
def test_bad_arguments_refused_before_loading(tmp_path, capsys, args, msg):
    with pytest.raises(SystemExit) as e:
        gka_db_study.main(["--out", str(tmp_path / "s.json"), *args])
    assert e.value.code == 2
    assert msg in capsys.readouterr().err


def test_row_pick():
    sres = {"runs": {"db_paper_lr0.0001": [{"epoch": 5, "total": 1.1, "heldout_total": 1.0},
                                           {"epoch": 15, "total": 1.3, "heldout_total": 1.2}]}}
    assert gka_db_study._row_pick(sres, "db_paper_lr0.0001", 15) == {
        "run": "db_paper_lr0.0001", "epoch": 15, "test_total": 1.3, "heldout_total": 1.2}
    assert gka_db_study._row_pick(sres, "db_paper_lr0.0001", 30) is None
    assert gka_db_study._row_pick(sres, "db_hf_lr0.001", 5) is None
