"""Does a nearest-k view hide the hunters from a prey? Measured on the predator-prey crossing task.

For every prey step (not parked) with a hunter within ``reach`` cells (a touch is one step away),
it counts the steps where none of those hunters is among the prey's k nearest agents: the view of
the nearest-k MLP (k = 6) and of attention's default (k = 7), both ranked by distance. Played by
everyone-forward and by the priority avoider on the starts ``hyperagents ood`` draws.

    python benchmarks/predator_prey_view.py --json benchmarks/results/predator_prey_view.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from envs.crossing import POLICIES, Crossing
from envs.world import circular_delta
from training.ood import OODConfig


def hidden_counts(env: Crossing, ks: tuple[int, ...], reach: float) -> tuple[int, dict]:
    """This step's (prey with a hunter within ``reach``, {k: those with none of them in the k nearest})."""
    pos = env.positions
    dx = (pos[:, None, :, 0] - pos[:, :, None, 0]).float()  # (B, L_i, L_j)
    dy = circular_delta(pos[:, :, None, 1], pos[:, None, :, 1], env.N).float()
    eye = torch.eye(env.L, dtype=torch.bool, device=env.device)
    dist = (dx**2 + dy**2).sqrt().masked_fill(eye | ~env.mask[:, None, :], float("inf"))
    rank = dist.argsort(dim=-1, stable=True).argsort(dim=-1)  # (B, L_i, L_j): 0 for i's nearest
    danger = (dist <= reach) & env.hunter[:, None, :] & env.active[:, :, None]
    near = danger.any(-1)  # (B, L)
    return int(near.sum()), {k: int((near & ~(danger & (rank < k)).any(-1)).sum()) for k in ks}


def measure(counts, policies, episodes: int, ks=(6, 7), reach: float = 4.0) -> dict:
    """{policy: {L: {prey_steps_near_a_hunter, share_hidden_from_k{k}}}}, one episode batch per L."""
    out: dict = {}
    for name in policies:
        for L in counts:
            env = Crossing(num_worlds=episodes, num_agents=L, predator_prey=True)
            env.seed(OODConfig.seed + 1000 * L)
            env.reset()
            near, hidden = 0, dict.fromkeys(ks, 0)
            while not env.done.all():
                n, h = hidden_counts(env, ks, reach)
                near += n
                hidden = {k: hidden[k] + h[k] for k in ks}
                env.step(POLICIES[name](env))
            row = {"prey_steps_near_a_hunter": near}
            row |= {f"share_hidden_from_{k}_nearest": hidden[k] / max(near, 1) for k in ks}
            out.setdefault(name, {})[L] = row
            print(name, L, row, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[8, 24, 64])
    parser.add_argument("--policies", nargs="+", default=["move_right", "priority"], choices=list(POLICIES))
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = measure(args.counts, args.policies, args.episodes)
    if args.json:
        record = {"reach": 4.0, "episodes": args.episodes, "view": result}
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
