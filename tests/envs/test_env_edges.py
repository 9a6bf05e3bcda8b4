"""The PettingZoo env's contract beyond PettingZoo's own tests: ranges, padding, infos, state, errors;
the shared argument checks."""

import numpy as np
import pytest
import torch

from envs.checks import check_device, check_real
from envs.colliding_agents_v0 import MOVE_RIGHT, STAY, ResetNeeded, estimate_memory_bytes, parallel_env


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


# ----------------------------------------------------------------------------- edge inputs


def test_huge_agent_count_is_refused_before_allocating():
    with pytest.raises(ValueError, match="num_agents=88059 needs about .* GiB .*memory_limit_gb"):
        parallel_env(num_agents=88059)
    with pytest.raises(ValueError, match="memory_limit_gb=0.001"):
        parallel_env(num_agents=(2, 200), memory_limit_gb=0.001)
    env = parallel_env(num_agents=200, grid_size=60, radius=1, memory_limit_gb=None)  # explicit override
    obs, _ = env.reset(seed=0)
    assert obs["agent_199"].shape == (200, 5)
    assert estimate_memory_bytes(88059, 5) > 100 * 2**30


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(memory_limit_gb=0), ValueError, "memory_limit_gb must be > 0"),
        (dict(memory_limit_gb="4"), TypeError, "memory_limit_gb"),
        (dict(pad_agents="yes"), TypeError, "pad_agents must be True or False"),
        (dict(flatten=1), TypeError, "flatten must be True or False"),
        (dict(max_cycles=2.5), TypeError, "max_cycles"),
        (dict(num_agents=True), TypeError, "num_agents"),
        (dict(grid_size=True), TypeError, "grid_size"),
    ],
)
def test_bad_new_constructor_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        parallel_env(**kwargs)


def test_seed_is_checked():
    env = parallel_env(num_agents=3, grid_size=20, radius=1)
    with pytest.raises(ValueError, match="seed must be a non-negative int or None, got -1"):
        env.reset(seed=-1)
    for bad in (True, 1.5, "0"):
        with pytest.raises(TypeError, match="seed must be a non-negative int or None"):
            env.reset(seed=bad)
    with pytest.raises(TypeError, match="options must be a dict"):
        env.reset(options=[("positions", [[0, 0]])])
    a, _ = env.reset(seed=np.int64(7))
    b, _ = env.reset(seed=7)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_start_configuration_is_checked():
    env = parallel_env(num_agents=3, grid_size=20, radius=1, scenario="predator_prey")
    pos = [[0, 0], [5, 5], [9, 9]]
    with pytest.raises(ValueError, match=r"options\['labels'\] must have shape \(L, F\) = \(3, 2\)"):
        env.reset(options={"positions": pos, "labels": [[0, 1], [1, 0]]})
    with pytest.raises(ValueError, match=r"options\['labels'\] must have shape"):
        env.reset(options={"positions": pos, "labels": [0, 1, 1, 0, 0, 1]})  # right size, flat
    with pytest.raises(TypeError, match=r"options\['labels'\] must hold integers"):
        env.reset(options={"positions": pos, "labels": [[0.5, 1], [1, 0], [0, 0]]})
    with pytest.raises(TypeError, match=r"options\['positions'\] must hold integers, got dtype bool"):
        env.reset(options={"positions": [[True, False], [False, True], [True, True]]})
    with pytest.raises(TypeError, match=r"options\['positions'\] must hold integers"):
        env.reset(options={"positions": [[0.0, 1.0]]})
    with pytest.raises(ValueError, match=r"options\['positions'\] must be a rectangular array"):
        env.reset(options={"positions": [[0, 1], [2]]})
    _, infos = env.reset(options={"positions": pos, "labels": [[0, 1], [1, 0], [1, 1]]})
    assert [infos[a]["labels"].tolist() for a in env.agents] == [[0, 1], [1, 0], [1, 1]]
    one = parallel_env(num_agents=2, grid_size=20, radius=1, scenario="alliances")
    _, infos = one.reset(options={"positions": [[0, 0], [9, 9]], "labels": [2, 1]})  # F = 1: (L,) is fine
    assert infos["agent_0"]["labels"].tolist() == [2]


def test_bool_and_float_actions_are_refused():
    env = parallel_env(num_agents=2, grid_size=20, radius=1)
    env.reset(seed=0)
    for bad in (True, np.bool_(False), np.array(True)):
        with pytest.raises(TypeError, match="action for agent_0 must be an int in \\[0, 5\\), got bool"):
            env.step({"agent_0": bad, "agent_1": 0})
    for bad in (1.0, "1", None, np.array([1])):
        with pytest.raises(ValueError, match="action for agent_0 must be an int"):
            env.step({"agent_0": bad, "agent_1": 0})
    with pytest.raises(TypeError, match="actions must be a dict"):
        env.step([1, 1])
    _, rewards, *_ = env.step({"agent_0": np.int64(1), "agent_1": np.array(4)})  # numpy ints are ints
    assert set(rewards) == {"agent_0", "agent_1"}


def test_step_and_state_need_a_live_episode():
    env = parallel_env(num_agents=2, grid_size=20, radius=1, max_cycles=2)
    with pytest.raises(ResetNeeded, match="call reset\\(\\) first"):
        env.step({"agent_0": 0, "agent_1": 0})
    with pytest.raises(ResetNeeded, match="state\\(\\) needs an episode"):
        env.state()
    env.reset(seed=0)
    env.step({"agent_0": 0, "agent_1": 0})
    _, _, _, truncations, _ = env.step({"agent_0": 0, "agent_1": 0})
    assert all(truncations.values()) and env.agents == []
    assert env.state().shape == (2, 3)  # the final state stays readable
    with pytest.raises(ResetNeeded, match="truncated"):
        env.step({})
    env.reset(seed=1)
    assert len(env.step({"agent_0": 0, "agent_1": 0})[1]) == 2  # a new episode steps again


# ----------------------------------------------------------------------- opt-in modes


def test_pad_agents_keeps_every_possible_agent_present():
    env = parallel_env(num_agents=(2, 6), grid_size=30, radius=1, max_cycles=5, pad_agents=True)
    seen = set()
    for seed in range(12):
        obs, infos = env.reset(seed=seed)
        L = env.world.mask[0].sum().item()
        seen.add(L)
        assert env.agents == env.possible_agents
        for step in range(5):
            active = [infos[a]["active"] for a in env.agents]
            assert active == [i < L for i in range(6)]
            for i, a in enumerate(env.agents):
                if i >= L:  # absent: zero observation, sentinel position and labels
                    assert not obs[a].any() and infos[a]["position"] == (-1, -1)
                else:
                    assert obs[a][0, 0] == 1.0
            # Absent agents' actions are accepted and ignored: give them a move that would collide.
            obs, rewards, terms, truncs, infos = env.step(dict.fromkeys(env.agents, MOVE_RIGHT))
            assert set(rewards) == set(env.possible_agents)
            assert all(rewards[a] == 0.0 for a in env.possible_agents[L:])
            assert not any(terms.values()) and len(set(truncs.values())) == 1  # done together
            assert all(truncs.values()) == (step == 4)
        assert env.agents == []
    assert len(seen) > 1


def test_pad_agents_does_not_change_the_real_agents():
    kw = dict(num_agents=(2, 7), grid_size=24, radius=1, max_cycles=6, scenario="alliances")
    plain, padded = parallel_env(**kw), parallel_env(**kw, pad_agents=True)
    rng = np.random.default_rng(0)
    for seed in range(4):
        o1, i1 = plain.reset(seed=seed)
        o2, i2 = padded.reset(seed=seed)
        while plain.agents:
            for a in plain.agents:
                np.testing.assert_array_equal(o1[a], o2[a])
                assert i2[a]["active"] and i1[a]["position"] == i2[a]["position"]
                np.testing.assert_array_equal(i1[a]["labels"], i2[a]["labels"])
            acts = {a: int(rng.integers(5)) for a in padded.agents}
            o1, r1, _, t1, i1 = plain.step({a: acts[a] for a in plain.agents})
            o2, r2, _, t2, i2 = padded.step(acts)
            assert r1 == {a: r2[a] for a in r1} and t1 == {a: t2[a] for a in t1}
        assert padded.agents == []


def test_flatten_gives_the_same_tokens_as_vectors():
    kw = dict(num_agents=(2, 4), grid_size=20, radius=1, scenario="predator_prey", pad_agents=True)
    flat, tokens = parallel_env(**kw, flatten=True), parallel_env(**kw)
    assert flat.observation_space("agent_0").shape == (4 * 9,)
    o1, _ = flat.reset(seed=3)
    o2, _ = tokens.reset(seed=3)
    for a in flat.agents:
        assert flat.observation_space(a).contains(o1[a])
        np.testing.assert_array_equal(o1[a], o2[a].reshape(-1))


def test_check_real_bounds_types_and_messages():
    assert check_real("x", 0) == 0.0 and check_real("x", np.float32(0.5), 0, 1) == 0.5
    assert check_real("gamma", 1, 0, 1) == 1.0  # a closed upper end
    with pytest.raises(ValueError, match=r"lr must be a finite number > 0, got 0"):
        check_real("lr", 0, open_low=True)
    for bad in (float("nan"), float("inf"), -1e-12):
        with pytest.raises(ValueError, match="x must be a finite number >= 0"):
            check_real("x", bad)
    with pytest.raises(ValueError, match=r"gamma must be a number in \[0, 1\], got 1.5"):
        check_real("gamma", 1.5, 0, 1)
    for bad in (True, "0.1", None):
        with pytest.raises(TypeError, match="x must be a finite number >= 0, got"):
            check_real("x", bad)


def test_a_device_the_machine_lacks_is_a_value_error_naming_device():
    from envs.torchrl_env import CrossingEnv
    from envs.world import World

    for bad in ("tpu", "meta", 3.5):
        with pytest.raises(ValueError, match="device must be 'cpu', 'cuda' or 'cuda:<index>', got"):
            World(device=bad)
    assert check_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():  # the batched world and its TorchRL face: no AssertionError
        for make in (World, CrossingEnv):
            with pytest.raises(ValueError, match="device 'cuda' asked for, but this torch sees no CUDA GPU"):
                make(device="cuda")
