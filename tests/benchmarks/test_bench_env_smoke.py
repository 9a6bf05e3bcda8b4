"""Smoke run of benchmarks/bench_env.py: every section on our side, tiny sizes, peers skipped."""

import json
import time

import pytest
import torch


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


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_cuda_without_a_device_is_one_clear_line(tmp_path, load_script):
    bench = load_script("bench_env")
    with pytest.raises(SystemExit, match="--device cuda asked for, but torch sees no CUDA device"):
        bench.main(bench.BenchEnvConfig(device="cuda", quick=True, out=tmp_path / "env.json"))


def test_cuda_result_is_filed_beside_the_cpu_one(tmp_path, load_script):
    """A GPU run's result (here a CPU quick run relabelled, as no GPU is at hand) goes under "cuda"
    by --merge; the CPU result stays at the top level, a later CPU run keeps the "cuda" entry, and
    the README's generated section is replaced, not repeated, while its hand-written text stays."""
    bench = load_script("bench_env")
    out, readme = tmp_path / "env.json", tmp_path / "README_env.md"
    readme.write_text("## Environment speed\n\nhand-written CPU text\n")
    cfg = dict(quick=True, peers=False, threads=1, out=out, readme=readme)
    cpu = bench.main(bench.BenchEnvConfig(**cfg))
    gpu = {**cpu, "machine": {**cpu["machine"], "device": "cuda", "cuda": "Some GPU"}, "command": "gpu run"}
    (tmp_path / "gpu.json").write_text(json.dumps({"cuda": gpu}))
    for _ in range(2):
        bench.main(bench.BenchEnvConfig(**cfg, merge=tmp_path / "gpu.json"))
    saved = json.loads(out.read_text())
    assert saved["rows"] == json.loads(json.dumps(cpu["rows"])) and saved["cuda"]["command"] == "gpu run"
    text = readme.read_text()
    assert text.startswith("## Environment speed\n\nhand-written CPU text")
    assert text.count("## On a GPU") == 1 and "Some GPU" in text and "`gpu run`" in text
    bench.main(bench.BenchEnvConfig(**cfg))  # a CPU run again: the cuda entry survives
    assert json.loads(out.read_text())["cuda"]["command"] == "gpu run"
