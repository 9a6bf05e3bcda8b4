"""RLlib PPO on the PettingZoo env: one policy shared by every agent, 2 local env runners, and a
trained policy that beats uniform random play after a short budget.

Slow-marked: Ray's start-up and a few PPO iterations take about a minute on 2 cores."""

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")
pytest.importorskip("ray.rllib")
from ray.rllib.algorithms.ppo import PPOConfig  # noqa: E402
from ray.rllib.core.columns import Columns  # noqa: E402
from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv  # noqa: E402
from ray.tune.registry import register_env  # noqa: E402

from envs.colliding_agents_v0 import STAY, parallel_env  # noqa: E402

pytestmark = pytest.mark.slow

# A crowded little world: random walkers meet many distinct others, standing still meets few.
KW = dict(num_agents=8, grid_size=12, radius=1, max_cycles=12, flatten=True, pad_agents=True)


def mean_return(choose, episodes: int = 40) -> float:
    """Mean return per agent over fixed seeds; ``choose(obs) -> actions``."""
    env, total = parallel_env(**KW), 0.0
    for ep in range(episodes):
        obs, _ = env.reset(seed=10_000 + ep)
        while env.agents:
            obs, rewards, *_ = env.step(choose(obs))
            total += sum(rewards.values())
    return total / episodes / len(env.possible_agents)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ppo_shared_policy_two_env_runners_beats_random(local_ray):
    def creator(config):
        # Imported here: an env runner is another process, which never ran this module's imports
        # (nor `import envs`, which registers the PettingZoo id).
        from envs.colliding_agents_v0 import parallel_env

        return ParallelPettingZooEnv(parallel_env(**config))

    register_env("hyperagents_colliding", creator)
    config = (
        PPOConfig()
        .environment("hyperagents_colliding", env_config=KW)
        .multi_agent(policies={"shared"}, policy_mapping_fn=lambda agent_id, *args, **kwargs: "shared")
        .env_runners(num_env_runners=2, rollout_fragment_length=96, num_cpus_per_env_runner=0.5)
        .training(train_batch_size_per_learner=384, minibatch_size=256, num_epochs=4, lr=2e-3)
        .debugging(seed=0)
    )
    algo = config.build_algo()
    try:
        assert algo.env_runner_group.num_remote_env_runners() == 2
        for _ in range(6):
            result = algo.train()
        assert result["env_runners"]["num_env_steps_sampled_lifetime"] >= 6 * 384
        module = algo.get_module("shared")
    finally:
        algo.stop()

    gen, rng = torch.Generator().manual_seed(0), np.random.default_rng(0)

    def sampled(obs):
        agents = list(obs)
        with torch.no_grad():
            out = module.forward_inference({Columns.OBS: torch.as_tensor(np.stack([obs[a] for a in agents]))})
        probs = torch.softmax(out[Columns.ACTION_DIST_INPUTS], -1)
        return dict(zip(agents, torch.multinomial(probs, 1, generator=gen).squeeze(1).tolist(), strict=True))

    trained = mean_return(sampled)
    uniform = mean_return(lambda obs: {a: int(rng.integers(5)) for a in obs})
    still = mean_return(lambda obs: dict.fromkeys(obs, STAY))  # for the message: the easy optimum
    assert trained > uniform + 0.15, f"trained {trained:.2f}, random {uniform:.2f}, all-stay {still:.2f}"
