"""PettingZoo's own compliance tests, at several agent counts (also ones never used in training)."""

import functools
import types

import pettingzoo
import pytest
from pettingzoo.test import (
    api_test,
    max_cycles_test,
    parallel_api_test,
    parallel_seed_test,
    render_test,
)

import envs
from envs import colliding_agents_v0 as mod

SCENARIOS = ["pairwise", "predator_prey", "alliances"]
COUNTS = [1, 2, 5, 20, (1, 6), (3, 12)]


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("num_agents", COUNTS, ids=str)
def test_parallel_and_aec_api(num_agents, scenario):
    kw = dict(num_agents=num_agents, scenario=scenario, grid_size=60, radius=2, max_cycles=40)
    parallel_api_test(mod.parallel_env(**kw), num_cycles=50)
    api_test(mod.env(**kw), num_cycles=50)


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("num_agents", COUNTS, ids=str)
def test_seed(num_agents, scenario):
    parallel_seed_test(
        functools.partial(
            mod.parallel_env, num_agents=num_agents, scenario=scenario, grid_size=60, radius=2, max_cycles=30
        )
    )


@pytest.mark.parametrize("scenario", SCENARIOS)
# PettingZoo's max_cycles_test takes the median over possible_agents, so a range must keep most of
# them alive: (4, 7) always has >= 4 of 7 agents.
@pytest.mark.parametrize("num_agents", [1, 2, 5, 20, (4, 7)], ids=str)
def test_max_cycles(num_agents, scenario):
    kw = dict(num_agents=num_agents, scenario=scenario, grid_size=40, radius=1)
    max_cycles_test(
        types.SimpleNamespace(
            parallel_env=functools.partial(mod.parallel_env, **kw), env=functools.partial(mod.env, **kw)
        )
    )


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("num_agents", [1, 2, 5, 20, (2, 7)], ids=str)
def test_render(num_agents, scenario):
    render_test(
        functools.partial(
            mod.env, num_agents=num_agents, scenario=scenario, grid_size=40, radius=1, max_cycles=8
        )
    )


@pytest.mark.parametrize("kind", ["parallel", "aec"])
def test_registered_in_both_registries(kind):
    e = pettingzoo.make(kind, envs.ENV_ID, num_agents=3, grid_size=30, radius=1)
    e.reset(seed=0)
    assert e.possible_agents == ["agent_0", "agent_1", "agent_2"]
    assert envs.ENV_ID in (pettingzoo.parallel_registry if kind == "parallel" else pettingzoo.aec_registry)


def test_exported_action_constants():
    assert (mod.STAY, mod.RIGHT, mod.LEFT, mod.UP, mod.DOWN) == (0, 1, 2, 3, 4)
    assert mod.MOVE_RIGHT == mod.RIGHT == envs.MOVE_RIGHT


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("flatten", [False, True])
def test_padded_and_flattened_modes_pass_every_api_test(scenario, flatten):
    # With pad_agents every possible agent lives the whole episode, so max_cycles_test holds at any
    # range, also one where most slots are padding.
    kw = dict(num_agents=(1, 6), scenario=scenario, grid_size=40, radius=1, pad_agents=True, flatten=flatten)
    parallel_api_test(mod.parallel_env(**kw, max_cycles=30), num_cycles=40)
    api_test(mod.env(**kw, max_cycles=30), num_cycles=40)
    parallel_seed_test(functools.partial(mod.parallel_env, **kw, max_cycles=20))
    max_cycles_test(
        types.SimpleNamespace(
            parallel_env=functools.partial(mod.parallel_env, **kw), env=functools.partial(mod.env, **kw)
        )
    )
    render_test(functools.partial(mod.env, **kw, max_cycles=8))
