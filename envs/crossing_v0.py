"""Crossing as a PettingZoo environment: the MARL task of ``envs/crossing.py``, one world.

The same task the batched trainers learn on (``hyperagents train``), so any PettingZoo library
can train on it too. It is :class:`envs.crossing.Crossing` at B = 1, not a second
implementation: dynamics, rewards, parking and observations are the batched task's.

| spec | value |
|---|---|
| id | ``hyperagents/crossing-v0`` (``"parallel"`` and ``"aec"`` registries) |
| import | ``from envs.crossing_v0 import parallel_env, env`` |
| actions | ``Discrete(5)``: STAY, RIGHT, LEFT, UP, DOWN (a parked agent's action is ignored) |
| agents | ``num_agents``: an int or a (low, high) range drawn per reset, weighted by ``count_power`` |
| observations | ``Box(-1, 1, (high, F), float32)``: agent i's token set, self first (F: ``features``) |
| rewards | -0.05 per step not moving right before parking, -1 per new distinct partner touched |
| episode | truncated after ``max_steps`` steps (every agent together); no terminations |
| render modes | ``human``, ``rgb_array`` (pygame, imported on first use) |

``infos[agent]``: ``"position"`` (x, y) and ``"parked"`` (reached the right wall; it stays
collidable and keeps receiving rewards). Arguments are :class:`~envs.crossing.Crossing`'s:
``num_agents=8, grid_size=64, radius=1, max_steps=96, start_width=16, features="base",
count_power=0.0, start_width_low=None, contact_cost=1.0, lateral_cost=0.0, contact_charge="both",
two_way=False, predator_prey=False`` (two-way traffic: the odd agents head left, each acting in its own frame;
predator-prey: the odd slots are scripted hunters, part of the world but not PettingZoo agents, so
the agents are the prey ``agent_0``, ``agent_2``, ...), plus ``render_mode=None``.

Version history:
- v0: initial release.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from gymnasium import spaces
from pettingzoo import ParallelEnv
from pettingzoo.utils.conversions import parallel_to_aec

from envs.checks import check_int, is_int
from envs.crossing import NUM_ACTIONS, STAY, Crossing
from envs.world import ResetNeeded


class CrossingParallelEnv(ParallelEnv):
    """One crossing world behind PettingZoo's parallel API (arguments: see the module doc)."""

    metadata = {"name": "crossing_v0", "render_modes": ["human", "rgb_array"], "render_fps": 15}

    def __init__(
        self,
        num_agents=8,
        grid_size: int = 64,
        radius: int = 1,
        max_steps: int = 96,
        start_width: int = 16,
        features: str = "base",
        count_power: float = 0.0,
        start_width_low: int | None = None,
        contact_cost: float = 1.0,
        lateral_cost: float = 0.0,
        contact_charge: str = "both",
        two_way: bool = False,
        predator_prey: bool = False,
        render_mode: str | None = None,
    ):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}"
            )
        self.task = Crossing(
            num_worlds=1,
            num_agents=num_agents,
            grid_size=grid_size,
            radius=radius,
            max_steps=max_steps,
            start_width=start_width,
            features=features,
            count_power=count_power,
            start_width_low=start_width_low,
            contact_cost=contact_cost,
            lateral_cost=lateral_cost,
            contact_charge=contact_charge,
            two_way=two_way,
            predator_prey=predator_prey,
            seed=0,
        )
        self.render_mode = render_mode
        learner_slots = (~self.task.hunter[0]).nonzero().squeeze(-1).tolist()
        self._slot = {f"agent_{i}": i for i in learner_slots}  # agent name -> world slot
        self.possible_agents = list(self._slot)
        self.agents: list[str] = []
        self._live = False
        self._renderer = None

    @functools.cache  # noqa: B019 -- PettingZoo wants the same space object each call
    def observation_space(self, agent: str) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (self.task.L, self.task.num_features), np.float32)

    @functools.cache  # noqa: B019
    def action_space(self, agent: str) -> spaces.Discrete:
        return spaces.Discrete(NUM_ACTIONS)

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.task.seed(check_int("seed", seed, 0))
        self.task.reset()
        learners = self.task.learners[0]  # the learners among this episode's real slots
        self.agents = [a for a, i in self._slot.items() if learners[i]]
        self._live = True
        if self.render_mode == "human":
            self.render()
        return self._observations(), self._infos()

    def step(self, actions: dict):
        if not self._live:
            raise ResetNeeded("step() needs a live episode: call reset() first (also after truncation)")
        act = torch.full((1, self.task.L), STAY, dtype=torch.long)
        for agent, a in actions.items():
            if agent not in self.agents:
                raise ValueError(f"actions has {agent!r}, which is not in env.agents {self.agents}")
            if not is_int(a) or not 0 <= a < NUM_ACTIONS:
                raise ValueError(f"actions[{agent!r}] must be an int in [0, {NUM_ACTIONS}), got {a!r}")
            act[0, self._slot[agent]] = int(a)
        reward = self.task.step(act)[0]
        done = bool(self.task.done[0])
        rewards = {a: float(reward[self._slot[a]]) for a in self.agents}
        obs, infos = self._observations(), self._infos()
        truncations = dict.fromkeys(self.agents, done)
        terminations = dict.fromkeys(self.agents, False)
        if done:
            self.agents, self._live = [], False
        if self.render_mode == "human":
            self.render()
        return obs, rewards, terminations, truncations, infos

    def _observations(self) -> dict:
        """Each agent of the episode (``self.agents``, set at reset) its token set."""
        obs = self.task.observations()[0].numpy()  # (L, L, F)
        return {a: obs[self._slot[a]] for a in self.agents}

    def _infos(self) -> dict:
        pos, parked = self.task.positions[0], self.task.parked[0]
        return {
            a: {"position": (int(pos[i, 0]), int(pos[i, 1])), "parked": bool(parked[i])}
            for a, i in ((a, self._slot[a]) for a in self.agents)
        }

    def render(self):
        if self.render_mode is None:
            return None
        if self._renderer is None:
            from envs.render import Renderer  # pygame only when rendering is used

            self._renderer = Renderer(
                self.task.N, self.task.R, mode=self.render_mode, fps=self.metadata["render_fps"]
            )
        labels, scenario = self.task.scenario_labels()  # predator-prey: the scenario's colours
        return self._renderer.draw(self.task.world, labels=labels, scenario=scenario)

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def parallel_env(**kwargs) -> CrossingParallelEnv:
    """The parallel env; keyword arguments as in :class:`CrossingParallelEnv`."""
    return CrossingParallelEnv(**kwargs)


def raw_env(**kwargs):
    """The AEC env without the order-enforcing wrapper."""
    return parallel_to_aec(CrossingParallelEnv(**kwargs)).unwrapped


def env(**kwargs):
    """The AEC env (turn-based view of the same world), order-enforcing as PettingZoo expects."""
    return parallel_to_aec(CrossingParallelEnv(**kwargs))
