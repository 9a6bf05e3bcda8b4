"""Interaction-strength overlay: edges between agents coloured by what a trained predictor learned.

:class:`InteractionOverlay` holds two strength sets of one configuration, ``learned``
(:mod:`viz.readout`) and ``truth`` (:mod:`viz.truth`), and draws the one its ``mode`` selects
(the ``t`` key of the viewer cycles them):

- ``learned``: the model's read-out (value units for linear SA / HFA, else attention scores);
- ``truth``: the exact pair interaction over the episode;
- ``difference``: learned - truth on one colour scale (value units); with attention scores
  each side is first scaled to max |S| = 1.

HFA models also keep their per-factor scores (``factor`` picks one, None shows the product); HA
models and the alliances truth keep triple strengths, whose strongest triples are drawn as
translucent triangles. Only the surviving edges are looped over to draw them.

Picture: each edge is drawn as two half-segments, the half at agent i coloured by S[i, j], so
asymmetric interactions (hunter +1, prey -1) stay visible. A one-way pair (|S[i, j]| above the
threshold, |S[j, i]| below it; common among HFA factor scores) draws its coloured half at i, an
arrowhead in the middle pointing at i (j acts on i) and the silent half as a dotted grey line, so
it reads as a pair with one side missing rather than a stray stub. Blue is negative, red positive; width
and saturation grow with |S| relative to the colour scale; |S| below ``EDGE_THRESHOLD`` times the
scale draws nothing. Edges across the y seam go the short way round. pygame is used only through
the surface passed in, so importing this module never imports pygame.

The model read-out and ground-truth names (``Strengths``, ``learned_strengths``,
``truth_strengths``, ``tokens_for``, ``hfa_factor_tables``, ``SCENARIOS``) and the side panel's
(``draw_panel``, ``PANEL_WIDTH``, in :mod:`viz.panel`) stay importable from here.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from envs.world import circular_delta
from viz.readout import (  # noqa: F401  (re-exported: callers import these from viz.overlay)
    SCENARIOS,
    Strengths,
    hfa_factor_tables,
    learned_strengths,
    tokens_for,
)
from viz.truth import truth_strengths

MODES = ("learned", "truth", "difference")

# Drawing constants: every number the draw loop uses comes from here.
EDGE_THRESHOLD = 0.1  # |S| below this fraction of the colour scale draws no edge
EDGE_MIN_WIDTH, EDGE_MAX_WIDTH = 1, 6  # pixels, at |S| = threshold and |S| = scale
NEGATIVE = (33, 102, 172)  # colour at S = -scale (RdBu's blue)
POSITIVE = (178, 24, 43)  # colour at S = +scale (RdBu's red)
NEUTRAL = (235, 235, 235)  # colour at S = 0 (never drawn as an edge; the colour bar's middle)
FAINT = 0.35  # colour mix at the threshold, so the weakest drawn edges stay visible
TOP_TRIPLES = 8  # strongest triples drawn as triangles
TRIANGLE_ALPHA = 70  # 0-255
ZERO_SCALE = 1e-12  # a matrix whose max |S| is below this is all zero
VALUE_SCALE_FLOOR = 1.0  # value-unit colour scales span at least one reward (a collision's -1), so a
# configuration without true interactions does not blow a model's small errors up to full colour
ARROW_LENGTH, ARROW_HALF_WIDTH = 10, 5  # pixels: the one-way arrowhead at an edge's midpoint
SILENT = (150, 150, 160)  # the dotted half of a one-way pair
DOT, DOT_GAP = 3, 4  # pixels: dash and gap of the dotted half
PERMUTATIONS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


def _normalised(m: Tensor) -> Tensor:
    top = float(m.abs().max()) if m.numel() else 0.0
    return m / top if top > ZERO_SCALE else m


class InteractionOverlay:
    """Holds learned and true strengths of one configuration and draws the selected ones.

    Call :meth:`update` whenever the configuration (start positions, labels, agent count) changes;
    then pass the object as ``overlay=`` to ``envs.render.Renderer.draw``. ``mode`` is one of
    ``MODES``; ``factor`` (HFA) picks one factor's scores in ``learned`` mode, None the product.

    Args:
        model: a trained Predictor. scenario, grid_size, radius: the run's world.
    """

    def __init__(self, model, scenario: str, grid_size: int, radius: int):
        if scenario not in SCENARIOS:
            raise ValueError(f"the overlay draws worlds of scenarios {SCENARIOS}, got {scenario!r}")
        self.model, self.scenario, self.grid_size, self.radius = model, scenario, grid_size, radius
        self.mode, self.factor = "learned", None
        self.learned = self.truth = None
        self._tables: dict = {}  # the model's domain tables, computed on first use (the model is frozen here)

    def update(self, positions: Tensor, labels: Tensor) -> None:
        """Recompute both strength sets for live agents: positions (L, 2), labels (L, F) long."""
        positions, labels = positions.long().cpu(), labels.long().cpu()
        self.learned = learned_strengths(
            self.model, tokens_for(self.scenario, positions, labels), self._tables
        )
        self.truth = truth_strengths(self.scenario, self.grid_size, self.radius, positions, labels)

    @property
    def num_factors(self) -> int:
        return 0 if self.learned is None or self.learned.factors is None else self.learned.factors.shape[0]

    def cycle_mode(self) -> str:
        self.mode = MODES[(MODES.index(self.mode) + 1) % len(MODES)]
        return self.mode

    def cycle_factor(self) -> int | None:
        """None -> 0 -> 1 -> ... -> A-1 -> None; stays None for models without factors."""
        A = self.num_factors
        self.factor = (
            None if not A or self.factor == A - 1 else (0 if self.factor is None else self.factor + 1)
        )
        return self.factor

    def selected(self) -> tuple[Tensor, Tensor | None, float, str]:
        """(pairs (L, L), triples (L, L, L) | None, colour scale, description) of the current mode."""
        lr, tr = self.learned, self.truth
        if self.mode == "learned" and self.factor is not None and lr.factors is not None:
            f = lr.factors[self.factor]
            return f, None, _scale(f), f"learned factor {self.factor + 1}/{self.num_factors} score"
        comparable = lr.units == "value"
        if self.mode == "difference":
            if comparable:
                d = lr.pairs - tr.pairs
                return d, None, self.value_scale(), "learned - truth"
            d = _normalised(lr.pairs) - _normalised(tr.pairs)
            return d, None, 1.0, "learned - truth (each scaled to max |S| = 1)"
        chosen = lr if self.mode == "learned" else tr
        scale = self.value_scale() if comparable else _scale(chosen.pairs)
        return chosen.pairs, chosen.triples, scale, f"{self.mode}: {chosen.source}"

    def value_scale(self) -> float:
        """Shared colour scale of value-unit strengths: the largest |S|, and at least one reward."""
        top = max(float(m.abs().max()) if m.numel() else 0.0 for m in (self.learned.pairs, self.truth.pairs))
        return max(top, VALUE_SCALE_FLOOR)

    def __call__(self, surface, view, positions: Tensor, mask: Tensor) -> None:
        """Draw on ``surface`` (the ``envs.render`` overlay hook): triangles, then edges."""
        if self.learned is None:
            return
        live = torch.nonzero(mask).flatten()
        pos = positions[live].long()
        pairs, triples, scale, _ = self.selected()
        if pairs.shape[0] != len(live):
            raise ValueError(
                f"overlay holds {pairs.shape[0]} agents but the world has {len(live)}: call update()"
            )
        import pygame

        top = view.hud + view.margin
        old_clip = surface.get_clip()
        surface.set_clip(pygame.Rect(view.margin, top, view.canvas, view.canvas))
        if triples is not None:
            _draw_triangles(surface, view, pos, triples, pygame)
        for pa, pb, color, width in edge_segments(pos, pairs, scale, view):
            for shift in _seam_shifts(view, [pa[1], pb[1]]):
                pygame.draw.line(surface, color, (pa[0], pa[1] + shift), (pb[0], pb[1] + shift), width)
        for a, mid, b, color in one_way_marks(pos, pairs, scale, view):
            for shift in _seam_shifts(view, [a[1], b[1]]):
                draw_one_way_mark(surface, pygame, *((p[0], p[1] + shift) for p in (a, mid, b)), color)
        surface.set_clip(old_clip)


def _scale(m: Tensor) -> float:
    top = float(m.abs().max()) if m.numel() else 0.0
    return top if top > ZERO_SCALE else 1.0


def strength_colors(values: Tensor, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(K, 3) uint8 colours and (K,) int widths for strengths ``values`` (K,) on a colour scale."""
    t = (values.abs() / scale).clamp(0, 1).numpy()  # (K,)
    end = np.where((values >= 0).numpy()[:, None], POSITIVE, NEGATIVE)  # (K, 3)
    mix = FAINT + (1 - FAINT) * t[:, None]
    colors = np.asarray(NEUTRAL)[None] * (1 - mix) + end * mix
    widths = np.rint(EDGE_MIN_WIDTH + (EDGE_MAX_WIDTH - EDGE_MIN_WIDTH) * t).astype(int)
    return colors.astype(np.uint8), widths


def edge_segments(pos: Tensor, pairs: Tensor, scale: float, view) -> list:
    """Half-edges to draw: [((col_i, row_i), (col_mid, row_mid), colour, width)] in pixels.

    Each kept ordered pair (i, j), |S[i, j]| >= EDGE_THRESHOLD * scale, gives the half from agent i
    to the midpoint of the shortest way round the cylinder towards j. Agents go through
    ``view.world_to_screen`` once each; the pairs are tensor ops (the map is affine, and a copy of
    j one turn round the cylinder sits ``view.canvas`` rows away).
    """
    keep = pairs.abs() >= EDGE_THRESHOLD * scale
    keep.fill_diagonal_(False)
    i, j = torch.nonzero(keep, as_tuple=True)
    if len(i) == 0:
        return []
    screen = torch.tensor([view.world_to_screen(x, y) for x, y in pos.tolist()], dtype=torch.long)  # (L, 2)
    y_i, y_j = pos[i, 1], pos[j, 1]
    turns = (y_i + circular_delta(y_i, y_j, view.grid_size) - y_j) // view.grid_size  # -1, 0, +1
    end = screen[j] - torch.stack([torch.zeros_like(turns), turns * view.canvas], -1)  # j the short way
    mid = torch.div(screen[i] + end, 2, rounding_mode="floor")
    colors, widths = strength_colors(pairs[i, j], scale)
    return list(
        zip(screen[i].tolist(), mid.tolist(), map(tuple, colors.tolist()), widths.tolist(), strict=True)
    )


def one_way_marks(pos: Tensor, pairs: Tensor, scale: float, view) -> list:
    """One-way pairs to mark: [((col_i, row_i), (col_mid, row_mid), (col_j, row_j), colour)] in pixels.

    A pair is one-way when |S[i, j]| >= EDGE_THRESHOLD * scale and |S[j, i]| is below it: only
    i's half is drawn by :func:`edge_segments`; j is placed the short way round the cylinder.
    """
    keep = pairs.abs() >= EDGE_THRESHOLD * scale
    keep.fill_diagonal_(False)
    i, j = torch.nonzero(keep & ~keep.T, as_tuple=True)
    if len(i) == 0:
        return []
    screen = torch.tensor([view.world_to_screen(x, y) for x, y in pos.tolist()], dtype=torch.long)  # (L, 2)
    y_i, y_j = pos[i, 1], pos[j, 1]
    turns = (y_i + circular_delta(y_i, y_j, view.grid_size) - y_j) // view.grid_size
    end = screen[j] - torch.stack([torch.zeros_like(turns), turns * view.canvas], -1)
    mid = torch.div(screen[i] + end, 2, rounding_mode="floor")
    colors, _ = strength_colors(pairs[i, j], scale)
    return list(zip(screen[i].tolist(), mid.tolist(), end.tolist(), map(tuple, colors.tolist()), strict=True))


def draw_one_way_mark(surface, pygame, a, mid, b, color) -> None:
    """The silent half mid -> b dotted grey, and an arrowhead at mid pointing at a (b acts on a)."""
    ab = np.subtract(b, mid, dtype=float)
    length = float(np.hypot(*ab))
    if length < 1:
        return
    u = ab / length
    for t in np.arange(0.0, length, DOT + DOT_GAP):  # dashes along the silent half
        p, q = np.add(mid, u * t), np.add(mid, u * min(t + DOT, length))
        pygame.draw.line(surface, SILENT, p.round().tolist(), q.round().tolist(), 1)
    back = -u  # towards a, the agent that feels the pair
    normal = np.array([-back[1], back[0]])
    tip = np.add(mid, back * ARROW_LENGTH / 2)
    base = np.add(mid, -back * ARROW_LENGTH / 2)
    corners = [tip, base + normal * ARROW_HALF_WIDTH, base - normal * ARROW_HALF_WIDTH]
    pygame.draw.polygon(surface, color, [c.round().tolist() for c in corners])


def _seam_shifts(view, rows: list[int]) -> list[int]:
    """Row shifts (0 and, where a shape crosses the y seam, +-canvas) that draw it fully."""
    top, bottom = view.hud + view.margin, view.hud + view.margin + view.canvas
    return [0] + ([view.canvas] if min(rows) < top else []) + ([-view.canvas] if max(rows) > bottom else [])


def _draw_triangles(surface, view, pos: Tensor, triples: Tensor, pygame) -> None:
    """The TOP_TRIPLES strongest triples (by |S|) as translucent triangles, shortest way round."""
    L = triples.shape[0]
    sym = sum(triples.permute(*p) for p in PERMUTATIONS)  # a triangle's strength, whatever its order
    r = torch.arange(L)
    ordered = (r[:, None, None] < r[None, :, None]) & (r[None, :, None] < r[None, None, :])  # i < j < k
    sym = sym * ordered
    flat = sym.abs().flatten()
    k = min(TOP_TRIPLES, int((flat > ZERO_SCALE).sum()))
    if k == 0:
        return
    scale = float(flat.max())
    layer = pygame.Surface(surface.get_size(), pygame.SRCALPHA)
    vals, idx = flat.topk(k)
    for v, t in zip(vals.tolist(), idx.tolist(), strict=True):  # k <= TOP_TRIPLES shapes
        corners = [t // (L * L), (t // L) % L, t % L]
        y0 = pos[corners[0], 1]
        pts = [
            view.world_to_screen(float(pos[c, 0]), float(y0 + circular_delta(y0, pos[c, 1], view.grid_size)))
            for c in corners
        ]
        color = (*(POSITIVE if sym.flatten()[t] >= 0 else NEGATIVE), int(TRIANGLE_ALPHA * v / scale))
        for shift in _seam_shifts(view, [p[1] for p in pts]):
            pygame.draw.polygon(layer, color, [(p[0], p[1] + shift) for p in pts])
    surface.blit(layer, (0, 0))


_PANEL_NAMES = ("PANEL_WIDTH", "draw_panel")


def __getattr__(name: str):
    """``draw_panel`` and ``PANEL_WIDTH`` live in :mod:`viz.panel`, which imports this module's
    colour map; they are looked up on first use so that neither module imports the other at load."""
    if name in _PANEL_NAMES:
        from viz import panel

        return getattr(panel, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
