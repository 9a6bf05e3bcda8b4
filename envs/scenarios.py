"""Scenarios of the colliding-agents world: labels, scripted policies, rewards and closed forms.

A scenario says what the agents *are* (integer labels per agent, which become token features),
how the paper's fixed policies act, and how first-time collisions turn into rewards. The world
(`envs/world.py`) only moves agents and reports collisions.

All three are deterministic given positions and labels, so the return of the scripted policy
over ``grid_size`` steps is an exact regression target (`rollout_returns`).
"""

from __future__ import annotations

import math

import torch

from envs.checks import check_int
from envs.world import MOVE_RIGHT, UP, Contacts, World, circular_delta


class Scenario:
    """Base class. Subclasses set ``name``, ``label_names`` and ``label_sizes`` and override
    :meth:`rewards`; the others have sensible defaults.

    Labels are a (B, L, F) long tensor, column f taking values in ``range(label_sizes[f])``.
    """

    name = "base"
    label_names: tuple[str, ...] = ()
    label_sizes: tuple[int, ...] = ()
    self_value = -1.0
    """The constant a predictor's own j = i terms realise (``envs.datasets`` adds it to targets).

    Attention sums over every j, the token itself included, and two agents may share a token
    (i.i.d. positions repeat). An exact table then needs its diagonal G[mu, mu] to serve both,
    so the self term must equal what an identical other agent contributes: -1 when agents on
    the same spot collide and nothing else (``pairwise``)."""

    def sample_labels(self, gen: torch.Generator, num_worlds: int, num_agents: int) -> torch.Tensor:
        """Uniform i.i.d. labels, (B, L, F) long on the CPU."""
        cols = [torch.randint(0, k, (num_worlds, num_agents, 1), generator=gen) for k in self.label_sizes]
        return torch.cat(cols, -1) if cols else torch.zeros(num_worlds, num_agents, 0, dtype=torch.long)

    def scripted_actions(self, labels: torch.Tensor) -> torch.Tensor:
        """The paper's fixed policy: every agent plays MOVE_RIGHT. (B, L) long."""
        return torch.full(labels.shape[:2], MOVE_RIGHT, dtype=torch.long, device=labels.device)

    def rewards(self, world: World, labels: torch.Tensor, contacts: Contacts) -> torch.Tensor:
        """Reward of one step, (B, L) float32."""
        raise NotImplementedError

    def closed_form(
        self, positions: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, grid_size: int, radius: int
    ) -> torch.Tensor | None:
        """Return of the scripted policy over ``grid_size`` steps without simulating, if known."""
        return None


def near_y(positions: torch.Tensor, grid_size: int, radius: int) -> torch.Tensor:
    """(B, L, L) bool: circular |y_i - y_j| <= 2R, the paper's collision test after parking."""
    y = positions[..., 1]
    return circular_delta(y.unsqueeze(2), y.unsqueeze(1), grid_size).abs() <= 2 * radius


def _pair_mask(mask: torch.Tensor) -> torch.Tensor:
    """(B, L, L) bool: both agents real and i != j."""
    both = mask.unsqueeze(2) & mask.unsqueeze(1)
    return both & ~torch.eye(mask.shape[1], dtype=torch.bool, device=mask.device)


class Pairwise(Scenario):
    """The paper's scenario (section 7, Eq. 4): identical agents, -1 per distinct collision partner.

    Rules: every agent plays MOVE_RIGHT; an agent at the wall (x = N-1) stays. Reward -1 the first
    time agent i touches each distinct agent j. After N steps every agent is parked at x = N-1, so
    agent i's return is the closed form ``-#{j != i : min(|y_i-y_j|, N-|y_i-y_j|) <= 2R}``
    (the paper's realisable target adds -1 for j = i).
    """

    name = "pairwise"

    def rewards(self, world: World, labels: torch.Tensor, contacts: Contacts) -> torch.Tensor:
        return (-contacts.count()).float()  # negate the int: no -0.0 rewards

    def closed_form(self, positions, labels, mask, grid_size, radius):
        near = near_y(positions, grid_size, radius) & _pair_mask(mask)
        return -near.sum(-1).double()


HUNTER, PREY = 0, 1
POLICY_RIGHT, POLICY_UP = 0, 1


class PredatorPrey(Scenario):
    """Predator-prey (paper App. E.1): species x scripted policy labels.

    Labels: ``species`` in {0 hunter, 1 prey} and ``policy`` in {0 right, 1 up}, i.i.d. uniform.
    Rules: a "right" agent plays MOVE_RIGHT (parking at the wall); an "up" agent plays UP forever,
    wrapping around the cylinder. A hunter gets +1 the first time it touches each distinct prey;
    a prey gets -1 the first time it touches each distinct hunter; same-species contacts give 0.
    The value is a sum over policy pairs of (species factor) x (policy factor) x (position
    factor) x w(species_j): the paper's motivating case for HyperFeatureAttention. No closed
    form is used: the simulated return is the ground truth.
    """

    name = "predator_prey"
    label_names = ("species", "policy")
    label_sizes = (2, 2)
    self_value = 0.0  # an identical agent has the same species: their contact is worth 0

    def scripted_actions(self, labels: torch.Tensor) -> torch.Tensor:
        up = labels[..., 1] == POLICY_UP
        return torch.where(up, UP, MOVE_RIGHT).long()

    @staticmethod
    def pair_weight(species_i: torch.Tensor, species_j: torch.Tensor) -> torch.Tensor:
        """+1 hunter catches prey, -1 prey caught by hunter, 0 same species (broadcasting)."""
        return (species_i != species_j).float() * torch.where(species_i == HUNTER, 1.0, -1.0)

    def rewards(self, world: World, labels: torch.Tensor, contacts: Contacts) -> torch.Tensor:
        species = labels[..., 0]
        partner_species = torch.gather(species, 1, contacts.partner.flatten(1)).view_as(contacts.partner)
        w = self.pair_weight(species.unsqueeze(-1), partner_species)  # (B, L, K)
        return (contacts.new.float() * w).sum(-1)


class Alliances(Scenario):
    """Alliances: a ternary bonus that no pairwise (SA) model can represent (paper section 6).

    Labels: ``alliance`` in {0, ..., num_alliances-1}, i.i.d. uniform. Every agent plays
    MOVE_RIGHT. Rewards: -1 the first time agent i touches each distinct agent (as in
    ``pairwise``), plus ``bonus`` once for every unordered pair {j, k} (j, k != i) such that i, j
    and k share one alliance and all three pairs have touched: the bonus is paid at the step the
    triangle closes. After N steps the return is
    ``-#{j: near(i,j)} + bonus * #{j<k: allied(i,j,k), near(i,j), near(i,k), near(j,k)}``.
    """

    name = "alliances"
    label_names = ("alliance",)

    def __init__(self, num_alliances: int = 3, bonus: float = 1.0):
        check_int("num_alliances", num_alliances, 1)
        if isinstance(bonus, bool) or not isinstance(bonus, (int, float)) or not math.isfinite(bonus):
            raise TypeError(f"bonus must be a finite number, got {bonus!r}")
        self.label_sizes = (num_alliances,)
        self.bonus = bonus
        # Order-3 terms also run over j = k and j or k = i: with g3 = bonus/2 on allied mutually
        # near triples, those repeats add (3 bonus / 2) per allied near partner plus bonus / 2,
        # which a pairwise term -(1 + 3 bonus / 2) on near pairs cancels only if the self term is
        # -(1 + bonus). Then SA + order-3 HA is exact (experiment 5); pairwise models cannot be.
        self.self_value = -(1.0 + bonus)

    @staticmethod
    def triangles(touched: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, L) allied triangles through each agent: 0.5 sum_jk M_ij M_jk M_ki, M = allied & touched."""
        a = labels[..., 0]
        m = (touched & (a.unsqueeze(2) == a.unsqueeze(1))).double()  # (B, L, L), zero diagonal
        return 0.5 * ((m @ m) * m).sum(-1)

    def rewards(self, world: World, labels: torch.Tensor, contacts: Contacts) -> torch.Tensor:
        new = (
            contacts.new
            if contacts.new.shape[-1] == world.L and not world.use_grid
            else contacts.dense(world.L)
        )
        gained = self.triangles(world.collided, labels) - self.triangles(world.collided & ~new, labels)
        return (self.bonus * gained - contacts.count()).float()

    def closed_form(self, positions, labels, mask, grid_size, radius):
        near = near_y(positions, grid_size, radius) & _pair_mask(mask)
        return -near.sum(-1).double() + self.bonus * self.triangles(near, labels)


SCENARIOS = {"pairwise": Pairwise, "predator_prey": PredatorPrey, "alliances": Alliances}


def make_scenario(name: str | Scenario) -> Scenario:
    """Scenario by name (``pairwise``, ``predator_prey``, ``alliances``) or pass one through."""
    if isinstance(name, Scenario):
        return name
    if name not in SCENARIOS:
        raise ValueError(f"scenario must be one of {sorted(SCENARIOS)}, got {name!r}")
    return SCENARIOS[name]()


@torch.no_grad()
def rollout_returns(
    scenario: Scenario | str,
    positions: torch.Tensor,
    labels: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    grid_size: int = 360,
    radius: int = 5,
    steps: int | None = None,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Simulate the scenario's scripted policy in B worlds at once and return each agent's return.

    Args:
        positions: (B, L, 2) integer start cells.
        labels: (B, L, F) long scenario labels (F = len(label_sizes)); may be None for ``pairwise``.
        mask: (B, L) bool real agents; padded agents get return 0.
        steps: episode length, default ``grid_size`` (every right-mover reaches the wall).

    Returns:
        (B, L) float64 summed rewards.
    """
    sc = make_scenario(scenario)
    positions = torch.as_tensor(positions, device=device)
    B, L = positions.shape[:2]
    if labels is None:
        if sc.label_sizes:
            raise ValueError(f"scenario {sc.name!r} needs labels of shape (B, L, {len(sc.label_sizes)})")
        labels = torch.zeros(B, L, 0, dtype=torch.long)
    labels = torch.as_tensor(labels, device=device).long()
    world = World(B, L, grid_size, radius, device=device)
    world.reset(positions, mask)
    actions = sc.scripted_actions(labels)
    total = torch.zeros(B, L, dtype=torch.float64, device=device)
    for _ in range(grid_size if steps is None else steps):
        total += sc.rewards(world, labels, world.step(actions)).double()
    return total * world.mask
