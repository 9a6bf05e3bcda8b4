"""Interaction-strength overlay: edges between agents coloured by what a trained predictor learned.

For each ordered pair (i, j) of live agents the overlay holds a strength S[i, j], "how much agent
j moves agent i's value", from one of three sources (the ``t`` key of the viewer cycles them):

- ``learned``: for linear SA / HFA without an MLP head, j's exact share of y_i (value units):
  over one token column the learned pair table G[t_i, t_j] = (C.W)[t_i, t_j], else score x
  value; for softmax models and HA the attention score, mean over heads (score units).
- ``truth``: pairwise, the devised table -f(y_i, y_j) (``policies.devised.circular_window``);
  other scenarios, the exact pair reward over the episode, from simulating the scripted policy.
- ``difference``: learned - truth on one colour scale (value units); with attention scores
  each side is first scaled to max |S| = 1.

HFA models also keep their per-factor scores (``factor`` picks one, None shows the product); HA
models and the alliances truth keep triple strengths, whose strongest triples are drawn as
translucent triangles. Strengths are computed for a whole configuration at once with tensor ops
(no Python loop over pairs); only the surviving edges are looped over to draw them.

Picture: each edge is drawn as two half-segments, the half at agent i coloured by S[i, j], so
asymmetric interactions (hunter +1, prey -1) stay visible. Blue is negative, red positive; width
and saturation grow with |S| relative to the colour scale; |S| below ``EDGE_THRESHOLD`` times the
scale draws nothing. Edges across the y seam go the short way round. pygame is used only through
the surface passed in, so importing this module never imports pygame.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from envs.scenarios import Alliances, PredatorPrey, make_scenario
from envs.world import World, circular_delta
from policies import devised

MODES = ("learned", "truth", "difference")
SCENARIOS = ("pairwise", "predator_prey", "alliances")  # the ones with a world to draw

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
PERMUTATIONS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


@dataclass
class Strengths:
    """Interaction strengths of one configuration of L live agents.

    Attributes:
        pairs: (L, L) float64, [i, j] = strength of j acting on i; zero diagonal.
        units: "value" (comparable with the truth) or "score" (attention scores).
        factors: HFA only: (A, L, L) per-factor scores, mean over heads.
        triples: HA / alliances truth: (L, L, L), [i, j, k] with i, j, k distinct; else None.
        source: a few words for the HUD.
    """

    pairs: Tensor
    units: str
    factors: Tensor | None = None
    triples: Tensor | None = None
    source: str = ""


def tokens_for(scenario: str, positions: Tensor, labels: Tensor) -> Tensor:
    """The predictor's tokens (1, L) or (1, L, F) for live agents, as ``envs.datasets`` builds them.

    Args:
        positions: (L, 2) long cells [x, y]. labels: (L, F) long scenario labels.
    """
    if scenario == "pairwise":
        return positions[None, :, 1]
    if scenario == "alliances":
        return torch.cat([labels, positions[:, 1:]], -1)[None]
    if scenario == "predator_prey":
        return torch.cat([labels, positions], -1)[None]
    raise ValueError(f"the overlay draws worlds of scenarios {SCENARIOS}, got {scenario!r}")


def _off_diagonal(m: Tensor) -> Tensor:
    eye = torch.eye(m.shape[-1], dtype=torch.bool, device=m.device)
    return m.masked_fill(eye, 0.0)


def _distinct_triples(t: Tensor) -> Tensor:
    """Zero every [i, j, k] with a repeated index."""
    L = t.shape[-1]
    r = torch.arange(L)
    distinct = (r[:, None, None] != r[None, :, None]) & (r[:, None, None] != r[None, None, :])
    return t * (distinct & (r[None, :, None] != r[None, None, :]))


@torch.no_grad()
def learned_strengths(model, tokens: Tensor, cache: dict | None = None) -> Strengths:
    """What a trained ``policies.predictor.Predictor`` thinks about every pair of these tokens.

    ``cache`` (a dict owned by the caller) keeps the model's domain tables between calls; pass
    a fresh one whenever the model's parameters change.
    """
    L = tokens.shape[1]
    cache = {} if cache is None else cache
    if _is_linear(model, "SelfAttention") and model.mlp is None and tokens.dim() == 2:
        idx = model.embedding.index(tokens)[0]  # (L,)
        if "pair" not in cache:
            cache["pair"] = model.pair_table().double()  # (domain, domain): C.W, y_i = sum_j G[t_i, t_j]
        G = cache["pair"]
        return Strengths(
            _off_diagonal(G[idx[:, None], idx[None, :]]), "value", source="learned pair table C.W"
        )
    if _is_linear_hfa(model) and model.mlp is None and tokens.dim() == 2:
        idx = model.embedding.index(tokens)[0]  # (L,)
        if "hfa" not in cache:
            cache["hfa"] = hfa_factor_tables(model)
        tables, product = cache["hfa"]
        at = (idx[:, None], idx[None, :])
        return Strengths(
            _off_diagonal(product[at]),
            "value",
            factors=_off_diagonal(tables[(slice(None), *at)]),
            source="learned HFA table: prod of factors x values",
        )
    if hasattr(model.attention, "terms") and model.has_table_path() and model.mlp is None:
        return _sum_strengths(model, tokens, cache)
    x = model.embedding(tokens)
    dtype = next(model.parameters()).dtype
    _, sc = model.attention(x.to(dtype), torch.ones(1, L, dtype=torch.bool), return_scores=True)
    values = _linear_values(model, x.to(dtype))
    if values is not None:  # linear SA / HFA on labelled tokens: exact per-pair contributions
        pairs = (sc.scores[0] * values[:, None, :]).sum(0).double()  # (H, L, L) x (H, 1, L) -> (L, L)
        factors = None if sc.factors is None else _off_diagonal(sc.factors[0].double().mean(0))
        return Strengths(_off_diagonal(pairs), "value", factors=factors, source="learned score x value")
    s = sc.scores[0].double().mean(0)  # heads averaged: (L, L) or (L, L, L)
    heads = sc.scores.shape[1]
    what = f"{sc.kind} attention score, mean of {heads} head{'s' * (heads > 1)}"
    if s.dim() == 3:
        triples = _distinct_triples(s)
        return Strengths(
            _off_diagonal(triples.sum(-1)), "score", triples=triples, source=what + " (summed over k)"
        )
    factors = None if sc.factors is None else sc.factors[0].double().mean(0)  # (A, L, L)
    if factors is not None:
        factors = factors * ~torch.eye(L, dtype=torch.bool)
    return Strengths(_off_diagonal(s), "score", factors=factors, source=what)


def _sum_strengths(model, tokens: Tensor, cache: dict) -> Strengths:
    """A linear AttentionSum (e.g. SA + order-3 HA) read off its domain tables: pair and triple values."""
    idx = model.embedding.index(tokens)[0]  # (L,)
    if "tables" not in cache:
        cache["tables"] = [G.double() for G in model.tables()]  # [(M, M), (M, M, M), ...]
    pairs = sum(G[idx[:, None], idx[None, :]] for G in cache["tables"] if G.dim() == 2)
    cubes = [
        G[idx[:, None, None], idx[None, :, None], idx[None, None, :]] for G in cache["tables"] if G.dim() == 3
    ]
    triples = _distinct_triples(sum(cubes)) if cubes else None
    pairs = torch.zeros(len(idx), len(idx), dtype=torch.float64) if isinstance(pairs, int) else pairs
    return Strengths(_off_diagonal(pairs), "value", triples=triples, source="learned tables: pairs + triples")


@functools.lru_cache(maxsize=4)
def _devised_table(grid_size: int, radius: int) -> Tensor:
    return -devised.circular_window(grid_size, radius)  # C.W of the exact one-hot model


@torch.no_grad()
def truth_strengths(
    scenario: str, grid_size: int, radius: int, positions: Tensor, labels: Tensor
) -> Strengths:
    """The exact interaction of each pair over the episode that starts at ``positions``.

    ``pairwise`` reads the devised table; the labelled scenarios simulate the scripted policy for
    ``grid_size`` steps (one batched world) and weigh each pair that touched by its reward.
    """
    if scenario == "pairwise":
        y = positions[:, 1]
        return Strengths(
            _off_diagonal(_devised_table(grid_size, radius)[y[:, None], y[None, :]]),
            "value",
            source="devised table -f(y_i, y_j)",
        )
    sc = make_scenario(scenario)
    L = positions.shape[0]
    world = World(1, L, grid_size, radius)
    world.reset(positions[None])
    actions = sc.scripted_actions(labels[None])
    for _ in range(grid_size):  # the episode, one step at a time (the world is batched over agents)
        world.step(actions)
    touched = world.collided[0]  # (L, L) bool
    if isinstance(sc, PredatorPrey):
        species = labels[:, 0]
        pairs = sc.pair_weight(species[:, None], species[None, :]).double() * touched
        return Strengths(pairs, "value", source="simulated pair reward (hunter +1, prey -1)")
    pairs = -touched.double()
    triples = None
    if isinstance(sc, Alliances):
        allied = labels[:, 0, None] == labels[None, :, 0]
        m = (touched & allied).double()
        triples = _distinct_triples(sc.bonus * m[:, :, None] * m[:, None, :] * m[None, :, :])
    return Strengths(pairs, "value", triples=triples, source="simulated pair reward")


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


# ---------------------------------------------------------------------------- side panel
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
    y += LINE_HEIGHT // 2
    for line in keys:
        surface.blit(small.render(line, True, PANEL_MUTED), (x, y))
        y += LINE_HEIGHT
    return surface


def draw_panel(
    surface,
    left: int,
    overlay: InteractionOverlay,
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


def _linear_values(model, x: Tensor) -> Tensor | None:
    """(H, L) values x_j W_V (SA) or prod_a x_j W_V,a (HFA) of a linear predictor without MLP, else None.

    y_i = sum_h sum_j score[h, i, j] * value[h, j], so score x value is j's exact share of y_i.
    """
    from policies.sa import SelfAttention

    att = model.attention
    if model.mlp is not None or getattr(att, "kind", None) != "linear":
        return None
    if isinstance(att, SelfAttention):
        return torch.einsum("bjd,hdo->bhjo", x, att.W_V)[0, ..., 0]
    if _is_linear_hfa(model):
        return torch.einsum("bjd,hado->bhajo", x, att.W_V)[0, ..., 0].prod(1)
    return None


def _is_linear(model, family: str) -> bool:
    """The predictor's attention is a linear module of the class named `family`."""
    return type(model.attention).__name__ == family and model.attention.kind == "linear"


def _is_linear_hfa(model) -> bool:
    return _is_linear(model, "HyperFeatureAttention")


@torch.no_grad()
def hfa_factor_tables(model) -> tuple[Tensor, Tensor]:
    """A linear HFA predictor over one token column as domain tables, summed over heads.

    Returns (factors (A, n, n) = P C_a P^T, product (n, n) = sum_h prod_a (P C_ha P^T)[mu, nu] *
    prod_a (P W_V,ha)[nu]): the HFA counterpart of ``Predictor.pair_table``, with y_i = sum_j
    product[t_i, t_j]. P is the embedding table (n, d).
    """
    att = model.attention
    if not _is_linear_hfa(model):
        raise TypeError("hfa_factor_tables needs a HyperFeatureAttention(kind='linear') predictor")
    P = model.embedding.table().to(att.W_V.dtype)  # (n, d)
    tables = torch.einsum("md,hade,ne->hamn", P, att.interaction(), P)  # (H, A, n, n)
    values = torch.einsum("nd,hado->hano", P, att.W_V)[..., 0].prod(1)  # (H, n)
    product = (tables.prod(1) * values[:, None, :]).sum(0)  # (n, n)
    return tables.mean(0).double(), product.double()
