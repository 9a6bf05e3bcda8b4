"""Probe: train with some agents starting parked at the wall, so a full wall is met at small counts.

A parked agent blocks five lanes at the wall, so the wall fills (no lane open) only once 13 to 21
agents have parked: of the training counts (2..24) only the largest meet a full wall, late in the
episode, and the queue behind it, where the policies lose to priority at L = 32 and 64, is
rarely trained on. Here, in a share of the training worlds of 8 or more agents, k of them
(uniform in 1..count // 2) start parked at x = N - 1, each in a lane no earlier wall agent
touches. Those worlds hold no more agents than before; only where they start changes. Evaluation
(`hyperagents ood`, another process) keeps the task's starts. The probe patches `Crossing` in
this process only, then runs `hyperagents train`:

    python benchmarks/wall_starts_probe.py --share 0.5 --seed 0 --run-name wall_0

Every argument after --share goes to `hyperagents train`.
"""

from __future__ import annotations

import argparse
import sys

import torch

from envs.crossing import Crossing
from envs.world import circular_delta

MIN_COUNT = 8  # smaller worlds keep their starts: the wall fills only in crowds
_sample_starts, _reset = Crossing.sample_starts, Crossing.reset


def park_at_wall(env: Crossing, pos: torch.Tensor, mask: torch.Tensor, share: float) -> torch.Tensor:
    """Move k of each picked world's agents (its last real slots) to the wall, in place: pos (b, L, 2)."""
    b, N = len(pos), env.N
    count = mask.sum(1)  # (b,)
    picked = (torch.rand(b, generator=env.gen) < share) & (count >= MIN_COUNT)
    k = 1 + (torch.rand(b, generator=env.gen) * (count // 2).clamp(min=1)).long()
    k = torch.where(picked, k, 0)  # (b,) agents to park
    lanes = torch.arange(N)
    free = torch.ones(b, N, dtype=torch.bool)  # (b, N) wall cells no wall agent touches
    for j in range(int(k.max()) if b else 0):  # one agent per world at a time, as the starts are placed
        live = (j < k) & free.any(1)
        if not live.any():
            break
        upto = free.cumsum(1)  # (b, N)
        u = torch.rand(b, dtype=torch.float64, generator=env.gen)
        pick = (u * upto[:, -1]).long().minimum((upto[:, -1] - 1).clamp(min=0))  # the pick-th free lane
        y = torch.searchsorted(upto, (pick + 1).unsqueeze(1)).squeeze(1).clamp(max=N - 1)  # (b,)
        w, slot, y = live.nonzero().squeeze(1), (count - 1 - j)[live], y[live]
        pos[w, slot, 0], pos[w, slot, 1] = N - 1, y
        free[w] &= circular_delta(lanes.unsqueeze(0), y.unsqueeze(1), N).abs() > 2 * env.R
    return pos


def install(share: float) -> None:
    """Patch Crossing in this process: sampled starts park agents at the wall, and resets mark
    every real agent that starts at the wall as parked."""

    def sample_starts(self, num_worlds, counts=None):
        if self.two_way or self.predator_prey:  # their agents start or hunt near the far wall
            raise ValueError("the wall-starts probe is for the one-way crossing task")
        pos, mask = _sample_starts(self, num_worlds, counts)
        return park_at_wall(self, pos, mask, share), mask

    def reset(self, worlds=None, positions=None, mask=None):
        _reset(self, worlds, positions, mask)
        idx = torch.arange(self.B, device=self.device) if worlds is None else torch.as_tensor(worlds)
        self.parked[idx] = (self.world.positions[idx, :, 0] == self.N - 1) & self.world.mask[idx]

    Crossing.sample_starts, Crossing.reset = sample_starts, reset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--share", type=float, default=0.5, help="share of worlds of 8+ agents (0..1)")
    args, train_args = parser.parse_known_args(argv)
    if not 0.0 <= args.share <= 1.0:
        parser.error(f"--share must be in [0, 1], got {args.share}")
    install(args.share)
    from training.cli import main as cli

    cli(["train", *train_args])


if __name__ == "__main__":
    main(sys.argv[1:])
