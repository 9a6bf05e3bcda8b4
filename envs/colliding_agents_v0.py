"""Colliding agents: the multi-agent world of arXiv 2506.06179 as a PettingZoo environment.

Agents are circles of radius R on an [N] x [N] cylinder (y wraps around, x has walls). Each
agent is charged -1 the first time it touches each distinct other agent (centres within 2R).
In the paper's setting every agent plays MOVE_RIGHT for N steps and the value of agent i is
``-#{j != i : min(|y_i-y_j|, N-|y_i-y_j|) <= 2R}``; the attention models in ``policies/``
learn that interaction from the agents' embeddings.

| spec | value |
|---|---|
| id | ``hyperagents/colliding_agents-v0`` (``"parallel"`` and ``"aec"`` registries) |
| import | ``from envs.colliding_agents_v0 import parallel_env, env`` |
| actions | ``Discrete(5)``: STAY, RIGHT (= MOVE_RIGHT), LEFT, UP, DOWN |
| agents | ``num_agents``: an int or a (low, high) range sampled per reset; ``possible_agents``: high |
| observations | ``Box(-1, 1, (high, F), float32)``: i's view of every slot, self first (1-D: ``flatten``) |
| state | ``Box(0, N, (high, 3 + labels), float32)``: absolute tokens ``[present, x, y, one-hot labels]`` |
| rewards | scenario's (``pairwise``: -1 per distinct agent touched) |
| episode | truncated after ``max_cycles`` steps (default N); no terminations |
| render modes | ``human``, ``rgb_array`` (pygame, headless-safe) |

Observation tokens (F = 5 + sum of the scenario's label sizes), for agent i looking at slot j:
``[present_j, (x_j - x_i)/N, dy_ij/N, x_j/N, touched_ij, one-hot labels_j...]`` where dy_ij is
the signed shortest y displacement around the cylinder. Slot 0 is i itself; padded slots are 0.
``infos[agent]`` holds ``"position"`` (x, y) and, for labelled scenarios, ``"labels"``: an int64
array with one entry per column of ``env.scenario.label_names`` (numeric, so that clients which
turn infos into tensors, e.g. TorchRL's ``PettingZooWrapper``, can read it).

Agent-count ranges and fixed-population clients: with ``num_agents=(low, high)`` only the sampled
agents are in ``env.agents``, as PettingZoo intends. Clients that need every possible agent at
every step (SuperSuit vector envs, RLlib, TorchRL) take ``pad_agents=True``: then ``env.agents``
is always ``possible_agents``; an agent past the sampled count gets a zero observation and zero
reward, its actions are ignored, it is truncated together with the others, and
``infos[agent]["active"]`` is False for it (True for the real ones; its position and labels are
-1). ``flatten=True`` gives 1-D observations for clients whose default models want vectors.

``reset(options=...)`` accepts ``{"positions": (L, 2) ints, "labels": (L, F) ints}`` to start
from a given configuration (L then sets the agent count); other keys are ignored, as PettingZoo's
API test expects. ``step()`` before ``reset()`` or after the episode was truncated raises
:class:`envs.world.ResetNeeded` (a RuntimeError), as does ``state()`` before ``reset()``.

Arguments: ``num_agents=20, grid_size=360, radius=5, scenario="pairwise", max_cycles=None,
render_mode=None, pad_agents=False, flatten=False, memory_limit_gb=4.0``. Bad values raise
``ValueError``/``TypeError`` naming the argument. Each observation is (high, F), so memory grows
as high^2: a configuration estimated (:func:`estimate_memory_bytes`) above ``memory_limit_gb``
is refused before anything is allocated; pass a larger limit, or None, to go ahead anyway.

Remote workers (RLlib env runners, subprocess vector envs): the id is registered when the
``envs`` package is imported, so a process that never imported it cannot ``pettingzoo.make`` it.
Import the env inside the env creator, e.g. ``def creator(cfg): from envs.colliding_agents_v0
import parallel_env; return ParallelPettingZooEnv(parallel_env(**cfg))``.

Version history:
- v0: initial release (pairwise, predator_prey and alliances scenarios).
- v0, same dynamics, rewards and observations: ``infos[agent]["labels"]`` became an int64 array
  (was a dict keyed by label name); opt-in ``pad_agents``, ``flatten`` and ``memory_limit_gb``;
  ``step()``/``state()`` without a live episode raise instead of running on a stale world.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import ParallelEnv
from pettingzoo.utils.conversions import parallel_to_aec

from envs.checks import check_int, parse_count
from envs.scenarios import Scenario, make_scenario
from envs.world import (
    ACTION_NAMES,
    DOWN,
    LEFT,
    MOVE_RIGHT,
    NUM_ACTIONS,
    RIGHT,
    STAY,
    UP,
    ResetNeeded,
    World,
    check_world_args,
)

__all__ = [
    "env",
    "parallel_env",
    "raw_env",
    "CollidingAgentsEnv",
    "STAY",
    "RIGHT",
    "LEFT",
    "UP",
    "DOWN",
    "MOVE_RIGHT",
    "ACTION_NAMES",
    "ResetNeeded",
    "estimate_memory_bytes",
]


def estimate_memory_bytes(num_agents: int, num_features: int) -> int:
    """Peak bytes one env of ``num_agents`` slots needs, to the nearest factor of ~1.5.

    Per (i, j) pair: the world's collision table and test temporaries (~16 bytes), the (L, L)
    int64 slot order (8) and two float32 (L, L, F) token buffers (8 F). Everything else is O(L).
    """
    return num_agents * num_agents * (24 + 8 * num_features)


def _check_flag(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


class CollidingAgentsEnv(ParallelEnv):
    """Parallel PettingZoo env over :class:`envs.world.World` at B = 1. See the module docstring."""

    metadata = {
        "name": "colliding_agents_v0",
        "render_modes": ["human", "rgb_array"],
        "render_fps": 30,
        "is_parallelizable": True,
    }

    def __init__(
        self,
        num_agents=20,
        grid_size: int = 360,
        radius: int = 5,
        scenario: str | Scenario = "pairwise",
        max_cycles: int | None = None,
        render_mode: str | None = None,
        pad_agents: bool = False,
        flatten: bool = False,
        memory_limit_gb: float | None = 4.0,
    ):
        self.low, self.high = parse_count(num_agents)
        check_world_args(self.high, grid_size, radius)
        if max_cycles is None:
            max_cycles = grid_size
        max_cycles = check_int("max_cycles (or None for grid_size)", max_cycles, 1)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}"
            )
        self.pad_agents = _check_flag("pad_agents", pad_agents)
        self.flatten = _check_flag("flatten", flatten)
        self.scenario = make_scenario(scenario)
        self.num_features = 5 + sum(self.scenario.label_sizes)
        self._check_memory(memory_limit_gb)
        self.grid_size, self.radius, self.max_cycles, self.render_mode = (
            grid_size,
            radius,
            max_cycles,
            render_mode,
        )
        self.world = World(1, self.high, grid_size, radius)
        self.possible_agents = [f"agent_{i}" for i in range(self.high)]
        self._slot = {a: i for i, a in enumerate(self.possible_agents)}
        self.agents: list[str] = []
        self.labels = torch.zeros(1, self.high, len(self.scenario.label_sizes), dtype=torch.long)
        self.returns = np.zeros(self.high)
        obs_shape = (self.high * self.num_features,) if self.flatten else (self.high, self.num_features)
        self._obs_space = spaces.Box(-1.0, 1.0, obs_shape, np.float32)
        self._act_space = spaces.Discrete(NUM_ACTIONS)
        n_state = 3 + sum(self.scenario.label_sizes)
        self.state_space = spaces.Box(0.0, float(grid_size), (self.high, n_state), np.float32)
        self._renderer = None
        self._np_random, _ = seeding.np_random(None)
        # order[i] lists the slots agent i sees: itself first, then every other slot in index order.
        k = torch.arange(self.high)
        i = k.unsqueeze(1)
        self._order = torch.where(k == 0, i, torch.where(k - 1 < i, k - 1, k))  # (L, L)
        self._order_np, self._rows = self._order.numpy(), i.numpy()  # (L, L), (L, 1) for numpy indexing
        self._live = 0  # sampled agent count of the current episode
        self._needs_reset = True  # no episode yet, or the last one was truncated

    def _check_memory(self, memory_limit_gb) -> None:
        if memory_limit_gb is None:
            return
        if isinstance(memory_limit_gb, bool) or not isinstance(memory_limit_gb, (int, float, np.number)):
            raise TypeError(f"memory_limit_gb must be a number of GiB or None, got {memory_limit_gb!r}")
        if not memory_limit_gb > 0:
            raise ValueError(f"memory_limit_gb must be > 0 (or None for no limit), got {memory_limit_gb!r}")
        need = estimate_memory_bytes(self.high, self.num_features)
        if need > memory_limit_gb * 2**30:
            raise ValueError(
                f"num_agents={self.high} needs about {need / 2**30:.1f} GiB (every agent observes every "
                f"slot: (L, L, F={self.num_features}) tokens), over memory_limit_gb={memory_limit_gb}; "
                f"lower num_agents, or pass a larger memory_limit_gb (None: no limit) to try anyway"
            )

    # PettingZoo requires the very same space object on every call.
    @functools.cache  # noqa: B019 -- one env, a handful of agents: the cache lives as long as the env
    def observation_space(self, agent: str) -> spaces.Box:
        return self._obs_space

    @functools.cache  # noqa: B019
    def action_space(self, agent: str) -> spaces.Discrete:
        return self._act_space

    # ------------------------------------------------------------------ API
    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
                raise TypeError(f"seed must be a non-negative int or None, got {type(seed).__name__}")
            if seed < 0:
                raise ValueError(f"seed must be a non-negative int or None, got {seed}")
            seed = int(seed)
        if options is not None and not isinstance(options, dict):
            raise TypeError(f"options must be a dict or None, got {type(options).__name__}")
        if seed is not None:
            self._np_random, _ = seeding.np_random(seed)
            for i, agent in enumerate(self.possible_agents):
                self.action_space(agent).seed(seed + i)
        positions, labels = self._start_configuration(options or {})
        L = positions.shape[0]
        full = torch.zeros(1, self.high, 2, dtype=torch.long)
        full[0, :L] = positions
        self.labels = torch.zeros_like(self.labels)
        self.labels[0, :L] = labels
        mask = torch.zeros(1, self.high, dtype=torch.bool)
        mask[0, :L] = True
        self.world.reset(full, mask)
        self._live, self._needs_reset = L, False
        self.agents = self.possible_agents[:] if self.pad_agents else self.possible_agents[:L]
        self.returns = np.zeros(self.high)
        if self.render_mode == "human":
            self.render()
        return self._observations(), self._infos()

    def step(self, actions: dict):
        if self._needs_reset:
            raise ResetNeeded(
                "step() needs a live episode: call reset() first"
                + (" (the last episode was truncated at max_cycles)" if self._live else "")
            )
        contacts = self.world.step(self._action_tensor(actions))
        reward = self.scenario.rewards(self.world, self.labels, contacts)[0].numpy()
        reward = reward * self.world.mask[0].numpy()  # padded slots earn nothing
        self.returns += reward
        truncated = int(self.world.steps[0]) >= self.max_cycles
        rewards = dict(zip(self.agents, reward.tolist(), strict=False))  # reward: a slot per possible agent
        terminations = dict.fromkeys(self.agents, False)
        truncations = dict.fromkeys(self.agents, truncated)
        observations, infos = self._observations(), self._infos()
        if truncated:
            self.agents = []
            self._needs_reset = True
        if self.render_mode == "human":
            self.render()
        return observations, rewards, terminations, truncations, infos

    def state(self) -> np.ndarray:
        """Absolute token set (high, 3 + labels): [present, x, y, one-hot labels]; padded slots are 0."""
        if not self._live:
            raise ResetNeeded("state() needs an episode: call reset() first")
        w = self.world
        tokens = torch.cat([w.mask[0, :, None].float(), w.positions[0].float(), self._label_onehot()], -1)
        return (tokens * w.mask[0, :, None]).numpy().astype(np.float32)

    def render(self):
        if self.render_mode is None:
            return None  # gymnasium convention: rendering was not requested at construction
        if self._renderer is None:
            from envs.render import Renderer  # pygame is imported only when rendering is used

            self._renderer = Renderer(
                self.grid_size, self.radius, mode=self.render_mode, fps=self.metadata["render_fps"]
            )
        return self._renderer.draw(self.world, self.labels, scenario=self.scenario, returns=self.returns)

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # -------------------------------------------------------------- helpers
    def _action_tensor(self, actions: dict) -> torch.Tensor:
        """(1, high) long actions from the PettingZoo dict; padded slots STAY. Raises on bad input."""
        if not isinstance(actions, dict):
            raise TypeError(f"actions must be a dict {{agent: action}}, got {type(actions).__name__}")
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"actions must hold one action per live agent; missing {missing[:5]}")
        values, live = [STAY] * self.high, len(self.agents)
        for agent, a in actions.items():
            slot = self._slot.get(agent, live)  # self.agents is always possible_agents[:live]
            if slot >= live:
                raise ValueError(f"actions has an entry for {agent!r}, which is not a live agent")
            # Fast path for plain ints; anything else goes through the space's own check. A bool is an
            # int to Python and to gymnasium, but True as "move right" is a bug in the caller.
            if isinstance(a, (bool, np.bool_)) or (isinstance(a, np.ndarray) and a.dtype == np.bool_):
                raise TypeError(f"action for {agent} must be an int in [0, {NUM_ACTIONS}), got bool {a!r}")
            if not (type(a) is int and 0 <= a < NUM_ACTIONS) and not self._act_space.contains(a):
                raise ValueError(
                    f"action for {agent} must be an int in [0, {NUM_ACTIONS}) "
                    f"({', '.join(ACTION_NAMES)}), got {a!r}"
                )
            values[slot] = int(a)
        return torch.tensor([values])

    def _start_configuration(self, options: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(L, 2) positions and (L, F) labels: from ``options`` or sampled with the env's rng."""
        n_lab = len(self.scenario.label_sizes)
        if "positions" in options:
            raw = _integer_array("options['positions']", options["positions"])
            if raw.ndim != 2 or raw.shape[1] != 2 or not 1 <= raw.shape[0] <= self.high:
                raise ValueError(
                    f"options['positions'] must have shape (L, 2) with 1 <= L <= {self.high}, got {raw.shape}"
                )
            if raw.min() < 0 or raw.max() >= self.grid_size:
                raise ValueError(f"options['positions'] must be integers in [0, {self.grid_size})")
            pos = torch.as_tensor(raw)
            L = pos.shape[0]
        else:
            L = int(self._np_random.integers(self.low, self.high + 1))
            pos = torch.as_tensor(self._np_random.integers(0, self.grid_size, size=(L, 2)))
        if "labels" in options:
            raw = _integer_array("options['labels']", options["labels"])
            if n_lab == 1 and raw.shape == (L,):
                raw = raw[:, None]
            if raw.shape != (L, n_lab):
                raise ValueError(
                    f"options['labels'] must have shape (L, F) = ({L}, {n_lab}): one row per agent, one "
                    f"column per label {self.scenario.label_names}, got {raw.shape}"
                )
            lab = torch.as_tensor(raw)
            sizes = torch.tensor(self.scenario.label_sizes)
            if n_lab and ((lab < 0) | (lab >= sizes)).any():
                raise ValueError(
                    f"options['labels'] column f must lie in [0, {self.scenario.label_sizes}[f])"
                )
        else:
            cols = [self._np_random.integers(0, k, size=(L, 1)) for k in self.scenario.label_sizes]
            lab = torch.as_tensor(np.concatenate(cols, 1) if cols else np.zeros((L, 0), np.int64))
        return pos.long(), lab.long()

    def _label_onehot(self) -> torch.Tensor:
        """(high, sum(label_sizes)) float one-hot of every label column."""
        cols = [
            torch.nn.functional.one_hot(self.labels[0, :, f], k).float()
            for f, k in enumerate(self.scenario.label_sizes)
        ]
        return torch.cat(cols, -1) if cols else torch.zeros(self.high, 0)

    def _observations(self) -> dict:
        """Per live agent its (high, F) float32 token set, self first. Built in numpy: at B = 1 the
        per-call overhead of a dozen small torch ops would cost more than the arithmetic."""
        w, N = self.world, self.grid_size
        pos, mask = w.positions[0].numpy(), w.mask[0].numpy()  # (L, 2), (L,)
        x, y = pos[:, 0], pos[:, 1]
        n = np.float32(N)
        feats = np.empty((self.high, self.high, self.num_features), np.float32)  # (L, L, F): j seen from i
        feats[..., 0] = mask
        feats[..., 1] = (x[None, :] - x[:, None]).astype(np.float32) / n
        feats[..., 2] = (np.remainder(y[None, :] - y[:, None] + N // 2, N) - N // 2).astype(np.float32) / n
        feats[..., 3] = x.astype(np.float32) / n
        feats[..., 4] = w.collided[0].numpy()
        feats[..., 5:] = self._label_onehot().numpy()
        feats *= mask[None, :, None]  # padded slots are 0
        tokens = feats[self._rows, self._order_np]  # (L, L, F), reordered so that slot 0 is i itself
        if self.pad_agents:
            tokens[~mask] = 0.0  # an absent agent sees nothing
        if self.flatten:
            tokens = tokens.reshape(self.high, -1)
        return {a: tokens[i] for i, a in enumerate(self.agents)}

    def _infos(self) -> dict:
        pos, labels = self.world.positions[0].tolist(), self.labels[0].numpy()
        has_labels = bool(self.scenario.label_sizes)
        infos = {}
        for i, a in enumerate(self.agents):
            active = i < self._live
            info = {"position": tuple(pos[i]) if active else (-1, -1)}
            if has_labels:
                info["labels"] = labels[i].copy() if active else np.full(labels.shape[1], -1, np.int64)
            if self.pad_agents:
                info["active"] = active
            infos[a] = info
        return infos


def _integer_array(name: str, value) -> np.ndarray:
    """``value`` as an int64 array, refusing bools, floats and non-numbers with a TypeError."""
    try:
        arr = np.asarray(value)
    except ValueError as e:  # ragged nesting
        raise ValueError(f"{name} must be a rectangular array of integers: {e}") from None
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def parallel_env(**kwargs) -> CollidingAgentsEnv:
    """The parallel env; keyword arguments as in :class:`CollidingAgentsEnv`."""
    return CollidingAgentsEnv(**kwargs)


def raw_env(**kwargs):
    """The AEC env without the order-enforcing wrapper."""
    return parallel_to_aec(CollidingAgentsEnv(**kwargs)).unwrapped


def env(**kwargs):
    """The AEC env (turn-based view of the same world), order-enforcing as PettingZoo expects."""
    return parallel_to_aec(CollidingAgentsEnv(**kwargs))
