"""benchmarks/predator_prey_view.py: how often a nearest-k view hides the hunters near a prey."""

import math

from envs.crossing import Crossing, move_right_policy


def brute_force(env: Crossing, k: int, reach: float) -> tuple[int, int]:
    """The same counts by plain loops: (prey near a hunter, those with no near hunter in the k nearest)."""
    near = hidden = 0
    N = env.N
    for b in range(env.B):
        real = [j for j in range(env.L) if env.mask[b, j]]
        for i in real:
            if not env.active[b, i]:
                continue
            xi, yi = env.positions[b, i].tolist()

            def dist(j, b=b, xi=xi, yi=yi):
                xj, yj = env.positions[b, j].tolist()
                dy = min((yj - yi) % N, (yi - yj) % N)
                return math.hypot(xj - xi, dy)

            others = sorted((dist(j), j) for j in real if j != i)  # ties: the lower slot first
            danger = {j for d, j in others if d <= reach and env.hunter[b, j]}
            if danger:
                near += 1
                hidden += not danger & {j for _, j in others[:k]}
    return near, hidden


def test_hidden_counts_match_plain_loops(load_script):
    view = load_script("predator_prey_view")
    env = Crossing(num_worlds=6, num_agents=(10, 24), predator_prey=True, seed=0)
    env.reset()
    checked = hidden_seen = 0
    for _ in range(40):
        near, hidden = view.hidden_counts(env, (1, 6), 4.0)  # k = 1 hides a near hunter often
        for k in (1, 6):
            assert (near, hidden[k]) == brute_force(env, k, 4.0)
        checked += near
        hidden_seen += hidden[1]
        env.step(move_right_policy(env))
    assert checked > 0 and hidden_seen > 0  # both cases happened: the comparison was not vacuous


def test_measure_reports_shares(load_script):
    view = load_script("predator_prey_view")
    out = view.measure([8], ["move_right"], episodes=4)
    row = out["move_right"][8]
    assert row["prey_steps_near_a_hunter"] > 0
    assert 0.0 <= row["share_hidden_from_7_nearest"] <= row["share_hidden_from_6_nearest"] <= 1.0
