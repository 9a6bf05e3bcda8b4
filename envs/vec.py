"""SB3 ``VecEnv`` over the batched crossing task: one slot per agent, parameter sharing.

``num_envs = B * L_max``: slot ``b * L_max + i`` is agent i of world b. Every slot's observation
is that agent's token set (L_max, F) flattened to (L_max * F,), so one shared SB3 policy acts
for every agent; the features extractor in ``policies/actor_critic.py`` reshapes it back.

What SB3 gets right here and not through SuperSuit (reference/PEERS.md 1.3):

- Seeding: :meth:`seed` re-seeds the task's ``torch.Generator`` and takes effect at the next
  reset, so ``PPO(..., seed=s)`` (which calls ``env.seed(s)`` then ``env.reset()``) works and two
  runs with one seed are identical.
- Truncation: at the time limit every slot of the world reports ``done=True`` with
  ``infos[k]["TimeLimit.truncated"] = True`` and ``infos[k]["terminal_observation"]`` (its last
  observation), and the world auto-resets; PPO then bootstraps from the terminal value.
- Episode statistics: real agents' slots carry ``infos[k]["episode"] = {"r", "l"}`` at the end,
  so SB3's ``ep_rew_mean`` averages real agents only.

Padded slots (worlds with fewer than L_max agents) get a zero observation and reward 0. SB3's
PPO has no per-sample mask, so they still enter the rollout buffer; since their observation is
constant (all zeros, ``present = 0`` in the self token), the value net learns V(0) = 0 quickly,
their GAE advantages go to 0, and they add (almost) nothing to the policy gradient. Train at a
fixed count (``num_agents=L``) to have no padded slots at all.

Variable counts: ``num_agents=(low, high)`` samples each world's count at every reset.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv

from envs.crossing import NUM_ACTIONS, Crossing


class CrossingVecEnv(VecEnv):
    """SB3 vectorised view of :class:`~envs.crossing.Crossing` (keyword arguments as there).

    Args:
        num_worlds: B worlds; ``num_envs`` is B * L_max.
        num_agents: int or (low, high); L_max = high.
        **task_kwargs: grid_size, radius, max_steps, start_width, seed, device, features.
    """

    def __init__(self, num_worlds: int = 64, num_agents=8, **task_kwargs):
        self.render_mode = None  # SB3 warns when a VecEnv has no render_mode
        self.task = Crossing(num_worlds=num_worlds, num_agents=num_agents, **task_kwargs)
        B, L = self.task.B, self.task.L
        obs_space = spaces.Box(-1.0, 1.0, (L * self.task.num_features,), np.float32)
        super().__init__(B * L, obs_space, spaces.Discrete(NUM_ACTIONS))
        self._actions: np.ndarray | None = None
        self._returns = torch.zeros(B, L)
        self._needs_reset = True

    # ------------------------------------------------------------------ VecEnv API
    def seed(self, seed: int | None = None) -> Sequence[None | int]:
        """Seed the task generator; applied now (the next :meth:`reset` draws from it)."""
        self.task.seed(seed)
        self._needs_reset = True
        return [None if seed is None else seed + k for k in range(self.num_envs)]

    def reset(self) -> np.ndarray:
        self.task.reset()
        self._returns.zero_()
        self._needs_reset = False
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return self._obs()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self):
        if self._actions is None:
            raise RuntimeError("step_wait called before step_async")
        t = self.task
        if self._actions.shape != (self.num_envs,):
            raise ValueError(
                f"actions must have shape (num_envs,) = ({self.num_envs},), got {self._actions.shape}"
            )
        actions = torch.as_tensor(self._actions, dtype=torch.long).reshape(t.B, t.L)
        reward = t.step(actions)  # (B, L)
        self._returns += reward
        obs = self._obs()
        done_w = t.done  # (B,)
        dones = done_w.repeat_interleave(t.L).numpy()
        infos: list[dict] = [{} for _ in range(self.num_envs)]
        if done_w.any():
            worlds = done_w.nonzero().squeeze(1)
            real = t.mask.reshape(-1).numpy()
            returns = self._returns.reshape(-1).numpy()
            for k in np.flatnonzero(dones):  # only at episode ends: one small dict per slot
                infos[k] = {"TimeLimit.truncated": True, "terminal_observation": obs[k]}
                if real[k]:
                    infos[k]["episode"] = {"r": float(returns[k]), "l": int(t.T)}
            t.reset(worlds)
            self._returns[worlds] = 0.0
            obs = self._obs()
        self._actions = None
        return obs, reward.reshape(-1).numpy().astype(np.float32), dones, infos

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices=None) -> list:
        return [getattr(self, attr_name)] * len(self._indices(indices))

    def set_attr(self, attr_name: str, value, indices=None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *args, indices=None, **kwargs) -> list:
        return [getattr(self, method_name)(*args, **kwargs) for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(self._indices(indices))

    # ------------------------------------------------------------------ helpers
    def _indices(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        return [indices] if isinstance(indices, int) else list(indices)

    def _obs(self) -> np.ndarray:
        t = self.task
        return t.observations().reshape(t.B * t.L, -1).numpy()
