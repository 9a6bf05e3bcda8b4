"""Where a PPO update's time goes: the device kernels of full minibatch steps, by total time.

It builds ``hyperagents train``'s recipe for the device (the ``gpu`` preset on CUDA, ``scratch-cpu``
on the CPU), plays one rollout of ``--num-worlds`` worlds, and profiles ``--steps`` full minibatch
steps (after warm-up ones) eagerly or, with ``--compile``, through torch.compile. The table lists
the ops (or compiled kernels) that took the most device time; the JSON keeps the top ones.

    python benchmarks/profile_update.py --device cuda --num-worlds 16384 --batch-size 65536
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import torchrl_cfg  # noqa: E402  (the recipe bench_train times)

from envs.checks import check_device  # noqa: E402
from envs.torchrl_env import CrossingEnv  # noqa: E402
from training import marl_torchrl  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-worlds", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=16384)
    parser.add_argument("--steps", type=int, default=5, help="profiled minibatch steps")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", default=None, help="JSON path for the top ops")
    args = parser.parse_args()
    device = check_device(args.device)
    cuda = device.type == "cuda"
    cfg = torchrl_cfg(args.num_worlds, args.batch_size, device.type)
    marl_torchrl.avoid_cudnn_attention(device)  # as the trainer does
    net = marl_torchrl.build_net(cfg, 10).to(device)
    loss = marl_torchrl.make_loss(net, cfg).to(device)
    opt = marl_torchrl.make_optimizer(net, cfg, device)
    env = CrossingEnv(**marl_torchrl.task_kwargs(cfg), device=device, seed=0)
    rollout = marl_torchrl.collect(env, env.reset(), net, cfg.n_steps, cfg.sample_fraction)[0]
    data = marl_torchrl.samples(rollout, net, cfg)
    if data.batch_size[0] < args.batch_size:
        raise ValueError(f"batch_size must be at most the rollout's {data.batch_size[0]} samples")
    step = marl_torchrl.minibatch_step(net, loss, opt, compiled=args.compile)
    batches = [data[i * args.batch_size : (i + 1) * args.batch_size] for i in range(2)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for batch in batches:  # warm-up (and the compile)
            step(batch)
    fell_back = [str(w.message) for w in caught if "torch.compile failed" in str(w.message)]
    for message in fell_back:
        print(message)  # the profile below is then of eager steps
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for k in range(args.steps):
            step(batches[k % 2])
        sync()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    rows = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)
    total = sum(getattr(e, key) for e in rows)
    compiled = args.compile and not fell_back
    print(f"{cfg.preset}, {args.num_worlds} worlds, minibatch {args.batch_size}, compiled {compiled}:")
    print(f"{total / args.steps / 1e3:.2f} ms of {'device' if cuda else 'CPU'} time per minibatch step")
    top = []
    for e in rows[: args.top]:
        ms = getattr(e, key) / args.steps / 1e3
        top.append({"name": e.key[:120], "ms_per_step": ms, "calls_per_step": e.count / args.steps})
        print(f"{ms:8.3f} ms {e.count / args.steps:6.1f}x  {e.key[:100]}")
    if args.out:
        out = {"device": torch.cuda.get_device_name(device) if cuda else "cpu", "torch": torch.__version__}
        out |= {"args": vars(args), "compiled": compiled, "ms_per_step": total / args.steps / 1e3, "top": top}
        Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
