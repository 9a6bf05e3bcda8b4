"""Return against agent count on VMAS navigation: SA / HFA / HA / nearest-k MLP token policies and
TorchRL's MultiAgentMLP MAPPO, trained at one count, evaluated at trained and unseen counts.

Trains every (family, seed) with ``training.marl_vmas`` (a finished run is reused, a stopped one
resumes), evaluates them all with the same evaluation episodes, and writes the table JSON and a
figure. CPU (one thread) by default; the GPU command is in docs/vmas.md.

    python -m benchmarks.vmas_ood                       # the CPU experiment of docs/vmas.md
    python -m benchmarks.vmas_ood --train.device cuda --train.num-envs 1024 --train.total-timesteps 5000000
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

from training.marl_vmas import FAMILIES, VmasConfig, main, markdown_table, run_name
from training.runs import write_json


def tuned() -> VmasConfig:
    """The trainer's defaults (pilot runs: 10 epochs of 1024-sample minibatches, no entropy bonus,
    moved the policies off uniform within a few hundred thousand agent-steps), trained at n = 4."""
    return VmasConfig(counts=(4,), progress=False, runs_dir="runs/vmas_ood")


@dataclass
class Experiment:
    train: VmasConfig = field(default_factory=tuned)
    families: tuple[str, ...] = FAMILIES
    seeds: tuple[int, ...] = (0, 1)
    out: str = "benchmarks/results/vmas_ood.json"
    figure: str = "docs/figures/vmas_ood.png"
    train_only: bool = False
    """Train (or reuse) the runs and stop: several processes can share the training, one evaluates."""


def run(exp: Experiment) -> dict:
    folders, training = [], {}
    for family in exp.families:
        for seed in exp.seeds:
            cfg = dataclasses.replace(exp.train, family=family, seed=seed, name="")
            metrics = main(cfg)
            folder = Path(cfg.runs_dir) / run_name(cfg)
            folders.append(str(folder))
            keep = ("num_timesteps", "train_seconds", "steps_per_second", "final_ep_return", "device")
            training[folder.name] = {k: metrics.get(k) for k in keep}
    if exp.train_only:
        return {"training": training}
    start = time.perf_counter()
    result = main(dataclasses.replace(exp.train, mode="eval", eval_runs=tuple(folders), eval_out=exp.out))
    result["eval_seconds"] = time.perf_counter() - start
    result["training"] = training
    result["settings"] = dataclasses.asdict(exp.train) | {"families": exp.families, "seeds": exp.seeds}
    result["machine"] = {"platform": platform.platform(), "processor": platform.processor()}
    write_json(result, exp.out)
    figure(result, exp.figure)
    print(markdown_table(result, "reached"))
    return result


def figure(result: dict, path: str) -> None:
    """Two panels against agent count: mean return and fraction of agents on goal, 95% CI bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = result["eval_counts"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"random": dict(color="grey", linestyle=":"), "mappo": dict(color="black", linestyle="--")}
    for family, cells in result["table"].items():
        for ax, key in zip(axes, ("return", "reached"), strict=True):
            mean = [cells[str(n)][key]["mean"] for n in counts]
            lo = [mean[k] - cells[str(n)][key]["ci95"][0] for k, n in enumerate(counts)]
            hi = [cells[str(n)][key]["ci95"][1] - mean[k] for k, n in enumerate(counts)]
            label = {"mappo": "MAPPO (TorchRL MLP, lidar obs)", "mlp": "nearest-k MLP"}.get(family, family)
            ax.errorbar(
                counts, mean, yerr=[lo, hi], marker="o", capsize=3, label=label, **styles.get(family, {})
            )
    trained = sorted({n for c in result["train_counts"].values() for n in c})
    for ax, title in zip(
        axes, ("mean per-agent return", "fraction of agents on goal at the end"), strict=True
    ):
        for n in trained:
            ax.axvline(n, color="tab:red", alpha=0.25, linewidth=6)
        ax.set_xlabel("agents n (shaded: training count)")
        ax.set_title(title)
        ax.set_xticks(counts)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    settings = result["settings"]
    shown = ", ".join(map(str, trained))
    fig.suptitle(
        f"VMAS navigation, trained at n = {shown} for {settings['total_timesteps']:,} agent-steps on "
        f"{settings['device']}; {len(settings['seeds'])} seeds x {result['episodes_per_seed']} episodes "
        "per count, 95% CI",
        fontsize=10,
    )
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    import tyro

    out = run(tyro.cli(Experiment))
    print(json.dumps({k: v for k, v in out.items() if k in ("training", "eval_seconds")}, indent=1))
