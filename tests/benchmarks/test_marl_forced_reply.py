"""benchmarks/marl_forced_reply.py: agents forced to one move are split off and costed exactly."""

import pytest

from envs.crossing import POLICIES, Crossing


def test_stayers_pay_every_step_and_their_contacts(load_script):
    sr = load_script("marl_forced_reply")
    env = Crossing(num_worlds=16, num_agents=8, grid_size=16, max_steps=24, start_width=4)
    row = sr.forced_reply(env, POLICIES["move_right"], 3, share=0.5, from_step=0)
    stay, policy = row["forced"], row["policy"]
    assert stay["agents"] + policy["agents"] == int(env.mask.sum())  # at step 0 nobody is parked
    assert stay["agents"] > 0 and policy["agents"] > 0
    # a stayer never moves right: 0.05 every step, plus 1 per new partner (the task's reward)
    assert stay["cost"] == pytest.approx(0.05 * env.T + stay["contacts"], abs=1e-5)
    assert stay["contacts"] > 0  # the agents behind them in their lanes run into them
    assert policy["cost"] == pytest.approx(policy["contacts"], abs=1e-5)  # movers pay contacts only


def test_a_step_after_the_episode_is_refused(load_script):
    sr = load_script("marl_forced_reply")
    env = Crossing(num_worlds=2, num_agents=4, grid_size=16, max_steps=8, start_width=4)
    with pytest.raises(ValueError, match=r"from_step must be in \[0, max_steps=8\), got 8"):
        sr.forced_reply(env, POLICIES["move_right"], 0, share=0.5, from_step=8)


def test_sliders_pay_every_step_too(load_script):
    sr = load_script("marl_forced_reply")
    env = Crossing(num_worlds=16, num_agents=8, grid_size=16, max_steps=24, start_width=4)
    forced = sr.forced_reply(
        env, POLICIES["move_right"], 3, share=0.5, from_step=0, action=sr.ACTIONS["down"]
    )
    slide = forced["forced"]
    assert slide["cost"] == pytest.approx(0.05 * env.T + slide["contacts"], abs=1e-5)
