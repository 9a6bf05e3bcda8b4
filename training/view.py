"""``hyperagents view``: watch a `hyperagents fit` run's interaction strengths while agents move.

Opens the run folder here (training code), then hands its config and predictor to
:class:`viz.viewer.Viewer`, which draws the world and the edges of the learned strengths:
interactively in a window, or headless with ``--record out.gif`` (or ``.mp4``) for ``--steps``
frames, or one PNG with ``--screenshot``. Keys are listed in ``viz/viewer.py``.

Example::

    hyperagents fit --grid-size 40 --radius 2 --steps 1000 --run-name viz_pairwise
    hyperagents view --run runs/viz_pairwise --num-agents 30 --record view.gif
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from envs.checks import check_int
from training.fit import FitConfig, load_run
from viz.overlay import MODES, SCENARIOS
from viz.viewer import (
    DEFAULT_FRAMES,
    MAX_AGENTS,
    Viewer,
    check_video_path,
    has_display,
    interactive,
    one_torch_thread,
    record,
)


@dataclass
class ViewConfig:
    """Watch a `hyperagents fit` run: interaction edges on the moving world, or a recorded video."""

    run: str
    """run folder written by `hyperagents fit` (e.g. runs/viz_pairwise)"""
    num_agents: int | None = None
    """agents at start (None: the run's train_agents)"""
    record: str | None = None
    """write a .gif or .mp4 of --steps frames instead of opening a window"""
    steps: int | None = None
    """frames to record (None: one episode, grid_size + 1 frames, at most 121)"""
    mode: Literal["learned", "truth", "difference"] = "learned"
    """what the edges show at start"""
    factor: int | None = None
    """HFA runs: start on this factor's scores (1-based; None: their product)"""
    fps: int = 15
    """frames per second of the window and of the video"""
    seed: int = 0
    """seed of the start configurations"""
    screenshot_dir: str = "screenshots"
    """where the s key writes PNGs"""
    screenshot: str | None = None
    """write one PNG of the view after --steps steps (default 0) and exit, without a window"""


def positive(name: str, value, high: int | None = None) -> None:
    """ValueError naming ``name`` unless ``value`` is an int in [1, high]."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < 1
        or (high is not None and value > high)
    ):
        allowed = ">= 1" if high is None else f"in [1, {high}]"
        raise ValueError(f"{name} must be an int {allowed}, got {value!r}")


def open_view_run(run: str | os.PathLike) -> tuple[FitConfig, object]:
    """(FitConfig, Predictor) of a fit run folder, with one-line errors for the cases people hit."""
    if not Path(run).is_dir():
        raise FileNotFoundError(
            f"run folder {str(run)!r} does not exist: train one with `hyperagents fit --run-name ...`"
        )
    try:
        cfg, model = load_run(run)
    except (RuntimeError, TypeError, KeyError) as err:  # a checkpoint that does not fit its config.json
        first = str(err).splitlines()[0]
        raise ValueError(
            f"cannot rebuild the predictor of {run} from its config and checkpoint: {first}"
        ) from err
    if cfg.scenario not in SCENARIOS:
        raise ValueError(
            f"hyperagents view draws runs of scenarios {SCENARIOS}; {run} is a "
            f"{cfg.scenario!r} run (no world to draw)"
        )
    return cfg, model


def build_viewer(cfg: ViewConfig) -> Viewer:
    """The Viewer of ``cfg``'s run, every option checked against that run."""
    if cfg.num_agents is not None:  # 0 is a value to refuse, not "unset"
        positive("num_agents", cfg.num_agents, MAX_AGENTS)
    if cfg.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {cfg.mode!r}")
    positive("fps", cfg.fps)
    check_int("seed", cfg.seed, 0)
    if cfg.steps is not None and cfg.steps != 0:
        positive("steps", cfg.steps)
    if cfg.record is not None:
        check_video_path(cfg.record)
    fit_cfg, model = open_view_run(cfg.run)
    viewer = Viewer(
        fit_cfg, model, fit_cfg.train_agents if cfg.num_agents is None else cfg.num_agents, cfg.seed
    )
    viewer.overlay.mode = cfg.mode
    if cfg.factor is not None:
        factors = viewer.overlay.num_factors
        if not factors:
            raise ValueError(
                f"factor picks one of an HFA run's score factors; {cfg.run} is a "
                f"{fit_cfg.attention}-{fit_cfg.kind} run without factors"
            )
        positive("factor", cfg.factor, factors)
        viewer.overlay.factor = cfg.factor - 1
    return viewer


def record_overlay(
    run_dir: str | os.PathLike,
    path: str | os.PathLike,
    steps: int = 60,
    num_agents: int | None = None,
    seed: int = 0,
    mode: str = "learned",
    fps: int = 15,
) -> Path:
    """Write the overlay video of a trained run (for ``hyperagents demo``); returns its path."""
    cfg = ViewConfig(str(run_dir), num_agents, str(path), steps, mode, fps=fps, seed=seed)  # type: ignore[arg-type]
    with one_torch_thread():
        return record(build_viewer(cfg), path, steps, fps)


def main(cfg: ViewConfig) -> Path | None:
    """Open the window, or record a video / screenshot; ValueError or FileNotFoundError on bad input."""
    with one_torch_thread():
        return _main(cfg)


def _main(cfg: ViewConfig) -> Path | None:
    window = cfg.record is None and cfg.screenshot is None
    if window and not has_display():
        raise SystemExit(
            "hyperagents view: no display found (DISPLAY unset or SDL_VIDEODRIVER=dummy); record a "
            f"video instead: hyperagents view --run {cfg.run} --record view.gif"
        )
    if window:  # before the Renderer exists: its off-screen surface would select SDL's dummy driver
        import pygame

        try:
            pygame.display.init()
        except pygame.error as err:
            raise SystemExit(
                f"hyperagents view: cannot open a window ({err}); use --record view.gif"
            ) from None
    viewer = build_viewer(cfg)
    if cfg.screenshot is not None:
        for _ in range(cfg.steps or 0):
            viewer.step()
        viewer.draw()
        Path(cfg.screenshot).parent.mkdir(parents=True, exist_ok=True)
        viewer.pg.image.save(viewer.canvas, cfg.screenshot)
        print(f"outputs: {cfg.screenshot}")
        return Path(cfg.screenshot)
    if cfg.record is not None:
        path = record(viewer, cfg.record, cfg.steps or min(viewer.cfg.grid_size + 1, DEFAULT_FRAMES), cfg.fps)
        print(f"outputs: {path}")
        return path
    try:
        interactive(viewer, cfg.fps, cfg.screenshot_dir)
    except viewer.pg.error as err:
        raise SystemExit(f"hyperagents view: cannot open a window ({err}); use --record view.gif") from None
    return None
