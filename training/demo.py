"""``hyperagents demo``: the paper's experiment in a few minutes on a laptop CPU.

1. The scripted simulation: every agent plays MOVE_RIGHT for N steps in the PettingZoo env; each
   agent's summed reward is printed beside the closed-form value
   ``-#{j != i : circular |y_i - y_j| <= 2R}`` and the episode is written as a GIF.
2. The paper's predictor: single-layer linear self-attention on one-hot positions (d = N) learns
   the interaction from worlds of L* = 20 agents in the paper's setting (100k sequences, N(0, 1)
   init; 6k Adam steps, about a minute on a 2-core CPU), then is tested at agent counts it
   never saw. The OOD table, the learned vs devised interaction matrices (Figures
   1-4) and an overlay GIF of the learned interaction strengths are written to
   ``<runs_dir>/<run_name>_predictor/`` and ``<runs_dir>/<run_name>/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from envs.colliding_agents_v0 import MOVE_RIGHT, parallel_env
from envs.scenarios import make_scenario
from training.runs import outputs_line, validate_name


@dataclass
class DemoConfig:
    """Run the scripted colliding-agents simulation and write its GIF."""

    num_agents: int = 20
    """agents in the world (L)"""
    grid_size: int = 360
    """cylinder side N"""
    radius: int = 5
    """agent radius R"""
    seed: int = 0
    """seed of the start configuration"""
    run_name: str = "demo"
    """folder of the GIFs under runs_dir; the predictor's run is <run_name>_predictor"""
    runs_dir: str = "runs"
    """parent directory of runs"""
    frame_every: int = 4
    """keep one rendered frame every this many steps (0: no GIF)"""
    fit_train: int = 100_000
    """training sequences for the predictor (the paper's 100k)"""
    fit_steps: int = 6_000
    """Adam steps for the predictor"""
    skip_fit: bool = False
    """only run the simulation"""


def out_dir(cfg: DemoConfig) -> Path:
    return Path(cfg.runs_dir) / validate_name(cfg.run_name, "run_name")


def run_simulation(cfg: DemoConfig) -> dict:
    """Play the episode; returns returns, closed forms, y positions and the GIF path (or None)."""
    env = parallel_env(
        num_agents=cfg.num_agents,
        grid_size=cfg.grid_size,
        radius=cfg.radius,
        render_mode="rgb_array" if cfg.frame_every else None,
    )
    _, infos = env.reset(seed=cfg.seed)
    start = np.array([infos[a]["position"] for a in env.agents])
    returns = dict.fromkeys(env.agents, 0.0)
    frames = [env.render()] if cfg.frame_every else []
    while env.agents:
        _, rewards, _, _, _ = env.step(dict.fromkeys(env.agents, MOVE_RIGHT))
        for a, r in rewards.items():
            returns[a] += r
        if cfg.frame_every and (int(env.world.steps[0]) % cfg.frame_every == 0):
            frames.append(env.render())
    env.close()
    L = len(start)
    closed = make_scenario("pairwise").closed_form(
        torch.as_tensor(start)[None], None, torch.ones(1, L, dtype=torch.bool), cfg.grid_size, cfg.radius
    )
    gif = None
    if frames:
        from viz.video import save_video

        gif = save_video(frames, out_dir(cfg) / "simulation.gif", fps=20)
    return {
        "start": start,
        "returns": np.array(list(returns.values())),
        "closed_form": closed[0].numpy() + 0.0,
        "gif": gif,
    }


def train_predictor(cfg: DemoConfig) -> dict:
    """The paper's linear-SA predictor on a demo budget, through ``hyperagents fit``."""
    from training import fit

    fcfg = fit.FitConfig(
        grid_size=cfg.grid_size,
        radius=cfg.radius,
        num_train=cfg.fit_train,
        steps=cfg.fit_steps,
        seed=cfg.seed,
        runs_dir=cfg.runs_dir,
        run_name=cfg.run_name + "_predictor",
        overwrite=True,
    )
    print(
        f"\ntraining the paper's predictor: linear SA, one-hot d = N = {cfg.grid_size}, "
        f"L* = {fcfg.train_agents}, {fcfg.num_train:,} sequences (the paper: 100,000), "
        f"{fcfg.steps:,} Adam steps"
    )
    metrics = fit.main(fcfg)
    from training.view import record_overlay

    metrics["overlay_gif"] = str(
        record_overlay(
            metrics["run"],
            out_dir(cfg) / "overlay.gif",
            steps=120,  # frames held in memory while encoding: keep the GIF small
            num_agents=30,
            seed=cfg.seed,
        )
    )
    return metrics


def main(cfg: DemoConfig) -> dict:
    out_dir(cfg)  # a bad run name stops here, before anything runs
    out = run_simulation(cfg)
    print(
        f"colliding agents: N={cfg.grid_size}, R={cfg.radius}, L={cfg.num_agents}, every agent MOVE_RIGHT "
        f"for {cfg.grid_size} steps"
    )
    print(f"{'agent':>5} {'x0':>4} {'y0':>4} {'return':>7} {'closed form':>11}")
    for i, ((x, y), r, c) in enumerate(zip(out["start"], out["returns"], out["closed_form"], strict=True)):
        print(f"{i:>5} {x:>4} {y:>4} {r:>7.0f} {c:>11.0f}" + ("" if r == c else "  MISMATCH"))
    ok = bool(np.array_equal(out["returns"], out["closed_form"]))
    print(f"all returns equal the closed form: {ok}")
    if out["gif"] is not None:
        print(f"simulation GIF: {out['gif']}")
    if not cfg.skip_fit:
        out["fit"] = metrics = train_predictor(cfg)
        print("\nwritten:")
        for name, path in {**metrics.get("figures", {}), "overlay GIF": metrics.get("overlay_gif")}.items():
            if path:
                print(f"  {name:>12}: {path}")
        print(f"  {'metrics':>12}: {metrics['run']}/metrics.json")
    line = outputs_line(out_dir(cfg)) if out["gif"] is not None or not cfg.skip_fit else "outputs: none"
    if not cfg.skip_fit:
        line += " and " + outputs_line(out["fit"]["run"]).removeprefix("outputs: ")
    print(line)
    return out
