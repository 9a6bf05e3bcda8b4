"""Batched colliding-agents world: B worlds of L agents on a cylinder grid, as torch tensors.

The world of arXiv 2506.06179 (section 7): a grid [N] x [N] whose y axis wraps around (a
cylinder; x is bounded by walls), agents are circles of radius R sitting at integer cells, and
two agents collide when their centres are at most 2R apart (y measured around the cylinder).
Each agent is charged once per *distinct* other agent it collides with, so the world keeps a
(B, L, L) "has collided with" table.

Everything is a tensor op over (B, L) or (B, L, L); there is no Python loop over agents or
pairs. For large L a neighbour grid of cells of side 2R replaces the dense (B, L, L) distance
test: each agent only looks at the agents in its own and the 8 surrounding cells.

Shapes (legend in DESIGN.md): B worlds, L agent slots (padded slots have ``mask`` False),
N grid size, R radius, K candidate partners per agent (L for the dense path).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from envs.checks import check_device, check_int

STAY, RIGHT, LEFT, UP, DOWN = range(5)
MOVE_RIGHT = RIGHT
NUM_ACTIONS = 5
ACTION_NAMES = ("stay", "right", "left", "up", "down")

# (dx, dy) per action; "up" is +y, which wraps around the cylinder.
_MOVES = torch.tensor([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]])

# From this many agents per world on, the neighbour grid replaces the dense (L, L) test, per device
# type. On a 2-core CPU the measured crossover at B = 1 lies between 512 and 1024 agents
# (benchmarks/README.md, section 3); on one H200 the grid won only from about 7,500 agents
# (bench_env.py --device cuda), where the dense test's few large kernels are cheap and the grid's
# many small ones are not. Other device types use the CPU figure.
GRID_MIN_AGENTS_BY_DEVICE = {"cpu": 1024, "cuda": 7500}
GRID_MIN_AGENTS = GRID_MIN_AGENTS_BY_DEVICE["cpu"]


def collision_method(num_agents: int, device: torch.device, cells: int, neighbour_grid: bool | None) -> str:
    """ "grid" or "dense": ``neighbour_grid`` when given, else by the device's crossover. The grid
    needs at least 3 cells per axis (its 3x3 neighbourhood would otherwise visit a cell twice)."""
    if cells < 3:
        return "dense"
    if neighbour_grid is not None:
        return "grid" if neighbour_grid else "dense"
    threshold = GRID_MIN_AGENTS_BY_DEVICE.get(device.type, GRID_MIN_AGENTS)
    return "grid" if num_agents >= threshold else "dense"


class ResetNeeded(RuntimeError):
    """Stepping (or reading) a world or env that has no live episode: call ``reset()`` first."""


def check_world_args(num_agents: int, grid_size: int, radius: int) -> None:
    """Raise a clear ValueError/TypeError for an impossible world.

    4R + 1 <= N keeps the collision window (width 4R + 1 around the cylinder) from wrapping onto
    itself, so that "collide" means the same thing as the paper's circular-distance test.
    """
    for name, value in (("num_agents", num_agents), ("grid_size", grid_size), ("radius", radius)):
        check_int(name, value)
    if num_agents < 1:
        raise ValueError(f"num_agents must be >= 1, got {num_agents}")
    if grid_size < 1:
        raise ValueError(f"grid_size must be >= 1, got {grid_size}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    if 4 * radius + 1 > grid_size:
        raise ValueError(
            f"radius={radius} is too large for grid_size={grid_size}: need 4*radius+1 <= grid_size, "
            f"i.e. radius <= {(grid_size - 1) // 4}"
        )


def circular_delta(a: torch.Tensor, b: torch.Tensor, n: int) -> torch.Tensor:
    """Signed shortest displacement b - a on a circle of n cells, in [-n//2, (n-1)//2]."""
    return torch.remainder(b - a + n // 2, n) - n // 2


@dataclass
class Contacts:
    """Collisions that happened in one step.

    ``partner[b, i, k]`` is the index of agent i's k-th candidate partner and ``new[b, i, k]`` says
    whether i collided with it for the first time this step. The dense path uses K = L and
    ``partner[b, i, k] = k``; the neighbour grid uses K = 9 * (max agents per cell).
    """

    partner: torch.Tensor  # (B, L, K) long
    new: torch.Tensor  # (B, L, K) bool

    def count(self) -> torch.Tensor:
        """Number of new distinct partners per agent, (B, L) long."""
        return self.new.sum(-1)

    def dense(self, num_agents: int) -> torch.Tensor:
        """(B, L, L) bool: ``out[b, i, j]`` is True when i and j touched for the first time this step."""
        out = torch.zeros(*self.new.shape[:2], num_agents, dtype=torch.bool, device=self.new.device)
        b, i, k = self.new.nonzero(as_tuple=True)
        out[b, i, self.partner[b, i, k]] = True
        return out


class World:
    """B independent worlds of up to L agents each, stepped together.

    Args:
        num_worlds: B, the number of worlds stepped in lock-step.
        num_agents: L, agent slots per world (use ``mask`` in :meth:`reset` for fewer).
        grid_size: N, the cylinder is [N] x [N] cells.
        radius: R, agents collide when centres are within 2R.
        device: torch device of every tensor.
        neighbour_grid: force the neighbour grid on (True) or off (False); None picks by L and the
            device (:func:`collision_method`).
    """

    def __init__(
        self,
        num_worlds: int = 1,
        num_agents: int = 20,
        grid_size: int = 360,
        radius: int = 5,
        device: str | torch.device = "cpu",
        neighbour_grid: bool | None = None,
    ):
        check_world_args(num_agents, grid_size, radius)
        check_int("num_worlds", num_worlds, 1)
        self.B, self.L, self.N, self.R = num_worlds, num_agents, grid_size, radius
        self.device = check_device(device)
        self.cell = max(2 * radius, 1)
        # floor, not ceil: the last cell absorbs the remainder, so every cell (also across the y
        # wrap) is at least 2R wide and touching agents always sit in the same or adjacent cells.
        self.cells = grid_size // self.cell
        # Recorded so that a benchmark or a run can say which test it used.
        self.collision_method = collision_method(num_agents, self.device, self.cells, neighbour_grid)
        self.use_grid = self.collision_method == "grid"
        self._moves = _MOVES.to(self.device)
        # Collision tests run on coordinates of this dtype: int16 halves int32's memory traffic
        # on the (B, L, L) tensors and is exact while N and the clamped squares fit (see _near).
        small = grid_size < 2**14 and 2 * (2 * radius + 1) ** 2 < 2**15
        self._coord_dtype = torch.int16 if small else torch.long
        self.positions = torch.zeros(
            self.B, self.L, 2, dtype=torch.long, device=self.device
        )  # (B, L, [x, y])
        self.mask = torch.ones(self.B, self.L, dtype=torch.bool, device=self.device)  # (B, L) real agents
        self.collided = torch.zeros(self.B, self.L, self.L, dtype=torch.bool, device=self.device)
        self.steps = torch.zeros(self.B, dtype=torch.long, device=self.device)
        # Worlds placed by reset() so far; once all are, moving is allowed (checked on the CPU, no sync).
        self._placed: np.ndarray | None = np.zeros(self.B, dtype=bool)

    # ------------------------------------------------------------------ state
    def reset(self, positions: torch.Tensor, mask: torch.Tensor | None = None, worlds=None) -> None:
        """Place agents and forget past collisions.

        Args:
            positions: (B, L, 2) integer cells [x, y] in [0, N), or (b, L, 2) with ``worlds``.
            mask: (B, L) bool, True for real agents; default all real.
            worlds: optional index (or bool mask) of the worlds to reset; others keep going.
        """
        positions = torch.as_tensor(positions, device=self.device)
        if positions.dtype.is_floating_point or positions.dtype == torch.bool:
            raise TypeError(f"positions must be an integer tensor, got dtype {positions.dtype}")
        sel = slice(None) if worlds is None else worlds
        target = self.positions[sel]
        if positions.shape != target.shape:
            raise ValueError(f"positions must have shape {tuple(target.shape)}, got {tuple(positions.shape)}")
        if positions.numel() and (positions.min() < 0 or positions.max() >= self.N):
            raise ValueError(
                f"positions must lie in [0, grid_size={self.N}), got range "
                f"[{int(positions.min())}, {int(positions.max())}]"
            )
        if mask is None:
            mask = torch.ones(target.shape[:2], dtype=torch.bool, device=self.device)
        mask = torch.as_tensor(mask, dtype=torch.bool, device=self.device)
        if mask.shape != target.shape[:2]:
            raise ValueError(f"mask must have shape {tuple(target.shape[:2])}, got {tuple(mask.shape)}")
        self.positions[sel] = positions.long()
        self.mask[sel] = mask
        if self._placed is not None:
            self._placed[sel if worlds is None else torch.as_tensor(worlds).cpu().numpy()] = True
            if self._placed.all():
                self._placed = None
        self.collided[sel] = False
        self.steps[sel] = 0

    def move(self, actions: torch.Tensor) -> None:
        """Apply one action per agent: x is clipped at the walls, y wraps around."""
        if self._placed is not None:
            raise ResetNeeded(
                f"World.step()/move() before reset(): worlds {np.flatnonzero(~self._placed)[:5].tolist()} "
                "have no agents placed yet; call reset(positions) first"
            )
        actions = torch.as_tensor(actions, device=self.device)
        if actions.shape != (self.B, self.L):
            raise ValueError(f"actions must have shape {(self.B, self.L)}, got {tuple(actions.shape)}")
        if actions.dtype.is_floating_point or actions.dtype == torch.bool:
            raise TypeError(f"actions must be integers in [0, {NUM_ACTIONS}), got dtype {actions.dtype}")
        lo, hi = (int(v) for v in torch.aminmax(actions)) if actions.numel() else (0, 0)  # one pass
        if lo < 0 or hi >= NUM_ACTIONS:
            raise ValueError(
                f"actions must lie in [0, {NUM_ACTIONS}) (stay, right, left, up, down), "
                f"got range [{lo}, {hi}]"
            )
        self.positions = self.cells_after(torch.where(self.mask, actions.long(), STAY))  # padded slots stay

    def cells_after(self, actions: torch.Tensor) -> torch.Tensor:
        """The cells agents would reach with ``actions`` from where they stand now; moves nothing.

        ``actions`` is (B, L) or (B, L, K) (K candidate actions per agent, e.g. every action to
        compare them); returns (B, L, 2) or (B, L, K, 2) long [x, y], x clipped at the walls and y
        wrapped, exactly as :meth:`move` would place them. Scripted policies and observation
        features plan with it without touching the world's state.
        """
        actions = torch.as_tensor(actions, device=self.device).long()
        if actions.shape[:2] != (self.B, self.L):
            raise ValueError(
                f"actions must have shape (B, L[, K]) = {(self.B, self.L)}, got {tuple(actions.shape)}"
            )
        pos = self.positions.view(self.B, self.L, *([1] * (actions.dim() - 2)), 2)
        cells = pos + self._moves[actions]
        cells[..., 0].clamp_(0, self.N - 1)
        cells[..., 1].remainder_(self.N)
        return cells

    def step(self, actions: torch.Tensor) -> Contacts:
        """Move every agent, then record the collisions; returns this step's :class:`Contacts`."""
        self.move(actions)
        self.steps += 1
        return self.detect()

    # -------------------------------------------------------------- collisions
    def detect(self) -> Contacts:
        """Test every pair (or every grid neighbour) and mark first-time collisions."""
        return self._detect_grid() if self.use_grid else self._detect_dense()

    def touching(self, pos_i: torch.Tensor, pos_j: torch.Tensor) -> torch.Tensor:
        """Whether centres at pos_i and pos_j (broadcastable (..., 2)) are within 2R on the cylinder."""
        dx = (pos_j[..., 0] - pos_i[..., 0]).to(torch.int32)
        dy = circular_delta(pos_i[..., 1], pos_j[..., 1], self.N).to(torch.int32)
        return dx * dx + dy * dy <= (2 * self.R) ** 2

    def _near(
        self, x_i: torch.Tensor, y_i: torch.Tensor, x_j: torch.Tensor, y_j: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`touching` for cells inside the grid ([0, N)) given as broadcastable x and y
        tensors, with fewer and cheaper passes.

        Absolute gaps are clamped to 2R + 1 (any larger gap misses either way), so the sum of
        squares fits the small ``_coord_dtype``; no integer division (``remainder``) is needed
        because |y_j - y_i| < N, so the way round the cylinder is ``min(dy, N - dy)``.
        """
        far = 2 * self.R + 1
        dx = (x_j - x_i).abs_().clamp_(max=far)
        dy = (y_j - y_i).abs_()
        dy = torch.minimum(dy, self.N - dy).clamp_(max=far)
        return dx.mul_(dx).add_(dy.mul_(dy)) <= (2 * self.R) ** 2

    def _coords(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_i, x_j, y), each (B, L) in ``_coord_dtype``: x as seen by the toucher (i) and by the
        touched (j). A padded agent sits 2R + 1 beyond the left wall as i and beyond the right
        wall as j, out of everyone's reach (itself included): no (B, L, L) mask pass is needed.
        """
        x, y = self.positions.to(self._coord_dtype).unbind(-1)
        far, pad = 2 * self.R + 1, ~self.mask
        return x.masked_fill(pad, -far), x.masked_fill(pad, self.N - 1 + far), y.contiguous()

    def _detect_dense(self) -> Contacts:
        x_i, x_j, y = self._coords()  # (B, L) each
        hit = self._near(x_i.unsqueeze(2), y.unsqueeze(2), x_j.unsqueeze(1), y.unsqueeze(1))  # (B, L, L)
        hit.diagonal(dim1=1, dim2=2).fill_(False)
        new = hit > self.collided  # on bools: hit and not collided before, in one pass
        self.collided |= new
        partner = torch.arange(self.L, device=self.device).expand(self.B, self.L, self.L)
        return Contacts(partner=partner, new=new)

    def _detect_grid(self) -> Contacts:
        B, L, C = self.B, self.L, self.cells
        cx, cy = (self.positions // self.cell).clamp(max=C - 1).unbind(-1)  # (B, L) cell coordinates
        n_buckets = C * C + 1  # one extra bucket collects padded agents
        bucket = torch.where(self.mask, cx * C + cy, C * C)
        key = (torch.arange(B, device=self.device).unsqueeze(1) * n_buckets + bucket).reshape(-1)  # (B*L,)
        order = torch.argsort(key, stable=True)
        sorted_key = key[order]
        counts = torch.bincount(sorted_key, minlength=B * n_buckets)
        start = torch.cumsum(counts, 0) - counts
        rank = torch.arange(B * L, device=self.device) - start[sorted_key]
        real = torch.arange(B * n_buckets, device=self.device) % n_buckets != C * C
        K = max(int(counts[real].max()) if real.any() else 1, 1)
        table = torch.full((B * n_buckets, K), -1, dtype=torch.long, device=self.device)
        keep = sorted_key % n_buckets != C * C  # padded agents are never anyone's partner
        table[sorted_key[keep], rank[keep]] = order[keep] % L  # agent index within its world

        # 3x3 neighbourhood of each agent's cell: x stops at the walls, y wraps.
        off = torch.tensor([-1, 0, 1], device=self.device)
        nx = cx.unsqueeze(-1).unsqueeze(-1) + off.view(3, 1)  # (B, L, 3, 1)
        ny = torch.remainder(cy.unsqueeze(-1).unsqueeze(-1) + off.view(1, 3), C)  # (B, L, 1, 3)
        inside = (nx >= 0) & (nx < C)
        nb = torch.where(inside, nx.clamp(0, C - 1) * C + ny, C * C).reshape(B, L, 9)  # (B, L, 9)
        nb = nb + torch.arange(B, device=self.device).view(B, 1, 1) * n_buckets
        partner = table[nb].reshape(B, L, -1)  # (B, L, K'=9K), -1 = empty slot
        valid = partner >= 0
        safe = partner.clamp(min=0)
        x_i, x_j, y = self._coords()  # (B, L) each
        flat = safe.reshape(B, -1)  # (B, L*K')
        x_j, y_j = (torch.gather(v, 1, flat).view_as(safe) for v in (x_j, y))  # (B, L, K')
        hit = self._near(x_i.unsqueeze(2), y.unsqueeze(2), x_j, y_j) & valid
        # An agent meets itself once: in its own cell (neighbour 4 of 9), at its rank there.
        own_rank = torch.empty_like(rank).scatter_(0, order, rank).view(B, L)
        hit.scatter_(2, (4 * K + torch.where(self.mask, own_rank, 0)).unsqueeze(-1), False)
        new = hit > torch.gather(self.collided, 2, safe)  # on bools: hit and not collided before
        # Each partner sits in exactly one cell, so a pair appears once per row: no double counting.
        b, i, k = new.nonzero(as_tuple=True)
        self.collided[b, i, safe[b, i, k]] = True  # no (B, L, L) temporary: only the new pairs
        return Contacts(partner=safe, new=new)
