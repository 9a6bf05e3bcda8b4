"""The predator-prey task: scripted hunters on the odd slots, prey that learn to cross past them.

The reward test is the task's definition in one check: over random play, a prey's return is its
step costs plus minus one for every distinct hunter it touched, and nothing else (touching prey is
free); hunters and padded slots earn nothing.
"""

from __future__ import annotations

import pytest
import torch

from envs.crossing import (
    FEATURE_SETS,
    NUM_ACTIONS,
    POLICIES,
    RIGHT,
    STAY,
    UP,
    Crossing,
    move_right_policy,
)
from training import ood

N, W, R = 32, 8, 1
TASK = dict(grid_size=N, radius=R, max_steps=40, start_width=W, predator_prey=True, features="labels")


def test_slots_labels_and_starts():
    env = Crossing(num_worlds=16, num_agents=(2, 7), seed=0, **TASK)
    env.reset()
    assert env.hunter[0].tolist() == [False, True, False, True, False, True, False]
    assert env.hunter_up[0].tolist() == [False, True, False, False, False, True, False]
    assert torch.equal(env.learners, env.mask & ~env.hunter) and bool(env.learners[:, 0].all())
    x = env.positions[..., 0]
    hunters, prey = env.mask & env.hunter, env.mask & ~env.hunter
    assert bool((x[prey] < W).all())
    assert bool((x[hunters] >= W + 2 * R).all()) and bool((x[hunters] < N - W).all())
    assert int(env.world.collided.sum()) == 0  # hunters start out of the prey's reach


def test_hunters_play_their_script_whatever_they_are_told():
    env = Crossing(num_worlds=6, num_agents=6, seed=1, **TASK)
    env.reset()
    gen = torch.Generator().manual_seed(0)
    for _ in range(TASK["max_steps"]):
        before = env.positions.clone()
        env.step(torch.randint(0, NUM_ACTIONS, (6, 6), generator=gen))
        up, right = env.hunter_up[0], env.hunter[0] & ~env.hunter_up[0]
        assert torch.equal(env.positions[:, up, 0], before[:, up, 0])
        assert torch.equal(env.positions[:, up, 1], (before[:, up, 1] + 1) % N)
        assert torch.equal(env.positions[:, right, 0], (before[:, right, 0] + 1).clamp(max=N - 1))
    assert bool(env.parked[:, env.hunter[0] & ~env.hunter_up[0]].all())  # right hunters reach the wall
    assert not bool(env.parked[:, env.hunter_up[0]].any())


def test_a_prey_pays_its_steps_and_one_per_distinct_hunter_and_nothing_else():
    B, L = 32, 9
    env = Crossing(num_worlds=B, num_agents=(3, L), seed=2, **TASK)
    env.reset()
    gen = torch.Generator().manual_seed(1)
    returns, steps = torch.zeros(B, L), torch.zeros(B, L)
    moves = torch.tensor([STAY, RIGHT, RIGHT, RIGHT, UP])  # mostly right, so many prey meet hunters
    for _ in range(TASK["max_steps"]):
        x = env.positions[..., 0].clone()
        unparked = ~env.parked
        returns += env.step(moves[torch.randint(0, 5, (B, L), generator=gen)])
        steps += 0.05 * (1 - (env.positions[..., 0] - x)) * unparked
    hunters_met = (env.world.collided & env.hunter.unsqueeze(1)).sum(-1).float()  # (B, L)
    expected = torch.where(env.learners, -steps - hunters_met, torch.zeros(B, L))
    assert torch.allclose(returns, expected, atol=1e-4)
    prey_met = (env.world.collided & ~env.hunter.unsqueeze(1) & env.learners.unsqueeze(-1)).sum()
    assert int(hunters_met[env.learners].sum()) > 0 and int(prey_met) > 0  # both kinds of contact happened


def test_the_labels_follow_each_view_and_the_rest_is_the_base_set():
    env = Crossing(num_worlds=2, num_agents=5, seed=3, **TASK)
    env.reset()
    obs = env.observations()
    assert obs.shape == (2, 5, 5, FEATURE_SETS["labels"])
    # agent 2 sees itself first, then slots 0, 1, 3, 4: prey, up hunter, right hunter, prey
    assert obs[0, 2, :, -2:].tolist() == [[0, 0], [0, 0], [1, 1], [1, 0], [0, 0]]
    assert torch.equal(obs[..., :-2], env.observations("base"))


def test_scripted_avoiders_beat_everyone_forward_and_play_stops_only_when_nothing_can_change():
    env = Crossing(num_worlds=32, num_agents=12, seed=4, **TASK)
    scores = {name: float(ood.play(env, POLICIES[name], 5, 0).mean()) for name in POLICIES}
    for name in ("greedy", "cautious", "priority"):
        assert scores[name] > scores["move_right"] > scores["random"], scores
    for name in ("move_right", "priority"):  # play stops once every prey is parked: the rest is 0
        env.seed(5)
        env.reset()
        total = torch.zeros(32, 12)
        for _ in range(TASK["max_steps"]):
            total += env.step(POLICIES[name](env))
        assert torch.allclose(
            total.sum(1) / env.learners.sum(1), torch.as_tensor(ood.play(env, POLICIES[name], 5, 0))
        )


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(predator_prey=1), "predator_prey must be a bool"),
        (dict(predator_prey=True, two_way=True), "separate tasks"),
        (dict(predator_prey=True, features="touch"), "predator_prey needs features"),
        (
            dict(predator_prey=True, grid_size=32, start_width=16),
            r"start_width <= .* = 14, got start_width 16",
        ),
        (dict(predator_prey=True, start_width=2), "2 radius < start_width"),
    ],
)
def test_bad_predator_prey_settings_are_refused(kw, match):
    with pytest.raises((TypeError, ValueError), match=match):
        Crossing(num_worlds=1, num_agents=2, **kw)


def test_the_torchrl_face_trains_only_the_prey():
    from torchrl.envs.utils import check_env_specs

    from envs.torchrl_env import CrossingEnv

    env = CrossingEnv(num_worlds=4, num_agents=(2, 6), seed=0, **TASK)
    check_env_specs(env)
    td = env.reset()
    assert torch.equal(td.get(("agents", "mask")), env.task.learners)
    assert not bool(td.get(("agents", "active"))[env.task.hunter].any())


def test_a_predator_prey_run_trains_and_is_evaluated_on_its_own_task(tmp_path):
    from training import marl

    small = dict(num_agents=(2, 6), num_worlds=8, n_steps=10, batch_size=256, n_epochs=1, progress=False)
    small |= dict(total_timesteps=1000, runs_dir=str(tmp_path), **TASK)
    marl.main(marl.preset_config(None, run_name="pp", **small))
    summary = ood.main(ood.OODConfig(run=(str(tmp_path / "pp"),), counts=(6,), episodes=4, reps=50))
    env = Crossing(num_worlds=4, num_agents=6, **{k: v for k, v in TASK.items() if k != "features"})
    starts = ood.OODConfig.seed + 1000 * 6  # the starts ood draws for L = 6
    assert summary[6]["move_right"]["mean"] == pytest.approx(
        float(ood.play(env, move_right_policy, starts, 0).mean())
    )
    assert set(summary[6]) == {*POLICIES, "sa"}
    with pytest.raises(ValueError, match="needs backend 'torchrl'"):
        marl.main(marl.preset_config(None, run_name="sb3", **(small | dict(backend="sb3"))))


def test_the_pettingzoo_face_has_the_prey_as_its_agents():
    from pettingzoo.test import parallel_api_test

    from envs.crossing_v0 import parallel_env

    pz = parallel_env(num_agents=(2, 6), **TASK)
    assert pz.possible_agents == ["agent_0", "agent_2", "agent_4"]
    assert pz.observation_space("agent_2").shape == (6, FEATURE_SETS["labels"])
    parallel_api_test(pz, num_cycles=50)
    obs, _ = pz.reset(seed=3)
    assert pz.agents == [a for a in pz.possible_agents if int(a[6:]) < int(pz.task.mask[0].sum())]
    assert torch.equal(torch.as_tensor(obs["agent_2"]), pz.task.observations()[0, 2])
    _, rewards, *_ = pz.step(dict.fromkeys(pz.agents, RIGHT))
    assert set(rewards) == set(pz.agents)


def test_scenario_labels_use_the_scenarios_encoding():
    from envs.scenarios import HUNTER, POLICY_UP, PREY

    env = Crossing(num_worlds=2, num_agents=6, seed=0, **TASK)
    labels, scenario = env.scenario_labels()
    assert scenario.name == "predator_prey" and labels.shape == (2, 6, 2)
    assert labels[0, :, 0].tolist() == [PREY, HUNTER] * 3
    assert labels[0, :, 1].tolist() == [0, POLICY_UP, 0, 0, 0, POLICY_UP]
    assert Crossing(num_worlds=1, num_agents=2).scenario_labels() == (None, None)
