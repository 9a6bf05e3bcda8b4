"""The labelled-task comparison: do SA / HFA / HA beat the nearest-k MLP at unseen agent counts?

Reads one ``hyperagents ood`` output over runs of several families on one task (every run played
on the same starts), and writes the table for docs/two_way.md or docs/predator_prey.md, a figure
of gain against agent count, and ``--json`` with every figure in them.

    hyperagents ood --run runs/tw/* --counts 2 4 8 16 24 32 48 64 --episodes 100 --out-dir runs/tw_ood
    python benchmarks/two_way_report.py runs/tw_ood --train-high 24 \\
        --json benchmarks/results/marl_two_way.json --figure docs/figures/two_way_gain.png

Gains are over MOVE_RIGHT (every agent forward), as in ``hyperagents ood``. "vs mlp" is the
family's gain minus the MLP's, seeds pooled, with a 95% CI from resampling the shared starts in
pairs: start-to-start noise only. The per-seed gains beside it show the seed-to-seed spread.
"hfa - sa" and "ha - sa" ask a finer question, where the seeds' spread is most of the noise: their
CIs resample the seeds of each family as well as the starts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from envs.experts import POLICIES

FAMILIES = ("sa", "hfa", "ha", "mlp")
SCRIPTED = ("greedy", "priority")  # the scripted avoiders beside them (random: in --json only)
BASELINES = tuple(POLICIES)  # the scripted policies hyperagents ood plays beside the runs


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


def add_variant(returns: dict, label: str, other: dict) -> None:
    """Put the one trained algorithm of ``other`` (another ood output) into ``returns`` as ``label``.

    Its starts must be the same: the baselines' returns must agree at every L."""
    for L, algos in other.items():
        if L not in returns or not np.array_equal(algos["move_right"], returns[L]["move_right"]):
            raise ValueError(f"{label}: its L = {L} episodes are not the main output's starts")
        trained = [a for a in algos if a not in BASELINES]
        if len(trained) != 1:
            raise ValueError(f"{label}: needs one trained algorithm, got {trained}")
        returns[L][label] = algos[trained[0]]


def boot(ret: np.ndarray, ref: np.ndarray, idx: np.ndarray, seeds: np.ndarray | None = None) -> np.ndarray:
    """(reps,) gain of ret (S, E) over ref (E,) on each resampled set of starts idx (reps, E), and
    of seeds (reps, S) if given (else every seed each time)."""
    picked = ret[:, idx].transpose(1, 0, 2) if seeds is None else ret[seeds[:, :, None], idx[:, None, :]]
    return (picked.mean(axis=(1, 2)) - ref[idx].mean(1)) / abs(ref.mean())


def twin_mlp(algo: str) -> str:
    """The MLP variant trained like ``algo`` (sa_6m -> mlp_6m): the same suffix after the family."""
    return "mlp_" + algo.partition("_")[2]


def compare(returns: dict, reps: int, seed: int = 0) -> dict:
    """{L: {algo: gain, ci, per_seed, [vs_mlp, vs_mlp_ci], [vs_twin_mlp, vs_twin_mlp_ci], [vs_sa,
    vs_sa_ci]}}: gains over move_right, and paired CIs of the difference to the MLP, for a variant
    to the MLP variant of the same suffix (trained with the same budget), and for HFA and HA to SA
    (the paper's question: does the hyper-attention beat plain attention?)."""
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
            for key, other in (("vs_mlp", "mlp"), ("vs_twin_mlp", twin_mlp(algo))):
                if algo not in BASELINES and algo != "mlp" and other in algos and other != algo:
                    row[key] = row["gain"] - float((algos[other].mean() - ref.mean()) / scale)
                    row[f"{key}_ci"] = [
                        float(v) for v in np.percentile(every[algo] - every[other], [2.5, 97.5])
                    ]
            if algo in ("hfa", "ha") and "sa" in algos:
                gap = [
                    boot(algos[a], ref, idx, rng.integers(0, len(algos[a]), (reps, len(algos[a]))))
                    for a in (algo, "sa")
                ]
                row["vs_sa"] = row["gain"] - float((algos["sa"].mean() - ref.mean()) / scale)
                row["vs_sa_ci"] = [float(v) for v in np.percentile(gap[0] - gap[1], [2.5, 97.5])]
            out[L][algo] = row
    return out


def table(report: dict, train_high: int, algos: list[str]) -> str:
    """Markdown: each of ``algos``'s gain [CI] (per-seed gains), then each one's difference to the MLP."""
    learned = [a for a in algos if a not in BASELINES]
    versus = [a for a in learned if a != "mlp"]
    head = "| L | " + " | ".join(algos) + " | " + " | ".join(f"{a} - mlp" for a in versus)
    lines = [head + " |", "|" + "---|" * (1 + len(algos) + len(versus))]
    for L, row in report.items():
        cells = [f"{L}" + (" (unseen)" if L > train_high else "")]
        for a in algos:
            r = row[a]
            seeds = " ".join(f"{g:+.2f}" for g in r["per_seed"])
            cells.append(
                f"{r['gain']:+.2f} [{r['ci'][0]:+.2f}, {r['ci'][1]:+.2f}]"
                + (f" ({seeds})" if a in learned else "")
            )
        cells += [difference(row[a], "vs_mlp") for a in versus]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def difference(row: dict, key: str) -> str:
    """One paired difference and its 95% CI, in bold where the CI excludes 0."""
    lo, hi = row[f"{key}_ci"]
    mark = "**" if lo > 0 or hi < 0 else ""
    return f"{mark}{row[key]:+.2f}{mark} [{lo:+.2f}, {hi:+.2f}]"


def versus_sa(report: dict, train_high: int) -> str:
    """Markdown: HFA's and HA's gain minus SA's, CIs over seeds and starts; '' without them."""
    first = next(iter(report.values()))
    algos = [a for a in ("hfa", "ha") if "vs_sa" in first.get(a, {})]
    if not algos:
        return ""
    lines = ["| L | " + " | ".join(f"{a} - sa" for a in algos) + " |", "|" + "---|" * (1 + len(algos))]
    for L, row in report.items():
        cells = [f"{L}" + (" (unseen)" if L > train_high else "")]
        lines.append("| " + " | ".join(cells + [difference(row[a], "vs_sa") for a in algos]) + " |")
    return "\n".join(lines)


def figure(
    report: dict, train_high: int, path: Path, variants: tuple[str, ...] = (), task: str = "Two-way crossing"
) -> None:
    """Left: each family's gain and the scripted avoiders'. Right: each attention family's gain
    minus the MLP's, with the paired 95% CI (the gains' own CIs are in the table: at small L, where
    everyone-forward meets few agents, a relative gain's CI spans most of the plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = list(report)
    first = report[counts[0]]
    fig, (ax, diff) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = dict(sa="tab:blue", hfa="tab:orange", ha="tab:green", mlp="black")
    for algo, color in colors.items():
        if algo in first:
            seeds = len(first[algo]["per_seed"])
            label = f"{algo} ({seeds} seed{'s' * (seeds > 1)})"
            style = "o-" if algo != "mlp" else "s--"
            ax.plot(counts, [report[L][algo]["gain"] for L in counts], style, color=color, label=label)
        if algo in first and "vs_mlp" in first[algo]:
            lo, hi = (np.array([report[L][algo]["vs_mlp_ci"][k] for L in counts]) for k in (0, 1))
            diff.plot(
                counts, [report[L][algo]["vs_mlp"] for L in counts], "o-", color=color, label=f"{algo} - mlp"
            )
            diff.fill_between(counts, lo, hi, color=color, alpha=0.2)
    for algo in variants:  # thin lines in the colour of the family they vary (the name's prefix)
        color = colors.get(algo.split("_")[0], "0.5")
        ax.plot(counts, [report[L][algo]["gain"] for L in counts], "x:", color=color, lw=1, label=algo)
        if "vs_twin_mlp" in first[algo]:
            lo, hi = (np.array([report[L][algo]["vs_twin_mlp_ci"][k] for L in counts]) for k in (0, 1))
            gaps = [report[L][algo]["vs_twin_mlp"] for L in counts]
            diff.plot(counts, gaps, "x:", color=color, lw=1, label=f"{algo} - {twin_mlp(algo)}")
            diff.fill_between(counts, lo, hi, color=color, alpha=0.1)
    for algo, style in (("greedy", "--"), ("priority", ":")):
        if algo in first:
            ax.plot(
                counts,
                [report[L][algo]["gain"] for L in counts],
                style,
                color="0.4",
                label=f"{algo} (scripted)",
            )
    for a, ylabel, title in (
        (ax, "gain over everyone-forward", f"{task}: gain against agent count"),
        (
            diff,
            "gain minus the nearest-6 MLP's (95% CI)",
            "Attention against the MLP, same samples and starts",
        ),
    ):
        a.axvspan(min(counts), train_high, color="0.92", label="training counts", zorder=0)
        a.axhline(0, color="0.5", lw=0.8)
        a.set_xscale("log", base=2)
        a.set_xticks(counts, [str(L) for L in counts])
        a.set_xlabel("agents per world L")
        a.set_ylabel(ylabel)
        a.set_title(title)
        a.legend(loc="lower left" if a is ax else "upper left", fontsize=8)
    ax.set_ylim(-0.1, 1.05)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ood_dir", type=Path, help="a hyperagents ood output folder (ood.json)")
    parser.add_argument("--train-high", type=int, required=True, help="the largest training count")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--figure", type=Path, default=None)
    parser.add_argument("--figure-variants", nargs="*", default=[], help="variants drawn in the figure too")
    parser.add_argument("--task", default="Two-way crossing", help="the task's name in the figure's title")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="another ood output on the same starts (one trained run set), compared as LABEL",
    )
    args = parser.parse_args()
    returns = load(args.ood_dir)
    for spec in args.variant:
        label, _, path = spec.partition("=")
        add_variant(returns, label, load(Path(path)))
    report = compare(returns, args.reps)
    present = next(iter(report.values()))
    print(table(report, args.train_high, [a for a in (*FAMILIES, *SCRIPTED) if a in present]))
    if against_sa := versus_sa(report, args.train_high):
        print()
        print(against_sa)
    variants = [spec.partition("=")[0] for spec in args.variant]
    if variants:
        print()
        print(table(report, args.train_high, [*variants, "mlp"]))
    if args.json:
        args.json.write_text(json.dumps({"train_high": args.train_high, "gains": report}, indent=1) + "\n")
    if args.figure:
        figure(report, args.train_high, args.figure, tuple(args.figure_variants), args.task)


if __name__ == "__main__":
    main()
