"""The attention benchmark script runs end to end at its --quick sizes and writes its outputs."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_attention_quick(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "bench_attention", ROOT / "benchmarks" / "bench_attention.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out, readme = tmp_path / "attention.json", tmp_path / "README.md"
    result = bench.main(["--quick", "--out", str(out), "--readme", str(readme)])
    saved = json.loads(out.read_text())
    assert set(saved["tables"]) == {"linear_ha", "softmax_ha", "sa_vs_hfa", "feature_map_ha"}
    assert saved["machine"]["torch"] and readme.read_text().startswith("## Attention")
    assert all(r["rel_diff"] < 1e-4 for r in result["tables"]["linear_ha"])  # fast path == reference
    assert all(r["max_abs_diff"] < 1e-4 for r in result["tables"]["softmax_ha"])
