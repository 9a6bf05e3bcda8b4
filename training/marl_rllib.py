"""Multi-agent PPO through Ray RLlib, one policy shared by every agent.

Two commands train through it:

- ``hyperagents train --backend rllib`` (:func:`train_run`, called by ``training/marl.py``): the
  crossing task that ``--backend sb3 | torchrl`` train, through its PettingZoo face
  (``envs/crossing_v0.py``: the batched task at B = 1, one world per env) in RLlib's multi-agent
  API. Its run lives in the project's run folder (``training/runs.py``) like the other backends'.
  ``hyperagents ood`` evaluates it without Ray (:func:`load_net`).
- ``hyperagents rllib`` (:class:`RLlibConfig`, :func:`main`): the colliding-agents env with
  ``pad_agents=True`` (RLlib then sees every possible agent at every step) and ``flatten=True``;
  it returns its metrics and saves to ``checkpoint_dir``.

The shared policy ``"shared"`` is an RLlib ``RLModule`` around
:class:`policies.actor_critic.TokenActorCritic`, built by ``training.marl_torchrl.build_net`` so
that every backend trains the same network: it reads each observation back as the (L, F) token
set, so it runs at any agent count. (``hyperagents rllib --family mlp`` uses RLlib's default MLP
on the flat observation instead.)

Ray runs locally by default; ``address`` joins an existing cluster (``"auto"`` on a cluster node,
or ``"ray://head:10001"``; every node needs the project installed). ``num_env_runners`` sets how
many processes sample episodes (0: the driver samples). Env runners build the env inside the env
creator: an env runner is another process, which never ran the driver's imports.

Importing this module does not import Ray (every ``hyperagents`` command imports it, ``ood``
included): the two classes that subclass Ray's are defined on first use, and the module's
``__getattr__`` gives them to pickles, which look them up by name in env runner processes.

Needs the ``rllib`` extra: ``pip install -e ".[rllib]"``. Shapes: B agent samples, L agent
slots (tokens), F token features. Example::

    hyperagents train --backend rllib --num-env-runners 2 --total-timesteps 200000
"""

from __future__ import annotations

import io
import logging
import math
import os
import signal
import tarfile
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import numpy as np
import torch

from envs.checks import check_int
from policies.actor_critic import FAMILIES

POLICY_ID = "shared"
ENV_NAME = "hyperagents_colliding_agents"
CROSSING_ENV = "hyperagents_crossing"
DEFAULT_ENV_RUNNERS = 2
POLICY_FILE = "policy.pt"  # in every checkpoint: the network and counters, readable without Ray
# The network fields build_net reads, at the rllib backend's defaults (hyperagents rllib sets a few).
NET_DEFAULTS = dict(
    family="sa",
    width=32,
    blocks=2,
    heads=2,
    kind="softmax",
    neighbours=None,
    neighbour_dx_weight=1.0,
    lane_tokens=0,
    mlp_k=6,
    critic="central",
    net_arch=(64,),
)
RAY_CLASSES = ("TokenRLModule", "CrossingMultiAgentEnv")
# RLlib's timers of an iteration, by the names the run's history gives them.
TIMERS = {"sample_seconds": "env_runner_sampling_timer", "update_seconds": "learner_update_timer"}


def require_ray() -> None:
    """ImportError naming the extra to install when Ray RLlib is missing."""
    try:
        import ray.rllib  # noqa: F401
    except ImportError as err:
        raise ImportError('the RLlib backend needs Ray RLlib: pip install -e ".[rllib]"') from err


def ray_class(name: str) -> type:
    """``TokenRLModule`` or ``CrossingMultiAgentEnv``, defined (importing Ray) on first use."""
    if name not in globals():
        globals().update(_define_ray_classes())
    return globals()[name]


def __getattr__(name: str):
    # Pickles of RLModule specs and `from training.marl_rllib import TokenRLModule` arrive here.
    if name in RAY_CLASSES:
        return ray_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _define_ray_classes() -> dict[str, type]:
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.apis import ValueFunctionAPI
    from ray.rllib.core.rl_module.torch import TorchRLModule
    from ray.rllib.env.multi_agent_env import MultiAgentEnv

    class TokenRLModule(TorchRLModule, ValueFunctionAPI):
        """RLlib face of :class:`TokenActorCritic`: observations (B, L, F) or (B, L*F) -> logits, values.

        ``model_config``: ``num_features`` (F) and any field of ``NET_DEFAULTS`` (the others keep
        those defaults). L is read from each batch, so a trained module runs at any agent count.
        """

        def setup(self):
            from envs.crossing import NUM_ACTIONS
            from training.marl_torchrl import build_net

            if self.action_space.n != NUM_ACTIONS:
                raise ValueError(f"the action space must be Discrete({NUM_ACTIONS}), got {self.action_space}")
            fields = {**NET_DEFAULTS, **self.model_config}
            self.num_features = int(fields["num_features"])
            self.net = build_net(SimpleNamespace(**fields), self.num_features)

        def _tokens(self, batch) -> torch.Tensor:
            obs = batch[Columns.OBS]
            return obs.reshape(obs.shape[0], -1, self.num_features)  # (B, L, F)

        def _forward(self, batch, **kwargs):
            return {Columns.ACTION_DIST_INPUTS: self.net.actor(self._tokens(batch))}

        def compute_values(self, batch, embeddings=None):
            return self.net.critic(self._tokens(batch)).squeeze(-1)  # (B,)

    class CrossingMultiAgentEnv(MultiAgentEnv):
        """``envs/crossing_v0.py`` for RLlib, one world.

        Spaces cover every possible agent (a range of counts leaves some out of an episode, and
        RLlib looks every agent up in them). RLlib seeds sub-env i of env runner w with
        ``seed + w + i``, so runners would share start streams; the runner index is mixed in.
        """

        def __init__(self, config: dict):
            super().__init__()
            from envs.crossing_v0 import parallel_env

            self.runner = int(getattr(config, "worker_index", 0))
            self.env = parallel_env(**config)
            self.possible_agents = list(self.env.possible_agents)
            self.agents = []
            self.observation_spaces = {a: self.env.observation_space(a) for a in self.possible_agents}
            self.action_spaces = {a: self.env.action_space(a) for a in self.possible_agents}

        def reset(self, *, seed=None, options=None):
            if seed is not None:
                seed = int(np.random.SeedSequence([seed, self.runner]).generate_state(1)[0])
            obs, infos = self.env.reset(seed=seed, options=options)
            self.agents = list(self.env.agents)
            return obs, infos

        def step(self, actions):
            obs, rewards, terminated, truncated, infos = self.env.step(actions)
            self.agents = list(self.env.agents)
            terminated["__all__"] = False  # the crossing ends at its time limit only
            truncated["__all__"] = not self.agents
            return obs, rewards, terminated, truncated, infos

    classes = (TokenRLModule, CrossingMultiAgentEnv)
    for cls in classes:
        cls.__qualname__ = cls.__name__  # pickles name it as a module attribute (see __getattr__)
    return {cls.__name__: cls for cls in classes}


def shared_policy(agent_id, *args, **kwargs) -> str:
    """RLlib's policy mapping: every agent plays the one shared policy."""
    return POLICY_ID


def start_ray(address: str | None, num_env_runners: int) -> bool:
    """Start a local Ray (``address`` None) or join a cluster, unless Ray is up; True if started here.

    A local Ray gets at least one CPU per env runner, so more runners than cores share them
    instead of waiting forever. ``ray.init`` replaces the SIGTERM handler; the caller's handlers
    (a run's: a stop saves a checkpoint first) are put back.
    """
    import ray

    if ray.is_initialized():
        return False
    main_thread = threading.current_thread() is threading.main_thread()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main_thread else {}
    local = dict(num_cpus=max(os.cpu_count() or 1, num_env_runners), include_dashboard=False)
    try:
        # Ray's INFO lines would bury the progress bar and the run's own messages; warnings stay.
        ray.init(
            address=address,
            log_to_driver=False,
            logging_level=logging.WARNING,
            **(local if address is None else {}),
        )
    except ConnectionError as err:
        raise ValueError(f"address={address!r}: no Ray cluster answers there ({err})") from None
    for sig, handler in handlers.items():
        if handler is not None:
            signal.signal(sig, handler)
    return True


# ---------------------------------------------------------------- hyperagents rllib: colliding agents


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
    num_env_runners: int = DEFAULT_ENV_RUNNERS
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
        check_int(name, getattr(cfg, name), 1)
    if cfg.num_cpus is not None:
        check_int("num_cpus", cfg.num_cpus, 1)
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
    """RLlib env creator of the colliding-agents env (imports here: see the module docstring)."""
    from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv

    from envs.colliding_agents_v0 import parallel_env

    return ParallelPettingZooEnv(parallel_env(**config))


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
        .multi_agent(policies={POLICY_ID}, policy_mapping_fn=shared_policy)
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
        spec = RLModuleSpec(module_class=ray_class("TokenRLModule"), model_config=module_config)
        config = config.rl_module(rl_module_spec=MultiRLModuleSpec(rl_module_specs={POLICY_ID: spec}))
    return config


def evaluate(module, cfg: RLlibConfig, episodes: int = 20, seed: int = 10_000) -> float:
    """Mean return per real agent of the trained policy (sampled actions) on fixed seeds."""
    from ray.rllib.core.columns import Columns

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
    require_ray()
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


# ---------------------------------------------------------------- train --backend rllib: the crossing task


def crossing_env_creator(config: dict):
    """RLlib env creator of the crossing task (one world per env)."""
    return ray_class("CrossingMultiAgentEnv")(config)


def env_runners(cfg) -> int:
    """The env runner count of a TrainConfig (its None: the default)."""
    return DEFAULT_ENV_RUNNERS if cfg.num_env_runners is None else int(cfg.num_env_runners)


def worlds_per_runner(cfg) -> int:
    """Worlds (sub-envs) each env runner steps: ``num_worlds`` split over the runners, rounded up."""
    return math.ceil(cfg.num_worlds / max(env_runners(cfg), 1))


def iteration_env_steps(cfg) -> int:
    """Env steps (one world stepping once) that one PPO iteration samples: ``n_steps`` per world."""
    return cfg.n_steps * worlds_per_runner(cfg) * max(env_runners(cfg), 1)


def schedule(start: float, end: float | None, horizon: float):
    """An RLlib value or linear schedule ``[[0, start], [horizon, end]]`` (horizon in env steps)."""
    return start if end is None else [[0, start], [max(int(horizon), 1), end]]


def ppo_config(cfg, seed: int):
    """RLlib's ``PPOConfig`` for a :class:`training.marl.TrainConfig` (mapping: docs/rllib.md).

    RLlib counts the batch and the schedules in env steps (one world stepping once), the run in
    agent-steps: ``total_timesteps`` becomes env steps through the mean agent count per world.
    ``batch_size`` is the minibatch in agent samples (RLlib splits per module, here the one).
    """
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from ray.tune.registry import register_env

    from envs.crossing import FEATURE_SETS
    from training.marl import task_kwargs

    register_env(CROSSING_ENV, crossing_env_creator)
    horizon = cfg.total_timesteps / (sum(cfg.num_agents) / 2)  # counts are uniform on [low, high]
    net = {k: getattr(cfg, k) for k in NET_DEFAULTS}
    module = RLModuleSpec(
        module_class=ray_class("TokenRLModule"),
        model_config={"num_features": FEATURE_SETS[cfg.features], **net},
    )
    env_kw = {k: v for k, v in task_kwargs(cfg).items() if k != "num_worlds"}
    return (
        PPOConfig()
        .environment(CROSSING_ENV, env_config=env_kw)
        .multi_agent(policies={POLICY_ID}, policy_mapping_fn=shared_policy)
        .rl_module(rl_module_spec=MultiRLModuleSpec(rl_module_specs={POLICY_ID: module}))
        .env_runners(
            num_env_runners=env_runners(cfg),
            num_envs_per_env_runner=worlds_per_runner(cfg),
            rollout_fragment_length=cfg.n_steps,
        )
        .training(
            train_batch_size_per_learner=iteration_env_steps(cfg),
            minibatch_size=cfg.batch_size,
            num_epochs=cfg.n_epochs,
            lr=schedule(cfg.learning_rate, cfg.learning_rate_final, horizon),
            gamma=cfg.gamma,
            lambda_=cfg.gae_lambda,
            clip_param=cfg.clip_range,
            entropy_coeff=schedule(cfg.ent_coef, cfg.ent_coef_final, horizon),
            vf_loss_coeff=cfg.vf_coef,
            # The PPO of the sb3 and torchrl backends: clipped objective, no KL penalty, no
            # clipping of the value loss, gradient norm clipped to 0.5.
            use_kl_loss=False,
            vf_clip_param=float("inf"),
            grad_clip=0.5,
        )
        .debugging(seed=seed)
    )


def pack(folder: str, path: Path) -> None:
    """Write the files of ``folder`` (RLlib's checkpoint and policy.pt) into the tar ``path``."""
    with tarfile.open(path, "w") as tar:
        for child in sorted(Path(folder).iterdir()):
            tar.add(child, arcname=child.name)


def unpack(path: Path, folder: str) -> None:
    with tarfile.open(path) as tar:
        # The "data" filter (Python >= 3.11.4) refuses links and paths leaving the folder.
        tar.extractall(folder, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))


def policy_file(path: str | os.PathLike) -> io.BytesIO:
    """policy.pt of an rllib checkpoint, read into memory; ValueError for any other file."""
    try:
        with tarfile.open(path) as tar:
            return io.BytesIO(tar.extractfile(POLICY_FILE).read())
    except (tarfile.TarError, KeyError) as err:
        raise ValueError(f"{path} is not an rllib checkpoint (a tar holding {POLICY_FILE}): {err}") from None


def read_policy(path: str | os.PathLike) -> dict:
    """policy.pt of an rllib checkpoint: {"net": state dict, "steps", "env_steps", "seconds", "history"}."""
    return torch.load(policy_file(path), map_location="cpu", weights_only=False)


def load_net(path: str | os.PathLike, cfg: dict):
    """(TokenActorCritic on the CPU, agent-steps trained) of an rllib run's checkpoint, given its
    config.json. Reads only the checkpoint's policy.pt (the torchrl backend's layout): no Ray."""
    from training.marl_torchrl import load_net as load_torch_net

    return load_torch_net(policy_file(path), cfg)


class Session:
    """One process's share of an rllib run: counters, progress bar, TensorBoard, checkpoints.

    ``state`` holds what a checkpoint carries over: ``steps`` (agent-steps learned from),
    ``env_steps``, ``seconds`` (training time of every process so far) and ``history`` (one record
    per PPO iteration).
    """

    def __init__(self, cfg, run, state: dict):
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        self.cfg, self.run, self.state = cfg, run, state
        self.resumed_from, self.seconds_before = state["steps"], state["seconds"]
        self.startup_seconds: float | None = None  # Ray start, env runners and restore, this process
        self.writer = SummaryWriter(str(run.path / "tb_rllib"))
        self.bar = tqdm(
            total=cfg.total_timesteps, initial=state["steps"], unit="step", disable=not cfg.progress
        )

    def record(self, result: dict, seconds: float) -> None:
        """Count one PPO iteration (``algo.train()``'s ``result``, taking ``seconds``)."""
        runners, learner = result["env_runners"], result.get("learners", {}).get(POLICY_ID, {})
        agent_steps = int(runners["num_module_steps_sampled"][POLICY_ID])
        # RLlib's mean return per agent id over the episodes that ended in this iteration (NaN
        # when none did); the mean over ids is the mean per agent (exact at a fixed count; with a
        # range, each id weighs the same).
        per_agent = [float(v) for v in (runners.get("agent_episode_returns_mean") or {}).values()]
        per_agent = [v for v in per_agent if math.isfinite(v)]
        ep_return = float(np.mean(per_agent)) if per_agent else None
        state = self.state
        state["steps"] += agent_steps
        state["env_steps"] += int(runners["num_env_steps_sampled"])
        state["seconds"] += seconds
        losses = {k: float(learner[k]) for k in ("policy_loss", "vf_loss", "entropy") if k in learner}
        timers = result.get("timers", {})  # where the iteration went: sampling, then the update
        split = {k: float(timers[t]) for k, t in TIMERS.items() if t in timers}
        rate = agent_steps / seconds
        rec = {"steps": state["steps"], "seconds": round(state["seconds"], 3), "agent_steps_per_s": rate}
        state["history"].append({**rec, "ep_return": ep_return, **losses, **split})
        self.bar.update(state["steps"] - self.bar.n)
        if ep_return is not None:
            self.bar.set_postfix(ep_return=f"{ep_return:.3f}")
            self.writer.add_scalar("charts/episodic_return", ep_return, state["steps"])
        for key, value in losses.items():
            self.writer.add_scalar(f"losses/{key}", value, state["steps"])
        self.writer.add_scalar("charts/agent_steps_per_s", rate, state["steps"])

    def save(self, algo) -> None:
        """Checkpoint (checkpoint.tar: RLlib's checkpoint folder plus policy.pt), then the metrics
        it stands for: a killed run reports what it had saved."""
        weights = algo.learner_group.get_weights([POLICY_ID])[POLICY_ID]
        net = {k.removeprefix("net."): torch.as_tensor(v).clone() for k, v in weights.items()}
        with tempfile.TemporaryDirectory(prefix="hyperagents-rllib-") as tmp:
            algo.save_to_path(tmp)
            torch.save({**self.state, "net": net}, Path(tmp) / POLICY_FILE)
            self.run.save_checkpoint(
                lambda p: pack(tmp, p), self.state["steps"], {"seconds": self.state["seconds"]}
            )
        self.run.update_metrics(self.metrics())

    def metrics(self) -> dict:
        state, cfg = self.state, self.cfg
        returns = [[h["steps"], h["ep_return"]] for h in state["history"] if h["ep_return"] is not None]
        session = state["seconds"] - self.seconds_before
        return {
            "backend": "rllib",
            "num_env_runners": env_runners(cfg),
            "num_timesteps": state["steps"],
            "env_steps": state["env_steps"],
            "finished": state["steps"] >= cfg.total_timesteps,
            "resumed_from": self.resumed_from,
            "train_seconds": state["seconds"],
            "steps_per_second": state["steps"] / state["seconds"] if state["seconds"] else None,
            "steps_per_second_this_session": (state["steps"] - self.resumed_from) / session
            if session > 0
            else None,
            "startup_seconds_this_session": self.startup_seconds,
            **{k: sum(h.get(k, 0.0) for h in state["history"]) for k in TIMERS},
            "final_ep_return": returns[-1][1] if returns else None,
            "return_history": returns,
            "checkpoint": str(self.run.path / f"checkpoint{self.run.suffix}"),
        }

    def close(self) -> None:
        self.bar.close()
        self.writer.close()


def train_run(cfg, run) -> dict:
    """Train (or resume) ``cfg`` (a TrainConfig) in the open run folder ``run`` (training/runs.py).

    The checkpoint (``checkpoint.tar``) is RLlib's checkpoint folder (learner, optimizer, env
    runner and connector states) with ``policy.pt`` (the network and the counters) beside it, in
    one file so that runs.py checksums and rotates it like any other. It is written every
    ``checkpoint_every`` agent-steps, at the end and on Ctrl-C / SIGTERM (after the PPO iteration
    under way). A resumed run trains only the missing steps; a finished one starts no Ray.
    """
    torch.set_num_threads(cfg.threads)
    state = {"steps": 0, "env_steps": 0, "seconds": 0.0, "history": []}
    if run.resumed:
        state = read_policy(run.checkpoint.path)
        del state["net"]
    session = Session(cfg, run, state)
    try:
        if state["steps"] < cfg.total_timesteps:
            train_missing(cfg, run, session)
    finally:
        session.close()
    return run.update_metrics(session.metrics())


def train_missing(cfg, run, session: Session) -> None:
    """Start Ray, build (and restore) the algorithm, and run PPO iterations to ``total_timesteps``."""
    import ray

    start = time.perf_counter()
    started_ray = start_ray(cfg.address, env_runners(cfg))
    algo = None
    try:
        # A fresh env stream for every (seed, steps done): a resumed run does not replay its starts.
        algo = ppo_config(cfg, seed=cfg.seed + session.state["steps"]).build_algo()
        if run.resumed:
            with tempfile.TemporaryDirectory(prefix="hyperagents-rllib-") as tmp:
                unpack(run.checkpoint.path, tmp)
                algo.restore_from_path(tmp)
        session.startup_seconds = time.perf_counter() - start
        while session.state["steps"] < cfg.total_timesteps:
            t0 = time.perf_counter()
            result = algo.train()
            session.record(result, time.perf_counter() - t0)
            run.checkpoint_or_stop(session.state["steps"], cfg.checkpoint_every, lambda: session.save(algo))
        if session.state["steps"] != run.saved_step:
            session.save(algo)
    finally:
        if algo is not None:
            algo.stop()
        if started_ray:
            ray.shutdown()
