"""``hyperagents demo``: the paper's scripted simulation, checked against its closed form.

Every agent plays MOVE_RIGHT for N steps in the PettingZoo env; each agent's summed reward is
printed beside the closed-form value ``-#{j != i : circular |y_i - y_j| <= 2R}`` and the episode
is written as a GIF.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from envs.colliding_agents_v0 import MOVE_RIGHT, parallel_env
from envs.scenarios import make_scenario


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
    out_dir: str = "runs/demo"
    """where the GIF goes"""
    frame_every: int = 4
    """keep one rendered frame every this many steps (0: no GIF)"""


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

        gif = save_video(frames, Path(cfg.out_dir) / "simulation.gif", fps=20)
    return {
        "start": start,
        "returns": np.array(list(returns.values())),
        "closed_form": closed[0].numpy() + 0.0,
        "gif": gif,
    }


def main(cfg: DemoConfig) -> dict:
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
    return out
