"""Smoke run of benchmarks/bench_env.py: every section on our side, tiny sizes, peers skipped."""

import json
import time


def test_quick_run_reports_positive_rates(tmp_path, load_script):
    bench = load_script("bench_env")
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
