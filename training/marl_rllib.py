"""Multi-agent PPO through Ray RLlib on the colliding-agents PettingZoo env, one policy shared by all.

Every agent maps to the policy ``"shared"``. With ``family`` sa, hfa or ha that policy is an RLlib
``RLModule`` around :class:`policies.actor_critic.TokenActorCritic`: it reshapes each flat
observation back into the (L, F) token set and runs attention over it, so it reads any agent
count; ``family="mlp"`` uses RLlib's default MLP on the flat observation instead. The env runs with
``pad_agents=True`` (RLlib needs every possible agent at every step) and ``flatten=True``.

Ray runs locally by default (``num_cpus`` caps it); ``address`` joins an existing cluster
(``"auto"`` on a cluster node, or ``"ray://head:10001"``). ``num_env_runners`` sets how many
processes sample episodes. Env runners import the env inside their env creator (see
``envs/colliding_agents_v0.py``), so nothing depends on the driver having imported ``envs``.
With ``checkpoint_dir`` the algorithm is saved there at the end and, if a checkpoint is already
there, restored from it first (a rerun continues training).

Needs the ``rllib`` extra: ``pip install -e ".[rllib]"``. Example::

    python -c "from training.marl_rllib import RLlibConfig, main; main(RLlibConfig(iterations=5))"
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from policies.actor_critic import FAMILIES, TokenActorCritic

try:
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.apis import ValueFunctionAPI
    from ray.rllib.core.rl_module.torch import TorchRLModule
except ImportError:  # the rllib extra is not installed; main() says how to get it
    TorchRLModule = None

POLICY_ID = "shared"
ENV_NAME = "hyperagents_colliding_agents"
PRESENT, POSITION = 0, (1, 2)  # token features read by the encoders (see the env's docstring)


@dataclass
class RLlibConfig:
    """Shared-policy multi-agent PPO with RLlib on the colliding-agents env."""

    family: Literal["sa", "hfa", "ha", "mlp"] = "sa"
    """Policy: attention over the token set (sa, hfa, ha) or RLlib's default MLP (mlp)."""
    scenario: Literal["pairwise", "predator_prey", "alliances"] = "pairwise"
    num_agents: tuple[int, ...] = (8,)
    """One count, or low high: sampled at each reset (absent agents are padded and masked)."""
    grid_size: int = 24
    radius: int = 1
    max_cycles: int | None = None
    """Episode length; None: grid_size."""
    iterations: int = 10
    """PPO iterations (each samples ``train_batch_size`` env steps)."""
    num_env_runners: int = 2
    address: str | None = None
    """None: start a local Ray; otherwise an existing cluster ("auto", "ray://head:10001")."""
    num_cpus: int | None = None
    """CPUs of a local Ray (None: all of the machine's)."""
    train_batch_size: int = 512
    minibatch_size: int = 256
    num_epochs: int = 4
    learning_rate: float = 1e-3
    width: int = 32
    heads: int = 2
    seed: int = 0
    checkpoint_dir: str | None = None
    env_kwargs: dict = field(default_factory=dict)
    """Further keyword arguments of the env (e.g. memory_limit_gb)."""


def env_config(cfg: RLlibConfig) -> dict:
    count = cfg.num_agents[0] if len(cfg.num_agents) == 1 else tuple(cfg.num_agents)
    return dict(
        num_agents=count,
        grid_size=cfg.grid_size,
        radius=cfg.radius,
        scenario=cfg.scenario,
        max_cycles=cfg.max_cycles,
        pad_agents=True,
        flatten=True,
        **cfg.env_kwargs,
    )


def check_config(cfg: RLlibConfig) -> None:
    """Clear errors before Ray starts; the env checks its own arguments when built here."""
    from envs.colliding_agents_v0 import parallel_env

    if cfg.family not in (*FAMILIES, "mlp"):
        raise ValueError(f"family must be one of {(*FAMILIES, 'mlp')}, got {cfg.family!r}")
    if len(cfg.num_agents) not in (1, 2):
        raise ValueError(f"num_agents must be one count or low high, got {cfg.num_agents}")
    for name in ("iterations", "train_batch_size", "minibatch_size", "num_epochs", "width", "heads"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if cfg.num_env_runners < 0:
        raise ValueError(f"num_env_runners must be >= 0 (0: sample in the driver), got {cfg.num_env_runners}")
    if cfg.minibatch_size > cfg.train_batch_size:
        raise ValueError(
            f"minibatch_size ({cfg.minibatch_size}) must be <= train_batch_size ({cfg.train_batch_size})"
        )
    if not (math.isfinite(cfg.learning_rate) and cfg.learning_rate > 0):
        raise ValueError(f"learning_rate must be a positive number, got {cfg.learning_rate}")
    parallel_env(**env_config(cfg)).close()


def env_creator(config: dict):
    """RLlib env creator. The imports are here: an env runner is another process, which never ran
    the driver's imports (nor ``import envs``, which registers the PettingZoo id)."""
    from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv

    from envs.colliding_agents_v0 import parallel_env

    return ParallelPettingZooEnv(parallel_env(**config))


if TorchRLModule is not None:

    class TokenRLModule(TorchRLModule, ValueFunctionAPI):
        """RLlib face of :class:`TokenActorCritic`: flat (B, L*F) observations -> logits, values.

        ``model_config``: ``num_features`` (F), ``family``, ``width``, ``heads``. L is read from
        each batch, so a trained module runs at any agent count.
        """

        def setup(self):
            cfg = self.model_config
            kw = dict(
                family=cfg["family"],
                width=cfg["width"],
                heads=cfg["heads"],
                present_feature=PRESENT,
                position_features=POSITION,
            )
            self.num_features = cfg["num_features"]
            self.net = TokenActorCritic(self.num_features, int(self.action_space.n), kw, dict(kw))

        def _tokens(self, batch) -> torch.Tensor:
            obs = batch[Columns.OBS]
            return obs.reshape(obs.shape[0], -1, self.num_features)

        def _forward(self, batch, **kwargs):
            return {Columns.ACTION_DIST_INPUTS: self.net.actor(self._tokens(batch))}

        def compute_values(self, batch, embeddings=None):
            return self.net.critic(self._tokens(batch)).squeeze(-1)


def build_config(cfg: RLlibConfig):
    """The RLlib ``PPOConfig`` for ``cfg`` (Ray need not be running yet)."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from ray.tune.registry import register_env

    from envs.colliding_agents_v0 import parallel_env

    register_env(ENV_NAME, env_creator)
    env_kw = env_config(cfg)
    num_features = parallel_env(**env_kw).num_features
    config = (
        PPOConfig()
        .environment(ENV_NAME, env_config=env_kw)
        .multi_agent(policies={POLICY_ID}, policy_mapping_fn=lambda agent_id, *args, **kwargs: POLICY_ID)
        .env_runners(num_env_runners=cfg.num_env_runners)
        .training(
            train_batch_size_per_learner=cfg.train_batch_size,
            minibatch_size=cfg.minibatch_size,
            num_epochs=cfg.num_epochs,
            lr=cfg.learning_rate,
        )
        .debugging(seed=cfg.seed)
    )
    if cfg.family != "mlp":
        module_config = dict(num_features=num_features, family=cfg.family, width=cfg.width, heads=cfg.heads)
        spec = RLModuleSpec(module_class=TokenRLModule, model_config=module_config)
        config = config.rl_module(rl_module_spec=MultiRLModuleSpec(rl_module_specs={POLICY_ID: spec}))
    return config


def evaluate(module, cfg: RLlibConfig, episodes: int = 20, seed: int = 10_000) -> float:
    """Mean return per real agent of the trained policy (sampled actions) on fixed seeds."""
    from envs.colliding_agents_v0 import parallel_env

    env, gen = parallel_env(**env_config(cfg)), torch.Generator().manual_seed(seed)
    total, agents_seen = 0.0, 0
    for ep in range(episodes):
        obs, infos = env.reset(seed=seed + ep)
        agents_seen += sum(info["active"] for info in infos.values())
        while env.agents:
            names = list(obs)
            with torch.no_grad():
                x = torch.as_tensor(np.stack([obs[a] for a in names]))
                logits = module.forward_inference({Columns.OBS: x})[Columns.ACTION_DIST_INPUTS]
            acts = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen).squeeze(1).tolist()
            obs, rewards, *_ = env.step(dict(zip(names, acts, strict=True)))
            total += sum(rewards.values())
    return total / agents_seen


def main(cfg: RLlibConfig) -> dict:
    """Train; returns the metrics (returns per iteration, steps, throughput, evaluation)."""
    if TorchRLModule is None:
        raise ImportError('the RLlib backend needs Ray RLlib: pip install -e ".[rllib]"')
    import ray

    check_config(cfg)
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address=cfg.address, num_cpus=cfg.num_cpus if cfg.address is None else None)
    algo = build_config(cfg).build_algo()
    try:
        ckpt = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
        if ckpt is not None and (ckpt / "rllib_checkpoint.json").exists():
            algo.restore_from_path(str(ckpt.resolve()))
        history, t0 = [], time.perf_counter()
        for _ in range(cfg.iterations):
            result = algo.train()
            history.append(float(result["env_runners"].get("episode_return_mean", float("nan"))))
        seconds = time.perf_counter() - t0
        runners = result["env_runners"]
        env_steps = int(runners["num_env_steps_sampled_lifetime"])
        agent_steps = int(runners.get("num_agent_steps_sampled_lifetime", {}).get("__all_agents__", 0))
        metrics = dict(
            config=asdict(cfg),
            episode_return_mean=history,
            env_steps=env_steps,
            agent_steps=agent_steps,
            seconds=seconds,
            env_steps_per_second=cfg.iterations * cfg.train_batch_size / seconds,
            eval_return_per_agent=evaluate(algo.get_module(POLICY_ID), cfg),
        )
        if ckpt is not None:
            ckpt.mkdir(parents=True, exist_ok=True)
            algo.save_to_path(str(ckpt.resolve()))
            metrics["checkpoint"] = str(ckpt)
        return metrics
    finally:
        algo.stop()
        if started_ray:
            ray.shutdown()
