"""``hyperagents train --backend torchrl``: MAPPO / IPPO on the crossing task, all on one device.

The whole loop stays where the worlds are (CPU or one GPU): :class:`envs.torchrl_env.CrossingEnv`
steps B worlds as tensors, the shared attention actor samples every agent's action in one
batched pass, TorchRL's GAE (``vec_generalized_advantage_estimate``) and ``ClipPPOLoss`` make the
update. No numpy, no per-agent Python, no host round trip per step.

Rollouts are a direct batched loop over ``env.step_and_maybe_reset`` (what a TorchRL collector
does inside, without its copies into a separate buffer): finished worlds restart in place, and
the env's state carries over from one rollout to the next.

- **Agents and padding.** One actor and one critic are shared by every agent (parameter
  sharing). Samples of padded slots are dropped before the update. Samples of parked agents,
  whose actions the world replaces by STAY, keep their value targets but get a zero advantage:
  their sampled action changed nothing, so it should push the policy nowhere.
- **Critics.** ``critic="central"`` (MAPPO): the critic attends over every agent of the world;
  ``critic="local"`` (IPPO): its own encoder sees what the actor sees (self + ``neighbours``
  nearest); ``critic="shared"`` (the presets): the actor's encoder feeds both heads, run once per
  sample in the rollout and once per minibatch in the update.
- **Truncation.** Episodes end by truncation only; GAE bootstraps from the value of the last
  observation (``terminated`` is False), the same as the SB3 path's ``TimeLimit.truncated``.

Shapes: B worlds, T rollout steps, L agent slots, F token features, M real agent samples.
"""

from __future__ import annotations

import math
import time
import warnings

import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torchrl.modules import ProbabilisticActor
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.value.functional import vec_generalized_advantage_estimate

from envs.crossing import NUM_ACTIONS, PARKED_FEATURE, STAY
from envs.torchrl_env import CrossingEnv
from policies.actor_critic import TokenActorCritic
from training.marl import task_kwargs


def build_net(cfg, num_features: int) -> TokenActorCritic:
    """The shared actor-critic of ``cfg`` (family, widths, neighbour cap, critic kind)."""
    enc = dict(family=cfg.family, width=cfg.width, mlp_k=cfg.mlp_k)
    if cfg.family != "mlp":
        enc |= dict(blocks=cfg.blocks, heads=cfg.heads, kind=cfg.kind, dx_weight=cfg.neighbour_dx_weight)
    lanes = getattr(cfg, "lane_tokens", 0)  # manifests of runs made before the option lack it
    view = dict(neighbours=cfg.neighbours, lane_tokens=lanes, flag_feature=PARKED_FEATURE)
    actor = enc | ({} if cfg.family == "mlp" else view)
    critic = {
        "shared": None,
        "local": actor,
        "central": enc | ({} if cfg.family == "mlp" else {"neighbours": None}),
    }[cfg.critic]
    net = TokenActorCritic(num_features, NUM_ACTIONS, actor, critic, tuple(cfg.net_arch))
    precision = getattr(cfg, "precision", "fp32")
    net.compute_dtype = torch.bfloat16 if precision == "bf16" else None
    return net


def make_loss(net: TokenActorCritic, cfg) -> ClipPPOLoss:
    """TorchRL's clipped PPO loss over flat agent samples ("observation", "action", ...).

    With a shared encoder the loss's actor and critic are the two heads, reading the encoder's
    feature ``"hidden"``, which :func:`update` computes once per minibatch (TorchRL's
    ``ActorValueOperator`` would run the encoder once for each head). The loss does not detach
    its input, so the gradients of both heads reach the encoder through ``"hidden"``.
    """
    if net.shared:
        actor_net, critic_net, key = net.actor_head, net.critic_head, "hidden"
    else:
        actor_net, critic_net, key = net.actor, net.critic, "observation"
    actor = ProbabilisticActor(
        TensorDictModule(actor_net, in_keys=[key], out_keys=["logits"]),
        in_keys=["logits"],
        out_keys=["action"],
        distribution_class=torch.distributions.Categorical,
        return_log_prob=True,
    )
    critic = TensorDictModule(critic_net, in_keys=[key], out_keys=["state_value"])
    return _CategoricalPPOLoss(
        actor,
        critic,
        clip_epsilon=cfg.clip_range,
        entropy_coeff=cfg.ent_coef,
        critic_coeff=cfg.vf_coef,
        loss_critic_type="l2",
        normalize_advantage=False,  # done by hand over the active samples only
    )


class _CategoricalPPOLoss(ClipPPOLoss):
    """TorchRL's clipped PPO loss, without its test that the analytic entropy is finite: the test
    reads a value back from the device in every minibatch, and a categorical over finite logits
    always has a finite entropy."""

    def _get_entropy(self, dist: torch.distributions.Distribution, adv_shape: torch.Size) -> torch.Tensor:
        if not isinstance(dist, torch.distributions.Categorical):
            return super()._get_entropy(dist, adv_shape)
        return dist.entropy().unsqueeze(-1)


@torch.no_grad()
def collect(
    env: CrossingEnv, td: TensorDict, net: TokenActorCritic, steps: int, sample_fraction: float = 1.0
):
    """Play ``steps`` steps in every world; returns (rollout (B, T) TensorDict, carried state).

    Only active agents (real, not parked) go through the actor: the world ignores the others'
    actions, so they get STAY and a log-probability of 0, which no update reads. With a shared
    encoder the same pass gives every real agent's value, and the rollout keeps each agent's
    local view (``"view"``, (B, L, k+1, F)): the update then never reads the other tokens.
    Each step an agent samples with probability ``sample_fraction`` and plays the argmax
    otherwise; ``"sampled"`` (B, L), present when it is below 1, marks the steps the update
    learns from.
    """
    frames = []
    for _ in range(steps):
        agents = td.get("agents")
        active = agents.get("active")  # (B, L)
        action = torch.full(active.shape, STAY, dtype=torch.long, device=active.device)
        log_prob = torch.zeros(active.shape, device=active.device)
        if net.shared:
            real = agents.get("mask")  # (B, L)
            view = net.local_view(agents.get("observation"))  # (B, L, k+1, F)
            hidden = net.encode(view[real])  # (M, d)
            value = torch.zeros(*real.shape, 1, device=real.device)
            value[real] = net.critic_head(hidden)
            logits = net.actor_head(hidden[active[real]])
            agents.set("view", view)
            agents.set("state_value", value)
        elif active.any():
            logits = net.actor(agents.get("observation")[active])
        explore = sample_fraction < 1.0  # else every agent samples and no argmax is needed
        sampled = torch.rand(active.shape, device=active.device) < sample_fraction if explore else None
        if active.any():
            dist = torch.distributions.Categorical(logits=logits)
            chosen = dist.sample()
            if explore:
                chosen = torch.where(sampled[active], chosen, logits.argmax(-1))
            action[active] = chosen
            log_prob[active] = dist.log_prob(chosen)
        if explore:
            agents.set("sampled", sampled)
        agents.set("action", action)
        agents.set("action_log_prob", log_prob)
        out, td = env.step_and_maybe_reset(td)
        frames.append(out)
    return torch.stack(frames, dim=1), td


@torch.no_grad()
def values(net: TokenActorCritic, obs: torch.Tensor, mask: torch.Tensor, chunk: int) -> torch.Tensor:
    """Critic values of the real agents' token sets: obs (..., L, F), mask (...) -> (..., 1), 0 where
    padded; ``chunk`` sets per pass (bounds activations)."""
    out = obs.new_zeros(*mask.shape, 1)
    real = obs[mask]  # (M, L, F)
    if len(real):
        out[mask] = torch.cat([net.critic(part) for part in real.split(chunk)])
    return out


def next_values(net: TokenActorCritic, rollout: TensorDict, value: torch.Tensor, chunk: int) -> torch.Tensor:
    """V(s_{t+1}) for every step, (B, T, L, 1): the next step's value where its world went on, and the
    critic of the stored next observation where the world ended (and at the rollout's last step),
    so the critic runs again on a few frames instead of all of them."""
    fresh = rollout.get(("next", "done")).squeeze(-1).clone()  # (B, T)
    fresh[:, -1] = True
    out = torch.empty_like(value)
    out[:, :-1] = value[:, 1:]
    nxt = rollout.get(("next", "agents"))[fresh]  # (n, L)
    out[fresh] = values(net, nxt.get("observation"), nxt.get("mask"), chunk)
    return out


def samples(rollout: TensorDict, net: TokenActorCritic, cfg) -> TensorDict:
    """Flat (M,) samples of real agents' sampled steps with GAE advantages and value targets.

    The rollout is (B, T) with agent entries (B, T, L, ...). GAE runs along T for every
    (world, agent) pair, over its argmax steps too; a world's ``done`` cuts every one of its
    agents' traces.
    """
    agents, nxt = rollout.get("agents"), rollout.get("next")
    real, active = agents.get("mask"), agents.get("active")  # (B, T, L)
    chunk = max(cfg.batch_size, 1024)
    if net.shared:  # values and local views came with the rollout
        value, obs = agents.get("state_value"), agents.get("view")
    else:
        obs = agents.get("observation")
        value = values(net, obs, real, chunk)
    # value (B, T, L, 1); obs (B, T, L, L or k+1, F)
    next_value = next_values(net, rollout, value, chunk)
    reward = team_rewards(nxt.get(("agents", "reward")), real, cfg.team_spirit)  # (B, T, L, 1)
    L = reward.shape[2]
    done = nxt.get("done").unsqueeze(2).expand(-1, -1, L, -1)  # (B, T, L, 1)
    terminated = nxt.get("terminated").unsqueeze(2).expand(-1, -1, L, -1)
    per_agent = [t.transpose(1, 2) for t in (value, next_value, reward, done, terminated)]  # (B, L, T, 1)
    adv, target = vec_generalized_advantage_estimate(cfg.gamma, cfg.gae_lambda, *per_agent, time_dim=-2)
    adv, target = adv.transpose(1, 2), target.transpose(1, 2)  # (B, T, L, 1)
    adv = adv * active.unsqueeze(-1)
    kept = real & agents.get("sampled", True)
    flat = TensorDict(
        observation=obs,
        action=agents.get("action"),
        action_log_prob=agents.get("action_log_prob"),
        advantage=adv,
        value_target=target,
        active=active,
        batch_size=real.shape,
    )[kept]  # (M,)
    group = real.sum(-1, keepdim=True).expand_as(real)[kept] if cfg.advantage_norm == "count" else None
    active = flat.get("active")
    flat.set("advantage", normalise_advantages(flat.get("advantage"), active, group) * active.unsqueeze(-1))
    return flat


def team_rewards(reward: torch.Tensor, real: torch.Tensor, spirit: float) -> torch.Tensor:
    """(B, T, L, 1) rewards mixed with their world's mean over its learners ``real`` (B, T, L), the
    group's mask (real agents but predator-prey's hunters): (1 - spirit) r_i + spirit mean_j r_j.
    Other slots stay 0."""
    if spirit == 0.0:
        return reward
    real = real.unsqueeze(-1).to(reward.dtype)  # (B, T, L, 1)
    mean = (reward * real).sum(2, keepdim=True) / real.sum(2, keepdim=True).clamp(min=1)  # (B, T, 1, 1)
    return ((1.0 - spirit) * reward + spirit * mean) * real


def normalise_advantages(adv: torch.Tensor, active: torch.Tensor, group: torch.Tensor | None) -> torch.Tensor:
    """(M, 1) advantages to zero mean and unit std over the active samples: over all of them, or
    within each ``group`` (M,) (the world's agent count). A crowd's contacts swing its advantages
    far more than a pair's, so one batch-wide scale leaves the small worlds' signal small; per
    count, every count weighs alike. A group with fewer than two active samples takes the batch's
    statistics."""
    a = adv[active].squeeze(-1)
    if a.numel() < 2:
        return adv
    mean, std = a.mean(), a.std()
    if group is None:
        return (adv - mean) / (std + 1e-8)
    g = group[active]
    n = torch.bincount(g, minlength=int(group.max()) + 1).to(a.dtype)
    g_mean = torch.bincount(g, a, minlength=n.numel()) / n.clamp(min=1)
    # two passes (sum of squared deviations), as torch.std: no cancellation when |mean| >> std
    g_var = torch.bincount(g, (a - g_mean[g]).square(), minlength=n.numel()) / (n - 1).clamp(min=1)
    few = n < 2
    g_mean = torch.where(few, mean, g_mean)
    g_std = torch.where(few, std, g_var.sqrt())
    return (adv - g_mean[group].unsqueeze(-1)) / (g_std[group].unsqueeze(-1) + 1e-8)


LOSS_PARTS = ("objective", "critic", "entropy")  # the order minibatch_step returns them in


def minibatch_step(
    net: TokenActorCritic, loss: ClipPPOLoss, opt: torch.optim.Optimizer, compiled: bool = False
):
    """One PPO gradient step on a minibatch TensorDict (m,): forward, backward, clip, Adam.

    It returns ``TensorDict(parts=(3,))`` (objective, critic, entropy losses, detached) and reads
    nothing back from the device, so the same function runs eagerly or replays as one CUDA graph
    (:func:`graphed_step`). ``compiled``: the forward (encoder, heads, loss) and so its backward
    go through torch.compile for one minibatch size (a different size would compile again). If
    the compiled step fails (torch 2.11's inductor did at minibatches of 65,536 on an H100: a
    stride check in memory-efficient attention's backward), it warns and steps eagerly from then on.
    """
    params = [p for group in opt.param_groups for p in group["params"]]

    def forward(batch: TensorDict) -> torch.Tensor:
        if net.shared:
            # (m, d), once for both heads; the rollout checked these observations, so nothing is
            # read back here (a GPU never waits for the host)
            hidden = net.encode(batch.get("observation"), checked=False)
            batch = batch.copy().set("hidden", hidden)  # the caller's minibatch stays as it was
        out = loss(batch)
        return torch.stack([out["loss_objective"], out["loss_critic"], out["loss_entropy"]])

    fast = torch.compile(forward, dynamic=False) if compiled else None

    def gradients(batch: TensorDict, fn) -> torch.Tensor:
        opt.zero_grad(set_to_none=True)  # so a retry after a failed backward starts from zero
        parts = fn(batch)
        parts.sum().backward()
        return parts

    def step(batch: TensorDict) -> TensorDict:
        nonlocal fast
        if fast is None:
            parts = gradients(batch, forward)
        else:
            try:
                parts = gradients(batch, fast)
            except Exception as e:  # noqa: BLE001 - whatever the compiler raised, eager can take over
                reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                message = f"torch.compile failed on the PPO step ({reason}); stepping eagerly"
                warnings.warn(message, stacklevel=2)
                fast = None
                parts = gradients(batch, forward)
        torch.nn.utils.clip_grad_norm_(params, 0.5)
        opt.step()
        return TensorDict(parts=parts.detach())

    return step


def full_step(net: TokenActorCritic, loss: ClipPPOLoss, opt: torch.optim.Optimizer, cfg):
    """The step :func:`update` runs on full minibatches: compiled (``cfg.compile``), replayed as a
    CUDA graph (``cfg.cuda_graphs``), both, or None for the plain eager step. Both need one shape,
    which full minibatches have; the shorter last one of an epoch runs eagerly."""
    if cfg.cuda_graphs:
        return graphed_step(net, loss, opt, cfg.compile)
    return minibatch_step(net, loss, opt, compiled=True) if cfg.compile else None


def graphed_step(
    net: TokenActorCritic, loss: ClipPPOLoss, opt: torch.optim.Optimizer, compiled: bool = False
):
    """:func:`minibatch_step` captured as one CUDA graph by tensordict's ``CudaGraphModule``: after
    eager warm-up calls it replays forward, backward, clipping and Adam with a single launch,
    where the eager step launches its small kernels one by one from Python (per-minibatch overhead
    bounds the update on a GPU: docs/torchrl.md). A graph keeps its shapes, so it takes full
    minibatches only, and the optimizer must be capturable with a tensor learning rate
    (:func:`make_optimizer`)."""
    from tensordict.nn import CudaGraphModule

    step = minibatch_step(net, loss, opt, compiled)
    with warnings.catch_warnings():
        # it takes TensorDicts out of torch's pytree registry, which nothing here relies on
        warnings.filterwarnings("ignore", message="Tensordict is registered in PyTree")
        return CudaGraphModule(step, warmup=GRAPH_WARMUP, in_keys=[], out_keys=[])


# The third call captures, after two eager steps on a side stream (torch warms up before a capture so
# that lazy state, Adam's moments and library handles, exists outside the graph; a compiled step
# compiles in the first).
GRAPH_WARMUP = 3


def update(
    net: TokenActorCritic,
    loss: ClipPPOLoss,
    opt: torch.optim.Optimizer,
    data: TensorDict,
    cfg,
    gen: torch.Generator,
    full=None,
) -> dict:
    """``n_epochs`` passes of minibatch PPO over ``data``; mean losses of the last epoch.

    ``full`` (from :func:`full_step`, kept across updates) runs the full minibatches; the
    last, shorter one of an epoch runs eagerly.
    """
    M = data.batch_size[0]
    if M == 0:  # no sampled step in the rollout (a tiny sample_fraction): nothing to learn from
        return dict.fromkeys(LOSS_PARTS, math.nan)
    eager = minibatch_step(net, loss, opt)
    device = next(net.parameters()).device
    stats: dict[str, float] = {}
    for _ in range(cfg.n_epochs):
        order = torch.randperm(M, generator=gen).to(device)
        sums = torch.zeros(3, device=device)  # summed on the device: no sync per minibatch
        batches = 0
        for idx in order.split(cfg.batch_size):
            use_full = full is not None and len(idx) == cfg.batch_size
            sums += (full if use_full else eager)(data[idx]).get("parts")
            batches += 1
        stats = dict(zip(LOSS_PARTS, (sums / max(batches, 1)).tolist(), strict=True))
    return stats


def make_optimizer(net: TokenActorCritic, cfg, device: torch.device, saved: dict | None = None):
    """Adam over ``net``, resumed from ``saved`` (an optimizer state dict) when given.

    For CUDA graphs (``cfg.cuda_graphs``) it is capturable, its step counts live on the device and
    its learning rate is a device tensor that :func:`set_learning_rate` fills in place, since a
    graph replays the value it captured. A run may switch either way on resume.
    """
    graphs = cfg.cuda_graphs
    opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate, eps=1e-5, capturable=graphs)
    if saved is not None:
        opt.load_state_dict(saved)  # also restores the saved run's capturable flag and lr type
    for group in opt.param_groups:
        group["capturable"] = graphs
        lr = float(group["lr"])
        group["lr"] = torch.tensor(lr, device=device) if graphs else lr
    for per_param in opt.state.values():
        if "step" in per_param:
            per_param["step"] = per_param["step"].to(device if graphs else "cpu", torch.float32)
    return opt


def set_learning_rate(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


# ---------------------------------------------------------------- the loop


def avoid_cudnn_attention(device: torch.device) -> None:
    """On CUDA, turn cuDNN's fused attention off, process-wide: torch picked it for this policy's
    bf16 SDPA, and it failed in backward at minibatches of 65,536 agents (torch 2.11, H100). Flash
    and memory-efficient attention run."""
    if device.type == "cuda":
        torch.backends.cuda.enable_cudnn_sdp(False)


def train(
    cfg, net: TokenActorCritic, device: torch.device, state: dict | None = None, on_iteration=None
) -> dict:
    """Run PPO until ``cfg.total_timesteps`` agent-steps; ``state`` resumes a checkpoint's.

    ``on_iteration(state, record)`` is called after every update with the checkpointable state
    ({"net", "opt", "steps", "seconds", "history"}) and that iteration's record; returning
    True stops training (a test stops early with it). Returns the final state.
    """
    net.to(device)
    avoid_cudnn_attention(device)
    loss = make_loss(net, cfg).to(device)  # its clip bounds and coefficients are buffers
    state = state or {"steps": 0, "seconds": 0.0, "history": []}
    if "opt" in state:
        net.load_state_dict(state["net"])
    opt = make_optimizer(net, cfg, device, state.get("opt"))
    full = full_step(net, loss, opt, cfg)
    # A fresh env stream for every (seed, steps done): a resumed run continues reproducibly.
    env = CrossingEnv(**task_kwargs(cfg), device=device, seed=cfg.seed + state["steps"])
    torch.manual_seed(cfg.seed + state["steps"])
    gen = torch.Generator().manual_seed(cfg.seed + state["steps"])
    td = env.reset()
    returns = torch.zeros(env.batch_size[0], env.num_agents, device=device)
    while state["steps"] < cfg.total_timesteps:
        start = time.perf_counter()
        frac = state["steps"] / cfg.total_timesteps
        set_learning_rate(opt, _schedule(cfg.learning_rate, cfg.learning_rate_final, frac))
        loss.entropy_coeff.fill_(_schedule(cfg.ent_coef, cfg.ent_coef_final, frac))
        rollout, td = collect(env, td, net, cfg.n_steps, cfg.sample_fraction)
        finished, returns = _episode_stats(rollout, returns)
        clock = [start, _synced(device)]  # phase ends: rollout, GAE (critic passes), PPO update
        data = samples(rollout, net, cfg)
        clock.append(_synced(device))
        stats = update(net, loss, opt, data, cfg, gen, full)
        clock.append(_synced(device))
        seconds = clock[-1] - start
        agent_steps = int(rollout.get(("agents", "mask")).sum())
        state["steps"] += agent_steps
        state["seconds"] += seconds
        record = {
            "steps": state["steps"],
            "seconds": round(state["seconds"], 3),
            "agent_steps_per_s": agent_steps / seconds,
            **{f"{k}_s": round(b - a, 4) for k, a, b in zip(PHASES, clock[:-1], clock[1:], strict=True)},
            "ep_return": finished,
            **stats,
        }
        state["history"].append(record)
        state["net"], state["opt"] = net.state_dict(), opt.state_dict()
        if on_iteration is not None and on_iteration(state, record):
            break
    return state


PHASES = ("rollout", "gae", "update")  # each iteration's record times these, in seconds


def _synced(device: torch.device) -> float:
    """The clock once the device's queued work is done (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _schedule(start: float, end: float | None, fraction: float) -> float:
    return start if end is None else start + (end - start) * min(max(fraction, 0.0), 1.0)


def _episode_stats(rollout: TensorDict, returns: torch.Tensor) -> tuple[float | None, torch.Tensor]:
    """Mean per-agent return of the episodes that ended in ``rollout``; running sums carried over."""
    reward = rollout.get(("next", "agents", "reward")).squeeze(-1)  # (B, T, L)
    mask = rollout.get(("agents", "mask"))  # (B, T, L)
    done = rollout.get(("next", "done")).squeeze(-1)  # (B, T)
    ended: list[torch.Tensor] = []
    for t in range(reward.shape[1]):  # a loop over rollout steps, each tensorised over (B, L)
        returns = returns + reward[:, t]
        d = done[:, t]
        if d.any():
            m = mask[d, t]
            ended.append(returns[d].sum(1) / m.sum(1).clamp(min=1))
            returns = returns.masked_fill(d.unsqueeze(-1), 0.0)
    value = torch.cat(ended).mean().item() if ended else None
    return (None if value is None or math.isnan(value) else value), returns


# ---------------------------------------------------------------- the run folder


def train_run(cfg, run, device: torch.device) -> dict:
    """Train (or resume) ``cfg`` in the open run folder ``run`` (training/runs.py).

    The checkpoint (``checkpoint.pt``) holds the network, the optimizer and the counters, saved
    every ``checkpoint_every`` agent-steps, at the end, and on Ctrl-C / SIGTERM. A resumed run
    trains only the missing steps; its history and training time carry over.
    """
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    from envs.crossing import FEATURE_SETS

    if device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    net = build_net(cfg, FEATURE_SETS[cfg.features])
    state = run.load_torch() if run.resumed else None
    resumed_from = state["steps"] if state else 0
    seconds_before = state["seconds"] if state else 0.0
    writer = SummaryWriter(str(run.path / "tb_torchrl"))
    bar = tqdm(total=cfg.total_timesteps, initial=resumed_from, unit="step", disable=not cfg.progress)

    def metrics(state: dict) -> dict:
        returns = [[h["steps"], h["ep_return"]] for h in state["history"] if h["ep_return"] is not None]
        session = state["seconds"] - seconds_before
        return {
            "backend": "torchrl",
            "device": str(device),
            "num_timesteps": state["steps"],
            "finished": state["steps"] >= cfg.total_timesteps,
            "resumed_from": resumed_from,
            "train_seconds": state["seconds"],
            "steps_per_second": state["steps"] / state["seconds"] if state["seconds"] else None,
            "steps_per_second_this_session": (state["steps"] - resumed_from) / session
            if session > 0
            else None,
            "final_ep_return": returns[-1][1] if returns else None,
            "return_history": returns,
            "checkpoint": str(run.path / "checkpoint.pt"),
        }

    def save(state: dict) -> None:
        """Checkpoint, then the metrics it stands for: a killed run reports what it had saved."""
        cpu = {k: v.detach().cpu() for k, v in state["net"].items()}
        snapshot = {**state, "net": cpu, "opt": _to_cpu(state["opt"])}
        run.save_torch(snapshot, state["steps"], state={"seconds": state["seconds"]})
        run.update_metrics(metrics(state))

    def on_iteration(state: dict, record: dict) -> bool:
        bar.update(record["steps"] - bar.n)
        if record["ep_return"] is not None:
            bar.set_postfix(ep_return=f"{record['ep_return']:.3f}")
            writer.add_scalar("charts/episodic_return", record["ep_return"], record["steps"])
        for key in LOSS_PARTS:
            writer.add_scalar(f"losses/{key}", record[key], record["steps"])
        writer.add_scalar("charts/agent_steps_per_s", record["agent_steps_per_s"], record["steps"])
        run.checkpoint_or_stop(state["steps"], cfg.checkpoint_every, lambda: save(state))
        return False

    try:
        state = train(cfg, net, device, state, on_iteration)
        if state["steps"] != run.saved_step:
            save(state)
    finally:
        bar.close()
        writer.close()
    return run.update_metrics(metrics(state))


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


def load_net(path, cfg: dict) -> tuple[TokenActorCritic, int]:
    """(network on the CPU, agent-steps trained) of a torchrl run's checkpoint, given its config.json."""
    from types import SimpleNamespace

    from envs.crossing import FEATURE_SETS

    fields = SimpleNamespace(**cfg)
    net = build_net(fields, FEATURE_SETS[cfg.get("features", "base")])
    state = torch.load(path, map_location="cpu", weights_only=False)
    net.load_state_dict(state["net"])
    return net.eval(), int(state["steps"])
