"""The two-way crossing comparison: do SA / HFA / HA beat the nearest-k MLP at unseen agent counts?

Reads one ``hyperagents ood`` output over runs of several families on the two-way task (every run
played on the same starts), and writes the table for docs/two_way.md, a figure of gain against
agent count, and ``--json`` with every figure in them.

    hyperagents ood --run runs/tw/* --counts 2 4 8 16 24 32 48 64 --episodes 100 --out-dir runs/tw_ood
    python benchmarks/two_way_report.py runs/tw_ood --train-high 24 \\
        --json benchmarks/results/marl_two_way.json --figure docs/figures/two_way_gain.png

Gains are over MOVE_RIGHT (every agent forward), as in ``hyperagents ood``. "vs mlp" is the
family's gain minus the MLP's, seeds pooled, with a 95% CI from resampling the shared starts in
pairs: start-to-start noise only. The per-seed gains beside it show the seed-to-seed spread.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

FAMILIES = ("sa", "hfa", "ha", "mlp")
SCRIPTED = ("greedy", "priority")  # the scripted avoiders beside them (random: in --json only)


def load(ood_dir: Path) -> dict:
    """{L: {algo: (S, E) per-seed, per-episode returns}} from ood.json."""
    raw = json.loads((ood_dir / "ood.json").read_text())["crossing"]
    return {
        int(task.removeprefix("L=")): {
            algo: np.stack([np.asarray(r["step_0"]["return"]) for _, r in sorted(seeds.items())])
            for algo, seeds in algos.items()
        }
        for task, algos in raw.items()
    }


def boot(ret: np.ndarray, ref: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """(reps,) gain of ret (S, E) over ref (E,) on each resampled set of starts idx (reps, E)."""
    return (ret[:, idx].mean(axis=(0, 2)) - ref[idx].mean(1)) / abs(ref.mean())


def compare(returns: dict, reps: int, seed: int = 0) -> dict:
    """{L: {algo: gain, ci, per_seed, [vs_mlp, vs_mlp_ci]}}: gains over move_right, paired CIs."""
    rng = np.random.default_rng(seed)
    out: dict = {}
    for L, algos in sorted(returns.items()):
        ref = algos["move_right"][0]  # (E,)
        E = ref.size
        idx = rng.integers(0, E, size=(reps, E))  # one draw of starts shared by every algorithm
        scale = abs(ref.mean())
        every = {algo: boot(ret, ref, idx) for algo, ret in algos.items()}

        out[L] = {}
        for algo, ret in algos.items():
            if algo == "move_right":
                continue
            row = dict(
                gain=float((ret.mean() - ref.mean()) / scale),
                ci=[float(v) for v in np.percentile(every[algo], [2.5, 97.5])],
                per_seed=[float((r.mean() - ref.mean()) / scale) for r in ret],
            )
            if algo in FAMILIES and algo != "mlp" and "mlp" in algos:
                diff = every[algo] - every["mlp"]
                row["vs_mlp"] = row["gain"] - float((algos["mlp"].mean() - ref.mean()) / scale)
                row["vs_mlp_ci"] = [float(v) for v in np.percentile(diff, [2.5, 97.5])]
            out[L][algo] = row
    return out


def table(report: dict, train_high: int) -> str:
    algos = [a for a in (*FAMILIES, *SCRIPTED) if a in next(iter(report.values()))]
    head = "| L | " + " | ".join(algos) + " | " + " | ".join(f"{a} - mlp" for a in algos if a in FAMILIES[:3])
    lines = [head + " |", "|" + "---|" * (1 + len(algos) + sum(a in FAMILIES[:3] for a in algos))]
    for L, row in report.items():
        cells = [f"{L}" + (" (unseen)" if L > train_high else "")]
        for a in algos:
            r = row[a]
            seeds = " ".join(f"{g:+.2f}" for g in r["per_seed"])
            cells.append(
                f"{r['gain']:+.2f} [{r['ci'][0]:+.2f}, {r['ci'][1]:+.2f}]"
                + (f" ({seeds})" if a in FAMILIES else "")
            )
        for a in algos:
            if a in FAMILIES[:3]:
                lo, hi = row[a]["vs_mlp_ci"]
                mark = "**" if lo > 0 or hi < 0 else ""
                cells.append(f"{mark}{row[a]['vs_mlp']:+.2f}{mark} [{lo:+.2f}, {hi:+.2f}]")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(report: dict, train_high: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = list(report)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.axvspan(min(counts), train_high, color="0.92", label="training counts")
    styles = dict(sa="tab:blue", hfa="tab:orange", ha="tab:green", mlp="black")
    for algo, color in styles.items():
        if algo not in report[counts[0]]:
            continue
        g = np.array([report[L][algo]["gain"] for L in counts])
        lo, hi = (np.array([report[L][algo]["ci"][k] for L in counts]) for k in (0, 1))
        seeds = len(report[counts[0]][algo]["per_seed"])
        ax.plot(
            counts,
            g,
            "o-" if algo != "mlp" else "s--",
            color=color,
            label=f"{algo} ({seeds} seed{'s' * (seeds > 1)})",
        )
        ax.fill_between(counts, lo, hi, color=color, alpha=0.15)
    for algo, style in (("greedy", "--"), ("priority", ":")):
        if algo in report[counts[0]]:
            g = [report[L][algo]["gain"] for L in counts]
            ax.plot(counts, g, style, color="0.4", label=f"{algo} (scripted)")
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_ylim(-0.1, 1.1)  # the few contacts of L = 2 make its relative CI wider than the plot
    ax.set_xscale("log", base=2)
    ax.set_xticks(counts, [str(L) for L in counts])
    ax.set_xlabel("agents per world L")
    ax.set_ylabel("gain over everyone-forward (95% CI)")
    ax.set_title("Two-way crossing: attention vs nearest-6 MLP")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ood_dir", type=Path, help="a hyperagents ood output folder (ood.json)")
    parser.add_argument("--train-high", type=int, required=True, help="the largest training count")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--figure", type=Path, default=None)
    args = parser.parse_args()
    report = compare(load(args.ood_dir), args.reps)
    print(table(report, args.train_high))
    if args.json:
        args.json.write_text(json.dumps({"train_high": args.train_high, "gains": report}, indent=1) + "\n")
    if args.figure:
        figure(report, args.train_high, args.figure)


if __name__ == "__main__":
    main()
