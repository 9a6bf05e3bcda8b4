"""Crossing: a controlled MARL task on the colliding-agents world, batched over B worlds.

Every agent starts near the left wall and should reach the right wall (x = N-1) soon while
touching as few distinct other agents as possible. It is the paper's MOVE_RIGHT world with the
agents allowed to choose: stay, right, left, up, down (``envs.world`` constants 0..4).

Defaults (small enough for PPO on a CPU in minutes): N = 64, R = 1, T = 96 steps, starts x uniform in
[0, 16) and y uniform in [0, N), placed one agent at a time among the cells that do not touch
an agent already placed, so nobody collides at reset.

Parking: an agent that reaches x = N-1 is *parked* for good. Its actions are replaced by STAY,
it stays collidable, and its slot keeps receiving rewards until the episode ends.

Reward of agent i at step t (exactly)::

    r_i(t) = -0.05 * (1 - dx_i(t)) * [i not parked before step t]  -  c_i(t)

where dx_i(t) in {-1, 0, 1} is i's actual x displacement in step t (0 when a move into the
left wall is clipped) and c_i(t) is the number of *new distinct* partners i touched in step t
(centres within 2R on the cylinder, each partner charged once per episode), parked or not.
Moving right costs nothing, so MOVE_RIGHT's return is the paper's closed form
``-#{j != i : circular |y_i - y_j| <= 2R}`` (every agent parks at x = N-1 before T since
N-1 - 15 < T, and agents that move in lock-step never meet before parking). Staying, up and
down cost 0.05, left costs 0.1. Episodes end by truncation only, after ``max_steps`` steps.

``contact_cost`` (default 1) scales c_i(t) for training. Every contact costs both partners 1, so
an agent's own reward carries only half of what its contact costs the team: with 1, pushing into
an agent parked at the wall costs the pusher about what waiting for the rest of the episode costs,
and a policy trained on its own reward pushes in. 2 charges each agent the whole cost, its
partner's loss included. Evaluation uses the task's reward, 1.

``lateral_cost`` (default 0) adds that much for every UP or DOWN move, for training. An agent that
slides along a queue meets the agents in the lanes it slides through, where one that stays meets
nobody, yet the task charges both 0.05; a lateral cost makes staying the cheaper way to wait and
leaves a sidestep that avoids a contact far cheaper than the contact. Evaluation uses the task's 0.
Trained policies did not take up staying for it (docs/torchrl.md); it stays an option to try.

``contact_charge`` (default "both") says who pays for a contact in training. "both" is the task.
"mover" charges only the partners that moved in that step, so an agent that stays is never
charged: in a crowd whose waiting agents slide, one that stops is run into by the flow, and
under "both" it pays for that, which teaches every agent to slide too. "behind" charges only the
partner further back in priority's order (``envs/experts.py``: further along the agent's heading
first, ties by smaller y, at the start of the step), so the agent ahead never pays. "yield"
charges whoever broke the convention of yielding to the agents ahead: the partner behind for any
move (it should have kept clear of every cell the one ahead could reach), the partner ahead for
moving onto the cell where the one behind stood. Both aim at that convention, with which a
scripted decentralised policy of the 7 nearest in view nearly matches priority in crowds
(``benchmarks/marl_yield.py``); trained policies did not take it up (docs/torchrl.md).
Evaluation uses "both".

Agent counts vary per world: L_max slots, the first ``count[b]`` real (``mask``), the rest padded.

Observation of agent i: a token set (L_max, F), self first, then the other slots in index order,
with F = 10 features for slot j::

    [present_j, dx/N, dy/N, x_j/N, touched_ij, parked_j, clip(dx/4R), clip(dy/4R), vx_j, vy_j]

where (dx, dy) = position of j minus position of i, dy the signed shortest displacement around
the cylinder; clip(./4R) are the same offsets in units of 4R clipped to [-1, 1] (the collision
scale, which dx/N hides); (vx_j, vy_j) in {-1, 0, 1}^2 is j's actual displacement in the last
step (0 after a reset, after a move clipped by the wall and while parked), so a policy can
predict where its neighbours go next (the greedy baseline assumes "right unless parked").
Padded slots are all zero; a padded agent's own view is zero.

Feature sets (``features=``): ``"base"`` is the 10 above. ``"touch"`` appends 10 binary
collision features for slot j (0 for self)::

    [touch(c_i(a), p_j) for a in STAY, RIGHT, LEFT, UP, DOWN] + [touch(c_i(a), q_j) for the same a]

where c_i(a) is the cell agent i reaches with action a (wall-clipped), p_j is j's cell and
q_j the cell j reaches if it keeps moving right (its cell if parked), touch = centres within 2R.
Why: whether a move collides is a disc test, dx^2 + dy^2 <= (2R)^2, on integer offsets, and a
small network learns its edge (|dy| = 2R touches, 2R + 1 does not) only approximately from the
offset features; the clones of docs/marl.md collided exactly there. The touch features give the
pairwise test itself, and the attention still has to learn which partners matter and how to
combine them into a move. ``"base"`` stays the default so earlier checkpoints keep loading.

``"heading"`` appends one feature, the label h_i * h_j: 1 for an agent heading the same way as
the viewer, -1 for one coming the other way (the two-way task below; 1 everywhere in the one-way
task).

``"time"`` appends one feature, the fraction of the episode left, 1 - t/T, on every real token.
Episodes end by truncation, and without it the cost of waiting (0.05 a step for every step left)
against pushing into a crowd (1 per new partner) is not a function of what the agent sees.

Two-way traffic (``two_way=True``): the odd slots head left instead. They start mirrored, x
uniform in (N-1-start_width, N-1], and park at x = 0. Each agent acts and observes in its own
frame, so its heading h_i is always "right": its RIGHT and LEFT are swapped in the world when
h_i = -1, dx_i(t) in the reward is its displacement along h_i, and its tokens give dx, x_j and
vx_j mirrored (x_j as (N-1-x_j)/N). MOVE_RIGHT is then "everyone moves forward". The
``"heading"`` label tells an agent coming at the viewer from one it follows from the first step;
the velocity features tell them apart once they have moved (docs/two_way.md measures both). The
scripted avoiders (``envs/experts.py``) play either task.

Predator-prey (``predator_prey=True``): the labelled scenario of ``envs/scenarios.py`` as a
learning task for the prey. The odd slots are *hunters* that keep the scenario's scripted policy:
slots 1, 5, 9, ... play UP forever (wrapping around the cylinder, each sweeping its own column),
slots 3, 7, 11, ... play RIGHT and park at the wall. Hunters start at x uniform in
[start_width + 2R, N - start_width), clear of the prey's start strip; the even slots are the prey
and learn the crossing task, except that touching another prey is free (same species, as in the
scenario) and each new distinct hunter costs 1. Hunters earn nothing and are no learner's sample:
``learners`` (real prey) replaces ``mask`` wherever returns are averaged or actions matter, and a
hunter's action is replaced by its scripted one. A right hunter always parks before any prey does
(it starts closer to the wall and both move at most one cell), and an up hunter's column is at
least start_width > 2R from the wall, so once every prey is parked nobody can touch anyone who
earns. ``"labels"`` appends the scenario's labels of slot j: [hunter_j, hunter_j moves up]. Without
them a prey tells a hunter only by its motion, and a right hunter from a prey not at all.

Shapes: B worlds, L agent slots (L_max), N grid size, R radius, F token features.
"""

from __future__ import annotations

import torch

from envs.checks import check_int, check_real, parse_count
from envs.experts import (
    POLICIES,
    cautious_policy,
    greedy_policy,
    move_right_policy,
    priority_policy,
    random_policy,
)
from envs.scenarios import HUNTER, POLICY_RIGHT, POLICY_UP, PREY, PredatorPrey
from envs.world import DOWN, LEFT, NUM_ACTIONS, RIGHT, STAY, UP, Contacts, World, circular_delta

__all__ = [
    "Crossing",
    "NUM_FEATURES",
    "PARKED_FEATURE",
    "FEATURE_SETS",
    "POLICIES",
    "move_right_policy",
    "greedy_policy",
    "cautious_policy",
    "priority_policy",
    "random_policy",
    "STAY",
    "RIGHT",
    "LEFT",
    "UP",
    "DOWN",
    "NUM_ACTIONS",
]

NUM_FEATURES = 10  # the "base" feature set
PARKED_FEATURE = 5  # index of parked_j in a token
FEATURE_SETS = {
    "base": NUM_FEATURES,
    "touch": NUM_FEATURES + 2 * NUM_ACTIONS,
    "time": NUM_FEATURES + 1,
    "heading": NUM_FEATURES + 1,
    "labels": NUM_FEATURES + 2,
}
STEP_COST = 0.05


def check_count_power(count_power) -> float:
    """``count_power`` as a float in [0, 8] (beyond 8 every world would hold `low` agents)."""
    return check_real("count_power", count_power, 0.0, 8.0)


def check_contact_cost(contact_cost) -> float:
    """``contact_cost`` as a finite float >= 0."""
    return check_real("contact_cost", contact_cost)


def check_lateral_cost(lateral_cost) -> float:
    """``lateral_cost`` as a finite float >= 0."""
    return check_real("lateral_cost", lateral_cost)


CONTACT_CHARGES = ("both", "mover", "behind", "yield")


def check_contact_charge(contact_charge) -> str:
    """``contact_charge`` as one of CONTACT_CHARGES."""
    if contact_charge not in CONTACT_CHARGES:
        raise ValueError(f"contact_charge must be one of {CONTACT_CHARGES}, got {contact_charge!r}")
    return contact_charge


def check_start_width_low(start_width_low, start_width: int) -> int | None:
    """``start_width_low`` if it is None or an int in [1, start_width], else TypeError / ValueError."""
    if start_width_low is not None:
        check_int("start_width_low", start_width_low, 1)
        if start_width_low > start_width:
            raise ValueError(
                f"start_width_low must be in [1, start_width={start_width}], got {start_width_low}"
            )
    return start_width_low


def check_two_way(two_way, features: str, start_width: int, grid_size: int, radius: int) -> bool:
    """``two_way`` if it is a bool the task can honour, else TypeError / ValueError."""
    if not isinstance(two_way, bool):
        raise TypeError(f"two_way must be a bool, got {two_way!r}")
    if two_way and features == "touch":  # its per-action tests are in the world's frame
        raise ValueError("two_way needs features 'base', 'time' or 'heading', got 'touch'")
    if two_way and 2 * start_width + 2 * radius > grid_size:  # the two start strips must not touch
        raise ValueError(
            f"two_way needs start_width <= (grid_size - 2 radius) / 2 = "
            f"{(grid_size - 2 * radius) // 2}, got {start_width}"
        )
    return two_way


def check_predator_prey(
    predator_prey, two_way: bool, features: str, start_width: int, grid_size: int, radius: int
) -> bool:
    """``predator_prey`` if it is a bool the task can honour, else TypeError / ValueError."""
    if not isinstance(predator_prey, bool):
        raise TypeError(f"predator_prey must be a bool, got {predator_prey!r}")
    if not predator_prey:
        return False
    if two_way:
        raise ValueError("predator_prey and two_way are separate tasks: set at most one")
    if features == "touch":  # its per-action tests charge every partner; prey touch prey for free
        raise ValueError("predator_prey needs features 'base', 'time', 'heading' or 'labels', got 'touch'")
    if start_width <= 2 * radius or grid_size < 2 * start_width + 2 * radius + 1:
        # hunters start in [start_width + 2R, N - start_width), and an up hunter's column must stay
        # out of reach of the prey parked at the wall
        raise ValueError(
            f"predator_prey needs 2 radius < start_width <= (grid_size - 2 radius - 1) / 2 = "
            f"{(grid_size - 2 * radius - 1) // 2}, got start_width {start_width}"
        )
    return True


def check_features(features) -> str:
    """``features`` if it names a feature set, else ValueError listing them."""
    if not isinstance(features, str) or features not in FEATURE_SETS:
        raise ValueError(f"features must be one of {tuple(FEATURE_SETS)}, got {features!r}")
    return features


class Crossing:
    """B crossing worlds stepped together.

    Args:
        num_worlds: B.
        num_agents: agents per world, an int or a (low, high) range sampled per world at reset.
        grid_size: N.
        radius: R.
        max_steps: T, episode length (truncation).
        start_width: starts have x uniform in [0, start_width).
        start_width_low: if given, each episode's start width is drawn per world uniform in
            [start_width_low, start_width], so a few agents meet the crowding of many: a world of
            24 agents started 8 cells wide is as dense as one of 48 started 16 wide.
        seed: seed of the env's torch.Generator (see :meth:`seed`).
        device: torch device.
        features: the observation's feature set, a key of ``FEATURE_SETS`` (see module doc).
        count_power: world counts are drawn with P(count = L) proportional to L^-count_power over
            the ``num_agents`` range: 0 is uniform over worlds, so a world of 64 agents yields 32x
            the samples of a world of 2; 1 gives every count the same share of agent samples; 2
            gives every doubling of L (2-4, 4-8, ...) the same share.
        contact_cost: what each new partner costs in the reward (1 is the task; see module doc).
        lateral_cost: what each UP or DOWN move costs on top of the step cost (0 is the task).
        contact_charge: who pays for a contact: "both" partners (the task), each "mover" only,
            only the partner "behind" in priority's order, or whoever broke the "yield" convention.
        two_way: the odd slots start at the right wall and head left (see module doc).
        predator_prey: the odd slots are scripted hunters the even slots must avoid (module doc).
    """

    def __init__(
        self,
        num_worlds: int = 64,
        num_agents=8,
        grid_size: int = 64,
        radius: int = 1,
        max_steps: int = 96,
        start_width: int = 16,
        seed: int | None = None,
        device: str | torch.device = "cpu",
        features: str = "base",
        count_power: float = 0.0,
        start_width_low: int | None = None,
        contact_cost: float = 1.0,
        lateral_cost: float = 0.0,
        contact_charge: str = "both",
        two_way: bool = False,
        predator_prey: bool = False,
    ):
        self.low, self.high = parse_count(num_agents)
        self.count_power = check_count_power(count_power)
        self.features = check_features(features)
        check_int("num_worlds", num_worlds, 1)
        check_int("max_steps", max_steps, 1)
        check_int("grid_size", grid_size, 1)
        check_int("start_width", start_width, 1)
        if start_width > grid_size:
            raise ValueError(f"start_width must be <= grid_size={grid_size}, got {start_width}")
        self.start_width_low = check_start_width_low(start_width_low, start_width)
        self.contact_cost = check_contact_cost(contact_cost)
        self.lateral_cost = check_lateral_cost(lateral_cost)
        self.contact_charge = check_contact_charge(contact_charge)
        self.two_way = check_two_way(two_way, self.features, start_width, grid_size, radius)
        self.predator_prey = check_predator_prey(
            predator_prey, self.two_way, self.features, start_width, grid_size, radius
        )
        self.world = World(num_worlds, self.high, grid_size, radius, device=device)
        self.B, self.L, self.N, self.R = num_worlds, self.high, grid_size, radius
        self.T, self.start_width = max_steps, start_width
        self.device = self.world.device
        self.gen = torch.Generator(device="cpu")
        self.seed(seed)
        self.parked = torch.zeros(self.B, self.L, dtype=torch.bool, device=self.device)
        self.velocity = torch.zeros(self.B, self.L, 2, dtype=torch.long, device=self.device)  # last move
        slots = torch.arange(self.L, device=self.device)
        odd = (slots % 2 == 1) & two_way
        self.heading = torch.where(odd, -1, 1).expand(self.B, -1)  # (B, L): +1 right, -1 left
        hunter = (slots % 2 == 1) & predator_prey
        self.hunter = hunter.expand(self.B, -1)  # (B, L) scripted hunters (predator_prey)
        self.hunter_up = (hunter & (slots % 4 == 1)).expand(self.B, -1)  # the hunters that play UP
        # Cells within 2R of the origin: an agent placed at c blocks c + these offsets.
        r = torch.arange(-2 * radius, 2 * radius + 1)
        ox, oy = torch.meshgrid(r, r, indexing="ij")
        near = ox**2 + oy**2 <= (2 * radius) ** 2
        self._block = torch.stack([ox[near], oy[near]], -1).to(self.device)  # (P, 2)
        # order[i] lists the slots agent i sees: itself first, then every other slot in index order.
        k = torch.arange(self.L)
        i = k.unsqueeze(1)
        self._order = torch.where(k == 0, i, torch.where(k - 1 < i, k - 1, k)).to(self.device)  # (L, L)

    # ------------------------------------------------------------------ state
    @property
    def mask(self) -> torch.Tensor:
        """(B, L) bool, True for real agents."""
        return self.world.mask

    @property
    def learners(self) -> torch.Tensor:
        """(B, L) bool: the real agents that act and earn, every real agent but the hunters."""
        return self.world.mask & ~self.hunter

    @property
    def active(self) -> torch.Tensor:
        """(B, L) bool: learners not yet parked, whose actions still matter."""
        return self.learners & ~self.parked

    @property
    def threat(self) -> torch.Tensor:
        """(B, L) bool: the real agents whose touch costs a learner (predator_prey: the hunters)."""
        return self.world.mask & (self.hunter if self.predator_prey else True)

    def scenario_labels(self) -> tuple[torch.Tensor | None, PredatorPrey | None]:
        """(labels (B, L, 2) long, scenario) in ``envs.scenarios.PredatorPrey``'s encoding (species 0
        hunter / 1 prey, policy 0 right / 1 up, the prey counted as "right"), so a renderer draws the
        task in the scenario's colours; (None, None) for the other tasks."""
        if not self.predator_prey:
            return None, None
        species = torch.where(self.hunter, HUNTER, PREY)
        policy = torch.where(self.hunter_up, POLICY_UP, POLICY_RIGHT)
        return torch.stack([species, policy], -1), PredatorPrey()

    @property
    def positions(self) -> torch.Tensor:
        """(B, L, 2) long [x, y]."""
        return self.world.positions

    @property
    def steps(self) -> torch.Tensor:
        """(B,) long, steps taken in the current episode of each world."""
        return self.world.steps

    def seed(self, seed: int | None) -> None:
        """Re-seed the generator behind start counts and positions (None: a fresh random seed)."""
        if seed is None:
            self.gen.seed()
        else:
            self.gen.manual_seed(int(seed))

    def sample_counts(self, num_worlds: int) -> torch.Tensor:
        """(num_worlds,) long agent counts in [low, high], P(L) proportional to L^-count_power."""
        if self.count_power == 0:  # the uniform draw keeps the generator's stream of earlier seeds
            return torch.randint(self.low, self.high + 1, (num_worlds,), generator=self.gen)
        weights = torch.arange(self.low, self.high + 1, dtype=torch.float64) ** -self.count_power
        return self.low + torch.multinomial(weights, num_worlds, replacement=True, generator=self.gen)

    def sample_starts(self, num_worlds: int, counts: torch.Tensor | None = None):
        """Sample (positions (b, L, 2), mask (b, L)) without overlaps, using the env's generator.

        Agents are placed one at a time (a loop over L slots, vectorised over worlds), each
        uniformly among the start cells no earlier agent touches: one uniform number per world
        picks the k-th free cell by a prefix count, where torch.multinomial would draw an
        exponential for every cell (150 ms a slot at 4,096 worlds, 1 thread: resets then cost a
        GPU trainer more than its rollouts).
        """
        if counts is None:
            counts = self.sample_counts(num_worlds)
        counts = torch.as_tensor(counts).cpu()
        mask = torch.arange(self.L).unsqueeze(0) < counts.unsqueeze(1)  # (b, L)
        W, N = self.start_width, self.N
        free = torch.ones(num_worlds, W, N, dtype=torch.bool)  # (b, W, N) start cells still free
        if self.start_width_low is not None:  # drawn only then: fixed widths keep earlier seeds' streams
            widths = torch.randint(self.start_width_low, W + 1, (num_worlds,), generator=self.gen)
            free &= (torch.arange(W) < widths.unsqueeze(1)).unsqueeze(-1)
        pos = torch.zeros(num_worlds, self.L, 2, dtype=torch.long)
        block = self._block.cpu()
        rows = torch.arange(num_worlds)
        per_x = free.sum(2, dtype=torch.int32)  # (b, W) free cells in each start column, kept current
        for slot in range(self.L):
            live = mask[:, slot]
            if not live.any():
                break
            upto_x = per_x.cumsum(1, dtype=torch.int32)  # (b, W)
            count = upto_x[:, -1]  # (b,)
            if (count[live] == 0).any():
                raise ValueError(
                    f"cannot place {int(counts.max())} non-overlapping agents in a "
                    f"{W} x {N} start area with radius {self.R}"
                )
            u = torch.rand(num_worlds, dtype=torch.float64, generator=self.gen)
            k = (u * count).to(torch.int32).minimum((count - 1).clamp(min=0))  # (b,) the k-th free cell
            # its column, then its place in the column: two short prefix counts, not one over W N cells
            x = torch.searchsorted(upto_x, (k + 1).unsqueeze(1)).squeeze(1).clamp(max=W - 1)  # (b,)
            j = k - (upto_x[rows, x] - per_x[rows, x])  # (b,) free cells of column x before it
            column = free[rows, x].cumsum(1, dtype=torch.int32)  # (b, N)
            y = torch.searchsorted(column, (j + 1).unsqueeze(1)).squeeze(1).clamp(max=N - 1)  # (b,)
            x, y = x.long(), y.long()
            pos[:, slot, 0], pos[:, slot, 1] = x, y
            bx = x.unsqueeze(1) + block[:, 0]  # (b, P)
            by = torch.remainder(y.unsqueeze(1) + block[:, 1], N)
            ok = (bx >= 0) & (bx < W) & live.unsqueeze(1)
            b, bx, by = rows.unsqueeze(1).expand_as(bx)[ok], bx[ok], by[ok]  # a block's cells are distinct
            per_x.index_put_((b, bx), -free[b, bx, by].to(torch.int32), accumulate=True)
            free[b, bx, by] = False
        if self.two_way:  # the left-heading slots start mirrored at the right wall
            left = (self.heading[0] < 0).cpu()
            pos[:, left, 0] = N - 1 - pos[:, left, 0]
        if self.predator_prey:  # hunters keep their start lanes and move into their own zone
            hunters = self.hunter[0].cpu()
            low = W + 2 * self.R
            x = torch.randint(low, N - W, (num_worlds, int(hunters.sum())), generator=self.gen)
            pos[:, hunters, 0] = x
        return pos * mask.unsqueeze(-1), mask

    def reset(self, worlds: torch.Tensor | None = None, positions=None, mask=None) -> None:
        """Start new episodes in ``worlds`` (default all): sampled starts unless positions/mask given."""
        idx = torch.arange(self.B, device=self.device) if worlds is None else torch.as_tensor(worlds)
        if positions is None:
            positions, sampled = self.sample_starts(len(idx))
            mask = sampled if mask is None else mask
        self.world.reset(torch.as_tensor(positions).to(self.device), mask, worlds=idx)
        self.parked[idx] = False
        self.velocity[idx] = 0

    # ------------------------------------------------------------------ dynamics
    def step(self, actions: torch.Tensor) -> torch.Tensor:
        """Advance every world one step; returns the (B, L) float32 reward (0 on padded slots)."""
        actions = torch.as_tensor(actions, device=self.device)
        if actions.shape != (self.B, self.L):
            want = (self.B, self.L)
            raise ValueError(f"actions must have shape (B, L) = {want}, got {tuple(actions.shape)}")
        was_parked = self.parked.clone()
        actions = actions.long()
        if self.predator_prey:  # hunters play their scripted moves
            actions = torch.where(self.hunter_up, UP, torch.where(self.hunter, RIGHT, actions))
        actions = torch.where(was_parked, torch.full_like(actions, STAY), actions)
        if self.two_way:
            actions = self.world_actions(actions)
        before = self.world.positions.clone()
        contacts = self.world.step(actions)
        after = self.world.positions
        dx = after[..., 0] - before[..., 0]  # (B, L)
        dy = circular_delta(before[..., 1], after[..., 1], self.N)
        self.velocity = torch.stack([dx, dy], -1) * self.mask.unsqueeze(-1)
        forward = dx * self.heading
        moved = (dx != 0) | (dy != 0)  # (B, L)
        charged = contacts.new  # (B, L, K)
        if self.predator_prey:  # only a hunter's touch costs a prey
            charged = charged & self._of_partner(self.hunter, contacts)
        if self.contact_charge in ("behind", "yield"):  # who broke the yield convention pays
            key = self.priority_key(before)
            ahead = self._of_partner(key, contacts) < key.unsqueeze(-1)  # (B, L, K): partner ahead
            if self.contact_charge == "behind":  # the partner ahead never pays
                charged = charged & ahead
            else:  # behind: for any move; ahead: for moving onto where the partner stood
                stood = torch.stack([self._of_partner(before[..., m], contacts) for m in (0, 1)], -1)
                onto = self.world.touching(after.unsqueeze(2), stood)
                charged = charged & torch.where(ahead, moved.unsqueeze(-1), onto)
        partners = charged.sum(-1)
        if self.contact_charge == "mover":  # a new contact needs a move, so one side always pays
            partners = partners * moved
        reward = (
            -STEP_COST * (1 - forward).float() * (~was_parked).float() - self.contact_cost * partners.float()
        )
        if self.lateral_cost:  # dy is 0 for parked agents: their actions became STAY
            reward = reward - self.lateral_cost * (dy != 0).float()
        goal = torch.where(self.heading > 0, self.N - 1, 0)  # (B, L) x of each agent's far wall
        self.parked |= (self.world.positions[..., 0] == goal) & self.mask
        return reward * self.learners

    @staticmethod
    def _of_partner(values: torch.Tensor, contacts: Contacts) -> torch.Tensor:
        """(B, L, K): ``values`` (B, L) of each agent's k-th candidate partner."""
        return torch.gather(values, 1, contacts.partner.flatten(1)).view_as(contacts.partner)

    def priority_key(self, positions: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) long, smaller for agents ahead in priority's order (``envs/experts.py``):
        further along the agent's heading first, ties by smaller y."""
        pos = self.world.positions if positions is None else positions
        progress = torch.where(self.heading > 0, pos[..., 0], self.N - 1 - pos[..., 0])
        return -progress * self.N + pos[..., 1]

    def world_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Own-frame actions (B, L, ...) -> the world's: a left-heading agent's RIGHT is the world's
        LEFT and its LEFT the world's RIGHT (the identity in the one-way task)."""
        left = (self.heading < 0).view(self.B, self.L, *([1] * (actions.dim() - 2)))
        swap = torch.where(actions == RIGHT, LEFT, torch.where(actions == LEFT, RIGHT, actions))
        return torch.where(left, swap, actions)

    @property
    def done(self) -> torch.Tensor:
        """(B,) bool: worlds whose episode reached the time limit."""
        return self.world.steps >= self.T

    @property
    def num_features(self) -> int:
        """F of :meth:`observations` with the env's feature set."""
        return FEATURE_SETS[self.features]

    def observations(self, features: str | None = None) -> torch.Tensor:
        """(B, L, L, F) float32 token sets: [b, i] is agent i's view, self first (see module doc).

        ``features`` overrides the env's feature set (a policy trained on another set can then
        act in this env; the dynamics do not depend on it)."""
        features = self.features if features is None else check_features(features)
        w, N, L = self.world, self.N, self.L
        pos, mask = w.positions, w.mask  # (B, L, 2), (B, L)
        h = self.heading.float().unsqueeze(-1)  # (B, L_i, 1): each viewer's own frame
        dx = (pos[:, None, :, 0] - pos[:, :, None, 0]).float() * h  # (B, L, L): slot j seen from agent i
        dy = circular_delta(pos[:, :, None, 1], pos[:, None, :, 1], N).float()
        scale = 4.0 * max(self.R, 1)
        xj = pos[..., 0].float().unsqueeze(1)  # (B, 1, L_j)
        x = torch.where(h > 0, xj, N - 1 - xj) / N  # (B, L, L)
        vel = self.velocity.float().unsqueeze(1).expand(-1, L, -1, -1)  # (B, L, L, 2): slot j's last move
        feats = torch.stack(
            [
                mask.float().unsqueeze(1).expand(-1, L, -1),
                dx / N,
                dy / N,
                x,
                w.collided.float(),
                self.parked.float().unsqueeze(1).expand(-1, L, -1),
                (dx / scale).clamp(-1, 1),
                (dy / scale).clamp(-1, 1),
                vel[..., 0] * h,
                vel[..., 1],
            ],
            -1,
        )  # (B, L, L, F)
        if features == "touch":
            feats = torch.cat([feats, self._touch_features()], -1)
        elif features == "heading":
            label = (self.heading.unsqueeze(2) * self.heading.unsqueeze(1)).float()  # (B, L_i, L_j)
            feats = torch.cat([feats, label.unsqueeze(-1)], -1)
        elif features == "labels":
            label = torch.stack([self.hunter, self.hunter_up], -1).float()  # (B, L_j, 2)
            feats = torch.cat([feats, label.unsqueeze(1).expand(-1, L, -1, -1)], -1)
        elif features == "time":
            left = (1.0 - w.steps.float() / self.T).view(self.B, 1, 1, 1).expand(-1, L, L, 1)
            feats = torch.cat([feats, left], -1)
        F = feats.shape[-1]
        feats = feats * (mask[:, None, :, None] & mask[:, :, None, None])
        order = self._order.view(1, L, L, 1).expand(self.B, -1, -1, F)
        return torch.gather(feats, 2, order)

    def _touch_features(self) -> torch.Tensor:
        """(B, L, L, 2A) float: [b, i, j] = touch(i's cell after each action, j's cell now) then
        touch(same, j's cell if it keeps moving right); the diagonal is 0."""
        w = self.world
        pos = w.positions  # (B, L, 2)
        every = torch.arange(NUM_ACTIONS, device=self.device).expand(self.B, self.L, -1)
        cand = w.cells_after(every)  # (B, L, A, 2): i's cell after each action
        nxt = self.cells_ahead()
        c = cand.unsqueeze(2)  # (B, L_i, 1, A, 2)
        now = w.touching(c, pos[:, None, :, None, :])  # (B, L_i, L_j, A)
        then = w.touching(c, nxt[:, None, :, None, :])
        eye = torch.eye(self.L, dtype=torch.bool, device=self.device).view(1, self.L, self.L, 1)
        return torch.cat([now, then], -1).masked_fill(eye, False).float()

    def cells_ahead(self) -> torch.Tensor:
        """(B, L, 2) each agent's cell after one more move forward (its own cell if parked; an up
        hunter's cell one lane up): the guess of the others' next cells that the "touch" features
        and the scripted avoiders share, exact for the hunters."""
        pos = self.world.positions
        nxt = pos.clone()
        ahead = (pos[..., 0] + self.heading).clamp(0, self.N - 1)
        nxt[..., 0] = torch.where(self.parked | self.hunter_up, pos[..., 0], ahead)
        nxt[..., 1] = torch.where(self.hunter_up, torch.remainder(pos[..., 1] + 1, self.N), pos[..., 1])
        return nxt
