"""``hyperagents view``: watch a trained predictor's interaction strengths while agents move.

Runs the scenario's scripted policy in the PettingZoo env (``envs.colliding_agents_v0``), draws
the world with ``envs.render.Renderer`` and, on top, the edges of :mod:`viz.overlay`; a side
panel holds the HUD, colour bar, legend and keys. Interactive in a window, or headless with
``--record out.gif`` (or ``.mp4``) for ``--steps`` frames.

Keys: space pause, right arrow one step, t learned / truth / difference, f cycle HFA factors,
e edges on / off,
+ / - add or remove an agent (the episode restarts from the same start cells plus or minus
one: try agent counts the model never saw), s screenshot PNG, r new start configuration,
q / esc quit.

Strengths are computed from each episode's start configuration, which is what the predictor
reads (its target is the whole episode's return); edges follow the agents as they move.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from viz.overlay import MODES, PANEL_WIDTH, SCENARIOS, InteractionOverlay, draw_panel

KEYS_HELP = [
    "space pause   -> step   t mode",
    "f HFA factor   e edges on/off",
    "+ / - agents   s screenshot",
    "r reset   q quit",
]
INDEX_COLOURED = (120, 120, 130)  # legend swatch when agents are coloured by index, not by label
MAX_AGENTS = 400  # +/- stops here
DEFAULT_FRAMES = 121  # --record without --steps: frames are held in memory (about 2 MB each)
SLOT_GROWTH = 2  # the env is rebuilt with this many times the slots when +/- outgrows it


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


class Viewer:
    """The env, the renderer, the overlay and a canvas with the side panel; no window of its own.

    Args:
        fit_cfg: the run's FitConfig. model: its trained Predictor. num_agents: L at start.
        seed: seed of start configurations.
    """

    def __init__(self, fit_cfg, model, num_agents: int, seed: int = 0):
        from envs.colliding_agents_v0 import parallel_env
        from envs.render import Renderer

        if fit_cfg.scenario not in SCENARIOS:
            raise ValueError(
                f"hyperagents view draws runs of scenarios {SCENARIOS}; this run is "
                f"{fit_cfg.scenario!r} (no world to draw)"
            )
        if not 1 <= num_agents <= MAX_AGENTS:
            raise ValueError(f"num_agents must be in [1, {MAX_AGENTS}], got {num_agents}")
        import pygame

        self.cfg, self.pg, self._make_env = fit_cfg, pygame, parallel_env
        N, R = fit_cfg.grid_size, fit_cfg.radius
        self.env = parallel_env(num_agents=(1, num_agents), grid_size=N, radius=R, scenario=fit_cfg.scenario)
        self.renderer = Renderer(N, R, mode="rgb_array")
        self.overlay = InteractionOverlay(model, fit_cfg.scenario, N, R)
        self.rng = np.random.default_rng(seed)
        w, h = self.renderer.view.size
        self.canvas = pygame.Surface((w + PANEL_WIDTH, h))
        self.show_edges = True  # the e key
        self.new_configuration(num_agents)

    # ------------------------------------------------------------ configuration
    def _sample(self, num: int) -> tuple[np.ndarray, np.ndarray]:
        pos = self.rng.integers(0, self.cfg.grid_size, size=(num, 2))
        sizes = self.env.scenario.label_sizes
        lab = np.stack([self.rng.integers(0, k, size=num) for k in sizes], 1) if sizes else np.zeros((num, 0))
        return pos, lab.astype(np.int64)

    def new_configuration(self, num_agents: int) -> None:
        """Fresh random start cells and labels for ``num_agents`` agents (the r key)."""
        self.start, self.start_labels = self._sample(num_agents)
        self.restart()

    def resize(self, delta: int) -> None:
        """Add (delta > 0) or drop agents, keeping the others' start cells; restarts the episode."""
        L = int(np.clip(len(self.start) + delta, 1, MAX_AGENTS))
        if L > len(self.start):
            pos, lab = self._sample(L - len(self.start))
            self.start, self.start_labels = (
                np.concatenate([self.start, pos]),
                np.concatenate([self.start_labels, lab]),
            )
        self.start, self.start_labels = self.start[:L], self.start_labels[:L]
        self.restart()

    def restart(self) -> None:
        """Run the episode again from the current start configuration; recompute the strengths."""
        if len(self.start) > self.env.high:  # env slots cost every frame, so grow them only on demand
            high = min(MAX_AGENTS, SLOT_GROWTH * len(self.start))
            c = self.cfg
            self.env = self._make_env(
                num_agents=(1, high), grid_size=c.grid_size, radius=c.radius, scenario=c.scenario
            )
        self.env.reset(options={"positions": self.start, "labels": self.start_labels})
        self.overlay.update(torch.as_tensor(self.start), torch.as_tensor(self.start_labels))

    @property
    def num_agents(self) -> int:
        return len(self.start)

    # ------------------------------------------------------------ stepping and drawing
    def step(self) -> None:
        """One step of the scripted policy; a finished episode restarts from its start cells."""
        if not self.env.agents:
            self.restart()
            return
        actions = self.env.scenario.scripted_actions(self.env.labels)[0].tolist()
        self.env.step({a: actions[i] for i, a in enumerate(self.env.agents)})

    def hud(self) -> list[str]:
        L = self.num_agents
        step = int(self.env.world.steps[0])
        mean = float(np.mean(self.env.returns[:L])) if L else 0.0
        low, high = (
            self.cfg.train_agents,
            getattr(self.cfg, "train_agents_max", None) or self.cfg.train_agents,
        )
        ood = "" if low <= L <= high else f" (trained at {low if low == high else f'{low}..{high}'})"
        return [
            f"{self.cfg.attention}-{self.cfg.kind}, {self.cfg.scenario}",
            f"mode: {self.overlay.mode}",
            f"step {step}/{self.cfg.grid_size}",
            f"agents {L}{ood}",
            f"mean return so far {mean:+.2f}",
        ]

    def legend(self) -> list[tuple[tuple[int, int, int], str]]:
        from envs.render import LABEL_PALETTES

        palette = LABEL_PALETTES.get(self.cfg.scenario)
        if palette is None:
            return [(INDEX_COLOURED, "agents: coloured by index")]
        names = {"predator_prey": ["hunter", "prey"]}.get(self.cfg.scenario)
        sizes = self.env.scenario.label_sizes[0]
        return [(palette[k % len(palette)], names[k] if names else f"alliance {k}") for k in range(sizes)]

    def frame(self) -> np.ndarray:
        """Draw the canvas (:meth:`draw`) and return it as an (H, W, 3) uint8 array."""
        self.draw()
        return np.ascontiguousarray(self.pg.surfarray.pixels3d(self.canvas).transpose(1, 0, 2)).copy()

    def draw(self) -> None:
        """Draw the world, the overlay and the panel on the canvas."""
        env = self.env
        self.renderer.draw(
            env.world,
            env.labels,
            scenario=env.scenario,
            returns=env.returns,
            overlay=self.overlay if self.show_edges else None,
        )
        self.canvas.blit(self.renderer.screen, (0, 0))
        draw_panel(
            self.canvas, self.renderer.view.size[0], self.overlay, self.hud(), self.legend(), KEYS_HELP
        )

    def screenshot(self, folder: str | os.PathLike) -> Path:
        """Save the canvas as PNG in ``folder``; returns the path."""
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        path = path / f"view_{self.overlay.mode}_L{self.num_agents}_step{int(self.env.world.steps[0])}.png"
        self.pg.image.save(self.canvas, str(path))
        return path


# ---------------------------------------------------------------------------- entry points
@contextlib.contextmanager
def one_torch_thread():
    """Drawing uses small tensors: one torch thread is twice as fast as two on a busy 2-core
    machine (benchmarks/README_viz.md); the caller's setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def open_run(run: str | os.PathLike):
    """(FitConfig, Predictor) of a run folder, with one-line errors for the cases people hit."""
    from training.fit import load_run

    if not Path(run).is_dir():
        raise FileNotFoundError(
            f"run folder {str(run)!r} does not exist: train one with `hyperagents fit --name ...`"
        )
    try:
        cfg, model = load_run(run)
    except (RuntimeError, TypeError, KeyError) as err:  # a checkpoint that does not fit its config.json
        first = str(err).splitlines()[0]
        raise ValueError(
            f"cannot rebuild the predictor of {run} from config.json + checkpoint.pt: {first}"
        ) from err
    if cfg.scenario not in SCENARIOS:
        raise ValueError(
            f"hyperagents view draws runs of scenarios {SCENARIOS}; {run} is a "
            f"{cfg.scenario!r} run (no world to draw)"
        )
    return cfg, model


def record(viewer: Viewer, path: str | os.PathLike, steps: int, fps: int) -> Path:
    """``steps`` frames (the start, then one per env step) written to a .gif or .mp4."""
    from viz.video import save_video

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    suffix = Path(path).suffix.lower()
    if suffix not in (".gif", ".mp4"):  # checked before drawing anything
        raise ValueError(f"the video path must end in .gif or .mp4, got {str(path)!r}")
    if suffix == ".mp4" and importlib.util.find_spec("imageio_ffmpeg") is None:
        raise RuntimeError(
            "writing .mp4 needs imageio-ffmpeg: pip install 'hyperagents[video]' (or record a .gif)"
        )
    frames = [viewer.frame()]
    for _ in range(steps - 1):
        viewer.step()
        frames.append(viewer.frame())
    return save_video(frames, path, fps=fps)


def record_overlay(
    run_dir: str | os.PathLike,
    path: str | os.PathLike,
    steps: int = 60,
    num_agents: int | None = None,
    seed: int = 0,
    mode: str = "learned",
    fps: int = 15,
) -> Path:
    """Write the overlay video of a trained run (for ``hyperagents demo``); returns its path.

    Raises:
        FileNotFoundError: no such run folder. ValueError: a run without a world (genotype).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    cfg, model = open_run(run_dir)
    with one_torch_thread():
        viewer = Viewer(cfg, model, num_agents or cfg.train_agents, seed)
        viewer.overlay.mode = mode
        return record(viewer, path, steps, fps)


def has_display() -> bool:
    """A real window can open: a display is set and SDL is not forced to its dummy driver."""
    real = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return real and os.environ.get("SDL_VIDEODRIVER", "") not in ("dummy", "offscreen")


def interactive(viewer: Viewer, cfg: ViewConfig) -> None:
    """The window loop; keys as in the module docstring."""
    pg = viewer.pg
    screen = pg.display.set_mode(viewer.canvas.get_size())
    pg.display.set_caption("hyperagents view: learned interaction strengths")
    clock, paused = pg.time.Clock(), False
    while True:
        advance = not paused
        for event in pg.event.get():
            if event.type == pg.QUIT or (event.type == pg.KEYDOWN and event.key in (pg.K_q, pg.K_ESCAPE)):
                pg.display.quit()
                return
            if event.type == pg.KEYDOWN:
                paused, advance = _on_key(viewer, cfg, event, paused, advance)
        if advance:
            viewer.step()
        viewer.draw()
        screen.blit(viewer.canvas, (0, 0))
        pg.display.flip()
        clock.tick(cfg.fps)


def _on_key(viewer: Viewer, cfg: ViewConfig, event, paused: bool, advance: bool) -> tuple[bool, bool]:
    pg, key = viewer.pg, event.key
    if key == pg.K_SPACE:
        paused = not paused
    elif key == pg.K_RIGHT:
        paused, advance = True, True
    elif key == pg.K_t:
        viewer.overlay.cycle_mode()
    elif key == pg.K_f:
        viewer.overlay.cycle_factor()
    elif key == pg.K_e:
        viewer.show_edges = not viewer.show_edges
    elif key in (pg.K_PLUS, pg.K_EQUALS, pg.K_KP_PLUS):
        viewer.resize(+1)
    elif key in (pg.K_MINUS, pg.K_KP_MINUS):
        viewer.resize(-1)
    elif key == pg.K_s:
        print(f"screenshot: {viewer.screenshot(cfg.screenshot_dir)}")
    elif key == pg.K_r:
        viewer.new_configuration(viewer.num_agents)
    return paused, advance


def main(cfg: ViewConfig) -> Path | None:
    """Open the window, or record a video with ``--record``; one-line SystemExit on user errors."""
    with one_torch_thread():
        return _main(cfg)


def _main(cfg: ViewConfig) -> Path | None:
    if cfg.record is None and cfg.screenshot is None and not has_display():
        raise SystemExit(
            "hyperagents view: no display found (DISPLAY unset or SDL_VIDEODRIVER=dummy); record a "
            f"video instead: hyperagents view --run {cfg.run} --record view.gif"
        )
    window = cfg.record is None and cfg.screenshot is None
    if window:  # before the Renderer exists: its off-screen surface would select SDL's dummy driver
        import pygame

        try:
            pygame.display.init()
        except pygame.error as err:
            raise SystemExit(
                f"hyperagents view: cannot open a window ({err}); use --record view.gif"
            ) from None
    try:
        fit_cfg, model = open_run(cfg.run)
        viewer = Viewer(fit_cfg, model, cfg.num_agents or fit_cfg.train_agents, cfg.seed)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"hyperagents view: {err}") from None
    viewer.overlay.mode = cfg.mode
    if cfg.factor is not None:
        if not 1 <= cfg.factor <= viewer.overlay.num_factors:
            raise SystemExit(
                f"hyperagents view: --factor must be in [1, {viewer.overlay.num_factors}] for this run"
            )
        viewer.overlay.factor = cfg.factor - 1
    if cfg.screenshot is not None:
        for _ in range(cfg.steps or 0):
            viewer.step()
        viewer.draw()
        Path(cfg.screenshot).parent.mkdir(parents=True, exist_ok=True)
        viewer.pg.image.save(viewer.canvas, cfg.screenshot)
        print(f"wrote {cfg.screenshot}")
        return Path(cfg.screenshot)
    if cfg.record is not None:
        try:
            path = record(
                viewer, cfg.record, cfg.steps or min(fit_cfg.grid_size + 1, DEFAULT_FRAMES), cfg.fps
            )
        except (ValueError, RuntimeError) as err:
            raise SystemExit(f"hyperagents view: {err}") from None
        print(f"wrote {path}")
        return path
    try:
        interactive(viewer, cfg)
    except viewer.pg.error as err:
        raise SystemExit(f"hyperagents view: cannot open a window ({err}); use --record view.gif") from None
    return None
