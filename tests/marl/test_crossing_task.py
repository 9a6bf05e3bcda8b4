"""The crossing task: closed form of MOVE_RIGHT, parking, starts, rewards, bad input."""

import pytest
import torch

from envs import crossing_v0
from envs.crossing import (
    DOWN,
    LEFT,
    NUM_FEATURES,
    POLICIES,
    RIGHT,
    STAY,
    UP,
    Crossing,
    move_right_policy,
)
from envs.experts import _lane_plan
from envs.scenarios import near_y
from envs.torchrl_env import CrossingEnv
from envs.vec import CrossingVecEnv
from training.marl import make_task, preset_config, task_kwargs


def rollout(env, policy, gen=None):
    total = torch.zeros(env.B, env.L)
    while not env.done.all():
        total += env.step(policy(env, gen))
    return total


@pytest.mark.parametrize("L", [2, 8, 24])
def test_move_right_matches_closed_form(L):
    env = Crossing(num_worlds=16, num_agents=L, seed=L)
    env.reset()
    start = env.positions.clone()
    closed = -(near_y(start, env.N, env.R) & ~torch.eye(L, dtype=torch.bool)).sum(-1).float()
    assert torch.equal(rollout(env, move_right_policy), closed)
    assert env.parked.all()


def test_starts_do_not_overlap_and_respect_counts():
    env = Crossing(num_worlds=64, num_agents=(3, 40), seed=0)
    env.reset()
    counts = env.mask.sum(1)
    assert counts.min() >= 3 and counts.max() <= 40 and len(set(counts.tolist())) > 5
    pos = env.positions
    touch = env.world.touching(pos.unsqueeze(2), pos.unsqueeze(1))
    real = env.mask.unsqueeze(1) & env.mask.unsqueeze(2) & ~torch.eye(40, dtype=torch.bool)
    assert not (touch & real).any()
    assert (pos[..., 0][env.mask] < env.start_width).all()
    assert (pos[~env.mask] == 0).all()


def test_each_start_is_uniform_over_the_cells_the_earlier_agents_left_free():
    # the exact law of the second agent: the first uniform over the start area, the second uniform
    # over the cells it does not touch; a chi-square of 20,000 worlds against it
    env = Crossing(num_worlds=1, num_agents=2, grid_size=8, start_width=3, radius=1, seed=5)
    W, N = env.start_width, env.N
    cells = torch.stack(torch.meshgrid(torch.arange(W), torch.arange(N), indexing="ij"), -1).reshape(-1, 2)
    free = ~env.world.touching(cells.view(1, -1, 1, 2), cells.view(1, 1, -1, 2))[0]  # (C, C)
    law = ((free.double() / free.sum(1, keepdim=True)) / len(cells)).sum(0)  # (C,)
    pos, mask = env.sample_starts(20_000)
    assert mask.all()
    seen = torch.bincount(pos[:, 1, 0] * N + pos[:, 1, 1], minlength=len(cells)).double()
    expected = law * 20_000
    chi2 = ((seen - expected) ** 2 / expected).sum().item()
    assert law.max() > 1.1 * law.min()  # the middle column is left free less often than the edges
    assert chi2 < 52, chi2  # 23 degrees of freedom: P(chi2 > 52) < 0.001
    first = pos[:, 0]
    assert not env.world.touching(first.view(-1, 1, 2), pos[:, 1].view(-1, 1, 2)).any()


def test_start_width_low_draws_each_worlds_width_and_keeps_fixed_starts_unchanged():
    env = Crossing(num_worlds=2000, num_agents=(2, 3), start_width_low=4, seed=0)
    env.reset()
    front = env.positions[..., 0].masked_fill(~env.mask, -1).amax(1)  # (B,) furthest start
    assert front.max() == 15 and (front < 4).float().mean() > 0.05  # narrow and full widths both
    # a world of 24 started 8 wide: placed without overlaps, and denser than any at width 16
    dense = Crossing(num_worlds=64, num_agents=24, start_width_low=8, seed=1)
    dense.reset()
    pos = dense.positions
    assert not (
        dense.world.touching(pos.unsqueeze(2), pos.unsqueeze(1)) & ~torch.eye(24, dtype=torch.bool)
    ).any()
    narrow = pos[..., 0].amax(1) < 10
    assert narrow.any()
    for seed in (3, 4):  # None keeps the starts of every earlier seed
        plain = Crossing(num_worlds=64, num_agents=(2, 30), seed=seed)
        none = Crossing(num_worlds=64, num_agents=(2, 30), seed=seed, start_width_low=None)
        plain.reset(), none.reset()
        assert torch.equal(plain.positions, none.positions) and torch.equal(plain.mask, none.mask)
    cfg = preset_config(None, start_width_low=8)  # the training faces get it; evaluation does not
    assert make_task(cfg).start_width_low == 8 and CrossingEnv(**task_kwargs(cfg)).task.start_width_low == 8
    assert "start_width_low" not in task_kwargs(preset_config(None))


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_count_power_weights_counts_by_their_share_of_agent_samples(power):
    low, high, B = 2, 16, 40_000
    counts = Crossing(num_worlds=1, num_agents=(low, high), count_power=power, seed=0).sample_counts(B)
    assert counts.min() >= low and counts.max() <= high
    L = torch.arange(low, high + 1)
    freq = torch.bincount(counts - low, minlength=len(L)).double() / B
    expected = L.double() ** -power / (L.double() ** -power).sum()
    assert torch.allclose(freq, expected, atol=4 * (expected * (1 - expected) / B).sqrt().max())
    share = freq * L / (freq * L).sum()  # agent samples per count: equal for power 1
    if power == 1.0:
        assert share.max() / share.min() < 1.1


def test_count_power_zero_keeps_the_uniform_stream_and_bad_powers_are_refused():
    plain = Crossing(num_worlds=256, num_agents=(2, 30), seed=3)
    zero = Crossing(num_worlds=256, num_agents=(2, 30), seed=3, count_power=0)
    plain.reset(), zero.reset()
    assert torch.equal(plain.mask, zero.mask) and torch.equal(plain.positions, zero.positions)
    with pytest.raises(ValueError, match=r"count_power must be a number in \[0, 8\], got"):
        Crossing(num_agents=(2, 4), count_power=-0.5)
    with pytest.raises(ValueError, match="count_power"):
        Crossing(num_agents=(2, 4), count_power=float("nan"))
    with pytest.raises(TypeError, match=r"count_power must be a number in \[0, 8\], got str"):
        Crossing(num_agents=(2, 4), count_power="2")


def test_count_power_reaches_every_face_of_the_training_task():
    cfg = preset_config(None, count_power=2.0)
    kwargs = task_kwargs(cfg)
    assert make_task(cfg).count_power == 2.0
    assert CrossingEnv(**kwargs).task.count_power == 2.0  # torchrl
    assert CrossingVecEnv(**kwargs).task.count_power == 2.0  # sb3
    one_world = {k: v for k, v in kwargs.items() if k != "num_worlds"}
    assert crossing_v0.parallel_env(**one_world).task.count_power == 2.0  # rllib, PettingZoo


def test_step_costs_and_parked_collisions_still_rewarded():
    env = Crossing(num_worlds=1, num_agents=2, grid_size=16, radius=1, max_steps=20)
    # Agent 0 parks after one step; agent 1 follows in its lane and touches it 2 steps later.
    env.reset(positions=torch.tensor([[[14, 5], [10, 5]]]), mask=torch.ones(1, 2, dtype=torch.bool))
    r = env.step(torch.tensor([[RIGHT, RIGHT]]))
    assert env.parked.tolist() == [[True, False]] and r.tolist() == [[0.0, 0.0]]
    r = env.step(torch.tensor([[LEFT, RIGHT]]))  # parked: LEFT is replaced by STAY, no cost
    assert env.positions[0, 0, 0] == 15 and r.tolist() == [[0.0, 0.0]]
    r = env.step(torch.tensor([[UP, RIGHT]]))  # agent 1 reaches x = 13, 2 cells from the parked agent
    assert r.tolist() == [[-1.0, -1.0]]
    r = env.step(torch.tensor([[STAY, STAY]]))
    assert torch.allclose(r, torch.tensor([[0.0, -0.05]]))
    r = env.step(torch.tensor([[STAY, LEFT]]))
    assert torch.allclose(r, torch.tensor([[0.0, -0.1]]))
    r = env.step(torch.tensor([[STAY, DOWN]]))
    assert torch.allclose(r, torch.tensor([[0.0, -0.05]]))


def test_left_into_wall_costs_like_staying():
    env = Crossing(num_worlds=1, num_agents=1, grid_size=16)
    env.reset(positions=torch.tensor([[[0, 3]]]), mask=torch.ones(1, 1, dtype=torch.bool))
    assert torch.allclose(env.step(torch.tensor([[LEFT]])), torch.tensor([[-0.05]]))


def test_observation_layout_self_first():
    env = Crossing(num_worlds=2, num_agents=(2, 4), seed=1)
    env.reset()
    obs = env.observations()  # (B, L, L, F)
    assert obs.shape == (2, 4, 4, NUM_FEATURES)
    real = env.mask
    assert torch.equal(obs[:, :, 0, 0] > 0, real)  # self token present iff the agent is real
    assert (obs[:, :, 0, 1:3] == 0).all()  # self offset is 0
    assert (obs[~real] == 0).all()  # padded agents see nothing
    assert torch.equal(obs[..., 0].sum(-1)[real], real.sum(1, keepdim=True).expand_as(real)[real].float())


def test_observation_carries_last_displacement():
    env = Crossing(num_worlds=1, num_agents=3, grid_size=16)
    start = torch.tensor([[[0, 3], [5, 8], [2, 15]]])
    env.reset(positions=start, mask=torch.ones(1, 3, dtype=torch.bool))
    assert (env.observations()[..., 8:] == 0).all()  # no move yet
    env.step(torch.tensor([[LEFT, RIGHT, UP]]))  # agent 0 is clipped by the wall; agent 2 wraps in y
    obs = env.observations()
    want = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert torch.equal(obs[0, 0, :, 8:], want)  # agent 0 sees slots 0, 1, 2 in order
    assert torch.equal(obs[0, 1, :, 8:], want[[1, 0, 2]])  # agent 1: self first, then 0, 2
    env.reset()
    assert (env.observations()[..., 8:] == 0).all()


def test_greedy_beats_move_right_which_beats_random():
    env = Crossing(num_worlds=32, num_agents=8, seed=3)
    means = {}
    for name, pol in POLICIES.items():
        env.seed(3)
        env.reset()
        means[name] = rollout(env, pol, torch.Generator().manual_seed(0)).mean().item()
    assert means["greedy"] > means["move_right"] > means["random"]


@pytest.mark.parametrize("num_agents, radius, grid_size", [((2, 64), 1, 64), (24, 2, 48), (40, 1, 32)])
def test_priority_planner_never_collides(num_agents, radius, grid_size):
    env = Crossing(num_worlds=16, num_agents=num_agents, radius=radius, grid_size=grid_size, seed=5)
    env.reset()
    ret = rollout(env, POLICIES["priority"])
    real = env.mask.unsqueeze(1) & env.mask.unsqueeze(2)
    assert not (env.world.collided & real).any()  # the ordering argument in its docstring
    assert (ret <= 0).all() and env.parked.any(1).all()  # it does move, not freeze
    env.seed(5)
    env.reset()
    right = rollout(env, move_right_policy)
    assert (ret * env.mask).sum() > (right * env.mask).sum()


def test_cautious_differs_from_greedy_only_where_nothing_is_safe():
    env = Crossing(num_worlds=16, num_agents=48, seed=2)
    env.reset()
    right = torch.zeros((), dtype=torch.long)
    while not env.done.all():
        greedy, cautious = POLICIES["greedy"](env), POLICIES["cautious"](env)
        differ = greedy != cautious
        assert (greedy[differ] == RIGHT).all() and (cautious[differ] == STAY).all()
        right += differ.sum()
        env.step(cautious)
    assert right > 0  # the crowd does corner agents
    totals = {}
    for name in ("greedy", "cautious"):  # in a crowd, staying beats walking into parked agents
        env.seed(2)
        env.reset()
        totals[name] = rollout(env, POLICIES[name]).sum()
    assert totals["cautious"] > totals["greedy"]


def test_priority_planner_matches_greedy_when_nobody_is_near():
    env = Crossing(num_worlds=4, num_agents=3, grid_size=32, start_width=1, seed=0)
    env.reset(positions=torch.tensor([[[0, 0], [0, 10], [0, 20]]] * 4))
    for _ in range(40):
        act, moving = POLICIES["priority"](env), ~env.parked  # parked agents' actions are ignored
        assert torch.equal(act[moving], POLICIES["greedy"](env)[moving])
        env.step(act)
    assert env.parked.all()


@pytest.mark.parametrize(
    "kwargs, name, error",
    [
        (dict(num_agents=0), "num_agents", ValueError),
        (dict(num_agents=(5, 2)), "num_agents", ValueError),
        (dict(num_agents=2.5), "num_agents", TypeError),  # the type is wrong, as in the PettingZoo env
        (dict(num_worlds=0), "num_worlds", ValueError),
        (dict(num_worlds=True), "num_worlds", TypeError),
        (dict(max_steps=0), "max_steps", ValueError),
        (dict(start_width=100), "start_width", ValueError),
        (dict(grid_size=-3), "grid_size must be an int >= 1, got -3", ValueError),
        (dict(start_width_low=0), "start_width_low", ValueError),
        (dict(start_width_low=17), r"start_width_low must be in \[1, start_width=16\]", ValueError),
        (dict(start_width_low=8.0), "start_width_low", TypeError),
        (dict(contact_cost=-1.0), "contact_cost must be a finite number >= 0", ValueError),
        (dict(contact_cost=float("nan")), "contact_cost", ValueError),
        (dict(contact_cost="2"), "contact_cost must be a finite number >= 0, got str", TypeError),
        (dict(lateral_cost=-0.1), "lateral_cost must be a finite number >= 0, got -0.1", ValueError),
        (dict(lateral_cost=float("inf")), "lateral_cost", ValueError),
        (dict(lateral_cost=None), "lateral_cost", TypeError),
        (
            dict(contact_charge="stayer"),
            r"contact_charge must be one of \('both', 'mover', 'behind', 'yield'\)",
            ValueError,
        ),
    ],
)
def test_bad_arguments_raise(kwargs, name, error):
    with pytest.raises(error, match=name):
        Crossing(**kwargs)


def test_bad_actions_raise():
    env = Crossing(num_worlds=2, num_agents=3)
    env.reset()
    with pytest.raises(ValueError, match="actions"):
        env.step(torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="actions"):
        env.step(torch.full((2, 3), 7))


def _touch_by_hand(env: Crossing) -> torch.Tensor:
    """The "touch" features by a loop over (world, agent, slot, action): the slow, plain reading."""
    B, L, N, R = env.B, env.L, env.N, env.R
    pos, mask, parked = env.positions.tolist(), env.mask.tolist(), env.parked.tolist()
    moves = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]  # STAY, RIGHT, LEFT, UP, DOWN

    def touch(a, b):
        dy = (b[1] - a[1]) % N
        dy = min(dy, N - dy)
        return (b[0] - a[0]) ** 2 + dy**2 <= (2 * R) ** 2

    out = torch.zeros(B, L, L, 10)
    for b in range(B):
        for i in range(L):
            others = [j for j in range(L) if j != i]
            for k, j in enumerate([i, *others]):  # self first, then the others in index order
                if j == i or not (mask[b][i] and mask[b][j]):
                    continue
                (xi, yi), (xj, yj) = pos[b][i], pos[b][j]
                ahead = (xj if parked[b][j] else min(xj + 1, N - 1), yj)
                for a, (mx, my) in enumerate(moves):
                    cell = (min(max(xi + mx, 0), N - 1), (yi + my) % N)
                    out[b, i, k, a] = float(touch(cell, (xj, yj)))
                    out[b, i, k, 5 + a] = float(touch(cell, ahead))
    return out


@pytest.mark.parametrize("radius, grid_size", [(1, 16), (2, 20)])
def test_touch_features_match_a_plain_loop(radius, grid_size):
    env = Crossing(num_worlds=3, num_agents=(3, 6), grid_size=grid_size, radius=radius, seed=radius)
    env.reset()
    gen = torch.Generator().manual_seed(0)
    for _ in range(grid_size + 2):  # random walks: wall clipping, wraps, parked agents, touches
        env.step(POLICIES["random"](env, gen))
        env.step(torch.full((env.B, env.L), RIGHT))
        obs = env.observations("touch")
        assert obs.shape == (3, env.L, env.L, 20)
        assert torch.equal(obs[..., :NUM_FEATURES], env.observations())  # "base" is the prefix
        assert torch.equal(obs[..., NUM_FEATURES:], _touch_by_hand(env))
    assert env.parked.any()


def test_touch_features_carry_what_greedy_tests():
    # Greedy calls an action unsafe when the cell it reaches touches any other agent's cell now or
    # after that agent's next move right: the OR over slots of the two touch features. With its
    # lane plan, that rebuilds greedy's every decision.
    env = Crossing(num_worlds=64, num_agents=(2, 12), seed=5, features="touch")
    env.reset()
    gen = torch.Generator().manual_seed(1)
    for _ in range(60):
        touch = env.observations()[..., NUM_FEATURES:]  # (B, L, L, 10)
        unsafe = (touch[..., :5] + touch[..., 5:]).amax(2) > 0  # (B, L, A)
        lane_open, first, second = _lane_plan(env)
        act = torch.full_like(first, RIGHT)  # nothing safe: greedy's fallback
        for option, ok in (
            (torch.full_like(first, STAY), True),
            (second, True),
            (first, True),
            (torch.full_like(first, RIGHT), lane_open),
        ):  # later options win, as in greedy's preference order
            act = torch.where(~unsafe.gather(-1, option.unsqueeze(-1)).squeeze(-1) & ok, option, act)
        greedy = POLICIES["greedy"](env)
        real = env.mask
        assert torch.equal(act[real], greedy[real])
        noisy = torch.rand(env.B, env.L, generator=gen) < 0.3
        env.step(torch.where(noisy, POLICIES["random"](env, gen), greedy))
    assert env.parked.any()


def test_bad_feature_set_raises():
    with pytest.raises(ValueError, match="features must be one of"):
        Crossing(features="pixels")
    with pytest.raises(ValueError, match="features must be one of"):
        Crossing(num_worlds=1).observations("touches")


def test_time_features_are_base_plus_the_fraction_of_the_episode_left():
    env = Crossing(num_worlds=3, num_agents=(2, 6), max_steps=10, seed=5, features="time")
    env.reset()
    gen = torch.Generator().manual_seed(1)
    for t in range(4):
        obs = env.observations()  # (B, L, L, 11)
        base = env.observations("base")
        assert obs.shape[-1] == env.num_features == 11 and torch.equal(obs[..., :10], base)
        real = base[..., 0] > 0.5  # real slots of real agents' views
        assert torch.allclose(obs[..., 10][real], torch.tensor(1.0 - t / 10))
        assert (obs[..., 10][~real] == 0).all()
        env.step(torch.randint(0, 5, (env.B, env.L), generator=gen))


def shaped_pair(**shaping) -> tuple[Crossing, Crossing]:
    """The task and the same worlds with a training-only reward option, both reset."""
    task = Crossing(num_worlds=8, num_agents=(6, 12), seed=4)
    shaped = Crossing(num_worlds=8, num_agents=(6, 12), seed=4, **shaping)
    task.reset(), shaped.reset()
    return task, shaped


def assert_reaches_every_training_task(name: str, value: float) -> None:
    """``--name value`` reaches the torchrl and SB3 task and the PettingZoo face."""
    cfg = preset_config(None, **{name: value})
    assert getattr(make_task(cfg), name) == value
    assert getattr(CrossingEnv(**task_kwargs(cfg)).task, name) == value
    one_world = {k: v for k, v in task_kwargs(cfg).items() if k != "num_worlds"}
    assert getattr(crossing_v0.parallel_env(**one_world).task, name) == value


def test_contact_cost_scales_only_the_contact_term_and_reaches_training_only():
    gen = torch.Generator().manual_seed(2)
    one, two = shaped_pair(contact_cost=2.0)
    touched = 0
    for _ in range(30):
        a = torch.randint(0, 5, (8, 12), generator=gen)
        before = one.world.collided.sum(-1)  # distinct partners so far, (B, L)
        r1, r2 = one.step(a), two.step(a)
        new = (one.world.collided.sum(-1) - before).float()  # new partners this step
        torch.testing.assert_close(r2, r1 - new)  # the step costs stay, each contact costs 2
        touched += int(new.sum())
    assert touched > 0
    assert_reaches_every_training_task("contact_cost", 2.0)
    assert task_kwargs(preset_config(None))["contact_cost"] == 4.0  # the torchrl recipe's
    assert "contact_cost" not in task_kwargs(preset_config(None, backend="sb3"))  # SB3 keeps the task's


def test_lateral_cost_charges_up_and_down_moves_only_and_reaches_training_only():
    gen = torch.Generator().manual_seed(3)
    task, shaped = shaped_pair(lateral_cost=0.25)
    lateral = 0
    for _ in range(80):  # long enough for agents to park: a parked agent's UP is replaced by STAY
        a = torch.randint(0, 5, (8, 12), generator=gen)
        a[:, ::2] = RIGHT
        moving = ((a == UP) | (a == DOWN)) & task.mask & ~task.parked
        r_task, r_shaped = task.step(a), shaped.step(a)
        torch.testing.assert_close(r_shaped, r_task - 0.25 * moving.float())
        lateral += int(moving.sum())
    assert lateral > 0 and task.parked.any()
    assert_reaches_every_training_task("lateral_cost", 0.05)
    assert "lateral_cost" not in task_kwargs(preset_config(None))  # the task's own 0


def charged_steps(contact_charge: str, seed: int, steps: int = 60):
    """Random moves, a third of the slots standing (as a queue does), on the task and on the same
    worlds with ``contact_charge``; per step: (the task after the step, its rewards, the shaped
    task's, the new contact pairs (B, L_i, L_j), priority keys and positions before the step)."""
    gen = torch.Generator().manual_seed(seed)
    task, shaped = shaped_pair(contact_charge=contact_charge)
    for _ in range(steps):
        a = torch.randint(0, 5, (8, 12), generator=gen)
        a[:, ::3] = STAY
        key, before, seen = task.priority_key(), task.positions.clone(), task.world.collided.clone()
        r_task, r_shaped = task.step(a), shaped.step(a)
        yield task, r_task, r_shaped, task.world.collided & ~seen, key, before


def test_mover_charge_spares_agents_that_did_not_move_and_reaches_training_only():
    spared = charged = 0
    for task, r_task, r_shaped, new, _, before in charged_steps("mover", seed=5):
        new = new.sum(-1).float()  # (B, L) new partners this step
        moved = (task.positions != before).any(-1)
        # a mover's reward is the task's; an agent that did not move gets its contacts back
        torch.testing.assert_close(r_shaped, r_task + new * (~moved).float())
        spared += int((new * (~moved)).sum())
        charged += int((new * moved).sum())
    assert spared > 0 and charged > 0
    assert_reaches_every_training_task("contact_charge", "mover")
    assert "contact_charge" not in task_kwargs(preset_config(None))  # the task's own "both"


def test_behind_charge_spares_the_partner_ahead_and_reaches_training_only():
    spared = charged = 0
    for _, r_task, r_shaped, new, key, _ in charged_steps("behind", seed=6):
        behind = key.unsqueeze(1) > key.unsqueeze(2)  # (B, L_i, L_j): partner j is behind i
        # i gets back the contacts with partners behind it; those with partners ahead it pays
        torch.testing.assert_close(r_shaped, r_task + (new & behind).sum(-1).float())
        spared += int((new & behind).sum())
        charged += int((new & ~behind).sum())
    assert spared > 0 and spared == charged  # each new pair: exactly one side pays
    assert_reaches_every_training_task("contact_charge", "behind")


def test_yield_charge_charges_whoever_broke_the_convention():
    paid = {"behind": 0, "ahead": 0, "spared": 0}
    for task, r_task, r_shaped, new, key, before in charged_steps("yield", seed=7):
        ahead = key.unsqueeze(1) < key.unsqueeze(2)  # (B, L_i, L_j): partner j is ahead of i
        moved = (task.positions != before).any(-1).unsqueeze(-1)  # (B, L, 1)
        onto = task.world.touching(task.positions.unsqueeze(2), before.unsqueeze(1))  # i ends where j stood
        pays = new & torch.where(ahead, moved, onto)
        torch.testing.assert_close(r_shaped, r_task + (new & ~pays).sum(-1).float())
        paid["behind"] += int((pays & ahead).sum())
        paid["ahead"] += int((pays & ~ahead).sum())
        paid["spared"] += int((new & ~pays).sum())
    assert min(paid.values()) > 0, paid  # every case of the rule happened
    assert_reaches_every_training_task("contact_charge", "yield")


def test_priority_key_orders_by_progress_then_y():
    task = Crossing(num_worlds=1, num_agents=3, seed=0)
    task.reset(positions=torch.tensor([[[5, 9], [7, 3], [5, 2]]]), mask=torch.ones(1, 3, dtype=torch.bool))
    assert task.priority_key().argsort(-1).tolist() == [[1, 2, 0]]  # x = 7 first, then y = 2 before y = 9
