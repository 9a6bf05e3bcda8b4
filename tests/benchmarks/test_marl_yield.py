"""benchmarks/marl_yield.py: the yield-to-the-front convention never collides with the whole view."""

import pytest
import torch

from envs.crossing import Crossing


def test_yielding_to_the_front_never_collides_in_dense_crowds(load_script):
    my = load_script("marl_yield")
    env = Crossing(num_worlds=16, num_agents=(20, 40), grid_size=32, max_steps=48, start_width=12, seed=1)
    env.reset()
    moved = 0
    for _ in range(env.T):
        act = my.yield_policy(env)
        before = env.positions.clone()
        env.step(act)
        moved += int((env.positions != before).any(-1).sum())
    assert moved > 0 and env.parked.any()
    assert not bool(env.world.collided.any())  # no pair ever touched


def test_a_view_of_every_other_agent_is_the_whole_view_and_one_is_not(load_script):
    my = load_script("marl_yield")
    env = Crossing(num_worlds=8, num_agents=12, seed=2)
    env.reset()
    narrowed = 0
    for _ in range(64):  # into the queue at the wall, where the view matters
        whole = my.yield_policy(env)
        assert torch.equal(my.yield_policy(env, neighbours=11), whole)
        narrowed += int((my.yield_policy(env, neighbours=1) != whole).sum())
        env.step(whole)
    assert narrowed > 0  # one neighbour in view: some agents move where the whole view waits


def test_bad_arguments_exit_2(load_script, capsys):
    my = load_script("marl_yield")
    with pytest.raises(SystemExit) as err:
        my.main(["--episodes", "0"])
    assert err.value.code == 2
    assert "--episodes must be >= 1" in capsys.readouterr().err
