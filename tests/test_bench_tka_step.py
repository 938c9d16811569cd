"""scripts/bench_tka_step.py: argument checks (fast) and a one-step tiny run (slow)."""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))

import bench_tka_step  # noqa: E402


@pytest.mark.parametrize("argv, words", [(["--sizes", "tiny,huge"], "huge"), (["--methods", "lora,noka"], "noka"),
                                         (["--steps", "0"], "--steps")])
def test_bad_arguments_name_the_problem(argv, words, capsys):
    with pytest.raises(SystemExit):
        bench_tka_step.parse(argv)
    assert words in capsys.readouterr().err


def test_quick_selects_tiny_only():
    a = bench_tka_step.parse(["--quick", "--sizes", "paper"])
    assert a.sizes == ["tiny"] and a.methods == ["lora", "cala", "fullft"]


@pytest.mark.slow
def test_quick_run_writes_consistent_json(tmp_path):
    out = tmp_path / "b.json"
    bench_tka_step.main(["--quick", "--methods", "lora,fullft", "--steps", "1", "--warmup", "0", "--tiny-batch", "2",
                         "--no-jaxpr", "--json", str(out)])
    r = json.loads(out.read_text())["sizes"]["tiny"]
    fwd, lo, ff = r["forward"], r["methods"]["lora"], r["methods"]["fullft"]
    assert r["batch"] == 2 and r["latent_shape"] == [8, 8, 4]
    # a step = forward + backward (+ update): more FLOPs than the forward alone, less than ~4x
    for m in (lo, ff):
        assert 1.5 * fwd["xla_flops"] < m["xla_flops"] < 4.5 * fwd["xla_flops"]
        assert m["median_s"] > 0 and m["gflops_per_s"] == pytest.approx(m["xla_flops"] / m["median_s"] / 1e9)
    # LoRA skips the frozen weights' gradients: fewer FLOPs and far fewer trainable parameters than Full-FT
    assert lo["xla_flops"] < ff["xla_flops"] and lo["trainable_params"] < ff["trainable_params"] / 3
    assert r["ratios"]["lora_over_fullft_flops"] == pytest.approx(lo["xla_flops"] / ff["xla_flops"])
