"""How far a decentralised convention gets in crowds: every agent yields to the agents ahead of it.

`priority` (envs/experts.py) never collides because agents decide one after another, each seeing
the final cells of those before it: a decision order no agent's own view provides. `yield` keeps
priority's order (further along first, ties by smaller y) as a convention each agent applies on
its own, at the same instant, from what it sees now: a move must avoid the current cell of every
agent behind it and every cell an agent ahead of it could reach this step. Agent pairs then never
collide either (the one behind avoids wherever the one ahead goes; the one ahead avoids where the
one behind stands, which it keeps or leaves for a cell clear of the one ahead), but the one
behind waits for moves the one ahead may not make. `--neighbours K` restricts the view to the K
nearest agents, as the trained policies see. Every scripted policy plans with the whole wall's
open lanes (`_lane_plan`), as greedy, cautious and priority do.

    python benchmarks/marl_yield.py --counts 2 4 8 16 32 64 --neighbours 7 \\
        --json benchmarks/results/marl_yield.json

Returns are on the ood starts (`hyperagents ood`'s seed), the task's reward, 100 episodes.
"""

from __future__ import annotations

import argparse
import json
from functools import partial

import numpy as np
import torch

from envs.crossing import NUM_ACTIONS, POLICIES, RIGHT, STAY, Crossing
from envs.experts import _lane_plan
from envs.world import circular_delta
from training.ood import gain, play


def yield_policy(
    env: Crossing, gen: torch.Generator | None = None, neighbours: int | None = None
) -> torch.Tensor:
    """(B, L) long actions of the yield-to-the-front convention (module doc)."""
    w, N, L = env.world, env.N, env.L
    pos, mask, parked = w.positions, w.mask, env.parked  # (B, L, 2), (B, L), (B, L)
    every = torch.arange(NUM_ACTIONS, device=env.device).expand(env.B, L, -1)
    reach = w.cells_after(env.world_actions(every))  # (B, L, 5, 2): each agent's cell per action
    reach = torch.where(parked[..., None, None], pos[:, :, None], reach)  # a parked agent stays
    key = env.priority_key()  # (B, L): smaller decides first in priority
    ahead = key[:, None, :] < key[:, :, None]  # (B, L_i, L_j): j is ahead of i
    seen = env.threat[:, None, :] & ~torch.eye(L, dtype=torch.bool, device=env.device)
    if neighbours is not None and neighbours < L - 1:
        dx = (pos[:, None, :, 0] - pos[:, :, None, 0]).float()
        dy = circular_delta(pos[:, :, None, 1], pos[:, None, :, 1], N).float()  # the cylinder's short way
        dist = (dx.square() + dy.square()).masked_fill(~seen, float("inf"))  # (B, L, L)
        nearest = dist.topk(neighbours, -1, largest=False).indices
        seen = seen & torch.zeros_like(seen).scatter_(-1, nearest, True)
    # (B, L_i, 5 own actions, L_j): i's cell after a touches j now; (..., 5 of j's) touches j after any move
    now = w.touching(reach[:, :, :, None], pos[:, None, None])
    later = w.touching(reach[:, :, :, None, None], reach[:, None, None]).any(-1)
    hit = (seen[:, :, None] & (now | (ahead[:, :, None] & later))).any(-1)  # (B, L, 5)
    lane_open, first, second = _lane_plan(env)
    act = torch.full_like(first, STAY)
    for choice, allowed in ((second, True), (first, True), (torch.full_like(first, RIGHT), lane_open)):
        safe = ~hit.gather(-1, choice[..., None]).squeeze(-1) & allowed  # later choices are preferred
        act = torch.where(safe, choice, act)
    return torch.where(mask & ~parked, act, STAY)


def evaluate(counts, episodes: int, seed: int, neighbours: int | None) -> dict:
    """{L: {policy: {"return": mean return per agent, "gain": over MOVE_RIGHT}}}, on the ood starts."""
    policies = {name: POLICIES[name] for name in ("move_right", "greedy", "cautious", "priority")}
    policies["yield, whole view"] = yield_policy
    if neighbours is not None:
        policies[f"yield, {neighbours} nearest"] = partial(yield_policy, neighbours=neighbours)
    table = {}
    for L in counts:
        env = Crossing(num_worlds=episodes, num_agents=L)
        means = {name: float(np.mean(play(env, fn, seed + 1000 * L, seed))) for name, fn in policies.items()}
        ref = means["move_right"]
        table[L] = {name: {"return": m, "gain": gain(m, ref)[0]} for name, m in means.items()}
        print(f"L={L:3d} " + "  ".join(f"{n}: {v['gain']:+.2f}" for n, v in table[L].items()), flush=True)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=12345, help="hyperagents ood's start seed")
    parser.add_argument("--neighbours", type=int, default=7, help="the view's K nearest (0: whole view only)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if min(args.counts) < 1 or args.episodes < 1 or args.neighbours < 0:
        parser.error("--counts and --episodes must be >= 1, --neighbours >= 0")
    table = evaluate(args.counts, args.episodes, args.seed, args.neighbours or None)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "table": table}, f, indent=1)


if __name__ == "__main__":
    main()
