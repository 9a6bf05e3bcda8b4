"""``hyperagents vmas``: PPO with count-agnostic attention policies on VMAS (TorchRL's ``VmasEnv``).

The environment is VMAS (``navigation`` by default, per-agent rewards, discrete actions) stepped
through :class:`torchrl.envs.libs.vmas.VmasEnv`. The attention policies do not read VMAS's own
observation: every step, each agent's token set is built from the simulator's world state
(positions, velocities, goals), one token per agent, so one network runs at any agent count.

Token layout (``FEATURES``; F = 8), agent i's set, self first, then the others in index order
(i+1, i+2, ... cyclically):

====  ==========  ===========================================  ===========================
slot  feature     self token (k = 0)                           token of agent j (k > 0)
====  ==========  ===========================================  ===========================
0     present     1                                            1
1-2   dx, dy      0, 0                                         p_j - p_i
3-4   vx, vy      v_i (own velocity)                           v_j - v_i (relative velocity)
5-6   gx, gy      g_i - p_i (own goal offset)                  g_j - p_j (j's goal offset)
7     self        1                                            0
====  ==========  ===========================================  ===========================

Families: ``sa`` / ``hfa`` / ``ha`` (attention over the whole set; actor and critic each their own
encoder), ``mlp`` (our nearest-k MLP: self + the ``mlp_k`` nearest agents, zero-padded), and
``mappo``, the peer: TorchRL's ``MultiAgentMLP`` on VMAS's own observation (position, velocity,
goal offset, 12 lidar rays: 18 numbers at any count), a shared decentralised actor and a
centralised critic (one MLP per agent over all agents' observations, so its input width is tied
to the count; the actor is not and is evaluated at every count). Every family trains in the same
PPO loop: TorchRL's ``vec_generalized_advantage_estimate`` and a clipped PPO loss written here.

Episodes end when every agent is on its goal (terminated: no bootstrap) or at ``max_steps``
(truncated: GAE bootstraps from the critic of the final state). VMAS reports both as
``terminated``, so termination is read from the world instead.

``main(cfg)`` trains one run into ``<runs_dir>/<name>/`` (config.json, metrics.json, checkpoint.pt,
resumable) or, with ``mode="eval"``, evaluates finished runs at ``eval_counts`` and writes a table
of return against agent count with 95% CIs over episodes and seeds (:func:`evaluate_runs`).

Shapes: B envs, T rollout steps, n agents (= tokens per set), F token features, O VMAS
observation width, A actions, M samples.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from envs.checks import check_device
from policies.actor_critic import TokenActorCritic

FEATURES = ("present", "dx", "dy", "vx", "vy", "gx", "gy", "self")
NUM_FEATURES = len(FEATURES)
PRESENT, POSITION = 0, (1, 2)
TOKEN_FAMILIES = ("sa", "hfa", "ha", "mlp")
FAMILIES = (*TOKEN_FAMILIES, "mappo")


@dataclass
class VmasConfig:
    """PPO on a VMAS scenario with count-agnostic token policies (or the TorchRL MLP MAPPO peer)."""

    mode: Literal["train", "eval"] = "train"
    """train: one run into runs_dir/name; eval: evaluate eval_runs at eval_counts and write the table."""
    family: Literal["sa", "hfa", "ha", "mlp", "mappo"] = "sa"
    """sa / hfa / ha: attention over tokens; mlp: nearest-k MLP over tokens; mappo: TorchRL MLP peer."""
    scenario: str = "navigation"
    """A VMAS scenario that takes n_agents (agents' goals are read from ``agent.goal`` when present)."""
    counts: tuple[int, ...] = (4,)
    """Training agent counts; several are cycled, one count per PPO iteration (mappo: exactly one)."""
    shared_reward: bool = False
    """navigation's shared_rew: False gives each agent its own reward, comparable across counts."""
    num_envs: int = 64
    max_steps: int = 100
    """Episode horizon (VMAS max_steps)."""
    n_steps: int = 50
    """Rollout length per PPO iteration (steps of every env)."""
    total_timesteps: int = 500_000
    """Training budget in agent-steps (env steps x agents)."""
    learning_rate: float = 1e-3
    """Adam's rate at the start, decaying linearly to a tenth of it at total_timesteps."""
    n_epochs: int = 10
    batch_size: int = 1024
    """Agent samples per minibatch (whole frames: batch_size // n frames of n agents)."""
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    width: int = 32
    """d of the token encoders (mlp: hidden width 2d)."""
    blocks: int = 1
    heads: int = 2
    kind: Literal["softmax", "linear"] = "softmax"
    neighbours: int | None = None
    """Actor's view: self + this many nearest agents (None: every agent). The critic sees every agent."""
    critic_family: str = ""
    """Token families: the critic's encoder family (empty: the actor's)."""
    mlp_k: int = 3
    """mlp family: neighbours in the fixed-width view (zero-padded when fewer)."""
    net_arch: tuple[int, ...] = (64,)
    peer_hidden: int = 256
    """mappo: width of the MultiAgentMLP's two hidden layers (the TorchRL tutorial's 256)."""
    seed: int = 0
    device: str = "cpu"
    threads: int = 1
    """torch CPU threads (CPU runs only)."""
    runs_dir: str = "runs/vmas"
    name: str = ""
    """Run folder name; empty: ``<family>_n<counts>_s<seed>``."""
    overwrite: bool = False
    checkpoint_every: int = 100_000
    progress: bool = True
    eval_runs: tuple[str, ...] = ()
    """eval mode: run folders to evaluate (grouped by family; seeds pooled)."""
    eval_counts: tuple[int, ...] = (2, 3, 4, 6, 8)
    eval_episodes: int = 100
    """Episodes per run and count (one batch of that many envs)."""
    eval_seed: int = 1000
    """Seed of the evaluation envs: every run meets the same episodes."""
    greedy: bool = False
    """eval: argmax actions instead of sampling from the policy."""
    eval_neighbours: int | None = None
    """eval: cap attention actors' view at self + this many nearest agents (None: as trained)."""
    eval_out: str = ""
    """eval: where the table JSON goes (empty: <runs_dir>/vmas_eval.json)."""


# ---------------------------------------------------------------- validation and devices


def validate(cfg: VmasConfig) -> None:
    """ValueError naming the first bad field."""
    if cfg.mode not in ("train", "eval"):
        raise ValueError(f"mode must be 'train' or 'eval', got {cfg.mode!r}")
    if cfg.family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {cfg.family!r}")
    if cfg.critic_family not in ("", *TOKEN_FAMILIES):
        raise ValueError(f"critic_family must be empty or one of {TOKEN_FAMILIES}, got {cfg.critic_family!r}")
    _validate_numbers(cfg)
    if cfg.family == "mappo" and len(cfg.counts) != 1:
        raise ValueError(f"counts must hold one count for family 'mappo' (critic tied to n): {cfg.counts}")
    if cfg.mode == "eval" and not cfg.eval_runs:
        raise ValueError("eval_runs must name at least one run folder in mode 'eval'")


def _is_count(value, low: int = 1) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= low


def _validate_numbers(cfg: VmasConfig) -> None:
    positive = ("num_envs", "max_steps", "n_steps", "total_timesteps", "n_epochs", "batch_size", "width")
    positive += ("blocks", "heads", "mlp_k", "peer_hidden", "threads", "eval_episodes", "checkpoint_every")
    for name in positive:
        if not _is_count(getattr(cfg, name)):
            raise ValueError(f"{name} must be an int >= 1, got {getattr(cfg, name)!r}")
    for name in ("counts", "eval_counts"):
        value = tuple(getattr(cfg, name))
        if not value or not all(_is_count(c) for c in value):
            raise ValueError(f"{name} must be a non-empty tuple of ints >= 1, got {value!r}")
    for name in ("learning_rate", "gamma", "gae_lambda", "clip_range"):
        if not 0 < getattr(cfg, name) <= 1:
            raise ValueError(f"{name} must be in (0, 1], got {getattr(cfg, name)!r}")
    for name in ("ent_coef", "vf_coef", "max_grad_norm"):
        if not getattr(cfg, name) >= 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(cfg, name)!r}")
    for name in ("neighbours", "eval_neighbours"):
        value = getattr(cfg, name)
        if value is not None and not _is_count(value):
            raise ValueError(f"{name} must be None or an int >= 1, got {value!r}")


# ---------------------------------------------------------------- environment and tokens


def make_env(cfg: VmasConfig, n: int, num_envs: int, seed: int, device: torch.device):
    """TorchRL's VmasEnv of ``cfg.scenario`` with ``n`` agents and discrete actions."""
    from torchrl.envs.libs.vmas import VmasEnv

    extra = {"shared_rew": cfg.shared_reward} if cfg.scenario == "navigation" else {}
    return VmasEnv(
        cfg.scenario,
        num_envs=num_envs,
        continuous_actions=False,
        max_steps=cfg.max_steps,
        device=device,
        seed=seed,
        n_agents=n,
        **extra,
    )


def world_state(env) -> tuple[Tensor, Tensor, Tensor]:
    """(positions, velocities, goals), each (B, n, 2), read from the VMAS world behind ``env``.

    An agent without a ``goal`` entity gets its own position (a zero goal offset).
    """
    agents = env._env.scenario.world.agents  # a loop over n agents, each read tensorised over B
    pos = torch.stack([a.state.pos for a in agents], 1)
    vel = torch.stack([a.state.vel for a in agents], 1)
    goal = torch.stack([a.goal.state.pos if hasattr(a, "goal") else a.state.pos for a in agents], 1)
    return pos, vel, goal


def token_sets(pos: Tensor, vel: Tensor, goal: Tensor) -> Tensor:
    """Every agent's token set (module doc's layout): (B, n, 2) x 3 -> (B, n, n, F)."""
    B, n, _ = pos.shape
    ar = torch.arange(n, device=pos.device)
    order = (ar[:, None] + ar[None, :]) % n  # (n, n): row i = i, i+1, ...: self first
    rel_pos = pos[:, order] - pos[:, :, None]  # (B, n, n, 2)
    rel_vel = vel[:, order] - vel[:, :, None]
    rel_vel[:, :, 0] = vel  # the self token keeps its own velocity (its relative one is 0)
    goal_offset = (goal - pos)[:, order]
    is_self = torch.zeros(B, n, n, 1, device=pos.device)
    is_self[:, :, 0] = 1.0
    present = torch.ones(B, n, n, 1, device=pos.device)
    return torch.cat([present, rel_pos, rel_vel, goal_offset, is_self], -1)


def reached(env) -> Tensor:
    """(B, n) bool: agent within its own radius of its goal (navigation's ``done`` test)."""
    pos, _, goal = world_state(env)
    radius = torch.tensor([a.shape.radius for a in env._env.scenario.world.agents], device=pos.device)
    return (pos - goal).norm(dim=-1) < radius


# ---------------------------------------------------------------- policies


def encoder_kwargs(cfg: VmasConfig, family: str) -> dict:
    """token_encoder arguments of ``family``; an attention encoder sees every agent."""
    enc = dict(family=family, width=cfg.width, mlp_k=cfg.mlp_k)
    if family != "mlp":
        enc |= dict(blocks=cfg.blocks, heads=cfg.heads, kind=cfg.kind, neighbours=None)
    return enc


class TokenPolicy(nn.Module):
    """A :class:`TokenActorCritic` reading token sets built from the world: obs (B, n, n, F)."""

    def __init__(self, cfg: VmasConfig, num_actions: int):
        super().__init__()
        actor = encoder_kwargs(cfg, cfg.family) | (
            {} if cfg.family == "mlp" else {"neighbours": cfg.neighbours}
        )
        critic = encoder_kwargs(cfg, cfg.critic_family or cfg.family)
        self.net = TokenActorCritic(NUM_FEATURES, num_actions, actor, critic, tuple(cfg.net_arch))

    def observe(self, env, td) -> Tensor:
        return token_sets(*world_state(env))

    def actor(self, obs: Tensor) -> Tensor:
        return self.net.actor(obs)  # (..., n, A)

    def critic(self, obs: Tensor) -> Tensor:
        return self.net.critic(obs)  # (..., n, 1)

    def at_count(self, n: int) -> TokenPolicy:
        return self


class PeerPolicy(nn.Module):
    """TorchRL MAPPO networks on VMAS's observation (B, n, O): shared actor, centralised critic."""

    def __init__(self, obs_dim: int, num_actions: int, n: int, hidden: int, device, critic: bool = True):
        super().__init__()
        from torchrl.modules import MultiAgentMLP

        self.shape = (obs_dim, num_actions, hidden)
        mlp = dict(n_agents=n, depth=2, num_cells=hidden, activation_class=nn.Tanh, device=device)
        self.actor_net = MultiAgentMLP(obs_dim, num_actions, centralized=False, share_params=True, **mlp)
        # One critic MLP per agent: rewards are per agent, and a shared centralised MLP would give
        # every agent the same value.
        self.critic_net = (
            MultiAgentMLP(obs_dim, 1, centralized=True, share_params=False, **mlp) if critic else None
        )

    def observe(self, env, td) -> Tensor:
        return td.get(("agents", "observation"))

    def actor(self, obs: Tensor) -> Tensor:
        return self.actor_net(obs)

    def critic(self, obs: Tensor) -> Tensor:
        return self.critic_net(obs)

    def at_count(self, n: int) -> PeerPolicy:
        """The same shared actor for ``n`` agents (no critic): its weights do not depend on n."""
        obs_dim, num_actions, hidden = self.shape
        device = next(self.actor_net.parameters()).device
        out = PeerPolicy(obs_dim, num_actions, n, hidden, device, critic=False)
        out.actor_net.load_state_dict(self.actor_net.state_dict())
        return out


class RandomPolicy(nn.Module):
    """Uniform random actions: the floor every trained policy is compared with."""

    def __init__(self, num_actions: int):
        super().__init__()
        self.num_actions = num_actions

    def observe(self, env, td) -> Tensor:
        return td.get(("agents", "observation"))

    def actor(self, obs: Tensor) -> Tensor:
        return obs.new_zeros(*obs.shape[:-1], self.num_actions)

    def at_count(self, n: int) -> RandomPolicy:
        return self


def env_shapes(cfg: VmasConfig, device: torch.device) -> tuple[int, int]:
    """(O, A): VMAS observation width and number of discrete actions, read off a 1-env instance."""
    env = make_env(cfg, cfg.counts[0], 1, 0, device)
    obs_dim = env.observation_spec["agents", "observation"].shape[-1]
    return obs_dim, env.full_action_spec[env.action_key].space.n


def build_policy(cfg: VmasConfig, obs_dim: int, num_actions: int, device) -> nn.Module:
    if cfg.family == "mappo":
        return PeerPolicy(obs_dim, num_actions, cfg.counts[0], cfg.peer_hidden, device)
    return TokenPolicy(cfg, num_actions).to(device)


# ---------------------------------------------------------------- rollouts


@torch.no_grad()
def collect(env, td, policy: nn.Module, steps: int) -> tuple[dict, object]:
    """Play ``steps`` steps in every env; returns ((B, T, ...) tensors, carried env tensordict).

    The next observation is read before finished envs restart, so a truncated episode can
    bootstrap from its final state.
    """
    keys = ("obs", "action", "log_prob", "reward", "done", "terminated", "next_obs")
    out: dict[str, list[Tensor]] = {k: [] for k in keys}
    for _ in range(steps):
        obs = policy.observe(env, td)
        dist = torch.distributions.Categorical(logits=policy.actor(obs))  # (B, n)
        action = dist.sample()
        td.set(("agents", "action"), action)
        step = env.step(td)
        nxt = step.get("next")
        done = nxt.get("done").reshape(-1)  # (B,)
        out["obs"].append(obs)
        out["action"].append(action)
        out["log_prob"].append(dist.log_prob(action))
        out["reward"].append(nxt.get(("agents", "reward")).squeeze(-1))  # (B, n)
        out["done"].append(done)
        out["terminated"].append(done & reached(env).all(-1))
        out["next_obs"].append(policy.observe(env, nxt))
        td = env.maybe_reset(env.step_mdp(step))
    return {k: torch.stack(v, 1) for k, v in out.items()}, td


@torch.no_grad()
def chunked(fn, x: Tensor, chunk: int = 8192) -> Tensor:
    """``fn`` over the leading dim of x in chunks (bounds activations)."""
    return torch.cat([fn(part) for part in x.split(chunk)])


@torch.no_grad()
def advantages(batch: dict, policy: nn.Module, cfg: VmasConfig) -> tuple[Tensor, Tensor]:
    """GAE advantages and value targets, each (B, T, n, 1), per agent along T."""
    B, T = batch["done"].shape
    obs = batch["obs"]
    value = chunked(policy.critic, obs.flatten(0, 1)).reshape(B, T, -1, 1)  # (B, T, n, 1)
    # V(s_{t+1}): the next step's value where the env went on, else the critic of the stored
    # final observation (also at the rollout's last step).
    fresh = batch["done"].clone()
    fresh[:, -1] = True
    next_value = torch.empty_like(value)
    next_value[:, :-1] = value[:, 1:]
    next_value[fresh] = chunked(policy.critic, batch["next_obs"][fresh])
    n = value.shape[2]
    flags = [batch[k][:, :, None, None].expand(B, T, n, 1) for k in ("done", "terminated")]
    per_agent = [t.transpose(1, 2) for t in (value, next_value, batch["reward"][..., None], *flags)]
    from torchrl.objectives.value.functional import vec_generalized_advantage_estimate  # torchrl: ~3 s

    adv, target = vec_generalized_advantage_estimate(cfg.gamma, cfg.gae_lambda, *per_agent, time_dim=-2)
    return adv.transpose(1, 2), target.transpose(1, 2)


def ppo_update(policy: nn.Module, opt, batch: dict, cfg: VmasConfig, gen: torch.Generator) -> dict:
    """``n_epochs`` of clipped PPO over whole frames (n agents each); last epoch's mean losses."""
    adv, target = advantages(batch, policy, cfg)
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    flat = {
        "obs": batch["obs"].flatten(0, 1),  # (M, n, ...)
        "action": batch["action"].flatten(0, 1),  # (M, n)
        "log_prob": batch["log_prob"].flatten(0, 1),
        "adv": adv.flatten(0, 1).squeeze(-1),  # (M, n)
        "target": target.flatten(0, 1),  # (M, n, 1)
    }
    frames = flat["action"].shape[0]
    per_batch = max(cfg.batch_size // flat["action"].shape[1], 1)
    params = [p for g in opt.param_groups for p in g["params"]]
    for _ in range(cfg.n_epochs):
        sums, count = torch.zeros(3, device=adv.device), 0
        for idx in torch.randperm(frames, generator=gen).to(adv.device).split(per_batch):
            parts = ppo_loss(policy, {k: v[idx] for k, v in flat.items()}, cfg)
            opt.zero_grad(set_to_none=True)
            (parts[0] + cfg.vf_coef * parts[1] - cfg.ent_coef * parts[2]).backward()
            nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            sums, count = sums + parts.detach(), count + 1
    return dict(zip(("objective", "critic", "entropy"), (sums / count).tolist(), strict=True))


def ppo_loss(policy: nn.Module, mb: dict, cfg: VmasConfig) -> Tensor:
    """(clipped surrogate loss, value MSE, entropy) of one minibatch, stacked (3,)."""
    dist = torch.distributions.Categorical(logits=policy.actor(mb["obs"]))  # (M, n)
    ratio = (dist.log_prob(mb["action"]) - mb["log_prob"]).exp()
    clipped = ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range)
    objective = -torch.min(ratio * mb["adv"], clipped * mb["adv"]).mean()
    critic = (policy.critic(mb["obs"]) - mb["target"]).pow(2).mean()
    return torch.stack([objective, critic, dist.entropy().mean()])


def episode_returns(batch: dict, running: Tensor) -> tuple[list[float], Tensor]:
    """Per-agent mean returns of the episodes that ended in ``batch``; running (B, n) sums carried."""
    ended: list[float] = []
    for t in range(batch["done"].shape[1]):  # a loop over steps, each tensorised over (B, n)
        running = running + batch["reward"][:, t]
        d = batch["done"][:, t]
        if d.any():
            ended += running[d].mean(-1).tolist()
            running = running.masked_fill(d[:, None], 0.0)
    return ended, running


# ---------------------------------------------------------------- training


def train(cfg: VmasConfig, policy: nn.Module, device: torch.device, state: dict | None, on_iteration) -> dict:
    """PPO until ``total_timesteps`` agent-steps; ``state`` resumes a checkpoint's counters and weights.

    One env per training count; iteration k plays ``counts[k % len(counts)]``. ``on_iteration(state,
    record)`` runs after every update and may return True to stop.
    """
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate, eps=1e-5)
    state = state or {"steps": 0, "seconds": 0.0, "history": [], "iteration": 0}
    if "opt" in state:
        policy.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
    # Fresh env streams per (seed, steps done): a resumed run continues reproducibly.
    start_seed = cfg.seed * 1_000_003 + state["steps"]
    envs = [make_env(cfg, n, cfg.num_envs, start_seed + k, device) for k, n in enumerate(cfg.counts)]
    tds = [env.reset() for env in envs]
    running = [torch.zeros(cfg.num_envs, n, device=device) for n in cfg.counts]
    torch.manual_seed(start_seed)
    gen = torch.Generator().manual_seed(start_seed)
    while state["steps"] < cfg.total_timesteps:
        k = state["iteration"] % len(envs)
        start = time.perf_counter()
        frac = state["steps"] / cfg.total_timesteps
        for group in opt.param_groups:  # linear decay to 10% keeps late updates small
            group["lr"] = cfg.learning_rate * (1 - 0.9 * frac)
        batch, tds[k] = collect(envs[k], tds[k], policy, cfg.n_steps)
        ended, running[k] = episode_returns(batch, running[k])
        stats = ppo_update(policy, opt, batch, cfg, gen)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        agent_steps = batch["action"].numel()
        state["steps"] += agent_steps
        state["seconds"] += seconds
        state["iteration"] += 1
        record = {
            "steps": state["steps"],
            "count": cfg.counts[k],
            "seconds": round(state["seconds"], 3),
            "agent_steps_per_s": agent_steps / seconds,
            "ep_return": float(np.mean(ended)) if ended else None,
            "episodes": len(ended),
            **stats,
        }
        state["history"].append(record)
        state["net"], state["opt"] = policy.state_dict(), opt.state_dict()
        if on_iteration is not None and on_iteration(state, record):
            break
    return state


def run_name(cfg: VmasConfig) -> str:
    return cfg.name or f"{cfg.family}_n{'-'.join(map(str, cfg.counts))}_s{cfg.seed}"


MAY_CHANGE = (
    "mode",
    "total_timesteps",
    "progress",
    "threads",
    "overwrite",
    "checkpoint_every",
    "eval_runs",
    "eval_counts",
    "eval_episodes",
    "eval_seed",
    "greedy",
    "eval_neighbours",
    "eval_out",
)


def train_run(cfg: VmasConfig, device: torch.device) -> dict:
    """Train (or resume) one run in ``runs_dir/name``; returns its metrics."""
    from tqdm import tqdm

    from training.runs import field_defaults, make_manifest, open_run, outputs_line

    obs_dim, num_actions = env_shapes(cfg, device)
    manifest = make_manifest("vmas", cfg, obs_dim=obs_dim, num_actions=num_actions, features=list(FEATURES))
    with open_run(
        cfg.runs_dir,
        run_name(cfg),
        manifest,
        may_change=MAY_CHANGE,
        overwrite=cfg.overwrite,
        defaults=field_defaults(cfg),
    ) as run:
        torch.manual_seed(cfg.seed)
        policy = build_policy(cfg, obs_dim, num_actions, device)
        state = run.load_torch() if run.resumed else None
        bar = tqdm(total=cfg.total_timesteps, initial=run.saved_step, disable=not cfg.progress)

        def save(state: dict) -> None:
            snapshot = {**state, "net": _to_cpu(state["net"]), "opt": _to_cpu(state["opt"])}
            run.save_torch(snapshot, state["steps"], state={"seconds": state["seconds"]})
            run.update_metrics(run_metrics(cfg, state, device, run.path))

        def on_iteration(state: dict, record: dict) -> bool:
            bar.update(record["steps"] - bar.n)
            if record["ep_return"] is not None:
                bar.set_postfix(ep_return=f"{record['ep_return']:.3f}", n=record["count"])
            run.checkpoint_or_stop(state["steps"], cfg.checkpoint_every, lambda: save(state))
            return False

        try:
            state = train(cfg, policy, device, state, on_iteration)
            if state["steps"] != run.saved_step:
                save(state)
        finally:
            bar.close()
        metrics = run.read_metrics()
        print(outputs_line(run.path))
    return metrics


def run_metrics(cfg: VmasConfig, state: dict, device: torch.device, path: Path) -> dict:
    history = state["history"]
    returns = [[h["steps"], h["count"], h["ep_return"]] for h in history if h["ep_return"] is not None]
    return {
        "backend": "vmas",
        "device": str(device),
        "num_timesteps": state["steps"],
        "finished": state["steps"] >= cfg.total_timesteps,
        "train_seconds": state["seconds"],
        "steps_per_second": state["steps"] / state["seconds"] if state["seconds"] else None,
        "final_ep_return": returns[-1][2] if returns else None,
        "return_history": returns,  # [agent-steps, count, mean per-agent return of ended episodes]
        "checkpoint": str(path / "checkpoint.pt"),
    }


def _to_cpu(obj):
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


# ---------------------------------------------------------------- evaluation


def load_run(folder: str | Path, device: torch.device) -> tuple[VmasConfig, nn.Module]:
    """(config, policy on ``device``) of a trained run folder."""
    from training.runs import find_checkpoint, load_torch

    folder = Path(folder)
    stored = json.loads((folder / "config.json").read_text())
    names = {f.name for f in dataclasses.fields(VmasConfig)}
    fields = {k: (tuple(v) if isinstance(v, list) else v) for k, v in stored.items() if k in names}
    cfg = VmasConfig(**fields)
    checkpoint = find_checkpoint(folder)
    if checkpoint is None:
        raise ValueError(f"eval_runs: {folder} holds no checkpoint")
    policy = build_policy(cfg, stored["obs_dim"], stored["num_actions"], device)
    policy.load_state_dict(load_torch(checkpoint.path)["net"])
    return cfg, policy.eval()


@torch.no_grad()
def evaluate(policy: nn.Module, cfg: VmasConfig, n: int, device: torch.device) -> dict:
    """One episode in each of ``eval_episodes`` envs of ``n`` agents.

    The starts and the action-sampling stream are seeded by ``eval_seed + n`` (the caller's RNG
    state is left as it was), so every run meets the same starts and a rerun repeats its numbers.
    Returns per-episode lists: ``returns`` (sum of rewards, mean over agents) and ``reached``
    (fraction of agents on their goal when the episode ended).
    """
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        env = make_env(cfg, n, cfg.eval_episodes, cfg.eval_seed + n, device)
        torch.manual_seed(cfg.eval_seed + n)
        return _play(policy.at_count(n), env, cfg, n, device)


def _play(policy: nn.Module, env, cfg: VmasConfig, n: int, device: torch.device) -> dict:
    td = env.reset()
    alive = torch.ones(cfg.eval_episodes, dtype=torch.bool, device=device)
    total = torch.zeros(cfg.eval_episodes, n, device=device)  # (B, n)
    on_goal = torch.zeros(cfg.eval_episodes, device=device)
    for t in range(cfg.max_steps):
        logits = policy.actor(policy.observe(env, td))
        action = logits.argmax(-1) if cfg.greedy else torch.distributions.Categorical(logits=logits).sample()
        td.set(("agents", "action"), action)
        step = env.step(td)
        nxt = step.get("next")
        total += nxt.get(("agents", "reward")).squeeze(-1) * alive[:, None]
        done = nxt.get("done").reshape(-1)
        ends = alive & (done | (t == cfg.max_steps - 1))
        on_goal = torch.where(ends, reached(env).float().mean(-1), on_goal)
        alive &= ~done
        if not alive.any():
            break
        td = env.step_mdp(step)
    return {"returns": total.mean(-1).tolist(), "reached": on_goal.tolist()}


def bootstrap_ci(per_seed: list[list[float]], rng: np.random.Generator, draws: int = 2000) -> list[float]:
    """95% CI of the pooled mean, resampling seeds, then episodes within each drawn seed."""
    arrays = [np.asarray(x, dtype=float) for x in per_seed]
    means = np.empty(draws)
    for k in range(draws):
        picked = rng.integers(len(arrays), size=len(arrays))
        means[k] = np.mean([rng.choice(arrays[i], size=len(arrays[i])).mean() for i in picked])
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def summarise(per_seed: list[list[float]], rng: np.random.Generator) -> dict:
    return {
        "mean": float(np.mean([np.mean(x) for x in per_seed])),
        "ci95": bootstrap_ci(per_seed, rng),
        "per_seed": [float(np.mean(x)) for x in per_seed],
        "episodes": sum(len(x) for x in per_seed),
    }


def evaluate_runs(cfg: VmasConfig, device: torch.device) -> dict:
    """The table: for every family in ``eval_runs`` (seeds pooled) and a random policy, mean return
    and fraction on goal with 95% CIs at each of ``eval_counts``."""
    raw: dict[str, dict[int, dict[str, list]]] = {}
    train_counts: dict[str, list[int]] = {}
    for folder in cfg.eval_runs:
        run_cfg, policy = load_run(folder, device)
        if cfg.eval_neighbours is not None and run_cfg.family in ("sa", "hfa", "ha"):
            policy.net.actor_encoder.neighbours = cfg.eval_neighbours  # read by every forward
        train_counts[run_cfg.family] = list(run_cfg.counts)
        for n in cfg.eval_counts:
            out = evaluate(policy, dataclasses.replace(run_cfg, **_eval_fields(cfg)), n, device)
            slot = raw.setdefault(run_cfg.family, {}).setdefault(n, {"returns": [], "reached": []})
            slot["returns"].append(out["returns"])
            slot["reached"].append(out["reached"])
    _, num_actions = env_shapes(cfg, device)
    for n in cfg.eval_counts:
        out = evaluate(RandomPolicy(num_actions), cfg, n, device)
        raw.setdefault("random", {})[n] = {"returns": [out["returns"]], "reached": [out["reached"]]}
    rng = np.random.default_rng(0)
    table = {
        family: {
            str(n): {
                "return": summarise(cell["returns"], rng),
                "reached": summarise(cell["reached"], rng),
                "seeds": len(cell["returns"]),
            }
            for n, cell in by_count.items()
        }
        for family, by_count in raw.items()
    }
    return {
        "eval_counts": list(cfg.eval_counts),
        "train_counts": train_counts,
        "episodes_per_seed": cfg.eval_episodes,
        "greedy": cfg.greedy,
        "eval_neighbours": cfg.eval_neighbours,
        "eval_seed": cfg.eval_seed,
        "runs": [str(f) for f in cfg.eval_runs],
        "table": table,
    }


def _eval_fields(cfg: VmasConfig) -> dict:
    keys = ("eval_episodes", "eval_seed", "greedy", "eval_counts", "max_steps", "shared_reward")
    return {k: getattr(cfg, k) for k in keys}


def markdown_table(result: dict, key: str = "return") -> str:
    """Rows: families; columns: counts; cells ``mean [lo, hi]``, the training count marked ``*``."""
    counts = result["eval_counts"]
    lines = [
        "| family | " + " | ".join(f"n = {n}" for n in counts) + " |",
        "|---|" + "---|" * len(counts),
    ]
    for family, cells in result["table"].items():
        trained = set(result["train_counts"].get(family, []))
        row = []
        for n in counts:
            c = cells[str(n)][key]
            mark = "*" if n in trained else ""
            row.append(f"{c['mean']:.3f}{mark} [{c['ci95'][0]:.3f}, {c['ci95'][1]:.3f}]")
        lines.append(f"| {family} | " + " | ".join(row) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- entry


def main(cfg: VmasConfig) -> dict:
    """Train one run (mode "train") or write the evaluation table (mode "eval"); returns its dict."""
    validate(cfg)
    device = check_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    if cfg.mode == "train":
        return train_run(cfg, device)
    from training.runs import write_json

    result = evaluate_runs(cfg, device)
    out = Path(cfg.eval_out or Path(cfg.runs_dir) / "vmas_eval.json")
    write_json(result, out)
    print(markdown_table(result))
    print(f"outputs: {out}")
    return result


if __name__ == "__main__":
    import tyro

    main(tyro.cli(VmasConfig))
