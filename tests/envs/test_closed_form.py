"""MOVE_RIGHT returns equal the paper's closed form, in the batched core and in the PettingZoo env."""

import numpy as np
import pytest
import torch

from envs.colliding_agents_v0 import MOVE_RIGHT, parallel_env
from envs.scenarios import make_scenario, rollout_returns


def paper_closed_form(y: np.ndarray, grid_size: int, radius: int) -> np.ndarray:
    """-#{j != i : min(|yi-yj|, N-|yi-yj|) <= 2R}, written independently of envs/ (numpy, (B, L))."""
    d = np.abs(y[:, :, None] - y[:, None, :])
    near = np.minimum(d, grid_size - d) <= 2 * radius
    return -(near.sum(-1) - 1)  # minus the agent itself


def edge_case_positions(gen: torch.Generator, B: int, L: int, N: int) -> torch.Tensor:
    """Random starts where a third of the worlds force coincident agents, walls and the y seam."""
    pos = torch.randint(0, N, (B, L, 2), generator=gen)
    third = B // 3
    pos[:third, 1] = pos[:third, 0]  # agent 1 on top of agent 0: coincident
    pos[third : 2 * third, :, 1] = torch.randint(0, 2 * max(1, N // 20), (third, L), generator=gen) - N // 20
    pos[third : 2 * third, :, 1] %= N  # bunched around the y seam: wrap-around
    pos[2 * third :, ::2, 0] = torch.tensor([0, N - 1])[
        torch.randint(0, 2, (B - 2 * third, 1), generator=gen)
    ]
    return pos


@pytest.mark.parametrize(("grid_size", "radius"), [(360, 5), (21, 5), (40, 3), (11, 0), (9, 2), (101, 10)])
def test_core_matches_closed_form_on_many_configurations(grid_size, radius):
    gen = torch.Generator().manual_seed(grid_size * 100 + radius)
    B, L = 400, 9  # 6 (N, R) x 400 = 2,400 configurations
    pos = edge_case_positions(gen, B, L, grid_size)
    got = rollout_returns("pairwise", pos, grid_size=grid_size, radius=radius)
    want = paper_closed_form(pos[..., 1].numpy(), grid_size, radius)
    np.testing.assert_array_equal(got.numpy(), want)
    if 4 * radius + 1 < grid_size:  # at 4R+1 = N everyone touches everyone
        assert (want < 0).any() and (want == 0).any()  # the sample exercises both outcomes


def test_closed_form_with_padding_mask():
    gen = torch.Generator().manual_seed(0)
    pos = torch.randint(0, 30, (50, 8, 2), generator=gen)
    mask = torch.rand(50, 8, generator=gen) > 0.3
    got = rollout_returns("pairwise", pos, mask=mask, grid_size=30, radius=2)
    want = make_scenario("pairwise").closed_form(pos, None, mask, 30, 2) * mask
    np.testing.assert_array_equal(got.numpy(), want.numpy())


@pytest.mark.parametrize("scenario", ["pairwise", "predator_prey", "alliances"])
def test_env_matches_batched_core_world_for_world(scenario):
    N, R, L, B = 48, 2, 7, 12
    gen = torch.Generator().manual_seed(7)
    sc = make_scenario(scenario)
    pos = torch.randint(0, N, (B, L, 2), generator=gen)
    labels = sc.sample_labels(gen, B, L)
    core = rollout_returns(sc, pos, labels, grid_size=N, radius=R).numpy()
    env = parallel_env(num_agents=L, grid_size=N, radius=R, scenario=scenario)
    for b in range(B):
        env.reset(options={"positions": pos[b].numpy(), "labels": labels[b].numpy()})
        total = np.zeros(L)
        while env.agents:
            acts = sc.scripted_actions(labels[b : b + 1])[0]
            _, rewards, _, _, _ = env.step({a: int(acts[i]) for i, a in enumerate(env.agents)})
            total += np.array(list(rewards.values()))
        np.testing.assert_array_equal(total, core[b])


def test_alliances_closed_form_and_bonus_is_paid():
    gen = torch.Generator().manual_seed(3)
    sc = make_scenario("alliances")
    pos = torch.randint(0, 30, (300, 10, 2), generator=gen)
    labels = sc.sample_labels(gen, 300, 10)
    got = rollout_returns(sc, pos, labels, grid_size=30, radius=2)
    want = sc.closed_form(pos, labels, torch.ones(300, 10, dtype=torch.bool), 30, 2)
    np.testing.assert_array_equal(got.numpy(), want.numpy())
    pairwise = rollout_returns("pairwise", pos, grid_size=30, radius=2)
    assert (got > pairwise).any()  # some triangles closed and paid the bonus


def test_env_episode_returns_match_closed_form_with_default_arguments():
    env = parallel_env()
    _, infos = env.reset(seed=123)
    y = np.array([[infos[a]["position"][1] for a in env.agents]])
    total = dict.fromkeys(env.agents, 0.0)
    steps = 0
    while env.agents:
        _, rewards, _, truncs, _ = env.step(dict.fromkeys(env.agents, MOVE_RIGHT))
        steps += 1
        for a, r in rewards.items():
            total[a] += r
    assert steps == 360 and all(truncs.values())
    np.testing.assert_array_equal(np.array(list(total.values())), paper_closed_form(y, 360, 5)[0])
