"""torchrun (gloo, CPU) runs of ``fit`` and ``lm`` match one process; their checkpoints resume at 1 process.

Tolerances: fit trains in float64 and splits each global batch across ranks, so only the order of
the gradient sums differs; its parameters and losses match one process to 1e-9 relative. lm trains
in float32 with AdamW: its losses match to 1e-4 relative, its parameters to 1e-4 absolute.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training import dist, fit, lm
from training.runs import load_torch as load

ROOT = Path(__file__).resolve().parents[2]

FIT = dict(
    grid_size=16,
    radius=1,
    train_agents=6,
    num_train=1000,
    num_test=200,
    eval_agents=(2, 6),
    batch_size=200,
    learning_rate=0.3,
    progress=False,
    figures=False,
)
FIT_FLAGS = "--grid-size 16 --radius 1 --train-agents 6 --num-train 1000 --num-test 200 --eval-agents 2 6"
FIT_FLAGS += " --batch-size 200 --learning-rate 0.3 --no-progress --no-figures"

TEXT = "All that glitters is not gold; all who wander are not lost. A stitch in time saves nine. " * 60
LM = dict(width=16, layers=1, heads=2, context=16, batch_size=8, learning_rate=1e-2, eval_windows=16)
LM |= dict(evals=1, progress=False, device="cpu")
LM_FLAGS = "--width 16 --layers 1 --heads 2 --context 16 --batch-size 8 --learning-rate 0.01"
LM_FLAGS += " --eval-windows 16 --evals 1 --no-progress --device cpu"


def torchrun(args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node nproc -m training.cli <args>`` on this machine's CPUs."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--standalone"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [*cmd, "-m", "training.cli", *args.split()], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def max_rel(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max() / a[k].abs().max().clamp_min(1e-12)) for k in a)


def test_helpers_are_no_ops_in_one_process():
    assert not dist.active() and dist.world_size() == 1 and dist.rank() == 0 and dist.is_main()
    assert dist.shard(7) == slice(0, 7)
    assert dist.all_sum([1.5, 2.0]) == [1.5, 2.0] and dist.broadcast("x") == "x"
    assert dist.stop_everywhere(None, [3.0]) == (False, [3.0])
    assert dist.backend_for(torch.device("cpu")) == "gloo"
    assert dist.backend_for(torch.device("cuda")) == "nccl"
    model = torch.nn.Linear(2, 1)
    assert dist.wrap(model, torch.device("cpu")) == model.forward


@pytest.mark.slow
@pytest.mark.parametrize("mlp", [None, 4])  # the domain-table path, and the forward path (an MLP head)
def test_two_process_fit_matches_one_process(tmp_path, mlp):
    one = fit.main(fit.FitConfig(**FIT, mlp_hidden=mlp, steps=30, runs_dir=str(tmp_path), run_name="one"))
    flag = "" if mlp is None else f"--mlp-hidden {mlp}"
    out = torchrun(f"fit {FIT_FLAGS} {flag} --steps 30 --runs-dir {tmp_path} --run-name two")
    assert out.stdout.count("outputs:") == 1  # only rank 0 prints
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["train_mse"] == pytest.approx(one["train_mse"], rel=1e-9)
    for L, v in one["test_mse"].items():
        assert two["test_mse"][str(L)] == pytest.approx(v, rel=1e-9)
    a, b = load(tmp_path / "one" / "checkpoint.pt"), load(tmp_path / "two" / "checkpoint.pt")
    assert max_rel(a["model"], b["model"]) < 1e-9
    assert list(b["history"]) == list(range(1, 31))
    assert all(b["history"][s] == pytest.approx(a["history"][s], rel=1e-9) for s in a["history"])
    assert len(list((tmp_path / "two").glob("events.out.tfevents*"))) == 1  # one writer: rank 0's


@pytest.mark.slow
def test_a_two_process_fit_checkpoint_resumes_in_one_process(tmp_path):
    kw = dict(FIT, runs_dir=str(tmp_path), checkpoint_every=10)
    torchrun(f"fit {FIT_FLAGS} --steps 20 --checkpoint-every 10 --runs-dir {tmp_path} --run-name two")
    resumed = fit.main(fit.FitConfig(**kw, steps=40, run_name="two"))
    fit.main(fit.FitConfig(**kw, steps=20, run_name="one"))  # the same protocol in one process
    single = fit.main(fit.FitConfig(**kw, steps=40, run_name="one"))
    assert resumed["train_mse"] == pytest.approx(single["train_mse"], rel=1e-9)
    a, b = load(tmp_path / "one" / "checkpoint.pt"), load(tmp_path / "two" / "checkpoint.pt")
    assert b["step"] == 40 and max_rel(a["model"], b["model"]) < 1e-9


@pytest.mark.slow
def test_two_process_lm_matches_one_process_and_resumes_in_one(tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(TEXT)
    common = dict(LM, corpus=str(corpus), runs_dir=str(tmp_path))
    one = lm.main(lm.LMTrainConfig(**common, steps=12, run_name="one"))
    flags = f"lm {LM_FLAGS} --corpus {corpus} --runs-dir {tmp_path}"
    torchrun(f"{flags} --steps 12 --run-name two")
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["world_size"] == 2
    assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-4)
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-4)
    a, b = load(tmp_path / "one" / "checkpoint.pt"), load(tmp_path / "two" / "checkpoint.pt")
    assert max(float((a["model"][k] - b["model"][k]).abs().max()) for k in a["model"]) < 1e-4
    # the 2-process checkpoint goes on in one process, as the 1-process one does
    more_two = lm.main(lm.LMTrainConfig(**common, steps=20, run_name="two"))
    more_one = lm.main(lm.LMTrainConfig(**common, steps=20, run_name="one"))
    assert more_two["resumed_from"] == 12 and more_two["world_size"] == 1
    assert more_two["val_loss"] == pytest.approx(more_one["val_loss"], rel=1e-4)
