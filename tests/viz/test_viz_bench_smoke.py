"""Smoke run of benchmarks/bench_viz.py: every case, 10 frames, one thread."""

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_viz.py"


def test_bench_viz_quick_reports_every_case(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_viz", BENCH)
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_viz"] = bench  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    out = tmp_path / "viz.json"
    bench.main(bench.BenchVizConfig(quick=True, threads=(1,), agents=30, out=out))
    rows = json.loads(out.read_text())["rows"]
    assert {(r["world"], r["strengths"]) for r in rows} == {(w, c) for w in bench.WORLDS for c in bench.CASES}
    assert all(r["fps_wall"] > 0 and r["fps_cpu"] > 0 for r in rows)
    assert all((r["half_edges"] > 0) == (r["strengths"] != "off") for r in rows)
