"""DAgger warm start: teach a PPO actor-critic a scripted avoider before PPO takes over.

PPO from a random policy spends most of its budget discovering that sidestepping a neighbour's
lane pays; the scripted avoiders of ``envs.experts`` (greedy, cautious, priority) already know
it. This module clones one with DAgger (Ross et al., 2011), which, unlike plain behaviour
cloning, labels the states the *learner* visits, so the clone learns to recover from its own
mistakes:

    iteration 0: the expert acts; later iterations: the learner samples its own actions.
    every visited state of a real, unparked agent is labelled with the expert's action and added
    to an aggregate dataset; the actor is fitted by cross-entropy on it, and the critic by squared
    error on the discounted return observed from that state (so PPO starts with a useful
    baseline instead of a random one, which would otherwise scramble the cloned actor).

Two optional sample weights on the cross-entropy (both 1 by default, plain DAgger):

- ``weighting="world"`` gives every world of a batch the same total weight (each of its agents'
  samples counts mean_L / L_world, mean_L over that batch's worlds). With counts drawn per
  world, a world of 32 agents otherwise outvotes a world of 2 sixteen to one. It does not stop a
  clone hesitating in near-empty worlds (docs/marl.md); playing a separate batch of small worlds
  in every round, a sequence of tasks below, does.
- ``avoid_weight=w`` multiplies the weight of samples whose expert action is not RIGHT (a
  sidestep or a wait). Those are the rare decisions that avoid collisions; missing one costs up
  to 1 per partner, while an extra sidestep costs 0.05, so a cost-sensitive clone leans to them.

Everything is batched over the B worlds and L slots of :class:`envs.crossing.Crossing`; the
policy sees exactly the flattened (L * F) token sets that :class:`envs.vec.CrossingVecEnv`
gives PPO. Shapes: B worlds, L slots, F features, T steps, S samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from stable_baselines3.common.policies import ActorCriticPolicy

from envs.checks import check_int
from envs.crossing import POLICIES, RIGHT, Crossing


@dataclass
class ImitationStats:
    """Per DAgger iteration: how often the learner's argmax matched the expert on the states
    visited (before fitting on them, unweighted), and the mean per-agent return of that
    rollout's actor."""

    agreement: list[float]
    returns: list[float]
    samples: int


def discounted_returns(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """(T, B, L) rewards -> (T, B, L) sum_k gamma^k r_{t+k} to the episode's end."""
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):  # a loop over time only
        running = rewards[t] + gamma * running
        out[t] = running
    return out


EXPERTS = ("greedy", "cautious", "priority")


def rollout(
    env: Crossing, policy: ActorCriticPolicy, expert_acts: bool, gen: torch.Generator, expert: str = "greedy"
):
    """One episode in every world, acted by the expert (a name in ``EXPERTS``) or by the learner
    (sampling).

    Returns obs (S, L*F) and expert labels (S,) of the S visited (step, real unparked agent)
    pairs, rewards (T, B, L), the (T, B, L) mask selecting those pairs, the learner's argmax
    agreement with the labels and the mean per-agent return (``sample_weights`` then reads each
    sample's world size from ``env.mask``)."""
    env.reset()
    B, L = env.B, env.L
    obs_t, label_t, keep_t, guess, rew_t = [], [], [], [], []
    with torch.no_grad():
        for _ in range(env.T):
            obs = env.observations().reshape(B * L, -1)
            label = POLICIES[expert](env)  # (B, L)
            probs = policy.get_distribution(obs).distribution.probs  # (B*L, A)
            guess.append(probs.argmax(-1).view(B, L))
            act = label if expert_acts else torch.multinomial(probs, 1, generator=gen).view(B, L)
            keep_t.append(env.mask & ~env.parked)
            obs_t.append(obs.view(B, L, -1))
            label_t.append(label)
            rew_t.append(env.step(act))
    keep = torch.stack(keep_t)  # (T, B, L)
    rewards = torch.stack(rew_t)
    labels, guesses = torch.stack(label_t)[keep], torch.stack(guess)[keep]
    agree = float((labels == guesses).float().mean()) if keep.any() else float("nan")
    mean_return = float((rewards.sum(0) * env.mask).sum() / env.mask.sum())
    return torch.stack(obs_t)[keep], labels, rewards, keep, agree, mean_return


WEIGHTINGS = ("agent", "world")


def sample_weights(
    mask: torch.Tensor, keep: torch.Tensor, labels: torch.Tensor, weighting: str, avoid_weight: float
) -> torch.Tensor:
    """(S,) cross-entropy weights of the samples ``keep`` (T, B, L) selects; see the module doc.

    mask (B, L): real agents; labels (S,): the expert's actions of those samples."""
    counts = mask.sum(1).float()  # (B,) real agents per world
    per_world = counts.mean() / counts if weighting == "world" else torch.ones_like(counts)
    w = per_world.view(1, -1, 1).expand_as(keep)[keep]  # (S,)
    return w * torch.where(labels == RIGHT, 1.0, avoid_weight)


def fit(policy: ActorCriticPolicy, obs, labels, targets, weights, epochs: int, batch_size: int, vf_coef, gen):
    """Weighted cross-entropy on expert labels + vf_coef * squared error on returns, Adam of the
    policy. The weights scale only the actor's loss: the critic's target is a return, not a
    decision, and stays an unbiased mean."""
    policy.set_training_mode(True)
    for _ in range(epochs):
        for idx in torch.randperm(len(obs), generator=gen).split(batch_size):
            values, log_prob, _ = policy.evaluate_actions(obs[idx], labels[idx])
            w = weights[idx]
            ce = -(w * log_prob).sum() / w.sum()
            loss = ce + vf_coef * (values.squeeze(-1) - targets[idx]).pow(2).mean()
            policy.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 0.5)
            policy.optimizer.step()
    policy.set_training_mode(False)


def imitate(
    policy: ActorCriticPolicy,
    env: Crossing | Sequence[Crossing],
    iterations: int,
    epochs: int = 4,
    batch_size: int = 1024,
    gamma: float = 0.99,
    vf_coef: float = 0.5,
    learning_rate: float = 1e-3,
    seed: int = 0,
    keep_last: int = 4,
    expert: str = "greedy",
    weighting: str = "agent",
    avoid_weight: float = 1.0,
) -> ImitationStats:
    """Run ``iterations`` DAgger rounds on ``policy`` (in place) in ``env``; see the module doc.

    ``env`` may be a sequence of tasks (e.g. one at PPO's agent counts and one with crowds):
    every round then plays one episode batch in each, so each keeps its share of the samples.

    The policy's own Adam optimizer is used at ``learning_rate``. ``keep_last`` bounds memory:
    the aggregate keeps the last this many rounds' samples. ``expert``: "greedy" (the lane-seeking
    avoider), "cautious" (greedy that stays when nothing is safe) or "priority" (the
    collision-free prioritised planner); see ``envs.experts``. ``weighting`` ("agent" or
    "world") and ``avoid_weight`` (> 0) weight the cross-entropy; see the module doc.
    """
    envs = [env] if isinstance(env, Crossing) else list(env)
    if not envs or not all(isinstance(e, Crossing) for e in envs):
        raise TypeError(f"env must be a Crossing or a non-empty sequence of them, got {env!r}")
    if len({e.features for e in envs}) > 1:
        raise ValueError(f"env tasks must share one feature set, got {[e.features for e in envs]}")
    if expert not in EXPERTS:
        raise ValueError(f"expert must be one of {EXPERTS}, got {expert!r}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if isinstance(avoid_weight, bool) or not isinstance(avoid_weight, int | float) or not avoid_weight > 0:
        raise ValueError(f"avoid_weight must be a number > 0, got {avoid_weight!r}")
    for name, value in (
        ("iterations", iterations),
        ("epochs", epochs),
        ("batch_size", batch_size),
        ("keep_last", keep_last),
    ):
        check_int(name, value, 1)
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
    for group in policy.optimizer.param_groups:  # PPO sets its own rate again at every update
        group["lr"] = learning_rate
    gen = torch.Generator().manual_seed(seed)
    width = max(e.L * e.num_features for e in envs)  # obs of smaller-L tasks are padded to it
    for e in envs:
        e.seed(seed)
    data: list[tuple[torch.Tensor, ...]] = []
    agreement, returns, total = [], [], 0
    for k in range(iterations):
        parts, agree, ret = [], 0.0, 0.0
        for e in envs:
            obs, labels, rewards, keep, a, r = rollout(e, policy, expert_acts=k == 0, gen=gen, expert=expert)
            weights = sample_weights(e.mask, keep, labels, weighting, avoid_weight)
            obs = torch.nn.functional.pad(obs, (0, width - obs.shape[1]))  # absent tokens: all zeros
            parts.append((obs, labels, discounted_returns(rewards, gamma)[keep], weights))
            agree, ret = agree + (a * len(labels) if len(labels) else 0.0), ret + r / len(envs)
        round_data = tuple(torch.cat(col) for col in zip(*parts, strict=True))
        agreement.append(agree / max(len(round_data[1]), 1))
        returns.append(ret)
        data = [*data[max(len(data) - keep_last + 1, 0) :], round_data]
        total += len(round_data[0])
        fit(policy, *(torch.cat(col) for col in zip(*data, strict=True)), epochs, batch_size, vf_coef, gen)
    policy.optimizer.state.clear()  # PPO starts with fresh Adam moments, as without a warm start
    return ImitationStats(agreement, returns, total)
