"""pygame drawing of one colliding-agents world (``human`` window or ``rgb_array`` frames).

pygame is imported lazily, inside :class:`Renderer`, so ``import envs`` never needs it. Without
a display (CI, servers) SDL's dummy video driver is selected automatically: ``rgb_array`` always
works and ``human`` degrades to an off-screen surface instead of crashing.

Picture: x runs left to right between two walls; y runs bottom to top and wraps around (the
cylinder), so the top and bottom edges are drawn as dashed seams, agents overlapping a seam are
drawn on both sides, and the background is shaded like a pipe lit from the front. Agents are
discs of radius R; a line joins every pair touching right now and agents that have collided at
least once carry a red ring. For labelled scenarios (``predator_prey``, ``alliances``) agents are
coloured by label and a legend under the status line names each colour; ``pairwise`` agents are
coloured by index and carry no legend (the colours mean nothing beyond telling agents apart).
"""

from __future__ import annotations

import colorsys
import os
from dataclasses import dataclass

import numpy as np
import torch

from envs.world import World

# Layout and palette, in pixels and RGB; every drawing call below takes its numbers from here.
CANVAS = 600  # side of the square world view
MARGIN = 24  # room for the walls and seam labels around the view
HUD_HEIGHT = 58  # the status line, then the colour legend of labelled scenarios
HUD_TEXT_ROW = 9
LEGEND_ROW = 34
LEGEND_SWATCH = 12  # legend disc diameter
LEGEND_GAP = 18  # between one legend entry and the next
WALL = (70, 70, 80)
SEAM = (120, 140, 190)
BACKGROUND_EDGE = (205, 212, 225)  # pipe shading: darker at the seams...
BACKGROUND_MID = (246, 248, 252)  # ...lighter in the middle
TOUCH_LINE = (220, 40, 40)
COLLIDED_RING = (200, 30, 30)
TEXT = (30, 30, 40)
MUTED = (110, 110, 125)
# Colours of labelled scenarios, indexed by `label_index`. predator_prey: warm hunters, cool prey,
# one shade per scripted policy, so species and policy read off one disc.
LABEL_PALETTES = {
    "predator_prey": [(205, 75, 35), (240, 170, 30), (40, 145, 70), (50, 120, 205)],
    "alliances": [(70, 110, 200), (230, 160, 30), (150, 70, 170), (40, 160, 160), (200, 90, 140)],
}
LABEL_NAMES = {"predator_prey": ["hunter, right", "hunter, up", "prey, right", "prey, up"]}


def agent_colors(num_agents: int) -> list[tuple[int, int, int]]:
    """Distinct, reproducible colours per agent index (golden-ratio hue steps)."""
    hues = (np.arange(num_agents) * 0.618033988749895) % 1.0
    return [tuple(int(255 * c) for c in colorsys.hsv_to_rgb(h, 0.75, 0.85)) for h in hues]


def label_index(labels: torch.Tensor, scenario_name: str) -> torch.Tensor:
    """(L,) palette index of each agent from its (L, F) labels: species x policy for
    predator_prey (hunter right, hunter up, prey right, prey up), the alliance id for alliances."""
    if scenario_name == "predator_prey":
        return labels[:, 0] * 2 + labels[:, 1]
    return labels[:, 0]


def colors_for(labels: torch.Tensor, scenario_name: str | None) -> list[tuple[int, int, int]]:
    """Colour of each agent slot: by label for labelled scenarios, by index otherwise."""
    L = labels.shape[0]
    palette = LABEL_PALETTES.get(scenario_name or "")
    if palette is None or labels.shape[-1] == 0:
        return agent_colors(L)
    return [palette[int(v) % len(palette)] for v in label_index(labels, scenario_name)]


def legend_entries(
    scenario_name: str | None, label_sizes: tuple[int, ...] = (), present: set[tuple] | None = None
) -> list[tuple[tuple, str]]:
    """(colour, meaning) per colour of a labelled scenario; [] for pairwise (and unknowns).

    ``label_sizes`` is the scenario's: with more alliances than colours, colours repeat and one
    entry names every alliance that shares it. ``present``, the colours of the agents on screen,
    keeps only their entries, so a task with fewer kinds (the learning predator-prey task has no
    prey moving up) lists no colour that is never drawn.
    """
    palette = LABEL_PALETTES.get(scenario_name or "")
    if palette is None:
        return []
    names = LABEL_NAMES.get(scenario_name)
    if names is not None:
        return [(c, n) for c, n in zip(palette, names, strict=True) if present is None or c in present]
    count = label_sizes[0] if label_sizes else len(palette)
    entries = []
    for k in range(min(count, len(palette))):
        ids = list(range(k, count, len(palette)))
        word = "alliance " if len(ids) == 1 else "alliances "
        if present is None or palette[k] in present:
            entries.append((palette[k], word + ", ".join(map(str, ids))))
    return entries


@dataclass(frozen=True)
class View:
    """Maps grid cells to pixels; the single place where world units become screen units."""

    grid_size: int
    canvas: int = CANVAS
    margin: int = MARGIN
    hud: int = HUD_HEIGHT

    @property
    def scale(self) -> float:
        return self.canvas / self.grid_size

    @property
    def size(self) -> tuple[int, int]:
        return self.canvas + 2 * self.margin, self.canvas + 2 * self.margin + self.hud

    def world_to_screen(self, x: float, y: float) -> tuple[int, int]:
        """Cell centre (x, y) -> pixel (column, row); y grows upwards on screen."""
        col = self.margin + (x + 0.5) * self.scale
        row = self.hud + self.margin + self.canvas - (y + 0.5) * self.scale
        return int(round(col)), int(round(row))


class Renderer:
    """Draws a :class:`World` (world 0 of the batch) with pygame.

    Args:
        grid_size: N. radius: R.
        mode: ``"human"`` (a window, throttled to ``fps``) or ``"rgb_array"``.
    """

    def __init__(self, grid_size: int, radius: int, mode: str = "rgb_array", fps: int = 30):
        if mode not in ("human", "rgb_array"):
            raise ValueError(f"mode must be 'human' or 'rgb_array', got {mode!r}")
        if mode == "rgb_array" or not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # headless: draw off-screen
        try:
            import pygame
        except ImportError as err:  # pragma: no cover - pygame-ce is a hard dependency
            raise ImportError("rendering needs pygame-ce: pip install pygame-ce") from err
        self.pg, self.mode, self.fps, self.radius = pygame, mode, fps, radius
        self.view = View(grid_size)
        pygame.init()
        if mode == "human":
            self.screen = pygame.display.set_mode(self.view.size)
            pygame.display.set_caption("hyperagents: colliding agents")
            self.clock = pygame.time.Clock()
        else:
            self.screen = pygame.Surface(self.view.size)
        self.font = pygame.font.Font(None, 22)
        self.small_font = pygame.font.Font(None, 20)
        self._background = self._make_background()

    def _make_background(self):
        """Walls, pipe shading and the dashed seams where y wraps; drawn once, blitted per frame."""
        pg, v = self.pg, self.view
        surf = pg.Surface(v.size)
        surf.fill((255, 255, 255))
        top = v.hud + v.margin
        for row in range(v.canvas):  # shade: cos^2 profile across the pipe's circumference
            t = np.cos(np.pi * (row / v.canvas - 0.5)) ** 2
            color = [int(e + (m - e) * t) for e, m in zip(BACKGROUND_EDGE, BACKGROUND_MID, strict=True)]
            pg.draw.line(surf, color, (v.margin, top + row), (v.margin + v.canvas - 1, top + row))
        wall_w = max(3, v.margin // 4)
        for col in (v.margin - wall_w, v.margin + v.canvas):
            pg.draw.rect(surf, WALL, (col, top, wall_w, v.canvas))
        dash = 10
        for row in (top, top + v.canvas - 1):
            for col in range(v.margin, v.margin + v.canvas, 2 * dash):
                pg.draw.line(surf, SEAM, (col, row), (min(col + dash, v.margin + v.canvas), row), 2)
        note = self.font.render("y wraps around (cylinder)", True, SEAM)
        surf.blit(note, (v.margin + v.canvas - note.get_width(), top + v.canvas + 4))
        return surf

    def draw(
        self,
        world: World,
        labels: torch.Tensor | None = None,
        scenario=None,
        returns=None,
        overlay=None,
        legend: bool = True,
    ) -> np.ndarray | None:
        """Draw world 0; returns an (H, W, 3) uint8 frame for ``rgb_array``, None for ``human``.

        ``overlay(surface, view, positions, mask)``, if given, is called after the background and
        before the agents (the interaction-strength edges of ``viz/overlay.py``). ``legend=False``
        leaves out the colour legend (for callers that show it elsewhere, like the viewer's panel).
        """
        pg, v = self.pg, self.view
        pos, mask = world.positions[0].cpu(), world.mask[0].cpu()
        labels = torch.zeros(world.L, 0, dtype=torch.long) if labels is None else labels[0].cpu()
        if self.mode == "human":
            pg.event.pump()  # keep the window responsive
        self.screen.blit(self._background, (0, 0))
        if overlay is not None:
            overlay(self.screen, v, pos, mask)
        # Seam copies stay between the seams, off the HUD and legend; discs at a wall may overhang it.
        old_clip = self.screen.get_clip()
        self.screen.set_clip(pg.Rect(0, v.hud + v.margin, v.size[0], v.canvas))
        self._draw_touching(world, pos, mask)
        colors = colors_for(labels, getattr(scenario, "name", None))
        collided = world.collided[0].any(-1).cpu()
        r_px = max(2, int(round(self.radius * v.scale)))
        for i in torch.nonzero(mask).flatten().tolist():  # one disc per agent: drawing, not physics
            for col, row in self._copies(pos[i], r_px):
                pg.draw.circle(self.screen, colors[i], (col, row), r_px)
                if collided[i]:
                    pg.draw.circle(self.screen, COLLIDED_RING, (col, row), r_px + 2, 2)
        self.screen.set_clip(old_clip)
        self._draw_hud(world, mask, returns)
        if legend and scenario is not None:
            shown = {colors[i] for i in torch.nonzero(mask).flatten().tolist()}
            self._draw_legend(legend_entries(getattr(scenario, "name", None), scenario.label_sizes, shown))
        if self.mode == "human":
            pg.display.flip()
            self.clock.tick(self.fps)
            return None
        return np.ascontiguousarray(pg.surfarray.pixels3d(self.screen).transpose(1, 0, 2)).copy()

    def _copies(self, p: torch.Tensor, r_px: int) -> list[tuple[int, int]]:
        """Screen centres of an agent, plus its wrapped copy when it overlaps the y seam."""
        v = self.view
        col, row = v.world_to_screen(int(p[0]), int(p[1]))
        out = [(col, row)]
        top, bottom = v.hud + v.margin, v.hud + v.margin + v.canvas
        if row - r_px < top:
            out.append((col, row + v.canvas))
        if row + r_px > bottom:
            out.append((col, row - v.canvas))
        return out

    def _draw_touching(self, world: World, pos: torch.Tensor, mask: torch.Tensor) -> None:
        """A line between every pair touching right now (shortest way round the cylinder)."""
        touch = world.touching(pos.unsqueeze(1), pos.unsqueeze(0)) & mask.unsqueeze(1) & mask.unsqueeze(0)
        touch = torch.triu(touch, diagonal=1)
        v = self.view
        for i, j in torch.nonzero(touch).tolist():  # only the few touching pairs are drawn
            yj = int(pos[j, 1])
            dy = (yj - int(pos[i, 1]) + v.grid_size // 2) % v.grid_size - v.grid_size // 2
            a = v.world_to_screen(int(pos[i, 0]), int(pos[i, 1]))
            b = v.world_to_screen(int(pos[j, 0]), int(pos[i, 1]) + dy)
            self.pg.draw.line(self.screen, TOUCH_LINE, a, b, 2)

    def _draw_hud(self, world: World, mask: torch.Tensor, returns) -> None:
        step = int(world.steps[0])
        text = f"step {step}   agents {int(mask.sum())}   N={self.view.grid_size} R={self.radius}"
        if returns is not None:
            live = np.asarray(returns)[: int(mask.sum())]
            text += f"   mean return {live.mean():+.2f}" if live.size else ""
        self.screen.blit(self.font.render(text, True, TEXT), (self.view.margin, HUD_TEXT_ROW))

    def _draw_legend(self, entries: list[tuple[tuple, str]]) -> None:
        """One row under the status line: a disc of each colour and what it means."""
        if not entries:
            return
        col = self.view.margin
        lead = self.small_font.render("colours:", True, MUTED)
        self.screen.blit(lead, (col, LEGEND_ROW))
        col += lead.get_width() + LEGEND_GAP // 2
        r = LEGEND_SWATCH // 2
        for color, name in entries:
            centre = (col + r, LEGEND_ROW + lead.get_height() // 2)
            self.pg.draw.circle(self.screen, color, centre, r)
            text = self.small_font.render(name, True, TEXT)
            self.screen.blit(text, (col + LEGEND_SWATCH + 5, LEGEND_ROW))
            col += LEGEND_SWATCH + 5 + text.get_width() + LEGEND_GAP

    def close(self) -> None:
        if self.mode == "human":
            self.pg.display.quit()
