"""The two-way crossing task: the odd slots head left, and every agent acts and sees in its own frame.

The mirror test is the task's definition in one check: a world and its mirror image, with each
pair of slots (2k, 2k+1) swapped so that every agent keeps its place but heads the other way in
the world's frame, play the same own-frame actions and must stay mirror images step for step.
"""

from __future__ import annotations

import pytest
import torch

from envs.crossing import FEATURE_SETS, LEFT, NUM_ACTIONS, POLICIES, RIGHT, STAY, Crossing, move_right_policy
from training import ood

N = 32
TASK = dict(grid_size=N, radius=1, max_steps=40, start_width=8, two_way=True, features="heading")


def mirrored(pos: torch.Tensor) -> torch.Tensor:
    """(B, L, 2) positions reflected in x, each pair of slots (2k, 2k+1) swapped."""
    out = pos.clone()
    out[..., 0] = N - 1 - out[..., 0]
    L = pos.shape[1]
    swap = torch.arange(L).view(-1, 2).flip(1).reshape(-1)
    return out[:, swap]


@pytest.mark.parametrize("L", [2, 6])
def test_a_world_and_its_mirror_stay_mirror_images(L):
    env = Crossing(num_worlds=16, num_agents=L, seed=3, **TASK)
    twin = Crossing(num_worlds=16, num_agents=L, seed=3, **TASK)
    env.reset()
    twin.reset(positions=mirrored(env.positions), mask=env.mask.clone())
    swap = torch.arange(L).view(-1, 2).flip(1).reshape(-1)
    gen = torch.Generator().manual_seed(0)
    total = 0.0
    for _ in range(TASK["max_steps"]):
        if L == 2:  # two slots: self first, then the other, in both worlds, so the views are equal
            assert torch.equal(env.observations(), twin.observations()[:, swap])
        act = torch.randint(0, NUM_ACTIONS, (16, L), generator=gen)
        r, r_twin = env.step(act), twin.step(act[:, swap])
        assert torch.equal(r, r_twin[:, swap])
        assert torch.equal(mirrored(env.positions), twin.positions)
        assert torch.equal(env.parked, twin.parked[:, swap])
        total += float(r.sum())
    assert total < 0  # random moves cost something: the worlds did not stand still


def test_starts_face_each_other_and_forward_parks_at_the_far_wall():
    env = Crossing(num_worlds=8, num_agents=6, seed=0, **TASK)
    env.reset()
    x, right = env.positions[..., 0], env.heading > 0
    assert bool((x[right] < 8).all()) and bool((x[~right] > N - 1 - 8).all())
    assert torch.equal(env.heading[0], torch.tensor([1, -1, 1, -1, 1, -1]))
    returns = torch.zeros(8, 6)
    for _ in range(TASK["max_steps"]):
        returns += env.step(move_right_policy(env))
    assert bool(env.parked.all())
    x = env.positions[..., 0]
    assert bool((x[right] == N - 1).all()) and bool((x[~right] == 0).all())
    # Moving forward costs no step cost: every loss is a contact, so returns are whole numbers.
    assert torch.equal(returns, returns.round()) and bool((returns <= 0).all()) and bool((returns < 0).any())


def test_own_frame_actions_and_the_heading_label():
    env = Crossing(num_worlds=1, num_agents=2, seed=0, **TASK)
    env.reset(positions=torch.tensor([[[5, 0], [20, 10]]]), mask=torch.ones(1, 2, dtype=torch.bool))
    obs = env.observations()  # (1, 2, 2, F): [0, i] is agent i's view, self first
    assert obs.shape[-1] == FEATURE_SETS["heading"]
    assert obs[0, 0, 1, 1] == obs[0, 1, 1, 1] == pytest.approx(15 / N)  # each is ahead of the other
    assert obs[0, 1, 0, 3] == pytest.approx((N - 1 - 20) / N)  # its own x, counted from its start wall
    assert obs[0, 0, :, -1].tolist() == [1.0, -1.0] and obs[0, 1, :, -1].tolist() == [1.0, -1.0]
    r = env.step(torch.tensor([[RIGHT, RIGHT]]))
    assert env.positions[0, :, 0].tolist() == [6, 19] and r.tolist() == [[0.0, 0.0]]
    assert env.observations()[0, 1, 0, 8] == 1.0  # its own last move, forward in its frame
    r = env.step(torch.tensor([[LEFT, STAY]]))
    assert env.positions[0, :, 0].tolist() == [5, 19] and r[0].tolist() == pytest.approx([-0.1, -0.05])


def test_one_way_heading_label_is_one_and_the_task_is_unchanged():
    env = Crossing(num_worlds=4, num_agents=(2, 5), seed=1, features="heading")
    env.reset()
    obs = env.observations()
    real = obs[..., 0] > 0.5
    assert bool((obs[..., -1][real] == 1).all()) and bool((obs[..., -1][~real] == 0).all())
    base = Crossing(num_worlds=4, num_agents=(2, 5), seed=1)
    base.reset()
    assert torch.equal(obs[..., :-1], base.observations())


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(two_way=1), "two_way must be a bool"),
        (dict(two_way=True, features="touch"), "two_way needs features"),
        (dict(two_way=True, grid_size=32, start_width=16), r"start_width <= .* = 15, got 16"),
    ],
)
def test_bad_two_way_settings_are_refused(kw, match):
    with pytest.raises((TypeError, ValueError), match=match):
        Crossing(num_worlds=1, num_agents=2, **kw)


def test_torchrl_and_pettingzoo_faces_carry_the_two_way_task():
    from pettingzoo.test import parallel_api_test
    from torchrl.envs.utils import check_env_specs

    from envs.crossing_v0 import parallel_env
    from envs.torchrl_env import CrossingEnv

    check_env_specs(CrossingEnv(num_worlds=4, num_agents=(2, 5), seed=0, **TASK))
    pz = parallel_env(num_agents=4, **TASK)
    assert pz.task.two_way and pz.observation_space("agent_1").shape == (4, FEATURE_SETS["heading"])
    parallel_api_test(pz, num_cycles=50)


def test_a_two_way_run_is_evaluated_on_its_task_and_not_beside_a_one_way_run(tmp_path):
    from training import marl

    small = dict(num_agents=(2, 4), num_worlds=8, n_steps=10, batch_size=256, n_epochs=1, progress=False)
    small |= dict(total_timesteps=1000, runs_dir=str(tmp_path), **TASK)
    marl.main(marl.preset_config(None, run_name="two", **small))
    summary = ood.main(ood.OODConfig(run=(str(tmp_path / "two"),), counts=(4,), episodes=4, reps=50))
    assert set(summary[4]) == {*POLICIES, "sa"}
    env = Crossing(num_worlds=4, num_agents=4, **TASK)
    starts = ood.OODConfig.seed + 1000 * 4  # the starts ood draws for L = 4
    assert summary[4]["move_right"]["mean"] == pytest.approx(
        float(ood.play(env, move_right_policy, starts, 0).mean())
    )

    marl.main(marl.preset_config(None, run_name="one", **(small | dict(two_way=False, features="base"))))
    with pytest.raises(ValueError, match="has another task"):
        ood.main(ood.OODConfig(run=(str(tmp_path / "two"), str(tmp_path / "one")), counts=(4,), episodes=4))


def test_the_scripted_avoiders_play_two_way_traffic():
    """priority never collides (its argument does not depend on headings), and the avoiders beat
    everyone-forward; the returns are the same whatever a contact costs only when nobody meets."""
    plain = Crossing(num_worlds=32, num_agents=12, seed=5, **(TASK | dict(features="base")))
    costly = Crossing(
        num_worlds=32, num_agents=12, seed=5, contact_cost=10.0, **(TASK | dict(features="base"))
    )
    plays = {}
    for name in ("move_right", "greedy", "cautious", "priority"):
        plays[name] = [float(ood.play(env, POLICIES[name], 1, 0).mean()) for env in (plain, costly)]
    assert plays["priority"][0] == pytest.approx(plays["priority"][1]) and plays["priority"][0] < 0
    assert plays["move_right"][1] < plays["move_right"][0]  # everyone-forward does meet oncoming agents
    for name in ("greedy", "cautious", "priority"):
        assert plays[name][0] > plays["move_right"][0], plays


def test_a_two_way_dagger_clone_learns_the_priority_teacher():
    from stable_baselines3 import PPO

    from training.imitate import imitate
    from training.marl import make_env, make_task, policy_kwargs, preset_config

    small = dict(backend="sb3", width=16, blocks=1, net_arch=(16,), num_agents=(4, 6), num_worlds=32)
    cfg = preset_config(**small, n_steps=16, batch_size=256, n_epochs=1, progress=False, **TASK)
    model = PPO("MlpPolicy", make_env(cfg), policy_kwargs=policy_kwargs(cfg), seed=0)
    stats = imitate(model.policy, make_task(cfg, seed=0), 4, epochs=8, batch_size=256, expert="priority")
    assert stats.agreement[0] < 0.5 and stats.agreement[-1] > 0.85, stats.agreement
