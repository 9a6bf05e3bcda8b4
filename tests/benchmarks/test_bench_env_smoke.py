"""Smoke run of benchmarks/bench_env.py: every section on our side, tiny sizes, peers skipped."""

import importlib.util
import json
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_env.py"


def load_bench():
    """benchmarks/ is a folder of scripts, not a package: import the file by path."""
    spec = importlib.util.spec_from_file_location("bench_env", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_env"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_quick_run_reports_positive_rates(tmp_path):
    bench = load_bench()
    out = tmp_path / "env.json"
    t0 = time.perf_counter()
    result = bench.main(bench.BenchEnvConfig(quick=True, peers=False, threads=1, out=out))
    assert time.perf_counter() - t0 < 20
    ours = [r for r in result["rows"] if r["system"] == "ours"]
    assert {r["section"] for r in ours} == {"pettingzoo", "batched", "scaling"}
    assert all(r["env_steps_per_s"] > 0 and r["agent_steps_per_s"] > 0 for r in ours)
    peers = [r for r in result["rows"] if r["system"] != "ours"]
    assert peers and all(r["skipped"] and r["env_steps_per_s"] is None for r in peers)
    assert json.loads(out.read_text())["rows"] == json.loads(json.dumps(result["rows"]))
    assert "| L |" in bench.markdown(result)
