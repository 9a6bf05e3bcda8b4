"""Reproduce the paper's colliding-agents experiments with ``hyperagents fit``; results to paper.json.

    python benchmarks/paper_experiments.py                 # every experiment below
    python benchmarks/paper_experiments.py --only main     # or control, genotype, alliances, predator_prey

- ``main``: the paper's setting (N = 360, R = 5, L* = 20, 100k sequences, d = N, linear SA,
  N(0, 1) init), one-hot and sinusoidal embeddings, test MSE at L in {2, 5, 10, 20, 30, 40}.
- ``control``: Remark D.3's negative control: training positions without repeats break Training
  Data Versatility; the rank check fails and length generalisation degrades (smaller N, 3 seeds).
- ``genotype``: App. B.2: linear SA fits the training length but not others; SA + ReLU trained at
  one length does not find the length-free solution either; SA + ReLU trained on a range of lengths does.
- ``alliances``: section 6: a ternary bonus. Pairwise SA and HFA cannot fit it; SA + order-3 HA
  fits it exactly and generalises in L when trained on a range of agent counts (at a single count
  the pairwise and ternary terms are not identifiable: a ternary term constant in k equals L x a
  pairwise term); order-3 HA alone cannot carry the pairwise collisions.
- ``predator_prey``: App. E.1: test MSE against parameter count for SA and HFA (rank sweeps).

Every run's metrics.json lands in runs/paper/<name>/ and the summary in
benchmarks/results/paper.json (updated after each run, so a long sweep keeps what it finished).
Runs resume from their checkpoints: re-running a finished sweep only re-evaluates it.
"""

from __future__ import annotations

import contextlib
import io
import json
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import tyro

from training.fit import FitConfig
from training.fit import main as fit_main

RESULTS = Path(__file__).parent / "results" / "paper.json"


@dataclass
class Config:
    only: tuple[str, ...] = ("main", "control", "genotype", "alliances", "predator_prey")
    """experiments to run"""
    seeds: tuple[int, ...] = (0, 1, 2)
    """seeds for the control and genotype experiments"""
    main_steps: int = 10_000
    """Adam steps of the paper-setting runs"""
    runs_dir: str = "runs/paper"
    """run folders"""
    threads: int = 1
    """torch CPU threads"""
    collect: bool = False
    """do not train: rebuild paper.json from the runs' own metrics.json files"""


def experiments(cfg: Config) -> dict[str, list[tuple[str, FitConfig]]]:
    """Named run configurations per experiment."""
    base = FitConfig(runs_dir=cfg.runs_dir, progress=False, resume=True)
    main = [
        (emb, replace(base, embedding=emb, steps=cfg.main_steps, run_name=f"main_{emb}"))
        for emb in ("onehot", "sinusoidal_normalized", "sinusoidal")
    ]
    small = replace(
        base,
        grid_size=60,
        radius=2,
        train_agents=10,
        num_train=20_000,
        steps=3_000,
        learning_rate=0.1,
        num_test=1_000,
        eval_agents=(2, 5, 10, 20, 30, 40),
    )
    control = [
        (
            f"{'unique' if u else 'iid'}_s{s}",
            replace(small, unique_positions=u, seed=s, run_name=f"control_{'unique' if u else 'iid'}_s{s}"),
        )
        for u in (False, True)
        for s in cfg.seeds
    ]
    geno = replace(
        base,
        scenario="genotype",
        num_alleles=40,
        train_agents=10,
        num_train=20_000,
        steps=3_000,
        learning_rate=0.03,
        num_test=1_000,
        eval_agents=(2, 5, 10, 20, 30, 40),
        init_std=0.0,
    )
    # at the single length L* = 10, then on every length from 5 to 20 (2, 30, 40 stay unseen)
    lengths = {"": {}, "_range": dict(train_agents=5, train_agents_max=20)}
    genotype = [
        (
            f"{arch}{v}_s{s}",
            replace(
                geno,
                seed=s,
                mlp_hidden=None if arch == "linear_sa" else 16,
                run_name=f"genotype_{arch}{v}_s{s}",
                **kw,
            ),
        )
        for v, kw in lengths.items()
        for arch in ("linear_sa", "sa_relu")
        for s in cfg.seeds
    ]
    allied = replace(
        base,
        scenario="alliances",
        grid_size=10,
        radius=1,
        train_agents=4,
        train_agents_max=12,
        num_train=20_000,
        num_test=1_000,
        eval_agents=(2, 4, 8, 12, 16, 24),
        steps=3_000,
        learning_rate=0.03,
        init_std=0.0,
    )
    models = {
        "sa": dict(attention="sa"),
        "hfa": dict(attention="hfa", factors=2),
        "ha": dict(attention="ha", rank=160),
        "sa+ha": dict(attention="sa+ha", rank=160),
        "sa+ha_single_L": dict(attention="sa+ha", rank=160, train_agents=8, train_agents_max=None),
    }
    alliances = [
        (f"{m}_s{s}", replace(allied, seed=s, run_name=f"alliances_{m}_s{s}", **kw))
        for m, kw in models.items()
        for s in cfg.seeds
    ]
    return {"main": main, "control": control, "genotype": genotype, "alliances": alliances}


def summarise(runs: dict[str, dict]) -> dict:
    """Mean and spread of test MSE per agent count over seeds, grouped by run label minus its seed."""
    groups: dict[str, list[dict]] = {}
    for label, m in runs.items():
        groups.setdefault(label.rsplit("_s", 1)[0], []).append(m)
    out = {}
    for g, ms in groups.items():
        Ls = ms[0]["test_mse"].keys()
        out[g] = {
            "seeds": len(ms),
            "versatility_rank_ok": [m["versatility_rank_ok"] for m in ms],
            "train_mse_mean": float(np.mean([m["train_mse"] for m in ms])),
            "test_mse_mean": {L: float(np.mean([m["test_mse"][L] for m in ms])) for L in Ls},
            "test_mse_min": {L: float(np.min([m["test_mse"][L] for m in ms])) for L in Ls},
            "test_mse_max": {L: float(np.max([m["test_mse"][L] for m in ms])) for L in Ls},
        }
    return out


def save(results: dict, exp: str) -> None:
    """Write this experiment's entry into paper.json, keeping what other (concurrent) sweeps wrote."""
    on_disk = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    on_disk.update(machine=results["machine"], **{exp: results[exp]})
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(on_disk, indent=2))
    tmp.replace(RESULTS)


FIGURES = Path(__file__).parents[1] / "docs" / "figures"
TITLES = {
    "control": "negative control: N = 60, L* = 10",
    "genotype": "genotype: L* = 10, or the range 5..20",
    "alliances": "alliances: trained on L = 4..12 (single_L: 8)",
}


def figure(exp: str, summary: dict) -> None:
    """Mean test MSE against L per model (seeds averaged): docs/figures/paper_<exp>.png."""
    if exp not in TITLES:
        return
    from viz.figures import ood_curve

    curves = {g: {int(L): v for L, v in m["test_mse_mean"].items()} for g, m in summary.items()}
    ood_curve(curves, FIGURES / f"paper_{exp}.png", title=TITLES[exp], ylabel="test MSE (mean of seeds)")


def main(cfg: Config) -> dict:
    torch.set_num_threads(cfg.threads)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["machine"] = {
        "cpu_count": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }
    for exp, runs in experiments(cfg).items():
        if exp not in cfg.only:
            continue
        done = results.setdefault(exp, {}).setdefault("runs", {})
        for label, fcfg in runs:
            print(f"[{exp}] {label} ...", flush=True)
            saved = Path(fcfg.runs_dir) / fcfg.name / "metrics.json"
            if cfg.collect:
                if not saved.exists():
                    print("    not run yet")
                    continue
                m = json.loads(saved.read_text())
            else:
                with contextlib.redirect_stdout(io.StringIO()):
                    m = fit_main(fcfg)
            done[label] = {
                k: m.get(k)
                for k in (
                    "train_mse",
                    "test_mse",
                    "product_mse",
                    "versatility_rank_ok",
                    "num_params",
                    "seconds",
                    "cpu_seconds",
                    "steps",
                    "run",
                )
            }
            done[label]["test_mse"] = {str(L): v for L, v in m["test_mse"].items()}  # as JSON reads back
            done[label]["config"] = {
                k: getattr(fcfg, k)
                for k in (
                    "scenario",
                    "attention",
                    "rank",
                    "heads",
                    "factors",
                    "embedding",
                    "grid_size",
                    "radius",
                    "train_agents",
                    "train_agents_max",
                    "num_train",
                    "learning_rate",
                    "unique_positions",
                    "mlp_hidden",
                    "seed",
                )
            }
            results[exp]["summary"] = summarise(done)
            save(results, exp)
            figure(exp, results[exp]["summary"])
            tests = " ".join(f"L={L}:{v:.1e}" for L, v in m["test_mse"].items())
            print(
                f"    train {m['train_mse']:.1e}  product {m['product_mse']}  {tests}  ({m['seconds']:.0f}s)",
                flush=True,
            )
    return results


if __name__ == "__main__":
    main(tyro.cli(Config))
