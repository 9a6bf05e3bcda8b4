"""The peer training stack: TorchRL MAPPO on a VMAS scenario, the way BenchMARL and TorchRL's
multi-agent PPO tutorial run it (``VmasEnv`` + a synchronous ``Collector`` + ``MultiAgentMLP`` actor and
centralised critic + ``ClipPPOLoss`` with GAE). Written here only to be timed beside our trainer.

Default: ``navigation`` with 4 agents, continuous actions (TanhNormal), MLP 256 x 2, 4 epochs,
``max_steps=100``, one collector batch = ``num_envs * n_steps`` env-steps.
"""

from __future__ import annotations

import time

import torch
from tensordict.nn import NormalParamExtractor, TensorDictModule
from torch import nn
from torchrl.collectors import Collector
from torchrl.envs.libs.vmas import VmasEnv
from torchrl.modules import MultiAgentMLP, ProbabilisticActor, TanhNormal
from torchrl.objectives import ClipPPOLoss, ValueEstimators


def build(scenario: str, num_envs: int, n_agents: int, device: str, hidden: int, n_steps: int):
    env = VmasEnv(
        scenario, num_envs=num_envs, continuous_actions=True, max_steps=100, device=device, n_agents=n_agents
    )
    obs_dim = env.observation_spec["agents", "observation"].shape[-1]
    act_spec = env.full_action_spec[env.action_key]
    act_dim = act_spec.shape[-1]
    mlp = dict(
        n_agents=n_agents,
        share_params=True,
        device=device,
        depth=2,
        num_cells=hidden,
        activation_class=nn.Tanh,
    )
    actor_net = nn.Sequential(
        MultiAgentMLP(n_agent_inputs=obs_dim, n_agent_outputs=2 * act_dim, centralised=False, **mlp),
        NormalParamExtractor(),
    )
    actor = ProbabilisticActor(
        TensorDictModule(
            actor_net, in_keys=[("agents", "observation")], out_keys=[("agents", "loc"), ("agents", "scale")]
        ),
        in_keys=[("agents", "loc"), ("agents", "scale")],
        out_keys=[env.action_key],
        distribution_class=TanhNormal,
        distribution_kwargs={"low": act_spec.space.low[0, 0], "high": act_spec.space.high[0, 0]},
        return_log_prob=True,
    )
    critic_net = MultiAgentMLP(n_agent_inputs=obs_dim, n_agent_outputs=1, centralised=True, **mlp)
    critic = TensorDictModule(
        critic_net, in_keys=[("agents", "observation")], out_keys=[("agents", "state_value")]
    )
    collector = Collector(env, actor, frames_per_batch=num_envs * n_steps, total_frames=-1, device=device)
    loss = ClipPPOLoss(actor, critic, clip_epsilon=0.2, entropy_coeff=1e-4, normalize_advantage=False)
    loss.set_keys(
        reward=env.reward_key,
        action=env.action_key,
        value=("agents", "state_value"),
        done=("agents", "done"),
        terminated=("agents", "terminated"),
    )
    loss.make_value_estimator(ValueEstimators.GAE, gamma=0.99, lmbda=0.9)
    params = sum(p.numel() for p in actor_net.parameters()) + sum(p.numel() for p in critic_net.parameters())
    return env, collector, loss, params


def measure(
    seconds: float,
    device: str = "cpu",
    num_envs: int = 64,
    n_agents: int = 4,
    hidden: int = 256,
    n_steps: int = 32,
    epochs: int = 4,
    minibatch: int = 4096,
    scenario: str = "navigation",
) -> dict:
    """Agent-steps/s with learning included, over whole collect + update iterations after a warm-up."""
    env, collector, loss, params = build(scenario, num_envs, n_agents, device, hidden, n_steps)
    opt = torch.optim.Adam(loss.parameters(), lr=3e-4)
    steps, start, iterations = 0, None, 0
    for td in collector:
        if start is None:  # the first batch is warm-up
            start = time.perf_counter()
        else:
            steps += td.numel() * n_agents
        shape = td.get(("next", env.reward_key)).shape
        for key in ("done", "terminated"):
            td.set(("next", "agents", key), td.get(("next", key)).unsqueeze(-1).expand(shape))
        with torch.no_grad():
            loss.value_estimator(
                td, params=loss.critic_network_params, target_params=loss.target_critic_network_params
            )
        data = td.reshape(-1)
        for _ in range(epochs):
            for idx in torch.randperm(data.numel(), device=data.device).split(max(minibatch // n_agents, 1)):
                out = loss(data[idx])
                total = out["loss_objective"] + out["loss_critic"] + out["loss_entropy"]
                opt.zero_grad(set_to_none=True)
                total.backward()
                torch.nn.utils.clip_grad_norm_(loss.parameters(), 1.0)
                opt.step()
        collector.update_policy_weights_()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        iterations += 1
        if time.perf_counter() - start >= seconds and iterations >= 2:
            break
    elapsed = time.perf_counter() - start
    collector.shutdown()
    return {
        "agent_steps": steps,
        "seconds": elapsed,
        "agent_steps_per_s": steps / elapsed,
        "num_envs": num_envs,
        "n_agents": n_agents,
        "hidden": [hidden, hidden],
        "parameters": params,
        "n_steps": n_steps,
        "epochs": epochs,
        "minibatch_agent_samples": minibatch,
        "scenario": scenario,
    }
