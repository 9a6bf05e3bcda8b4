"""Ground truth: the exact interaction of each pair of agents over the episode from a start.

``pairwise`` reads the devised table -f(y_i, y_j) (``policies.devised.circular_window``); the
labelled scenarios simulate the scripted policy in one batched world and weigh each pair that
touched by its reward. Alliances also give triple strengths: the bonus of every allied triangle
whose three pairs touched.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from envs.scenarios import Alliances, PredatorPrey, make_scenario
from envs.world import World
from policies import devised
from viz.readout import Strengths, distinct_triples, off_diagonal


@functools.lru_cache(maxsize=4)
def _devised_table(grid_size: int, radius: int) -> Tensor:
    return -devised.circular_window(grid_size, radius)  # C.W of the exact one-hot model


@torch.no_grad()
def truth_strengths(
    scenario: str, grid_size: int, radius: int, positions: Tensor, labels: Tensor
) -> Strengths:
    """The exact interaction of each pair over the episode that starts at ``positions``.

    ``pairwise`` reads the devised table; the labelled scenarios simulate the scripted policy for
    ``grid_size`` steps (one batched world) and weigh each pair that touched by its reward.

    Args:
        positions: (L, 2) long cells [x, y]. labels: (L, F) long scenario labels.
    """
    if scenario == "pairwise":
        y = positions[:, 1]
        return Strengths(
            off_diagonal(_devised_table(grid_size, radius)[y[:, None], y[None, :]]),
            "value",
            source="devised table -f(y_i, y_j)",
        )
    sc = make_scenario(scenario)
    L = positions.shape[0]
    world = World(1, L, grid_size, radius)
    world.reset(positions[None])
    actions = sc.scripted_actions(labels[None])
    for _ in range(grid_size):  # the episode, one step at a time (the world is batched over agents)
        world.step(actions)
    touched = world.collided[0]  # (L, L) bool
    if isinstance(sc, PredatorPrey):
        species = labels[:, 0]
        pairs = sc.pair_weight(species[:, None], species[None, :]).double() * touched
        return Strengths(pairs, "value", source="simulated pair reward (hunter +1, prey -1)")
    pairs = -touched.double()
    triples = None
    if isinstance(sc, Alliances):
        allied = labels[:, 0, None] == labels[None, :, 0]
        m = (touched & allied).double()
        triples = distinct_triples(sc.bonus * m[:, :, None] * m[:, None, :] * m[None, :, :])
    return Strengths(pairs, "value", triples=triples, source="simulated pair reward")
