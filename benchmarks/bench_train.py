"""Training throughput: SB3 PPO agent-steps/s (learning included), ours vs MPE2 + SuperSuit.

Measured side by side in one process, torch on 1 thread (reference/PEERS.md sections 6 and 8):

- peer: ``PPO("MlpPolicy")`` on MPE2 ``simple_spread_v3`` (N = 3, max_cycles = 25) through
  SuperSuit ``pettingzoo_env_to_vec_env_v1`` + ``concat_vec_envs_v1(..., 8, num_cpus=0,
  base_class="stable_baselines3")`` (24 slots), ``n_steps=128, batch_size=256``, no ``seed=``
  (it crashes there).
- ours: PPO with the attention policy (SA, width 32, 2 blocks) on ``envs.vec.CrossingVecEnv``
  (4 worlds x L = 8 agents = 32 slots, like the peer's 24), with the SAME PPO settings
  (``n_steps=128, batch_size=256``, SB3 defaults otherwise, ``seed=0``), and again with our
  training defaults (``training/marl.py``: 32 worlds = 256 slots, ``n_steps=32, batch_size=1024,
  n_epochs=4``), and with the PPO settings of the DAgger round in docs/marl.md (``n_steps=96,
  batch_size=4096``, 4 epochs, clip 0.1, no entropy bonus; the warm start itself is not timed).
- ours, ``MlpPolicy`` on the same VecEnv and PPO settings: isolates the env/adapter cost.

Each configuration runs ``--repeats`` times, alternating; the best rate counts (the machine is
shared). Agent-steps = SB3 timesteps (one per agent slot per step).

Run with the peers' interpreter (it has our project, mpe2 and supersuit)::

    /work/venv-bench/bin/python benchmarks/bench_train.py --seconds 45 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import torch
from stable_baselines3 import PPO

from envs.vec import CrossingVecEnv
from policies.actor_critic import AttentionExtractor

ATTENTION = dict(
    features_extractor_class=AttentionExtractor,
    features_extractor_kwargs=dict(family="sa", width=32, blocks=2),
    net_arch=[64],
)


def mpe_venv():
    import supersuit as ss
    from mpe2 import simple_spread_v3

    env = simple_spread_v3.parallel_env(N=3, max_cycles=25, continuous_actions=False)
    env = ss.pettingzoo_env_to_vec_env_v1(env)
    return ss.concat_vec_envs_v1(env, 8, num_cpus=0, base_class="stable_baselines3")


def ours(num_worlds: int, policy_kwargs: dict | None = ATTENTION, **ppo):
    """A factory of SB3 PPO on ``num_worlds`` crossing worlds of L = 8 agents, seed 0, CPU."""
    return lambda: PPO(
        "MlpPolicy",
        CrossingVecEnv(num_worlds=num_worlds, num_agents=8),
        seed=0,
        policy_kwargs=policy_kwargs,
        device="cpu",
        **ppo,
    )


CONFIGS = {
    "mpe2_simple_spread_supersuit_mlp": lambda: PPO(
        "MlpPolicy", mpe_venv(), n_steps=128, batch_size=256, device="cpu"
    ),
    "ours_crossing_sa_same_ppo": ours(4, n_steps=128, batch_size=256),
    "ours_crossing_mlp_same_ppo": ours(4, None, n_steps=128, batch_size=256),
    "ours_crossing_sa_train_defaults": ours(32, n_steps=32, batch_size=1024, n_epochs=4),
    "ours_crossing_sa_dagger_round_ppo": ours(
        32, n_steps=96, batch_size=4096, n_epochs=4, clip_range=0.1, ent_coef=0.0
    ),
}


def measure(make, seconds: float) -> dict:
    """Learn in chunks of one rollout until ``seconds`` passed; agent-steps/s over the timed part."""
    model = make()
    chunk = model.n_steps * model.n_envs
    model.learn(chunk)  # warm-up: first rollout + update
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        model.learn(chunk, reset_num_timesteps=False)
        steps += chunk
    elapsed = time.perf_counter() - start
    return {
        "agent_steps": steps,
        "seconds": elapsed,
        "agent_steps_per_s": steps / elapsed,
        "num_envs": model.n_envs,
        "n_steps": model.n_steps,
        "batch_size": model.batch_size,
        "n_epochs": model.n_epochs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=45.0, help="timed seconds per configuration and repeat"
    )
    parser.add_argument("--repeats", type=int, default=2, help="alternating repeats; the best counts")
    parser.add_argument("--out", default="benchmarks/results/train.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    runs: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    for rep in range(args.repeats):
        for name, make in CONFIGS.items():
            runs[name].append(measure(make, args.seconds))
            print(f"[{rep}] {name}: {runs[name][-1]['agent_steps_per_s']:.0f} agent-steps/s", flush=True)
    best = {name: max(r, key=lambda m: m["agent_steps_per_s"]) for name, r in runs.items()}
    peer = best["mpe2_simple_spread_supersuit_mlp"]["agent_steps_per_s"]
    result = {
        "command": f"/work/venv-bench/bin/python benchmarks/bench_train.py --seconds {args.seconds:g} "
        f"--repeats {args.repeats}",
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread, shared 2-core CPU",
        "torch": torch.__version__,
        "best": best,
        "all": runs,
        "speedup_vs_peer": {name: b["agent_steps_per_s"] / peer for name, b in best.items()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    for name, b in best.items():
        print(f"{name:36s} {b['agent_steps_per_s']:8.0f} agent-steps/s  x{b['agent_steps_per_s'] / peer:.2f}")


if __name__ == "__main__":
    main()
