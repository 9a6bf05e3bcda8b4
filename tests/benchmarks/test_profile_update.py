"""benchmarks/profile_update.py profiles the trainer's own minibatch step and names its ops."""

import json
import sys

import pytest


def test_profile_lists_the_step_ops_by_time(load_script, tmp_path, monkeypatch):
    pu = load_script("profile_update")
    out = tmp_path / "profile.json"
    argv = ["profile_update.py", "--num-worlds", "8", "--batch-size", "64", "--steps", "2", "--top", "5"]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(out)])
    pu.main()
    report = json.loads(out.read_text())
    assert report["compiled"] is False and report["ms_per_step"] > 0
    times = [row["ms_per_step"] for row in report["top"]]
    assert len(times) == 5 and times == sorted(times, reverse=True)
    names = " ".join(row["name"] for row in report["top"])
    assert "aten::" in names or "Optimizer" in names  # torch's own ops, not an empty trace


def test_profile_refuses_a_minibatch_larger_than_the_rollout(load_script, monkeypatch):
    pu = load_script("profile_update")
    monkeypatch.setattr(sys, "argv", ["profile_update.py", "--num-worlds", "2", "--batch-size", "100000"])
    with pytest.raises(ValueError, match="batch_size must be at most"):
        pu.main()
