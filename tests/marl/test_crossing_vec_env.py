"""The SB3 VecEnv: seeding through PPO(seed=...), truncation info, padded slots, bad input."""

import numpy as np
import pytest
from stable_baselines3 import PPO

from envs.crossing import NUM_FEATURES as F
from envs.vec import CrossingVecEnv
from policies.actor_critic import AttentionExtractor

SMALL = dict(grid_size=16, radius=1, max_steps=12, start_width=4)


def tiny_ppo(seed):
    venv = CrossingVecEnv(num_worlds=4, num_agents=(2, 3), **SMALL)
    kwargs = dict(
        features_extractor_class=AttentionExtractor,
        features_extractor_kwargs=dict(family="sa", width=8, blocks=1),
        net_arch=[8],
    )
    return PPO(
        "MlpPolicy",
        venv,
        n_steps=12,
        batch_size=48,
        n_epochs=1,
        seed=seed,
        policy_kwargs=kwargs,
        device="cpu",
    )


def test_ppo_seed_runs_and_is_reproducible():
    returns = []
    for _ in range(2):
        model = tiny_ppo(seed=0).learn(12 * 12 * 3)
        returns.append([ep["r"] for ep in model.ep_info_buffer])
        params = np.concatenate([p.detach().numpy().ravel() for p in model.policy.parameters()])
        returns[-1].append(float(params.sum()))
    assert len(returns[0]) > 3 and returns[0] == returns[1]


def test_truncation_reaches_sb3_with_terminal_observation():
    venv = CrossingVecEnv(num_worlds=3, num_agents=(1, 4), seed=0, **SMALL)
    obs = venv.reset()
    assert obs.shape == (12, 4 * F)
    for t in range(SMALL["max_steps"]):
        obs, reward, dones, infos = venv.step(np.zeros(venv.num_envs, dtype=np.int64))
        if t < SMALL["max_steps"] - 1:
            assert not dones.any() and all("TimeLimit.truncated" not in i for i in infos)
    assert dones.all()
    for info in infos:
        assert info["TimeLimit.truncated"] is True
        assert info["terminal_observation"].shape == (4 * F,)
    real = venv.task.mask.reshape(-1).numpy()  # after auto-reset: the new episode's mask
    assert obs.shape == (12, 4 * F) and ((obs.reshape(12, 4, F)[:, 0, 0] > 0) == real).all()


def test_padded_slots_get_zero_reward_and_obs():
    venv = CrossingVecEnv(num_worlds=8, num_agents=(1, 4), seed=1, **SMALL)
    obs = venv.reset()
    pad = ~venv.task.mask.reshape(-1).numpy()
    assert pad.any() and (obs[pad] == 0).all()
    _, reward, _, _ = venv.step(np.full(venv.num_envs, 3))
    assert (reward[pad] == 0).all()


def test_seed_changes_starts_and_repeats():
    venv = CrossingVecEnv(num_worlds=2, num_agents=3, **SMALL)
    venv.seed(5)
    a = venv.reset()
    venv.seed(5)
    assert np.array_equal(a, venv.reset())
    venv.seed(6)
    assert not np.array_equal(a, venv.reset())


def test_bad_actions_raise():
    venv = CrossingVecEnv(num_worlds=2, num_agents=3, **SMALL)
    venv.reset()
    with pytest.raises(ValueError, match="actions"):
        venv.step(np.zeros(5, dtype=np.int64))


def test_truncation_info_seen_inside_ppo_rollouts():
    from stable_baselines3.common.callbacks import BaseCallback

    class Record(BaseCallback):
        def __init__(self):
            super().__init__()
            self.ends = []

        def _on_step(self):
            dones, infos = self.locals["dones"], self.locals["infos"]
            self.ends += [infos[k] for k in np.flatnonzero(dones)]
            return True

    model, cb = tiny_ppo(seed=1), Record()
    model.learn(12 * 12 * 2, callback=cb)
    assert cb.ends and all(
        i["TimeLimit.truncated"] and i["terminal_observation"].shape == (3 * F,) for i in cb.ends
    )
