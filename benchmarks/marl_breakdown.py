"""Where a crossing policy's return goes: collisions (distinct partners) vs step costs, per agent.

The reward is -0.05 (1 - dx) per unparked step minus one per new distinct partner, so a return
splits exactly into the two: per step the partner count is round(-r) (step costs are at most 0.1).
Scripted baselines and trained runs play the same starts (seeded as ``hyperagents ood`` does).

Beside the split, where the step costs come from: the share of RIGHT among the moving agents'
actions at the first step and over the open crossing (the steps before any agent can reach the
wall, N - 1 - start_width of them, where everyone moving right in lock-step meets nobody), and
the mean x at the end of the agents that never parked (how far back they waited).

    /work/venv/bin/python benchmarks/marl_breakdown.py --counts 8 64 \\
        --runs runs/crossing_v__hfa__0 runs/crossing_dagger__hfa__1
"""

from __future__ import annotations

import argparse
import json

import torch

from envs.crossing import POLICIES, RIGHT, Crossing
from training.ood import load_runs, policy_actor


def breakdown(env: Crossing, actor, start_seed: int, act_seed: int) -> dict:
    """Per-agent means over the episode batch: collisions, step cost and return (= -both)."""
    env.seed(start_seed)
    env.reset()
    torch.manual_seed(act_seed)
    gen = torch.Generator().manual_seed(act_seed)
    partners = torch.zeros(env.B, env.L)
    steps = torch.zeros(env.B, env.L)
    open_steps = env.N - 1 - env.start_width
    right = torch.zeros(env.T)  # RIGHT moves of the unparked agents at each step
    moves = torch.zeros(env.T)
    mean_x = torch.zeros(env.T + 1)  # mean x of every agent, before each step and after the last
    n = env.mask.sum()
    for t in range(env.T):
        mean_x[t] = env.world.positions[..., 0][env.mask].sum() / n
        actions = actor(env, gen)  # (B, L)
        moving = env.mask & ~env.parked
        right[t] = ((actions == RIGHT) & moving).sum()
        moves[t] = moving.sum()
        r = env.step(actions)  # (B, L)
        c = torch.round(-r)  # new distinct partners this step
        partners += c
        steps += -r - c
    mean_x[env.T] = env.world.positions[..., 0][env.mask].sum() / n
    waiting = env.mask & ~env.parked
    return {
        "collisions": float(partners.sum() / n),
        "step_cost": float(steps.sum() / n),
        "return": float(-(partners + steps).sum() / n),
        "right_first_step": float(right[0] / moves[0]),
        "right_open_crossing": float(right[:open_steps].sum() / moves[:open_steps].sum()),
        "parked": float(env.parked[env.mask].float().mean()),
        "waiting_x": float(env.world.positions[..., 0][waiting].float().mean()) if waiting.any() else None,
        "right_by_step": (right / moves.clamp(min=1)).tolist(),
        "mean_x_by_step": mean_x.tolist(),
    }


def figure(table: dict, path: str) -> None:
    """Mean x and the share of RIGHT over the episode, one column per count: priority against the
    runs (the scripted avoiders other than priority and MOVE_RIGHT are left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = list(table)
    fig, axes = plt.subplots(2, len(counts), figsize=(4.2 * len(counts), 6.4), sharex=True, squeeze=False)
    for col, L in enumerate(counts):
        names = [n for n in table[L] if n not in ("move_right", "greedy", "cautious")]
        for k, name in enumerate(names):
            row = table[L][name]
            style = dict(color="black", lw=2.2) if name == "priority" else dict(color=f"C{k}", lw=1.2)
            axes[0, col].plot(row["mean_x_by_step"], label=name, **style)
            axes[1, col].plot(row["right_by_step"], **style)
        axes[0, col].set_title(f"L = {L}")
        axes[1, col].set_xlabel("step t")
        axes[1, col].set_ylim(0, 1.02)
    axes[0, 0].set_ylabel("mean x of all agents")
    axes[1, 0].set_ylabel("share of RIGHT, unparked agents")
    axes[0, 0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--runs", nargs="*", default=[], help="run directories with checkpoint.zip")
    parser.add_argument("--labels", nargs="*", default=None, help="a name for each run (default: its path)")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--neighbours", type=int, default=7, help="attention cap at evaluation")
    parser.add_argument("--seed", type=int, default=12345, help="as hyperagents ood: starts = seed + 1000 L")
    parser.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--json", default=None, help="write the table here")
    parser.add_argument("--figure", default=None, help="write mean x and RIGHT share over time here (PNG)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    actors = {name: fn for name, fn in POLICIES.items() if name != "random"}
    if args.labels is not None and len(args.labels) != len(args.runs):
        parser.error(f"--labels needs one name per run ({len(args.runs)}), got {len(args.labels)}")
    labels = args.labels or [None] * len(args.runs)
    for run, label in zip(load_runs(tuple(args.runs), args.neighbours), labels, strict=True):
        actors[label or run["path"]] = policy_actor(run["model"], args.deterministic, 4096, run["features"])
    table = {}
    for L in args.counts:
        env = Crossing(num_worlds=args.episodes, num_agents=L)
        for name, actor in actors.items():
            row = breakdown(env, actor, args.seed + 1000 * L, args.seed)
            table.setdefault(L, {})[name] = row
            waiting_x = "none" if row["waiting_x"] is None else f"{row['waiting_x']:.1f}"
            print(
                f"L={L:3d} {name:40s} collisions {row['collisions']:7.3f}  step cost {row['step_cost']:6.3f}"
                f"  return {row['return']:7.3f}  RIGHT at t=0 {row['right_first_step']:.2f}, open crossing"
                f" {row['right_open_crossing']:.2f}  parked {row['parked']:.2f}  waiting x {waiting_x}",
                flush=True,
            )
    if args.figure:
        figure(table, args.figure)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "table": table}, f, indent=1)


if __name__ == "__main__":
    main()
