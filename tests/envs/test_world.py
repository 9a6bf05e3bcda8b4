"""The batched core: moves, collision bookkeeping, neighbour grid, masking, equivariance, errors."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.scenarios import rollout_returns
from envs.world import DOWN, LEFT, RIGHT, STAY, UP, World


def test_moves_clip_at_walls_and_wrap_in_y():
    w = World(1, 5, grid_size=10, radius=0)
    w.reset(torch.tensor([[[0, 0], [9, 9], [4, 0], [4, 9], [5, 5]]]))
    w.move(torch.tensor([[LEFT, RIGHT, DOWN, UP, STAY]]))
    assert w.positions[0].tolist() == [[0, 0], [9, 9], [4, 9], [4, 0], [5, 5]]


def test_cells_after_is_where_move_would_go_and_moves_nothing():
    w = World(1, 5, grid_size=10, radius=0)
    start = torch.tensor([[[0, 0], [9, 9], [4, 0], [4, 9], [5, 5]]])
    w.reset(start)
    actions = torch.tensor([[LEFT, RIGHT, DOWN, UP, STAY]])
    every = torch.arange(5).expand(1, 5, 5)
    planned, each = w.cells_after(actions), w.cells_after(every)  # (1, 5, 2), (1, 5, 5, 2)
    assert torch.equal(w.positions, start)
    assert torch.equal(each.gather(2, actions[..., None, None].expand(-1, -1, 1, 2))[:, :, 0], planned)
    w.move(actions)
    assert torch.equal(w.positions, planned)
    with pytest.raises(ValueError, match="actions must have shape"):
        w.cells_after(torch.zeros(2, 5, dtype=torch.long))


def test_each_distinct_partner_counts_once():
    w = World(1, 3, grid_size=20, radius=1)
    w.reset(torch.tensor([[[5, 5], [5, 6], [15, 15]]]))
    first = w.step(torch.tensor([[STAY, STAY, STAY]])).count()
    again = w.step(torch.tensor([[STAY, STAY, STAY]])).count()
    assert first.tolist() == [[1, 1, 0]] and again.tolist() == [[0, 0, 0]]
    assert w.collided[0].tolist() == [[False, True, False], [True, False, False], [False, False, False]]


def test_padded_agents_never_collide_or_move():
    w = World(1, 3, grid_size=20, radius=2)
    w.reset(torch.tensor([[[5, 5], [5, 5], [5, 6]]]), mask=torch.tensor([[True, False, True]]))
    c = w.step(torch.tensor([[STAY, RIGHT, STAY]]))
    assert c.count().tolist() == [[1, 0, 1]] and w.positions[0, 1].tolist() == [5, 5]


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n_cells=st.integers(3, 12),
    radius=st.integers(0, 4),
    num_agents=st.integers(1, 60),
    worlds=st.integers(1, 3),
)
def test_neighbour_grid_equals_dense(seed, n_cells, radius, num_agents, worlds):
    N = max(4 * radius + 1, n_cells * max(2 * radius, 1) + seed % 3)  # uneven last cell too
    gen = torch.Generator().manual_seed(seed)
    pos = torch.randint(0, N, (worlds, num_agents, 2), generator=gen)
    mask = torch.rand(worlds, num_agents, generator=gen) > 0.2
    dense, grid = (World(worlds, num_agents, N, radius, neighbour_grid=g) for g in (False, True))
    assert grid.use_grid
    for w in (dense, grid):
        w.reset(pos, mask)
    for _ in range(6):
        acts = torch.randint(0, 5, (worlds, num_agents), generator=gen)
        assert torch.equal(dense.step(acts).count(), grid.step(acts).count())
        assert torch.equal(dense.collided, grid.collided)


def test_grid_is_chosen_for_many_agents_and_matches_closed_form():
    gen = torch.Generator().manual_seed(1)
    pos = torch.randint(0, 120, (1, 1024, 2), generator=gen)
    assert World(1, 1024, grid_size=120, radius=2).use_grid
    got = rollout_returns("pairwise", pos, grid_size=120, radius=2)
    y = pos[0, :, 1]
    d = (y[:, None] - y[None, :]).abs()
    want = -((torch.minimum(d, 120 - d) <= 4).sum(-1) - 1)
    assert torch.equal(got[0].long(), want)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scenario=st.sampled_from(["pairwise", "predator_prey", "alliances"]))
def test_returns_are_permutation_equivariant(seed, scenario):
    from envs.scenarios import make_scenario

    gen = torch.Generator().manual_seed(seed)
    sc = make_scenario(scenario)
    pos = torch.randint(0, 30, (2, 8, 2), generator=gen)
    labels = sc.sample_labels(gen, 2, 8)
    perm = torch.randperm(8, generator=gen)
    a = rollout_returns(sc, pos, labels, grid_size=30, radius=2)
    b = rollout_returns(sc, pos[:, perm], labels[:, perm], grid_size=30, radius=2)
    assert torch.equal(a[:, perm], b)


def test_reset_of_selected_worlds_leaves_others_running():
    w = World(2, 2, grid_size=20, radius=1)
    w.reset(torch.tensor([[[1, 1], [1, 2]], [[3, 3], [3, 4]]]))
    w.step(torch.zeros(2, 2, dtype=torch.long))
    w.reset(torch.tensor([[[9, 9], [15, 15]]]), worlds=torch.tensor([1]))
    assert w.collided[0].any() and not w.collided[1].any() and w.steps.tolist() == [1, 0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(num_agents=0), "num_agents must be >= 1"),
        (dict(radius=-1), "radius must be >= 0"),
        (dict(grid_size=20, radius=5), "4\\*radius\\+1 <= grid_size"),
        (dict(num_agents=2.5), "num_agents must be an int"),
        (dict(num_worlds=0), "num_worlds"),
    ],
)
def test_bad_world_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        World(**kwargs)


def test_bad_actions_and_positions():
    w = World(1, 2, grid_size=10, radius=0)
    with pytest.raises(ValueError, match="positions must lie in"):
        w.reset(torch.tensor([[[0, 0], [0, 10]]]))
    with pytest.raises(TypeError, match="integer"):
        w.reset(torch.zeros(1, 2, 2))
    w.reset(torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="actions must lie in"):
        w.step(torch.tensor([[0, 5]]))
    with pytest.raises(ValueError, match="actions must have shape"):
        w.step(torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="actions must be integers"):
        w.step(torch.tensor([[0.0, 1.0]]))


def test_nearest_valid_world_works():
    w = World(1, 1, grid_size=9, radius=2)  # 4R+1 = N, one agent
    w.reset(torch.zeros(1, 1, 2, dtype=torch.long))
    assert w.step(torch.tensor([[RIGHT]])).count().tolist() == [[0]]
    np.testing.assert_array_equal(
        rollout_returns("pairwise", torch.tensor([[[0, 0], [0, 4]]]), grid_size=9, radius=2).numpy(),
        [[-1, -1]],
    )


def test_collision_method_follows_the_device_crossover_and_the_override():
    from envs.world import GRID_MIN_AGENTS_BY_DEVICE, collision_method

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    between = GRID_MIN_AGENTS_BY_DEVICE["cpu"]  # grid on the CPU, still dense on a GPU
    assert GRID_MIN_AGENTS_BY_DEVICE["cpu"] < GRID_MIN_AGENTS_BY_DEVICE["cuda"]
    assert collision_method(between, cpu, 10, None) == "grid"
    assert collision_method(between, cuda, 10, None) == "dense"
    assert collision_method(GRID_MIN_AGENTS_BY_DEVICE["cuda"], cuda, 10, None) == "grid"
    assert collision_method(between - 1, cpu, 10, None) == "dense"
    assert collision_method(8, cuda, 10, True) == "grid"  # an explicit choice wins
    assert collision_method(10**6, cpu, 10, False) == "dense"
    assert collision_method(10**6, cpu, 2, True) == "dense"  # too few cells for a 3x3 neighbourhood
    world = World(num_worlds=1, num_agents=between, grid_size=360, radius=5)
    assert world.collision_method == "grid" and world.use_grid
