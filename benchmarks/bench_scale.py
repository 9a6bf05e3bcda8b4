"""Scaling here: `fit` samples/s at 1 and 2 torchrun processes, RLlib agent-steps/s at 1, 2 and 4 runners.

- ``fit``: ``torchrun --nproc-per-node K -m training.cli fit ...`` (gloo, CPU, one thread per
  process) on two models: the paper's one-hot linear SA (N = 360, L* = 20, batch 1,000, float64),
  which trains through the domain table (G = P C P^T once per step on every rank, then a gather:
  only the gather splits across ranks), and a sinusoidal embedding with an MLP head (d = 64,
  width 32), which runs the full forward on each rank's shard. Throughput is measured from the
  TensorBoard timestamps of steps 10 .. end, so process start, data drawing and evaluation are
  excluded.
- RLlib: ``training/marl_rllib.py`` (shared SA policy, pairwise, 8 agents) with 1, 2 and 4 env
  runners, agent-steps sampled per second over ``--rllib-iterations`` PPO iterations (learning
  included). Runs only where ``ray`` imports (e.g. ``/tmp/rayvenv/bin/python``); skipped otherwise.

Ideal = the 1-process (1-runner) figure times the process (runner) count; efficiency = measured / ideal.

    python benchmarks/bench_scale.py                         # fit rows (~2 min on 2 cores)
    PYTHONPATH=. /tmp/rayvenv/bin/python benchmarks/bench_scale.py --rllib-only --merge
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "scale.json"

# model -> (flags, steps): each run's training loop takes about 20 s at 1 process here
FIT_MODELS = {
    "onehot_sa_table": ("--grid-size 360 --radius 5 --train-agents 20 --batch-size 1000", 1500),
    "sinusoidal_mlp": (
        "--grid-size 360 --radius 5 --train-agents 20 --batch-size 1000 --embedding sinusoidal --dim 64"
        " --mlp-hidden 32",
        30,
    ),
}


def fit_rate(model: str, nproc: int, scale: float = 1.0) -> dict:
    """samples/s of one ``fit`` run at ``nproc`` processes, from its TensorBoard step timestamps."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with tempfile.TemporaryDirectory() as tmp:
        flags, steps = FIT_MODELS[model]
        steps = max(20, round(steps * scale))
        flags += f" --num-train 5000 --num-test 100 --eval-agents 20 --steps {steps}"
        flags += f" --no-progress --no-figures --runs-dir {tmp} --run-name r"
        launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        t0 = time.perf_counter()
        cmd = [*launch, "--standalone", "-m", "training.cli", "fit", *flags.split()]
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
        wall = time.perf_counter() - t0
        acc = EventAccumulator(str(Path(tmp) / "r")).Reload()
        events = acc.Scalars("losses/train_mse_batch")
    first, last = events[0], events[-1]
    seconds = last.wall_time - first.wall_time
    samples = (last.step - first.step) * 1000
    return dict(model=model, processes=nproc, steps=steps, samples_per_s=samples / seconds, wall_s=wall)


def rllib_rate(runners: int, iterations: int) -> dict:
    from training.marl_rllib import RLlibConfig, main

    cfg = RLlibConfig(iterations=iterations, num_env_runners=runners, num_cpus=max(2, runners + 1))
    m = main(cfg)
    # A fixed agent count: every env step is num_agents agent-steps (RLlib's own per-agent counter
    # is not filled in for this multi-agent setup).
    agent_steps = m["env_steps"] * cfg.num_agents[0]
    return dict(
        env_runners=runners,
        iterations=iterations,
        env_steps=m["env_steps"],
        agent_steps=agent_steps,
        seconds=m["seconds"],
        agent_steps_per_s=agent_steps / m["seconds"],
    )


def with_ideal(rows: list[dict], key: str, count: str, group: str | None = None) -> list[dict]:
    for row in rows:
        base = next(r for r in rows if r[count] == 1 and (group is None or r[group] == row[group]))
        row["ideal"] = base[key] * row[count]
        row["efficiency"] = row[key] / row["ideal"]
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fit-scale", type=float, default=1.0, help="multiplies each fit model's steps")
    p.add_argument("--rllib-iterations", type=int, default=4)
    p.add_argument("--rllib-only", action="store_true", help="skip the fit rows")
    p.add_argument("--merge", action="store_true", help="keep the other rows already in scale.json")
    args = p.parse_args()
    result = json.loads(OUT.read_text()) if args.merge and OUT.exists() else {}
    result["machine"] = dict(
        cpus=os.cpu_count(), platform=platform.platform(), python=platform.python_version()
    )
    result["note"] = "2 CPU cores shared with other jobs: figures are indicative, not isolated"
    if not args.rllib_only:
        rows = [fit_rate(m, k, args.fit_scale) for m in FIT_MODELS for k in (1, 2)]
        result["fit"] = with_ideal(rows, "samples_per_s", "processes", "model")
        for r in result["fit"]:
            print(
                f"fit {r['model']:>16} x{r['processes']}: {r['samples_per_s']:9.0f} samples/s "
                f"(ideal {r['ideal']:.0f}, efficiency {r['efficiency']:.2f})"
            )
    try:
        import ray  # noqa: F401
    except ImportError:
        result.setdefault("rllib", "skipped: ray is not importable in this interpreter")
    else:
        rows = [rllib_rate(k, args.rllib_iterations) for k in (1, 2, 4)]
        result["rllib"] = with_ideal(rows, "agent_steps_per_s", "env_runners")
        for r in result["rllib"]:
            print(
                f"rllib x{r['env_runners']}: {r['agent_steps_per_s']:9.0f} agent-steps/s "
                f"(ideal {r['ideal']:.0f}, efficiency {r['efficiency']:.2f})"
            )
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
