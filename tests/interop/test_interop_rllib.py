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
        for _ in range(10):  # enough that the margin over random holds with CI's other workers running
            result = algo.train()
        assert result["env_runners"]["num_env_steps_sampled_lifetime"] >= 10 * 384
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


def test_attention_rl_module_reads_any_agent_count():
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from training.marl_rllib import RLlibConfig, TokenRLModule, env_config

    cfg = RLlibConfig(family="hfa", num_agents=(2, 5))
    env = parallel_env(**env_config(cfg))
    spec = RLModuleSpec(
        module_class=TokenRLModule,
        observation_space=env.observation_space("agent_0"),
        action_space=env.action_space("agent_0"),
        model_config=dict(num_features=env.num_features, family="hfa", width=16, heads=2),
    )
    module = spec.build()
    for L in (5, 11):  # trained at L = 5, read at L = 11: the token count comes from the batch
        obs = torch.zeros(3, L * env.num_features)
        obs[:, 0] = 1.0  # the self token is present
        out = module.forward_inference({Columns.OBS: obs})
        assert out[Columns.ACTION_DIST_INPUTS].shape == (3, 5)
        assert module.compute_values({Columns.OBS: obs}).shape == (3,)


def test_marl_rllib_main_trains_and_checkpoints(local_ray, tmp_path):
    from training.marl_rllib import RLlibConfig, main

    cfg = RLlibConfig(
        family="sa",
        num_agents=(2, 4),
        grid_size=12,
        max_cycles=8,
        iterations=2,
        num_env_runners=2,
        train_batch_size=64,
        minibatch_size=64,
        num_epochs=1,
        width=16,
        checkpoint_dir=str(tmp_path / "ckpt"),
    )
    metrics = main(cfg)
    assert len(metrics["episode_return_mean"]) == 2 and metrics["env_steps"] >= 128
    assert np.isfinite(metrics["eval_return_per_agent"])
    assert (tmp_path / "ckpt" / "rllib_checkpoint.json").exists()
    with pytest.raises(ValueError, match="minibatch_size"):
        main(RLlibConfig(train_batch_size=32, minibatch_size=64))
    with pytest.raises(ValueError, match="learning_rate"):
        main(RLlibConfig(learning_rate=0.0))
    with pytest.raises(ValueError, match="num_cpus must be an int >= 1, got 0"):
        main(RLlibConfig(num_cpus=0))


@pytest.mark.parametrize("num_agents", [3, (2, 5)])
def test_crossing_env_passes_rllib_checks_at_any_count(num_agents):
    """The crossing task's RLlib env (train --backend rllib) has spaces for every possible agent, so
    RLlib's checks and an episode with fewer agents than possible pass."""
    from ray.rllib.env.env_context import EnvContext
    from ray.rllib.utils.pre_checks.env import check_multiagent_environments

    from training.marl_rllib import CrossingMultiAgentEnv

    kw = dict(num_agents=num_agents, grid_size=16, max_steps=6, start_width=4)
    env = CrossingMultiAgentEnv(EnvContext(kw, worker_index=1))
    check_multiagent_environments(env)
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        assert set(obs) == set(env.agents) <= set(env.observation_spaces)
        done = False
        while not done:
            obs, rewards, terminated, truncated, _ = env.step(dict.fromkeys(env.agents, 1))
            done = truncated["__all__"]
            assert not terminated["__all__"] and set(rewards) <= set(env.possible_agents)


def test_env_runners_get_distinct_starts():
    """RLlib seeds sub-env i of runner w with seed + w + i: runner 1's second env and runner 2's
    first get the same seed, and must still play different starts."""
    from ray.rllib.env.env_context import EnvContext

    from training.marl_rllib import CrossingMultiAgentEnv

    kw = dict(num_agents=4, grid_size=16, max_steps=6, start_width=4)
    starts = []
    for runner in (1, 2):
        env = CrossingMultiAgentEnv(EnvContext(kw, worker_index=runner))
        env.reset(seed=2)
        starts.append(env.env.task.positions.clone())
    assert not torch.equal(*starts)


def test_ray_classes_pickle_by_name_and_importing_needs_no_ray():
    """Env runners unpickle the RLModule spec by name; importing training.marl_rllib (which every
    `hyperagents` command does) must not import Ray."""
    import subprocess
    import sys

    import cloudpickle

    from training import marl_rllib

    assert len(cloudpickle.dumps(marl_rllib.TokenRLModule)) < 200  # a reference, not the class body
    code = "import sys, training.cli, training.marl_rllib; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
