"""The viewer's side panel: HUD lines, the colour bar of the selected strengths, legend and keys.

The colour bar uses the overlay's own colour map (``viz.overlay.strength_colors``) and greys out
the band of strengths that draw no edge. The parts that change only with the mode are rendered
once and cached. pygame is imported only when drawing.
"""

from __future__ import annotations

import functools

import torch

from viz.overlay import EDGE_THRESHOLD, NEUTRAL, POSITIVE, draw_one_way_mark, strength_colors

PANEL_WIDTH = 300  # pixels right of the world view: HUD lines, colour bar, legend, keys
PANEL_PAD = 14
LINE_HEIGHT = 20
FONT_SIZE = 21
SMALL_FONT_SIZE = 18
BAR_WIDTH, BAR_HEIGHT = 22, 200
BAR_TICKS = (1.0, 0.5, 0.0, -0.5, -1.0)  # fractions of the scale labelled on the bar
SWATCH = 12  # legend square side
SWATCH_RAISE = 2  # lifts the legend square to the text's x-height
TICK_LENGTH, TICK_GAP = 4, 8  # colour-bar tick mark and the gap before its label
BAR_BORDER = 1
PANEL_BACKGROUND = (250, 250, 252)
PANEL_TEXT = (30, 30, 40)
PANEL_MUTED = (110, 110, 125)
WRAP_CHARS = 34  # characters per panel line before wrapping
SAMPLE_EDGE = 40  # pixels: the one-way pair drawn in the legend
SAMPLE_WIDTH = 3
ONE_WAY_NOTE = (
    "coloured half and arrow at the agent that feels the other; dotted: the other way, below threshold"
)


def _wrap(text: str) -> list[str]:
    words, lines = text.split(), [""]
    for w in words:
        if lines[-1] and len(lines[-1]) + 1 + len(w) > WRAP_CHARS:
            lines.append(w)
        else:
            lines[-1] = f"{lines[-1]} {w}".strip()
    return lines


@functools.lru_cache(maxsize=1)
def _fonts():
    import pygame

    return pygame.font.Font(None, FONT_SIZE), pygame.font.Font(None, SMALL_FONT_SIZE)


@functools.lru_cache(maxsize=8)
def _static_panel(scale: float, what: str, legend: tuple, keys: tuple, height: int):
    """The parts of the panel that change only with the mode: description, colour bar, legend, keys."""
    import pygame

    font, small = _fonts()
    surface = pygame.Surface((PANEL_WIDTH, height))
    surface.fill(PANEL_BACKGROUND)
    x, y = PANEL_PAD, 0
    for line in _wrap(what):
        surface.blit(small.render(line, True, PANEL_MUTED), (x, y))
        y += LINE_HEIGHT
    y += LINE_HEIGHT // 2
    _colour_bar(surface, pygame, small, x, y, scale)
    y += BAR_HEIGHT + 2 * LINE_HEIGHT
    for color, name in legend:
        pygame.draw.rect(surface, color, (x, y + (LINE_HEIGHT - SWATCH) // 2 - SWATCH_RAISE, SWATCH, SWATCH))
        surface.blit(small.render(name, True, PANEL_TEXT), (x + SWATCH + PANEL_PAD // 2, y))
        y += LINE_HEIGHT
    y = _one_way_legend(surface, pygame, small, x, y)
    y += LINE_HEIGHT // 2
    for line in keys:
        surface.blit(small.render(line, True, PANEL_MUTED), (x, y))
        y += LINE_HEIGHT
    return surface


def draw_panel(
    surface,
    left: int,
    overlay,
    hud: list[str],
    legend: list[tuple[tuple[int, int, int], str]],
    keys: list[str],
) -> None:
    """The viewer's side panel at x = ``left``: HUD lines, the colour bar of the selected
    strengths (with the threshold band that draws nothing), the agent-colour legend and key help."""
    import pygame

    font, _ = _fonts()
    pygame.draw.rect(surface, PANEL_BACKGROUND, (left, 0, PANEL_WIDTH, surface.get_height()))
    x, y = left + PANEL_PAD, PANEL_PAD
    for line in hud:  # changes every frame
        surface.blit(font.render(line, True, PANEL_TEXT), (x, y))
        y += LINE_HEIGHT
    _, _, scale, what = overlay.selected()
    static = _static_panel(float(f"{scale:.6g}"), what, tuple(legend), tuple(keys), surface.get_height() - y)
    surface.blit(static, (left, y + LINE_HEIGHT // 2))


def _one_way_legend(surface, pygame, font, x: int, y: int) -> int:
    """A sample one-way pair (edges drawn by ``viz.overlay``) and what it means; returns the next y."""
    row = y + LINE_HEIGHT // 2 - SWATCH_RAISE
    a, mid, b = (x, row), (x + SAMPLE_EDGE // 2, row), (x + SAMPLE_EDGE, row)
    pygame.draw.line(surface, POSITIVE, a, mid, SAMPLE_WIDTH)
    draw_one_way_mark(surface, pygame, a, mid, b, POSITIVE)
    surface.blit(font.render("one-way pair", True, PANEL_TEXT), (x + SAMPLE_EDGE + PANEL_PAD // 2, y))
    y += LINE_HEIGHT
    for line in _wrap(ONE_WAY_NOTE):
        surface.blit(font.render(line, True, PANEL_MUTED), (x, y))
        y += LINE_HEIGHT
    return y


def _colour_bar(surface, pygame, font, x: int, y: int, scale: float) -> None:
    """Vertical bar from +scale (top) to -scale (bottom); the no-edge band is hatched grey."""
    values = torch.linspace(scale, -scale, BAR_HEIGHT, dtype=torch.float64)
    colors, _ = strength_colors(values, scale)
    hidden = (values.abs() < EDGE_THRESHOLD * scale).numpy()
    for row, (c, h) in enumerate(zip(colors.tolist(), hidden, strict=True)):  # one line per bar pixel row
        pygame.draw.line(surface, NEUTRAL if h else c, (x, y + row), (x + BAR_WIDTH - 1, y + row))
    pygame.draw.rect(surface, PANEL_MUTED, (x, y, BAR_WIDTH, BAR_HEIGHT), BAR_BORDER)
    for frac in BAR_TICKS:
        row = y + int(round((1 - frac) / 2 * (BAR_HEIGHT - 1)))
        pygame.draw.line(surface, PANEL_MUTED, (x + BAR_WIDTH, row), (x + BAR_WIDTH + TICK_LENGTH, row))
        label = font.render(f"{frac * scale:+.3g}", True, PANEL_TEXT)
        surface.blit(label, (x + BAR_WIDTH + TICK_GAP, row - label.get_height() // 2))
    note = font.render(f"|S| < {EDGE_THRESHOLD:g} x scale: no edge", True, PANEL_MUTED)
    surface.blit(note, (x, y + BAR_HEIGHT + LINE_HEIGHT // 2))
