"""SuperSuit vector envs + Stable-Baselines3 PPO on the PettingZoo env: one shared policy, every
agent a vector-env slot. A range of agent counts needs ``pad_agents=True`` (SuperSuit requires a
fixed population, even with ``black_death``)."""

import numpy as np
import pytest
import torch

ss = pytest.importorskip("supersuit")
sb3 = pytest.importorskip("stable_baselines3")

from envs.colliding_agents_v0 import parallel_env  # noqa: E402


def vec_env(num_agents, copies: int = 2, **kwargs):
    """The SuperSuit recipe from PettingZoo's SB3 tutorial, made seedable."""
    pz = parallel_env(num_agents=num_agents, grid_size=30, radius=1, max_cycles=16, **kwargs)
    venv = ss.pettingzoo_env_to_vec_env_v1(pz)
    venv = ss.concat_vec_envs_v1(venv, copies, num_cpus=0, base_class="stable_baselines3")
    inner = venv.venv

    # SuperSuit's ConcatVecEnv has no seed(), which PPO(seed=...) calls; its reset(seed) seeds every
    # copy (seed + i) and every later reset continues from those generators.
    def seed(seed=None):
        inner.reset(seed=seed)
        return [seed] * venv.num_envs

    venv.seed = seed
    return venv


def train(venv, seed: int, steps: int = 128) -> torch.Tensor:
    model = sb3.PPO("MlpPolicy", venv, seed=seed, n_steps=16, batch_size=64, n_epochs=1, device="cpu")
    model.learn(steps)
    return torch.cat([p.detach().flatten() for p in model.policy.parameters()])


def test_ppo_at_a_fixed_count_is_seeded():
    venv = vec_env(4)
    assert venv.num_envs == 2 * 4 and venv.observation_space.shape == (4, 5)
    a, b, c = train(venv, 0), train(vec_env(4), 0), train(vec_env(4), 1)
    assert torch.equal(a, b)  # same seed, same weights after training
    assert not torch.equal(a, c)


def test_ppo_at_a_range_of_counts_with_pad_agents():
    venv = vec_env((2, 6), pad_agents=True, flatten=True, scenario="predator_prey")
    assert venv.num_envs == 2 * 6 and venv.observation_space.shape == (6 * 9,)
    venv.seed(0)
    venv.reset()
    counts = set()
    for _ in range(40):  # a few episodes: the sampled count changes at each reset
        obs, rewards, dones, infos = venv.step(np.zeros(venv.num_envs, dtype=np.int64))
        active = np.array([info["active"] for info in infos]).reshape(2, 6)
        counts.update(active.sum(1).tolist())
        assert not obs[~active.reshape(-1)].any() and not rewards[~active.reshape(-1)].any()
    assert len(counts) > 1 and counts <= set(range(2, 7))
    a, b = train(venv, 0), train(vec_env((2, 6), pad_agents=True, flatten=True, scenario="predator_prey"), 0)
    assert torch.equal(a, b)
