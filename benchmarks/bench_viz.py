"""Frame rate of ``hyperagents view`` with the interaction overlay on, headless.

    python benchmarks/bench_viz.py            # 100 agents, ~1 min on 2 loaded CPU cores
    python benchmarks/bench_viz.py --quick    # 10 frames per case (a smoke run)

A frame is what the viewer does per tick: one env step of the scripted policy, the world drawn by
``envs.render.Renderer`` on an off-screen surface (SDL dummy driver), the overlay's edges, the side
panel, and the canvas copied out as an (H, W, 3) uint8 array. Cases:

* ``cached``: strengths computed once per episode (what the viewer does: the predictor reads the
  episode's start configuration); ``recomputed``: learned + true strengths recomputed every frame.
* ``off``: the same frame without edges (the world, panel and copy alone), for the overlay's cost.
* two worlds: the paper's N = 360, R = 5 (about 6 neighbours per agent at L = 100) and a dense
  N = 60, R = 2 (about 15), with the exact devised one-hot linear SA loaded as "the trained model"
  (its strengths are those of a converged run; no run folder needed).

Both wall-clock fps and CPU-time fps (frames / process CPU seconds: what the machine would give
with the cores to itself) are reported; the machine is shared, so the best of ``repeats`` runs is
kept. Results go to benchmarks/results/viz.json; the table in benchmarks/README_viz.md.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro

ROOT = Path(__file__).resolve().parents[1]
WORLDS = {"paper N=360 R=5": (360, 5), "dense N=60 R=2": (60, 2)}
CASES = ("cached", "recomputed", "off")


@dataclass
class BenchVizConfig:
    """What to measure."""

    agents: int = 100
    """L, agents in the world"""
    frames: int = 150
    """frames per timed run"""
    repeats: int = 3
    """timed runs per case; the best is kept"""
    threads: tuple[int, ...] = (1, 2)
    """torch thread counts to measure (the viewer uses 1: its tensors are small)"""
    quick: bool = False
    """10 frames, 1 repeat: a smoke run"""
    out: Path = ROOT / "benchmarks" / "results" / "viz.json"
    """where the JSON goes"""


def exact_viewer(grid_size: int, radius: int, agents: int):
    """A Viewer over the devised one-hot linear SA (the converged pairwise predictor)."""
    from policies import devised
    from policies.embeddings import make_embedding
    from policies.predictor import Predictor, make_attention
    from training.fit import FitConfig
    from viz.viewer import Viewer

    emb = make_embedding("onehot", (grid_size,))
    model = Predictor(emb, make_attention("sa", dim=grid_size, kind="linear", out_dim=1)).double()
    devised.load_linear_sa(model.attention, *devised.one_hot_band(grid_size, radius))
    cfg = FitConfig(grid_size=grid_size, radius=radius, train_agents=20)
    return Viewer(cfg, model, agents, seed=0)


def time_frames(viewer, frames: int, case: str) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, edges drawn in the last frame) for ``frames`` frames.

    case: "cached", "recomputed" (strengths every frame) or "off" (no edges: the world alone).
    """
    start, starts = torch.as_tensor(viewer.start), torch.as_tensor(viewer.start_labels)
    viewer.show_edges = case != "off"
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(frames):
        viewer.step()
        if case == "recomputed":
            viewer.overlay.update(start, starts)
        viewer.frame()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    viewer.show_edges = True
    if case == "off":
        return wall, cpu, 0
    from viz.overlay import edge_segments

    pairs, _, scale, _ = viewer.overlay.selected()
    edges = len(
        edge_segments(viewer.env.world.positions[0, : viewer.num_agents], pairs, scale, viewer.renderer.view)
    )
    return wall, cpu, edges


def main(cfg: BenchVizConfig) -> dict:
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    frames, repeats = (10, 1) if cfg.quick else (cfg.frames, cfg.repeats)
    rows = []
    for threads in cfg.threads:
        torch.set_num_threads(threads)
        for world, (N, R) in WORLDS.items():
            viewer = exact_viewer(N, R, cfg.agents)
            viewer.frame()  # warm-up: fonts, background
            for case in CASES:
                runs = [time_frames(viewer, frames, case) for _ in range(repeats)]
                row = {
                    "world": world,
                    "strengths": case,
                    "threads": threads,
                    "agents": cfg.agents,
                    "frames": frames,
                    "half_edges": runs[-1][2],
                    "fps_wall": frames / min(r[0] for r in runs),
                    "fps_cpu": frames / max(min(r[1] for r in runs), 1e-9),
                }
                rows.append(row)
                print(
                    f"threads {threads} {world:>16} {row['strengths']:>10}  {row['fps_wall']:7.1f} fps wall  "
                    f"{row['fps_cpu']:7.1f} fps cpu  ({row['half_edges']} half-edges)"
                )
    result = {
        "command": "python benchmarks/bench_viz.py" + (" --quick" if cfg.quick else ""),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_avg": os.getloadavg(),
            "torch_threads": cfg.threads,
        },
        "frame": f"{exact_viewer.__doc__} env step + world + overlay + panel + copy",
        "rows": rows,
    }
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    cfg.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(tyro.cli(BenchVizConfig))
