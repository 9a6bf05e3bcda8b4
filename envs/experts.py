"""Scripted baselines for the crossing task (``envs/crossing.py``), batched over B worlds.

Each policy maps a :class:`envs.crossing.Crossing` (and an optional torch.Generator) to (B, L)
long actions. They read the world only through its public API (``World.positions``, ``mask``,
``touching``, ``cells_after``) and the task's ``parked``, ``heading``, ``threat``, ``active``,
``cells_ahead()`` and ``world_actions()``:

- ``move_right``: everyone plays RIGHT (the paper's policy);
- ``greedy``: a lane-seeking avoider that assumes the others keep moving right;
- ``cautious``: greedy, but stays instead of pushing right when nothing is safe;
- ``priority``: a prioritised planner that never collides, also in crowds;
- ``random``: uniform random actions.

They are the teachers of the DAgger warm start (``training/imitate.py``) and the baselines of
``hyperagents ood``. Like a policy, they answer in each agent's own frame, where its heading is
"right" (the two-way task's left-heading agents have RIGHT and LEFT swapped in the world; see
``envs/crossing.py``): they test cells with the world action each answer becomes, and a lane is
blocked by the agents parked at the wall the agent heads for. In the predator-prey task they avoid
only the hunters (``threat``), whose next cells ``cells_ahead()`` knows exactly, and answer only
for the prey (the task plays the hunters' scripted moves).
Shapes: B worlds, L agent slots, N grid size, R radius.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from envs.world import DOWN, LEFT, NUM_ACTIONS, RIGHT, STAY, UP, circular_delta

if TYPE_CHECKING:  # crossing.py re-exports these policies, so it cannot be imported here at run time
    from envs.crossing import Crossing


def move_right_policy(env: Crossing, gen: torch.Generator | None = None) -> torch.Tensor:
    """Everyone plays RIGHT (the paper's policy). (B, L) long."""
    return torch.full((env.B, env.L), RIGHT, dtype=torch.long, device=env.device)


def random_policy(env: Crossing, gen: torch.Generator | None = None) -> torch.Tensor:
    """Uniform random actions from ``gen``. (B, L) long."""
    return torch.randint(0, NUM_ACTIONS, (env.B, env.L), generator=gen).to(env.device)


def _lane_plan(env: Crossing) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each agent wants to go: (lane_open, first, second), each (B, L).

    A lane y is *blocked* for an agent if an agent parked at the wall it heads for sits within 2R
    of the lane's end there. ``lane_open``:
    the agent's own lane is open (or no lane is, and it may as well head for the wall);
    ``first`` is the sidestep (UP or DOWN) towards the nearest open lane, ``second`` the other."""
    w, N, R = env.world, env.N, env.R
    pos, parked = w.positions, env.parked  # (B, L, 2), (B, L)
    lanes = torch.arange(N, device=env.device)
    near = circular_delta(lanes.view(1, N, 1), pos[:, None, :, 1], N).abs() <= 2 * R  # (B, N, L)
    still = (parked & env.threat).unsqueeze(1)  # (B, 1, L)
    right = (env.heading > 0).unsqueeze(1)
    blocked_r, blocked_l = (near & still & right).any(-1), (near & still & ~right).any(-1)  # (B, N) each
    # Distance to the nearest open lane going up (+y) and down (-y), per agent: (B, L).
    y = pos[..., 1]
    up_lane = torch.remainder(y.unsqueeze(-1) + lanes, N)  # (B, L, N)
    dn_lane = torch.remainder(y.unsqueeze(-1) - lanes, N)
    own = (env.heading > 0).unsqueeze(-1)  # (B, L, 1): which wall's lanes each agent reads

    def is_open(lane: torch.Tensor) -> torch.Tensor:  # (B, L, N) lanes -> open for that agent
        flat = lane.reshape(env.B, -1)
        blocked_r_at = torch.gather(blocked_r, 1, flat).view_as(lane)
        return ~torch.where(own, blocked_r_at, torch.gather(blocked_l, 1, flat).view_as(lane))

    open_up, open_dn = is_open(up_lane), is_open(dn_lane)
    big = torch.full_like(y, N)
    d_up = torch.where(open_up.any(-1), open_up.float().argmax(-1), big)
    d_dn = torch.where(open_dn.any(-1), open_dn.float().argmax(-1), big)
    lane_open = (d_up == 0) | (d_up >= N)  # no open lane anywhere: just head for the wall
    prefer_up = d_up <= d_dn
    return lane_open, torch.where(prefer_up, UP, DOWN), torch.where(prefer_up, DOWN, UP)


def greedy_policy(env: Crossing, gen: torch.Generator | None = None) -> torch.Tensor:
    """Lane-seeking avoider, tensorised over (B, L, L).

    Each unparked agent predicts the others' next cells (parked agents stay, the rest move right)
    and calls a candidate cell unsafe if it is within 2R of any other agent's current or predicted
    cell. A lane y is *blocked* if a parked agent sits within 2R of (N-1, y). The agent moves
    right if that is safe and its lane is open; otherwise it sidesteps (up or down, towards the
    nearest open lane, the other way if that step is unsafe), stays if that is safe, and moves
    right if nothing is safe.
    """
    return _avoid(env, fallback=RIGHT)


def cautious_policy(env: Crossing, gen: torch.Generator | None = None) -> torch.Tensor:
    """The greedy avoider with one change: when nothing is safe it stays instead of moving right.

    In a crowd "nothing is safe" is common, and pushing right then walks into the agents parked
    at the wall; staying costs 0.05 a step instead of 1 per new partner."""
    return _avoid(env, fallback=STAY)


def _avoid(env: Crossing, fallback: int) -> torch.Tensor:
    w = env.world
    pos, threat = w.positions, env.threat  # (B, L, 2), (B, L)
    others = threat.unsqueeze(1) & ~torch.eye(env.L, dtype=torch.bool, device=env.device)  # (B, L_i, L_j)
    nxt = env.cells_ahead()

    def unsafe(action: int) -> torch.Tensor:  # (B, L) bool
        own = torch.full((env.B, env.L), action, device=env.device)
        c = w.cells_after(env.world_actions(own)).unsqueeze(2)
        hit = w.touching(c, pos.unsqueeze(1)) | w.touching(c, nxt.unsqueeze(1))
        return (hit & others).any(-1)

    lane_open, first, second = _lane_plan(env)
    un_right, un_up, un_dn, un_stay = unsafe(RIGHT), unsafe(UP), unsafe(DOWN), unsafe(STAY)
    un_first = torch.where(first == UP, un_up, un_dn)
    un_second = torch.where(first == UP, un_dn, un_up)
    act = torch.where(~un_stay, STAY, fallback)
    act = torch.where(~un_second, second, act)
    act = torch.where(~un_first, first, act)
    if env.predator_prey:  # in an open lane, let a hunter pass before sidestepping (see priority)
        act = torch.where(lane_open & ~unsafe(LEFT), LEFT, act)
        act = torch.where(lane_open & ~un_stay, STAY, act)
    act = torch.where(~un_right & lane_open, RIGHT, act)
    return act.long()


def priority_policy(env: Crossing, gen: torch.Generator | None = None) -> torch.Tensor:
    """Prioritised planner: the greedy avoider's preferences, made collision-free.

    Agents decide one after another in priority order, furthest along their heading first (ties:
    smaller y first). Each takes the first of RIGHT (only if its lane is open), the sidestep towards the
    nearest open lane, the other sidestep, whose cell does not touch the *final* cell of any
    agent that already decided nor the current cell of any that has not; otherwise it stays.

    Why it never collides: collisions are tested after the move, on final cells. When agent k
    decides, every earlier agent's final cell avoids k's current cell, so STAY is always safe
    for k, and any move k takes avoids the earlier agents' final cells and the later agents'
    current cells, which the later agents either keep (STAY) or leave for cells that avoid k's.
    Unlike greedy it needs no guess of the others' moves, so it also holds in crowds, where
    greedy's "the others move right" guess fails. In the predator-prey task only the prey decide and
    only the hunters count, at the cells they move to next: the guarantee then needs a hunter never
    to step onto a prey, which nothing stops, so there it only avoids what it can. The loop runs over
    the L priority ranks (each step tensorised over the B worlds), not over pairs: a rank needs the
    ranks before it.
    """
    w, N, B, L = env.world, env.N, env.B, env.L
    pos, mask, threat = w.positions, w.mask, env.threat  # (B, L, 2), (B, L), (B, L)
    lane_open, first, second = _lane_plan(env)
    # Best first. In an open lane a prey waits (STAY) or backs off (LEFT) to let a hunter pass before it
    # sidesteps: sidestepping an up hunter that comes from below runs ahead of it up the lane for as
    # long as it sweeps.
    wait = lane_open & env.predator_prey
    prefs = torch.stack([torch.full_like(first, m) for m in (RIGHT, STAY, LEFT)] + [first, second], -1)
    yes = torch.ones_like(lane_open)
    allowed = torch.stack([lane_open, wait, wait, yes, yes], -1)  # (B, L, 5)
    cand = w.cells_after(env.world_actions(prefs))  # (B, L, 5, 2) candidate cells
    key = torch.where(mask, env.priority_key(), N * N)  # padded slots rank last
    order = key.argsort(-1)  # (B, L): slot of each rank
    # decided agents' final cells, the others' current cells; a hunter's is where its script takes it
    final = torch.where(env.hunter.unsqueeze(-1), env.cells_ahead(), pos)
    act = torch.full((B, L), STAY, dtype=torch.long, device=env.device)
    b = torch.arange(B, device=env.device)
    for r in range(L):
        i = order[:, r]  # (B,) the slot deciding now in every world
        others = threat.clone()
        others[b, i] = False
        hit = w.touching(cand[b, i].unsqueeze(2), final.unsqueeze(1)) & others.unsqueeze(1)  # (B, 5, L)
        ok = ~hit.any(-1) & allowed[b, i] & env.active[b, i].unsqueeze(-1)  # (B, 5)
        pick = ok.float().argmax(-1)  # first allowed preference (0 when none: masked below)
        moves = ok.any(-1)
        act[b, i] = torch.where(moves, prefs[b, i, pick], STAY)
        final[b, i] = torch.where(moves.unsqueeze(-1), cand[b, i, pick], final[b, i])
    return act


POLICIES = {
    "move_right": move_right_policy,
    "greedy": greedy_policy,
    "cautious": cautious_policy,
    "priority": priority_policy,
    "random": random_policy,
}
