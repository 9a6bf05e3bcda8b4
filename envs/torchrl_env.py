"""TorchRL face of the batched crossing task: one ``EnvBase`` over B worlds, on any device.

Exposed the way TorchRL exposes VMAS (``torchrl.envs.VmasEnv``): the batch is the B worlds and
the agents form one group, ``"agents"``, whose entries carry an extra L (agent slot) dimension::

    ("agents", "observation")  (B, L, L, F) float   agent i's token set, self first (envs/crossing.py)
    ("agents", "mask")         (B, L) bool           learners: real agents but predator_prey's hunters
    ("agents", "active")       (B, L) bool           learners not yet parked: its action still matters
    ("agents", "action")       (B, L) long           stay, right, left, up, down
    ("agents", "reward")       (B, L, 1) float       0 on padded slots
    "done", "terminated", "truncated"  (B, 1) bool   episodes end by truncation only, after T steps

Partial resets follow TorchRL's ``"_reset"`` convention: ``env.reset(td)`` with a (B, 1) bool
``"_reset"`` restarts only those worlds (the others keep their state), so ``env.rollout(...,
break_when_any_done=False)`` and TorchRL collectors run it unchanged. Agent counts drawn per
world (``num_agents=(low, high)``) are expressed by ``mask``; L is ``high``.

Everything stays on ``device``: a CUDA env steps, observes and resets on the GPU, with the
start sampler's generator on the CPU (a few (B,)-sized draws per reset).

Shapes: B worlds, L agent slots, F token features.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from envs.crossing import NUM_ACTIONS, Crossing


class CrossingEnv(EnvBase):
    """TorchRL env over :class:`~envs.crossing.Crossing` (same keyword arguments as there).

    Args:
        num_worlds: B, the env's batch size.
        num_agents: agents per world, an int or a (low, high) range sampled per world at reset.
        device: where the worlds and every tensor of the env live.
        **task_kwargs: grid_size, radius, max_steps, start_width, seed, features, two_way,
            predator_prey (whose hunters are in the observations but no learner: not in ``mask``).
    """

    group = "agents"

    def __init__(self, num_worlds: int = 64, num_agents=8, device: str | torch.device = "cpu", **task_kwargs):
        device = torch.device(device)
        self.task = Crossing(num_worlds=num_worlds, num_agents=num_agents, device=device, **task_kwargs)
        super().__init__(device=device, batch_size=torch.Size([num_worlds]))
        B, L, F = self.task.B, self.task.L, self.task.num_features
        agent_shape = (B, L)
        self.observation_spec = Composite(
            agents=Composite(
                observation=Unbounded((B, L, L, F), device=device),
                mask=Categorical(2, shape=(B, L), device=device, dtype=torch.bool),
                active=Categorical(2, shape=(B, L), device=device, dtype=torch.bool),
                shape=agent_shape,
            ),
            shape=(B,),
        )
        self.action_spec = Composite(
            agents=Composite(
                action=Categorical(NUM_ACTIONS, shape=agent_shape, device=device), shape=agent_shape
            ),
            shape=(B,),
        )
        self.reward_spec = Composite(
            agents=Composite(reward=Unbounded((B, L, 1), device=device), shape=agent_shape), shape=(B,)
        )
        flag = Categorical(2, shape=(B, 1), device=device, dtype=torch.bool)
        self.done_spec = Composite(done=flag, terminated=flag.clone(), truncated=flag.clone(), shape=(B,))

    @property
    def num_agents(self) -> int:
        """L, agent slots per world."""
        return self.task.L

    def _observe(self) -> TensorDict:
        task = self.task
        done = task.done.unsqueeze(-1)  # (B, 1)
        agents = TensorDict(
            observation=task.observations(),
            mask=task.learners,
            active=task.active,
            batch_size=(task.B, task.L),
            device=self.device,
        )
        return TensorDict(
            agents=agents,
            done=done,
            terminated=torch.zeros_like(done),
            truncated=done.clone(),
            batch_size=(task.B,),
            device=self.device,
        )

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDict:
        worlds = None
        if tensordict is not None and "_reset" in tensordict.keys():
            flags = tensordict.get("_reset").reshape(self.task.B)
            if not flags.any():
                return self._observe()
            worlds = flags.nonzero().squeeze(-1)
        self.task.reset(worlds)
        return self._observe()

    def _step(self, tensordict: TensorDictBase) -> TensorDict:
        reward = self.task.step(tensordict.get((self.group, "action")))  # (B, L)
        out = self._observe()
        out.set((self.group, "reward"), reward.unsqueeze(-1))
        return out

    def _set_seed(self, seed: int | None) -> None:
        self.task.seed(seed)
