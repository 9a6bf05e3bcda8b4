"""The attention benchmark script runs end to end at its --quick sizes, both suites, and files its outputs."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def load_bench():
    spec = importlib.util.spec_from_file_location(
        "bench_attention", ROOT / "benchmarks" / "bench_attention.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_cpu_suite_quick(tmp_path):
    bench = load_bench()
    out, readme = tmp_path / "attention.json", tmp_path / "README.md"
    result = bench.main(["--quick", "--out", str(out), "--readme", str(readme)])
    saved = json.loads(out.read_text())["cpu"]
    assert set(saved["tables"]) == {
        "linear_ha",
        "softmax_ha",
        "sa_vs_hfa",
        "long",
        "lm_step",
        "ha_kernels",
        "taylor_error",
        "feature_map_ha",
    }
    assert saved["machine"]["torch"] and readme.read_text().startswith("## Attention on cpu")
    tables = result["cpu"]["tables"]
    assert all(r["rel_diff"] < 1e-4 for r in tables["linear_ha"])  # fast path == reference
    assert all(r["max_abs_diff"] < 1e-4 for r in tables["softmax_ha"])
    assert {r["family"] for r in tables["lm_step"]} == {"sa", "hfa A=2", "ha exact", "ha taylor"}
    assert any("HFA / SA at L = 128" in g for g in saved["goals"])
    assert all(r["rel_diff"] < 1e-4 for r in tables["ha_kernels"])  # key pairs == query chunks


def test_partial_rerun_replaces_only_its_tables(tmp_path):
    """--tables: the named tables are measured again, the entry's others stay, the re-run is recorded."""
    bench = load_bench()
    out, readme = tmp_path / "attention.json", tmp_path / "README.md"
    args = ["--quick", "--out", str(out), "--readme", str(readme)]
    bench.main(args + ["--tables", "linear_ha", "long"])
    first = json.loads(out.read_text())["cpu"]
    bench.main(args + ["--tables", "long"])
    entry = json.loads(out.read_text())["cpu"]
    assert list(entry["tables"]) == ["linear_ha", "long"]
    assert entry["tables"]["linear_ha"] == first["tables"]["linear_ha"]
    assert entry["reruns"][-1]["tables"] == ["long"] and "Re-run" in readme.read_text()
    with pytest.raises(SystemExit, match="no table"):
        bench.main(args + ["--tables", "nope"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_cuda_without_a_device_is_one_clear_line(tmp_path):
    with pytest.raises(SystemExit, match="--device cuda asked for, but torch sees no CUDA device"):
        load_bench().main(["--device", "cuda", "--out", str(tmp_path / "x.json")])


def test_gpu_suite_runs_at_tiny_sizes_on_cpu_and_merges(tmp_path):
    """The --device cuda tables, run here on the CPU (--suite gpu), then filed beside a CPU entry."""
    bench = load_bench()
    gpu_json, main_json, readme = tmp_path / "cuda.json", tmp_path / "attention.json", tmp_path / "R.md"
    bench.main(["--suite", "gpu", "--quick", "--out", str(gpu_json), "--readme", str(readme)])
    entry = json.loads(gpu_json.read_text())["cpu-gpu"]
    assert set(entry["tables"]) == {
        "long",
        "hfa_kernels",
        "ha_device",
        "ha_kernels",
        "lm_step",
        "taylor_error",
    }
    assert {r["precision"] for r in entry["tables"]["lm_step"]} == {"fp32", "bf16"}
    old = {"command": "c", "seconds": 1.0, "goals": [], "tables": {}}  # the older one-device layout
    main_json.write_text(json.dumps({**old, "machine": {**entry["machine"], "gpu": None}}))
    merged = bench.main(["--merge", str(gpu_json), "--out", str(main_json), "--readme", str(readme)])
    assert set(merged) == {"cpu", "cpu-gpu"} and "## Attention on cpu-gpu" in readme.read_text()
