"""benchmarks/lm_compare.py: the presets' defaults and a tiny comparison end to end."""

import argparse
import json
import sys

import pytest


def test_gpu_preset_keeps_its_own_runs_and_files(load_script, monkeypatch):
    lm_compare = load_script("lm_compare")
    monkeypatch.setattr(sys, "argv", ["lm_compare.py", "--preset", "gpu"])
    args = lm_compare.parse()
    assert (args.device, args.steps, args.runs_dir) == ("cuda", lm_compare.GPU_STEPS, "runs/lm_compare_gpu")
    assert args.out.name == "lm_gpu.json" and args.table.name == "README_lm_gpu.md"
    monkeypatch.setattr(sys, "argv", ["lm_compare.py", "--preset", "gpu", "--device", "cpu", "--steps", "3"])
    args = lm_compare.parse()
    assert (args.device, args.steps) == ("cpu", 3)
    monkeypatch.setattr(sys, "argv", ["lm_compare.py"])
    args = lm_compare.parse()
    assert (args.device, args.steps, args.out.name) == ("cpu", None, "lm.json")


@pytest.mark.slow
def test_tiny_comparison_reports_the_ordering(load_script, tmp_path):
    lm_compare = load_script("lm_compare")
    corpus = tmp_path / "text.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 400)
    args = argparse.Namespace(
        preset="cpu", seeds=[0, 1], steps=2, device="cpu", precision="fp32", eval_windows=4,
        corpus=str(corpus), runs_dir=str(tmp_path / "runs"), progress=False,
    )  # fmt: skip
    summary, cfg = lm_compare.run_all(args)
    assert set(summary) == set(lm_compare.VARIANTS)
    assert all(len(s["runs"]) == 2 for s in summary.values())
    text = lm_compare.table(summary, cfg, "python benchmarks/lm_compare.py", [0, 1])
    assert "HA < HFA < SA (best of each family) " in text and "one CPU thread" in text
    json.dumps(summary)  # the results file takes it as it is
