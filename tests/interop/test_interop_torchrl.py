"""TorchRL's ``PettingZooWrapper`` over the PettingZoo env: specs checked by ``check_env_specs`` in
every scenario, at a fixed agent count and at a range (``pad_agents=True``)."""

import warnings

import pytest
import torch

pytest.importorskip("torchrl")
from torchrl.envs.libs.pettingzoo import PettingZooWrapper  # noqa: E402
from torchrl.envs.utils import check_env_specs  # noqa: E402

from envs.colliding_agents_v0 import parallel_env  # noqa: E402

SCENARIOS = {"pairwise": 0, "predator_prey": 2, "alliances": 1}  # label columns


def wrap(**kwargs) -> PettingZooWrapper:
    pz = parallel_env(grid_size=30, radius=1, max_cycles=8, **kwargs)
    with warnings.catch_warnings():  # "tested with PettingZoo 1.24.3": we test it here, with ours
        warnings.simplefilter("ignore", UserWarning)
        return PettingZooWrapper(env=pz, return_state=True, seed=0)


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("num_agents", [4, (2, 6)], ids=str)
def test_wrapper_specs_and_rollout(scenario, num_agents):
    ranged = isinstance(num_agents, tuple)
    env = wrap(num_agents=num_agents, scenario=scenario, pad_agents=ranged)
    check_env_specs(env, seed=0)
    high = 6 if ranged else 4
    assert list(env.group_map) == ["agent"] and len(env.group_map["agent"]) == high
    td = env.rollout(24, break_when_any_done=False)  # 3 episodes of 8 steps: resets in between
    F = 5 + {0: 0, 1: 3, 2: 4}[SCENARIOS[scenario]]
    assert td["agent", "observation"].shape == (24, high, high, F)
    assert td["next", "done"].sum() == 3
    info = td["agent", "info"]
    assert info["position"].shape == (24, high, 2)
    if SCENARIOS[scenario]:
        assert info["labels"].shape == (24, high, SCENARIOS[scenario])
    if ranged:
        active = info["active"].bool()
        # Padded slots see nothing and earn nothing; the first slots are the live ones.
        assert not td["agent", "observation"][~active].any()
        assert not td["next", "agent", "reward"][~active].any()
        assert (active.sum(-1) >= 2).all() and torch.equal(active, active.cummin(-1).values)


def test_range_of_counts_is_sampled_across_resets():
    env = wrap(num_agents=(2, 6), pad_agents=True)
    counts = {int(env.reset()["agent", "info", "active"].sum()) for _ in range(20)}
    assert len(counts) > 1 and counts <= set(range(2, 7))
