"""Tianshou's collector over the AEC face of the env, one random policy per agent."""

import pytest

pytest.importorskip("tianshou")
from tianshou.algorithm.multiagent.marl import MultiAgentPolicy  # noqa: E402
from tianshou.algorithm.random import MARLRandomDiscreteMaskedOffPolicyAlgorithm  # noqa: E402
from tianshou.data import Collector, VectorReplayBuffer  # noqa: E402
from tianshou.env import DummyVectorEnv, PettingZooEnv  # noqa: E402

from envs.colliding_agents_v0 import env as aec_env  # noqa: E402


@pytest.mark.parametrize(("num_agents", "pad"), [(3, False), ((2, 5), True)], ids=["fixed", "range"])
def test_collector_runs_whole_episodes(num_agents, pad):
    cycles, high = 6, 5 if pad else 3

    def make():
        return PettingZooEnv(
            aec_env(
                num_agents=num_agents,
                grid_size=20,
                radius=1,
                max_cycles=cycles,
                pad_agents=pad,
                scenario="predator_prey",
            )
        )

    probe = make()
    assert probe.agents == [f"agent_{i}" for i in range(high)]
    policy = MultiAgentPolicy(
        {a: MARLRandomDiscreteMaskedOffPolicyAlgorithm.Policy(probe.action_space) for a in probe.agents}
    )
    collector = Collector(policy, DummyVectorEnv([make, make]), VectorReplayBuffer(2000, 2))
    stats = collector.collect(n_episode=4, reset_before_collect=True)
    # Every possible agent acts once per cycle (padded ones too): whole episodes of high * cycles turns.
    assert stats.n_collected_episodes == 4 and stats.n_collected_steps == 4 * high * cycles
    assert stats.returns.shape == (4, high)
