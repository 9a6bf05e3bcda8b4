"""Watch a trained predictor's interaction strengths while agents move (``hyperagents view``'s window).

Given a model and the facts of its run (no run loading here: ``training/view.py`` opens run
folders), it runs the scenario's scripted policy in the PettingZoo env
(``envs.colliding_agents_v0``), draws the world with ``envs.render.Renderer`` and, on top, the
edges of :mod:`viz.overlay`; a side panel holds the HUD, colour bar, legend and keys.
Interactive in a window (:func:`interactive`), or headless frames for a video (:func:`record`).

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
from pathlib import Path

import numpy as np
import torch

from viz.overlay import PANEL_WIDTH, SCENARIOS, InteractionOverlay, draw_panel

KEYS_HELP = [
    "space pause   -> step   t mode",
    "f HFA factor   e edges on/off",
    "+ / - agents   s screenshot",
    "r reset   q quit",
]
INDEX_COLOURED = (120, 120, 130)  # legend swatch when agents are coloured by index, not by label
MAX_AGENTS = 400  # +/- stops here
DEFAULT_FRAMES = 121  # a recording without a frame count: frames are held in memory (about 2 MB each)
SLOT_GROWTH = 2  # the env is rebuilt with this many times the slots when +/- outgrows it


class Viewer:
    """The env, the renderer, the overlay and a canvas with the side panel; no window of its own.

    Args:
        fit_cfg: the facts of the model's run, read as attributes: scenario, grid_size, radius,
            attention, kind, train_agents and optionally train_agents_max (a fit run's config).
        model: its trained Predictor. num_agents: L at start. seed: seed of start configurations.
    """

    def __init__(self, fit_cfg, model, num_agents: int, seed: int = 0):
        from envs.colliding_agents_v0 import parallel_env
        from envs.render import Renderer

        if fit_cfg.scenario not in SCENARIOS:
            raise ValueError(
                f"hyperagents view draws runs of scenarios {SCENARIOS}; this run is "
                f"{fit_cfg.scenario!r} (no world to draw)"
            )
        if (
            isinstance(num_agents, bool)
            or not isinstance(num_agents, int)
            or not 1 <= num_agents <= MAX_AGENTS
        ):
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
        from envs.render import legend_entries

        entries = legend_entries(self.cfg.scenario, self.env.scenario.label_sizes)
        return entries or [(INDEX_COLOURED, "agents: coloured by index")]

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
            legend=False,  # the panel holds the legend
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


# ---------------------------------------------------------------------------- running it
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


def check_video_path(path: str | os.PathLike) -> None:
    """ValueError unless ``path`` ends in .gif or .mp4 (RuntimeError: .mp4 without imageio-ffmpeg)."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise ValueError(f"the video path must end in .gif or .mp4, got {str(path)!r}")
    if suffix == ".mp4" and importlib.util.find_spec("imageio_ffmpeg") is None:
        raise RuntimeError(
            "writing .mp4 needs imageio-ffmpeg: pip install 'hyperagents[video]' (or record a .gif)"
        )


def record(viewer: Viewer, path: str | os.PathLike, steps: int, fps: int) -> Path:
    """``steps`` frames (the start, then one per env step) written to a .gif or .mp4."""
    from viz.video import save_video

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    check_video_path(path)  # before drawing anything
    frames = [viewer.frame()]
    for _ in range(steps - 1):
        viewer.step()
        frames.append(viewer.frame())
    return save_video(frames, path, fps=fps)


def has_display() -> bool:
    """A real window can open: a display is set and SDL is not forced to its dummy driver."""
    real = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return real and os.environ.get("SDL_VIDEODRIVER", "") not in ("dummy", "offscreen")


def interactive(viewer: Viewer, fps: int = 15, screenshot_dir: str | os.PathLike = "screenshots") -> None:
    """The window loop; keys as in the module docstring (the s key writes PNGs to ``screenshot_dir``)."""
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
                paused, advance = _on_key(viewer, screenshot_dir, event, paused, advance)
        if advance:
            viewer.step()
        viewer.draw()
        screen.blit(viewer.canvas, (0, 0))
        pg.display.flip()
        clock.tick(fps)


def _on_key(viewer: Viewer, screenshot_dir, event, paused: bool, advance: bool) -> tuple[bool, bool]:
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
        print(f"screenshot: {viewer.screenshot(screenshot_dir)}")
    elif key == pg.K_r:
        viewer.new_configuration(viewer.num_agents)
    return paused, advance
