"""Tables for docs/marl.md from merged ``hyperagents ood`` outputs, and the bar check.

Each argument is ``mode=dir`` where dir holds an ``ood_summary.json`` (e.g. from
``hyperagents ood --merge runs/*/ood_k7_det/ood.json --out-dir runs/ood_all_k7_det``).
Prints markdown; writes ``--json`` with every mode's summary and bar check, ``--marl-json`` with
every mode's per-episode returns (marl-eval layout, env key ``crossing_<mode>``), and copies each
mode's ``ood.png`` to ``--figures``/marl_ood_<mode>.png.

    /work/venv/bin/python benchmarks/marl_report.py det=runs/ood_v_det sto=runs/ood_v_sto \\
        --json benchmarks/results/marl_summary.json --marl-json benchmarks/results/marl.json \\
        --figures docs/figures

The 95% CIs resample episodes (the shared starts) with seeds pooled, so they show start-to-start
noise only; the per-seed gains in parentheses show the seed-to-seed spread.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from envs.experts import POLICIES

BASELINES = tuple(POLICIES)  # the scripted policies hyperagents ood plays beside the runs


def bar_check(summary: dict, algo: str) -> dict:
    """docs/marl.md's bar for one algorithm; {criterion: bool} (missing counts are skipped)."""
    out = {}
    g = {int(L): s for L, s in summary.items() if algo in s}
    if 8 in g:
        out["L=8: gain >= 0.75 and >= greedy"] = g[8][algo]["gain"] >= max(0.75, g[8]["greedy"]["gain"])
    if 16 in g:
        out["L=16: gain >= 0.9 x greedy"] = g[16][algo]["gain"] >= 0.9 * g[16]["greedy"]["gain"]
    if 32 in g:
        out["L=32: gain >= 0.75 x greedy"] = g[32][algo]["gain"] >= 0.75 * g[32]["greedy"]["gain"]
    sep = [
        L
        for L in g
        if g[L][algo]["ci_mean"][0] > max(g[L]["move_right"]["ci_mean"][1], g[L]["random"]["ci_mean"][1])
    ]
    out[f"CI above MOVE_RIGHT and random at every L (held at {sorted(sep)})"] = len(sep) == len(g)
    return out


def seed_gains(ood: dict) -> dict:
    """{L: {algo: [gain of each seed]}} from a marl-eval ood.json."""
    out = {}
    for task, algos in ood["crossing"].items():
        mr = algos["move_right"]["seed_0"]["step_0"]["return"]
        ref = sum(mr) / len(mr)
        out[task.removeprefix("L=")] = {
            a: [
                (sum(r["step_0"]["return"]) / len(r["step_0"]["return"]) - ref) / abs(ref)
                if ref
                else float("nan")
                for r in seeds.values()
            ]
            for a, seeds in algos.items()
        }
    return out


def table(summary: dict, per_seed: dict) -> str:
    first = next(iter(summary.values()))
    algos = [a for a in first if a not in BASELINES]
    scripted = [b for b in ("greedy", "cautious", "priority") if b in first]  # older runs lack some
    cols = ["MOVE_RIGHT return", *(f"{b} gain" for b in scripted), "random gain"]
    cols += [f"{a.upper()} gain [95% CI]" for a in algos]
    lines = ["| L | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for L, s in summary.items():
        cells = [
            f"{s['move_right']['mean']:.3f}",
            *(f"{s[b]['gain']:+.2f}" for b in scripted),
            f"{s['random']['gain']:+.1f}",
        ]
        for a in algos:
            if a not in s:
                cells.append("not run")
                continue
            lo, hi = s[a]["ci_gain"]
            seeds = "/".join(f"{g:+.2f}" for g in per_seed[L][a])
            cells.append(f"{s[a]['gain']:+.2f} [{lo:+.2f}, {hi:+.2f}] (seeds {seeds})")
        lines.append(f"| {L} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare_figure(report: dict, modes: list[str], path: Path) -> None:
    """Gain over MOVE_RIGHT against L: one panel per family, one line per mode, scripted dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = [a for a in next(iter(report[modes[0]]["summary"].values())) if a not in BASELINES]
    fig, axes = plt.subplots(1, len(families), figsize=(4.6 * len(families), 4.2), sharey=True)
    for ax, fam in zip(list(axes) if len(families) > 1 else [axes], families, strict=True):
        for k, mode in enumerate(modes):
            summary = {int(L): v for L, v in report[mode]["summary"].items()}  # JSON keys are str
            xs = sorted(L for L in summary if fam in summary[L])
            y = [summary[L][fam]["gain"] for L in xs]
            ci = [summary[L][fam]["ci_gain"] for L in xs]
            (line,) = ax.plot(xs, y, marker="o", lw=2, label=mode, color=f"C{k}")
            ax.fill_between(xs, [c[0] for c in ci], [c[1] for c in ci], color=line.get_color(), alpha=0.15)
        ref = report[modes[0]]["summary"]
        xs = sorted(int(L) for L in ref)
        for base, style in (("greedy", "k--"), ("cautious", "k-."), ("priority", "k:")):
            if base in next(iter(ref.values())):
                gains = [ref[str(L) if str(L) in ref else L][base]["gain"] for L in xs]
                ax.plot(xs, gains, style, label=base)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(c) for c in xs])
        ax.set_ylim(-1.0, 1.05)
        ax.set_title(fam.upper())
        ax.set_xlabel("agents per world L")
        ax.grid(alpha=0.3)
    fig.axes[0].set_ylabel("gain over MOVE_RIGHT (95% CI)")
    fig.axes[0].legend(fontsize=9, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modes", nargs="+", help="mode=dir with ood_summary.json")
    parser.add_argument("--json", default=None, help="summaries and bar checks of every mode")
    parser.add_argument("--marl-json", default=None, help="per-episode returns, marl-eval layout")
    parser.add_argument("--figures", default=None, help="copy each mode's ood.png here")
    parser.add_argument(
        "--compare", nargs="+", default=None, help="modes to draw side by side per family (needs --figures)"
    )
    args = parser.parse_args()
    report, episodes = {}, {}
    for spec in args.modes:
        mode, path = spec.split("=", 1)
        record = json.loads((Path(path) / "ood_summary.json").read_text())
        summary = record["summary"]
        ood = json.loads((Path(path) / "ood.json").read_text())
        episodes[f"crossing_{mode}"] = ood["crossing"]
        per_seed = seed_gains(ood)
        algos = [a for a in next(iter(summary.values())) if a not in BASELINES]
        checks = {a: bar_check(summary, a) for a in algos}
        report[mode] = {"summary": summary, "per_seed_gain": per_seed, "bar": checks, "source": path}
        print(f"\n### {mode}\n\n{table(summary, per_seed)}\n")
        for a, c in checks.items():
            print(f"- {a.upper()}: " + "; ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in c.items()))
        if args.figures:
            shutil.copyfile(Path(path) / "ood.png", Path(args.figures) / f"marl_ood_{mode}.png")
    if args.compare and args.figures:
        name = "marl_compare_" + "_vs_".join(args.compare) + ".png"
        compare_figure(report, args.compare, Path(args.figures) / name)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    if args.marl_json:
        Path(args.marl_json).write_text(json.dumps(episodes))


if __name__ == "__main__":
    main()
