"""The PettingZoo env's contract beyond PettingZoo's own tests: ranges, padding, infos, state, errors."""

import numpy as np
import pytest

from envs.colliding_agents_v0 import MOVE_RIGHT, STAY, parallel_env


def test_agent_count_range_is_sampled_padded_and_masked():
    env = parallel_env(num_agents=(2, 6), grid_size=40, radius=1)
    seen = set()
    for seed in range(30):
        obs, infos = env.reset(seed=seed)
        L = len(env.agents)
        seen.add(L)
        o = obs["agent_0"]
        assert o.shape == (6, env.num_features)
        assert o[:L, 0].tolist() == [1.0] * L and not o[L:].any()  # present flag, zero padding
        assert set(infos) == set(env.agents) and all(len(i["position"]) == 2 for i in infos.values())
        assert env.state().shape == env.state_space.shape
    assert seen == {2, 3, 4, 5, 6}


def test_observation_is_relative_and_self_first():
    env = parallel_env(num_agents=3, grid_size=20, radius=1)
    obs, _ = env.reset(options={"positions": [[2, 1], [5, 19], [2, 10]]})
    o1 = obs["agent_1"]
    np.testing.assert_allclose(o1[0, :4], [1, 0, 0, 5 / 20])  # itself: present, no offset, x
    np.testing.assert_allclose(o1[1, :4], [1, -3 / 20, 2 / 20, 2 / 20])  # agent 0: dy wraps 19 -> 1
    np.testing.assert_allclose(o1[2, :4], [1, -3 / 20, -9 / 20, 2 / 20])
    st = env.state()
    np.testing.assert_array_equal(st[:, :3], [[1, 2, 1], [1, 5, 19], [1, 2, 10]])


def test_touched_flag_and_infos_track_the_episode():
    env = parallel_env(num_agents=2, grid_size=20, radius=1)
    env.reset(options={"positions": [[0, 0], [0, 2]]})
    obs, rewards, _, _, infos = env.step({"agent_0": MOVE_RIGHT, "agent_1": MOVE_RIGHT})
    assert rewards == {"agent_0": -1.0, "agent_1": -1.0}
    assert obs["agent_0"][1, 4] == 1.0 and infos["agent_1"]["position"] == (1, 2)
    _, rewards, _, _, _ = env.step({"agent_0": STAY, "agent_1": STAY})
    assert rewards == {"agent_0": 0.0, "agent_1": 0.0}  # same partner: charged once


def test_labels_in_infos_and_state():
    env = parallel_env(num_agents=4, grid_size=30, radius=1, scenario="predator_prey")
    _, infos = env.reset(seed=0)
    assert env.scenario.label_names == ("species", "policy")
    for i, agent in enumerate(env.agents):
        lab = infos[agent]["labels"]
        # A flat int array (not a dict), so that clients can turn infos into tensors.
        assert lab.dtype == np.int64 and lab.tolist() == env.labels[0, i].tolist()
        assert lab.tolist() == np.argmax(env.state()[i, 3:].reshape(2, 2), -1).tolist()


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(num_agents=0), ValueError, "num_agents"),
        (dict(num_agents=(5, 2)), ValueError, "num_agents must satisfy"),
        (dict(num_agents=(1, 2, 3)), TypeError, "num_agents"),
        (dict(num_agents="3"), TypeError, "num_agents"),
        (dict(radius=-1), ValueError, "radius"),
        (dict(grid_size=20, radius=5), ValueError, "radius=5 is too large"),
        (dict(scenario="nope"), ValueError, "scenario must be one of"),
        (dict(render_mode="ascii"), ValueError, "render_mode"),
        (dict(max_cycles=0), ValueError, "max_cycles"),
    ],
)
def test_bad_constructor_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        parallel_env(**kwargs)


def test_bad_actions_and_options():
    env = parallel_env(num_agents=2, grid_size=20, radius=1)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action for agent_0 must be an int in \\[0, 5\\)"):
        env.step({"agent_0": 7, "agent_1": 0})
    with pytest.raises(ValueError, match="missing"):
        env.step({"agent_0": 1})
    with pytest.raises(ValueError, match="not a live agent"):
        env.step({"agent_0": 1, "agent_1": 1, "agent_9": 1})
    with pytest.raises(ValueError, match="options\\['positions'\\]"):
        env.reset(options={"positions": [[0, 0], [0, 25]]})


def test_nearest_valid_inputs_work():
    for kw in (dict(num_agents=1), dict(radius=0), dict(grid_size=21, radius=5), dict(num_agents=(1, 1))):
        env = parallel_env(**kw)
        env.reset(seed=0)
        _, rewards, _, _, _ = env.step(dict.fromkeys(env.agents, MOVE_RIGHT))
        assert set(rewards) == set(env.agents)
