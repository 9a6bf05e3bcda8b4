"""Training throughput, learning included: our trainers beside the peers' stacks, in one run.

Configurations (agent-steps/s over whole collect + update iterations, after one warm-up):

- ``ours_torchrl``: ``hyperagents train`` at its defaults (training/marl_torchrl.py; the
  ``scratch-cpu`` preset, ``gpu`` on CUDA): crossing, L = 2..24 per world, SA policy (width 32,
  2 blocks, self + 7 nearest), the presets' critic
  (``--critic``, default shared: one encoder for both heads) and precision (``--precision``,
  default bf16 on CUDA, fp32 on the CPU).
- ``ours_torchrl_graphs`` (CUDA): the same with ``--cuda-graphs``, each full PPO minibatch step
  replayed as one CUDA graph.
- ``ours_torchrl_compile`` and, on CUDA, ``ours_torchrl_graphs_compile`` (with ``--compile``): the
  same with ``--compile``, each full minibatch's forward and backward through torch.compile (its
  compile time is in the untimed warm-up iteration, reported as ``warmup_seconds``).
- ``ours_torchrl_central`` (with ``--central``): the same with MAPPO's central critic (its own
  encoder over every agent) in fp32, the recipe before the shared encoder.
- ``ours_sb3`` (CPU): ``hyperagents train --backend sb3`` at its defaults, with L = 2..24 and
  self + 7 nearest (the same SA policy family).
- ``mpe2_supersuit_mlp`` (CPU): SB3 ``PPO("MlpPolicy")`` on MPE2 ``simple_spread_v3`` (N = 3)
  through SuperSuit, ``n_steps=128, batch_size=256`` (reference/PEERS.md 1.3).
- ``vmas_torchrl_mappo``: TorchRL MAPPO on VMAS ``navigation`` (4 agents, MLP 256 x 2, 4 epochs;
  benchmarks/vmas_mappo.py), the TorchRL / BenchMARL stack, at the same number of worlds;
  ``vmas_torchrl_mappo_equal``: the same with the MLP sized to our policy's parameter count.

``--to-gain G`` also measures the wall-clock (training only, evaluations excluded) until the
argmax policy's gain over MOVE_RIGHT at L = 8 reaches G on 100 fixed starts, checked every
``--eval-every`` seconds, for ours_torchrl (the recipe, its schedules over ``--total-timesteps``)
and, on the CPU, ours_sb3 (the SB3 path's defaults), each capped at ``--budget``. The two race at
once in two processes of one torch thread each, so both see the same load.

Examples::

    python benchmarks/bench_train.py --device cpu --seconds 30 --repeats 2
    python benchmarks/bench_train.py --device cuda --num-worlds 4096 --seconds 20
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from envs.checks import check_device  # noqa: E402
from training import marl, marl_torchrl  # noqa: E402
from training.ood import play, policy_actor  # noqa: E402

EVAL_COUNT, EVAL_EPISODES, EVAL_SEED = 8, 100, 4242


def torchrl_cfg(num_worlds: int, batch: int | None = None, device: str = "cpu", **kw) -> marl.TrainConfig:
    """The recipe `hyperagents train` runs by default on ``device`` (the `scratch-cpu` preset, `gpu`
    on CUDA), so the tables time the policy users get; ``num_worlds``, ``batch`` and ``kw`` set
    fields over it."""
    fields = dict(num_worlds=num_worlds, device=device) | ({"batch_size": batch} if batch else {})
    return marl.preset_config("gpu" if device == "cuda" else "scratch-cpu", **fields, **kw)


def eval_gain(net, cfg, device) -> float:
    from envs.crossing import POLICIES, Crossing

    task = dict(
        grid_size=cfg.grid_size, radius=cfg.radius, max_steps=cfg.max_steps, start_width=cfg.start_width
    )
    env = Crossing(num_worlds=EVAL_EPISODES, num_agents=EVAL_COUNT, device=device, **task)
    ours = float(play(env, policy_actor(net, True, 1 << 16, cfg.features), EVAL_SEED, EVAL_SEED).mean())
    ref = float(play(env, POLICIES["move_right"], EVAL_SEED, EVAL_SEED).mean())
    return (ours - ref) / abs(ref)


def measure_torchrl(
    seconds: float,
    device: torch.device,
    num_worlds: int,
    batch: int | None = None,
    to_gain: float | None = None,
    budget: float = 0.0,
    every: float = 30.0,
    **kw,
):
    """Throughput of the batched trainer; with ``to_gain``, training seconds until the gain is reached.
    ``kw``: TrainConfig fields over the timed recipe (critic, precision, total_timesteps: the
    horizon of its learning-rate and entropy schedules, which a throughput run never reaches)."""
    kw = {"total_timesteps": 10**12} | kw
    cfg = torchrl_cfg(num_worlds, batch, device.type, **kw)
    net = marl_torchrl.build_net(cfg, 10)
    clock = {"start": None, "steps0": 0, "evals": [], "next_eval": every}
    # Worlds start together and an episode lasts at most `cycle` rollouts, so resets come in waves
    # (each one samples new starts): a window of whole cycles meets them as often as training does.
    cycle = math.ceil(cfg.max_steps / cfg.n_steps)

    def on_iteration(state, record) -> bool:
        if clock["start"] is None:  # the first iteration is warm-up (allocations, kernels)
            clock["start"], clock["steps0"], clock["sec0"] = (
                record["seconds"],
                record["steps"],
                record["seconds"],
            )
            return False
        if to_gain is not None and record["seconds"] >= clock["next_eval"]:
            clock["next_eval"] += every
            net.eval()
            g = eval_gain(net, cfg, device)
            net.train()
            clock["evals"].append([record["steps"], record["seconds"], g])
            print(
                f"  ours_torchrl {record['seconds']:.0f}s {record['steps']} steps gain {g:+.3f}", flush=True
            )
            return g >= to_gain or record["seconds"] >= budget
        whole = (len(state["history"]) - 1) % cycle == 0  # iterations timed, the warm-up left out
        return to_gain is None and whole and record["seconds"] - clock["sec0"] >= seconds

    state = marl_torchrl.train(cfg, net, device, on_iteration=on_iteration)
    last = state["history"][-1]
    steps, secs = last["steps"] - clock["steps0"], last["seconds"] - clock["sec0"]
    out = {"agent_steps": steps, "seconds": secs, "agent_steps_per_s": steps / secs, "num_worlds": num_worlds}
    out |= {"iterations": len(state["history"]) - 1, "episode_cycle": cycle}
    out |= {"batch_size": cfg.batch_size, "n_steps": cfg.n_steps, "n_epochs": cfg.n_epochs}
    out |= {"critic": cfg.critic, "precision": cfg.precision, "cuda_graphs": cfg.cuda_graphs}
    out |= {"compile": cfg.compile, "warmup_seconds": state["history"][0]["seconds"]}
    out["parameters"] = sum(p.numel() for p in net.parameters())
    timed = state["history"][1:] or state["history"]  # the warm-up iteration left out
    out["phase_seconds"] = {  # mean seconds per iteration spent in each phase
        k: sum(h[f"{k}_s"] for h in timed) / len(timed) for k in marl_torchrl.PHASES
    }
    if to_gain is not None:
        reached = [e for e in clock["evals"] if e[2] >= to_gain]
        out |= {
            "target_gain": to_gain,
            "evals": clock["evals"],
            "seconds_to_gain": reached[0][1] if reached else None,
        }
    return out


def _one_thread() -> None:
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")


def race(jobs: dict) -> dict:
    """Run every ``name: (function, args, kwargs)`` at once, each in its own process with one torch
    thread, so the trainers raced to a gain share the machine's load alike; {name: result}."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(len(jobs), mp_context=ctx, initializer=_one_thread) as pool:
        futures = {name: pool.submit(fn, *args, **kw) for name, (fn, args, kw) in jobs.items()}
        return {name: f.result() for name, f in futures.items()}


def measure_sb3(seconds: float, to_gain=None, budget=0.0, every=30.0) -> dict:
    """SB3 PPO at ``hyperagents train --backend sb3`` defaults (SA), timed per rollout + update chunk."""
    import tempfile

    # the torchrl recipe's counts and view, the SB3 path's defaults for the rest
    fields = dict(backend="sb3", num_agents=marl.PRESETS["scratch-cpu"]["num_agents"], neighbours=7)
    cfg = marl.preset_config(**fields, runs_dir=tempfile.mkdtemp(), progress=False)
    from stable_baselines3 import PPO

    model = PPO(
        "MlpPolicy",
        marl.make_env(cfg),
        n_steps=cfg.n_steps,
        batch_size=cfg.batch_size,
        n_epochs=cfg.n_epochs,
        learning_rate=cfg.learning_rate,
        ent_coef=cfg.ent_coef,
        policy_kwargs=marl.policy_kwargs(cfg),
        seed=0,
        device="cpu",
    )
    chunk = model.n_steps * model.n_envs
    model.learn(chunk)
    trained, steps, evals, next_eval = 0.0, 0, [], every
    while True:
        start = time.perf_counter()
        model.learn(chunk, reset_num_timesteps=False)
        trained += time.perf_counter() - start
        steps += chunk
        if to_gain is None and trained >= seconds:
            break
        if to_gain is not None and trained >= next_eval:
            next_eval += every
            g = eval_gain(model, cfg, "cpu")
            evals.append([steps, trained, g])
            print(f"  ours_sb3 {trained:.0f}s {steps} slot-steps gain {g:+.3f}", flush=True)
            if g >= to_gain or trained >= budget:
                break
    out = {
        "agent_steps": steps,
        "seconds": trained,
        "agent_steps_per_s": steps / trained,
        "slots": model.n_envs,
    }
    if to_gain is not None:
        reached = [e for e in evals if e[2] >= to_gain]
        out |= {"target_gain": to_gain, "evals": evals, "seconds_to_gain": reached[0][1] if reached else None}
    return out


def measure_mpe2(seconds: float) -> dict:
    import supersuit as ss
    from mpe2 import simple_spread_v3
    from stable_baselines3 import PPO

    env = simple_spread_v3.parallel_env(N=3, max_cycles=25, continuous_actions=False)
    env = ss.concat_vec_envs_v1(
        ss.pettingzoo_env_to_vec_env_v1(env), 8, num_cpus=0, base_class="stable_baselines3"
    )
    model = PPO("MlpPolicy", env, n_steps=128, batch_size=256, device="cpu")
    chunk = model.n_steps * model.n_envs
    model.learn(chunk)
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        model.learn(chunk, reset_num_timesteps=False)
        steps += chunk
    elapsed = time.perf_counter() - start
    return {
        "agent_steps": steps,
        "seconds": elapsed,
        "agent_steps_per_s": steps / elapsed,
        "slots": model.n_envs,
    }


def equal_hidden(params: int, obs_dim: int = 18, act_dim: int = 2, n_agents: int = 4) -> int:
    """MLP width h for the VMAS actor + centralised critic to hold about ``params`` parameters."""

    def count(h: int) -> int:
        actor = obs_dim * h + h + h * h + h + h * 2 * act_dim + 2 * act_dim
        critic = n_agents * obs_dim * h + h + h * h + h + h + 1
        return actor + critic

    return min(range(8, 1025), key=lambda h: abs(count(h) - params))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--seconds", type=float, default=30.0, help="timed seconds per configuration and repeat"
    )
    parser.add_argument("--repeats", type=int, default=1, help="alternating repeats; the best counts")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="our minibatch (default grows with worlds)"
    )
    parser.add_argument(
        "--num-worlds", type=int, default=None, help="worlds / envs (default 64 on CPU, 4096 on GPU)"
    )
    parser.add_argument(
        "--only", nargs="*", default=None, help="configurations to run (default: all for the device)"
    )
    parser.add_argument(
        "--to-gain", type=float, default=None, help="also time training to this gain at L = 8"
    )
    parser.add_argument("--budget", type=float, default=600.0, help="training seconds cap for --to-gain")
    parser.add_argument(
        "--total-timesteps",
        type=int,
        default=None,
        help="--to-gain: our schedules' horizon (default the preset's)",
    )
    parser.add_argument("--eval-every", type=float, default=30.0, help="training seconds between gain checks")
    parser.add_argument("--critic", default="shared", choices=("shared", "central", "local"))
    parser.add_argument("--precision", default=None, choices=("fp32", "bf16"), help="default: bf16 on CUDA")
    parser.add_argument("--central", action="store_true", help="also time the central-critic fp32 recipe")
    parser.add_argument("--compile", action="store_true", help="also time ours with torch.compile")
    parser.add_argument(
        "--out", default=None, help="JSON path (default benchmarks/results/train_<device>.json)"
    )
    args = parser.parse_args()
    device = check_device(args.device)
    cuda = device.type == "cuda"
    worlds = args.num_worlds or (4096 if cuda else 64)
    if not cuda:
        torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    from vmas_mappo import measure as vmas

    recipe = dict(critic=args.critic, precision=args.precision or ("bf16" if cuda else "fp32"))
    ours_params = sum(
        p.numel()
        for p in marl_torchrl.build_net(torchrl_cfg(worlds, None, device.type, **recipe), 10).parameters()
    )
    configs = {
        "ours_torchrl": lambda: measure_torchrl(args.seconds, device, worlds, args.batch_size, **recipe)
    }
    if cuda:
        configs["ours_torchrl_graphs"] = lambda: measure_torchrl(
            args.seconds, device, worlds, args.batch_size, cuda_graphs=True, **recipe
        )
    if args.compile:
        configs["ours_torchrl_compile"] = lambda: measure_torchrl(
            args.seconds, device, worlds, args.batch_size, compile=True, **recipe
        )
    if args.compile and cuda:
        configs["ours_torchrl_graphs_compile"] = lambda: measure_torchrl(
            args.seconds, device, worlds, args.batch_size, cuda_graphs=True, compile=True, **recipe
        )
    if args.central:
        configs["ours_torchrl_central"] = lambda: measure_torchrl(
            args.seconds, device, worlds, args.batch_size, critic="central", precision="fp32"
        )
    if not cuda:
        configs |= {
            "ours_sb3": lambda: measure_sb3(args.seconds),
            "mpe2_supersuit_mlp": lambda: measure_mpe2(args.seconds),
        }
    configs["vmas_torchrl_mappo"] = lambda: vmas(
        args.seconds, str(device), num_envs=worlds, minibatch=max(4096, worlds * 4)
    )
    configs["vmas_torchrl_mappo_equal"] = lambda: vmas(
        args.seconds,
        str(device),
        num_envs=worlds,
        hidden=equal_hidden(ours_params),
        minibatch=max(4096, worlds * 4),
    )
    names = [n for n in configs if args.only is None or n in args.only]
    runs: dict[str, list[dict]] = {n: [] for n in names}
    failed: dict[str, str] = {}
    for rep in range(args.repeats):
        for name in names:
            if name in failed:
                continue
            try:  # one configuration that breaks (a peer's install, a device limit) leaves the others
                runs[name].append(configs[name]())
            except Exception as e:  # noqa: BLE001
                failed[name] = f"{type(e).__name__}: {e}"
                print(f"[{rep}] {name} failed: {failed[name]}", flush=True)
                continue
            print(f"[{rep}] {name}: {runs[name][-1]['agent_steps_per_s']:.0f} agent-steps/s", flush=True)
    runs = {n: r for n, r in runs.items() if r}
    best = {n: max(r, key=lambda m: m["agent_steps_per_s"]) for n, r in runs.items()}
    result = {
        "command": "python " + " ".join(sys.argv),
        "device": torch.cuda.get_device_name(device) if cuda else f"{platform.machine()} CPU, 1 torch thread",
        "torch": torch.__version__,
        "best": best,
        "all": runs,
    } | ({"failed": failed} if failed else {})
    ours = best.get("ours_torchrl", {}).get("agent_steps_per_s")
    if ours:
        result["ours_torchrl_over"] = {n: ours / b["agent_steps_per_s"] for n, b in best.items()}
    if args.to_gain is not None:
        gain = (args.to_gain, args.budget, args.eval_every)
        jobs = {
            "ours_torchrl": (
                measure_torchrl,
                (0, device, worlds, args.batch_size, *gain),
                recipe | ({"total_timesteps": args.total_timesteps} if args.total_timesteps else {}),
            )
        }
        if not cuda:  # raced at once on the CPU: the same load on both
            jobs["ours_sb3"] = (measure_sb3, (0, *gain), {})
        result["to_gain"] = race(jobs)
    out = Path(args.out or f"benchmarks/results/train_{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    for n, b in best.items():
        ratio = f"  ours_torchrl x{ours / b['agent_steps_per_s']:.2f}" if ours else ""
        print(f"{n:28s} {b['agent_steps_per_s']:10.0f} agent-steps/s{ratio}")


if __name__ == "__main__":
    main()
