"""The PettingZoo face of the crossing task: PettingZoo's own tests, and the batched task world for world."""

from __future__ import annotations

import functools

import numpy as np
import pettingzoo
import pytest
import torch
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test, render_test

import envs
from envs import crossing_v0
from envs.crossing import NUM_ACTIONS, Crossing
from envs.world import ResetNeeded

TASK = dict(grid_size=24, radius=1, max_steps=30, start_width=6)


@pytest.mark.parametrize("num_agents", [4, (2, 6)])
def test_pettingzoo_api(num_agents):
    parallel_api_test(crossing_v0.parallel_env(num_agents=num_agents, **TASK), num_cycles=40)
    api_test(crossing_v0.env(num_agents=num_agents, **TASK), num_cycles=40)
    parallel_seed_test(functools.partial(crossing_v0.parallel_env, num_agents=num_agents, **TASK))


def test_registered_and_renders():
    env = pettingzoo.make("parallel", envs.CROSSING_ID, num_agents=3, **TASK)
    assert isinstance(env, crossing_v0.CrossingParallelEnv)
    render_test(functools.partial(crossing_v0.env, num_agents=3, **TASK))


@pytest.mark.parametrize("features", ["base", "touch"])
def test_equals_batched_task_world_for_world(features):
    """Seeded alike and given the same actions, the PettingZoo env and the batched task at B = 1
    produce the same agents, observations, rewards and truncation, over two episodes."""
    env = crossing_v0.parallel_env(num_agents=(2, 6), features=features, **TASK)
    ref = Crossing(num_worlds=1, num_agents=(2, 6), features=features, **TASK)
    rng = np.random.default_rng(0)
    for episode in range(2):
        obs, infos = env.reset(seed=11 + episode)
        ref.seed(11 + episode)
        ref.reset()
        count = int(ref.mask[0].sum())
        assert env.agents == [f"agent_{i}" for i in range(count)]
        while env.agents:
            expect = ref.observations()[0].numpy()
            for i, agent in enumerate(env.agents):
                np.testing.assert_array_equal(obs[agent], expect[i])
                assert infos[agent]["position"] == tuple(ref.positions[0, i].tolist())
            actions = {a: int(rng.integers(NUM_ACTIONS)) for a in env.agents}
            act = torch.zeros(1, ref.L, dtype=torch.long)
            act[0, :count] = torch.tensor(list(actions.values()))
            obs, rewards, terms, truncs, infos = env.step(actions)
            reward = ref.step(act)[0]
            assert [rewards[f"agent_{i}"] for i in range(count)] == reward[:count].tolist()
            assert all(t == bool(ref.done[0]) for t in truncs.values()) and not any(terms.values())
        assert int(ref.steps[0]) == TASK["max_steps"]


def test_bad_input():
    env = crossing_v0.parallel_env(num_agents=3, **TASK)
    with pytest.raises(ResetNeeded):
        env.step({})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="actions"):
        env.step({"agent_0": 7})
    with pytest.raises(ValueError, match="actions"):
        env.step({"agent_0": True})
    with pytest.raises(ValueError, match="agent_9"):
        env.step({"agent_9": 1})
    with pytest.raises(ValueError, match="seed"):
        env.reset(seed=-1)
    with pytest.raises(ValueError, match="render_mode"):
        crossing_v0.parallel_env(render_mode="video")
