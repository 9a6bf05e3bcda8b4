"""Gain over MOVE_RIGHT against agent count for the crossing recipes of docs/torchrl.md.

``--curves counts`` (the training count ranges) reads benchmarks/results/marl_torchrl_cpu_counts.json
and marl_torchrl_cpu_shared.json; ``--curves contact`` (the training reward's contact cost) reads
marl_torchrl_cpu_contact.json, and so do ``--curves sampling`` (the share of moves sampled, on
the later start sampler's starts), ``--curves crowds`` (one change each to the default) and
``--curves conventions`` (training towards the convention of marl_yield.py, drawn beside them).
Argmax policies, each with its 95% CI, beside the scripted baselines on the same starts.

    python benchmarks/count_range_figure.py --curves counts --out docs/figures/torchrl_count_range.png
    python benchmarks/count_range_figure.py --curves contact --out docs/figures/torchrl_contact_cost.png
    python benchmarks/count_range_figure.py --curves sampling --out docs/figures/torchrl_sampled_share.png
    python benchmarks/count_range_figure.py --curves crowds --out docs/figures/torchrl_crowd_probes.png
    python benchmarks/count_range_figure.py --curves conventions --out docs/figures/torchrl_conventions.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).parent / "results"
COUNTS, CONTACT = "marl_torchrl_cpu_counts.json", "marl_torchrl_cpu_contact.json"


def _probe(key: str, *summary: str) -> tuple[str, ...]:
    """Key path to a probe's ood summary: its seeds pooled, or the part named."""
    return ("probes", key, *(summary or ("argmax_pooled",)))


DEFAULT_5SEEDS = (CONTACT, _probe("default_seeds_3_4", "argmax_pooled_5seeds"), "the default (5 seeds)")
# name: (title, [(file, key path to an ood summary, label)], scripted baselines[, other scripted
# policies as (file of marl_yield.py's table, policy, label)])
CURVES = {
    "counts": (
        "Crossing from scratch, SA (3M agent-steps unless noted): training counts",
        [
            ("marl_torchrl_cpu_shared.json", ("argmax",), "2..16, uniform (3 seeds)"),
            (COUNTS, ("probes", "sa_2_24_p1_3m", "argmax"), "2..24, P(L) ∝ 1/L (3 seeds)"),
            (COUNTS, ("probes", "default_sa_2_24_p1_6m", "argmax"), "the same, 6M steps (3 seeds)"),
            (COUNTS, ("probes", "sa_2_64_p2", "argmax"), "2..64, P(L) ∝ 1/L² (1 seed; 32, 64 seen)"),
        ],
        ("greedy", "priority"),
    ),
    "contact": (
        "Crossing from scratch, SA, 2..24, 6M agent-steps: training contact cost",
        [
            (COUNTS, ("probes", "default_sa_2_24_p1_6m", "argmax"), "contact cost 1, the task's (3 seeds)"),
            (CONTACT, ("probes", "contact_cost_2_3seeds", "argmax"), "contact cost 2 (3 seeds)"),
            (CONTACT, ("probes", "contact_cost_3_3seeds", "argmax"), "contact cost 3 (3 seeds)"),
            (
                CONTACT,
                ("probes", "contact_cost_4_ent_final_0.001_3seeds", "argmax"),
                "contact cost 4, entropy floor 0.001: the default (3 seeds)",
            ),
        ],
        ("greedy", "cautious", "priority"),
    ),
    "sampling": (
        "Crossing from scratch, SA, 2..24, contact cost 4: the share of moves sampled",
        [
            (
                CONTACT,
                _probe("default_after_prefix_count_starts_2seeds"),
                "every move sampled, 6M agent-steps (2 seeds)",
            ),
            (
                CONTACT,
                _probe("sample_fraction_0.25_8M_3seeds"),
                "a quarter sampled, 8M: the default (3 seeds)",
            ),
        ],
        ("greedy", "cautious", "priority"),
    ),
    "crowds": (
        "Crossing from scratch, the default with one change: the small counts against the crowds",
        [
            DEFAULT_5SEEDS,
            (CONTACT, _probe("sf25_start_width_low_12_5seeds"), "start widths 12..16 (5 seeds)"),
            (
                CONTACT,
                _probe("sf25_start_width_low_8_seed0", "argmax_per_seed", "seed_0"),
                "start widths 8..16 (seed 0)",
            ),
            (
                CONTACT,
                _probe("sf25_start_width_low_8_contact_cost_6_3seeds"),
                "8..16, contact cost 6 (3 seeds)",
            ),
            (
                CONTACT,
                _probe("sf25_neighbours_12_seed0", "argmax_per_seed", "seed_0"),
                "12 neighbours in view (seed 0)",
            ),
        ],
        ("greedy", "cautious", "priority"),
    ),
    "conventions": (
        "Crossing from scratch: training towards the yield-to-the-front convention",
        [
            DEFAULT_5SEEDS,
            (CONTACT, _probe("sf25_wall_starts_0.5_2seeds"), "wall starts (2 seeds)"),
            (CONTACT, _probe("sf25_contact_charge_behind_2seeds"), "contact charge behind (2 seeds)"),
            *(
                (
                    CONTACT,
                    _probe("sf25_contact_charge_yield_2seeds", "argmax_per_seed", f"seed_{seed}"),
                    f"contact charge yield (seed {seed})",
                )
                for seed in (0, 1)
            ),
        ],
        ("greedy", "cautious", "priority"),
        [("marl_yield.json", "yield, 7 nearest", "yield to the front, 7 nearest (scripted)")],
    ),
}
STYLES = {"greedy": ":", "cautious": "-.", "priority": "--"}


def summary(file: str, keys: tuple[str, ...]) -> dict:
    node = json.loads((RESULTS / file).read_text())
    for k in keys:
        node = node[k]
    return node["summary"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--curves", choices=tuple(CURVES), default="counts")
    parser.add_argument("--out", default="docs/figures/torchrl_count_range.png")
    args = parser.parse_args()
    title, curves, baselines, *more = CURVES[args.curves]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for file, keys, label in curves:
        s = summary(file, keys)
        Ls = sorted(map(int, s))
        gain = [s[str(L)]["sa"]["gain"] for L in Ls]
        lo = [s[str(L)]["sa"]["ci_gain"][0] for L in Ls]
        hi = [s[str(L)]["sa"]["ci_gain"][1] for L in Ls]
        ax.plot(Ls, gain, marker="o", label=label)
        ax.fill_between(Ls, lo, hi, alpha=0.2)
    for base in baselines:
        ax.plot(Ls, [s[str(L)][base]["gain"] for L in Ls], "k" + STYLES[base], label=f"{base} (scripted)")
    for file, name, label in more[0] if more else []:
        table = json.loads((RESULTS / file).read_text())["table"]
        ax.plot(Ls, [table[str(L)][name]["gain"] for L in Ls], "k-", marker="s", label=label)
    ax.axvspan(24, 64, color="0.9", zorder=0)
    seen = "the 2..16 and 2..24 runs" if args.curves == "counts" else "the 2..24 runs"
    ax.text(40, -0.05, f"unseen by {seen}", ha="center", fontsize=8)
    ax.set(xscale="log", xlabel="agents L", ylabel="gain over MOVE_RIGHT (argmax)", ylim=(-0.1, 1.0))
    ax.set_xticks(Ls, [str(L) for L in Ls])
    ax.minorticks_off()
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
