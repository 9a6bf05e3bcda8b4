"""How a fixed move fares against a crowd playing the policy: a test of the crowd's equilibrium.

From step ``--from-step`` on, a random share of the agents not yet parked play one fixed action
(STAY, or DOWN: sliding) to the end of the episode while every other agent plays the policy. Their
contacts and task cost from that step are compared with those of the other agents not parked at
that step, in the same episodes (the ood starts, as ``hyperagents ood`` seeds them). If forced
meet more agents than the policy's own agents do, and sliders fewer, a policy that slides to wait
has no reason, against itself, to learn to stay.

    python benchmarks/marl_forced_reply.py --counts 24 64 --runs runs/crossing__sa__0 \\
        --json benchmarks/results/marl_forced_reply.json
"""

from __future__ import annotations

import argparse
import json

import torch

from envs.crossing import DOWN, POLICIES, STAY, Crossing
from training.ood import load_runs, policy_actor

ACTIONS = {"stay": STAY, "down": DOWN}


def forced_reply(
    env: Crossing, actor, start_seed: int, share: float, from_step: int, action: int = STAY, seed: int = 0
) -> dict:
    """Per-agent means from ``from_step`` on, for the agents made to play ``action`` ("forced")
    and for the others ("policy")."""
    if not 0 <= from_step < env.T:
        raise ValueError(f"from_step must be in [0, max_steps={env.T}), got {from_step}")
    env.seed(start_seed)
    env.reset()
    gen = torch.Generator().manual_seed(seed)
    contacts = torch.zeros(env.B, env.L)
    cost = torch.zeros(env.B, env.L)
    forced = others = None
    for t in range(env.T):
        actions = actor(env, gen)  # (B, L)
        if t == from_step:
            waiting = env.mask & ~env.parked
            forced = waiting & (torch.rand(env.B, env.L, generator=gen) < share)
            others = waiting & ~forced
        if forced is not None:
            actions = torch.where(forced, torch.full_like(actions, action), actions)
        partners = env.world.collided.sum(-1)  # (B, L) distinct partners so far
        reward = env.step(actions)
        if forced is not None:
            contacts += env.world.collided.sum(-1) - partners
            cost -= reward
    return {
        name: {
            "agents": int(group.sum()),
            "contacts": float(contacts[group].mean()) if group.any() else None,
            "cost": float(cost[group].mean()) if group.any() else None,
        }
        for name, group in (("forced", forced), ("policy", others))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[24, 64])
    parser.add_argument("--runs", nargs="*", default=[], help="run directories")
    parser.add_argument("--labels", nargs="*", default=None, help="a name for each run (default: its path)")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--actions", nargs="+", choices=list(ACTIONS), default=list(ACTIONS))
    parser.add_argument("--share", type=float, default=0.2, help="share of the waiting agents forced")
    parser.add_argument("--from-step", type=int, default=60, help="step from which they are forced")
    parser.add_argument("--seed", type=int, default=12345, help="as hyperagents ood: starts = seed + 1000 L")
    parser.add_argument("--json", default=None, help="write the table here")
    args = parser.parse_args()
    if not 0 < args.share < 1:
        parser.error(f"--share must be in (0, 1), got {args.share}")
    if args.labels is not None and len(args.labels) != len(args.runs):
        parser.error(f"--labels needs one name per run ({len(args.runs)}), got {len(args.labels)}")
    torch.set_num_threads(1)
    actors = {"priority": POLICIES["priority"]}
    for run, label in zip(load_runs(tuple(args.runs)), args.labels or [None] * len(args.runs), strict=True):
        actors[label or run["path"]] = policy_actor(run["model"], True, 4096, run["features"])
    table = {}
    for L in args.counts:
        env = Crossing(num_worlds=args.episodes, num_agents=L)
        for name, actor in actors.items():
            for forced in args.actions:
                row = forced_reply(
                    env, actor, args.seed + 1000 * L, args.share, args.from_step, ACTIONS[forced]
                )
                table.setdefault(L, {}).setdefault(name, {})[forced] = row
                print(
                    f"L={L:3d} {name:24s} forced {forced:4s}"
                    + "".join(
                        f"  {g}: {row[g]['agents']:5d} agents, contacts {row[g]['contacts'] or 0:.3f},"
                        f" cost {row[g]['cost'] or 0:.3f}"
                        for g in ("forced", "policy")
                    ),
                    flush=True,
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "table": table}, f, indent=1)


if __name__ == "__main__":
    main()
