"""benchmarks/marl_breakdown.py: the split of a return into collisions and step costs is exact."""

import pytest
import torch

from envs.crossing import POLICIES, STAY, Crossing
from training.ood import play


def test_split_adds_up_to_the_played_return(load_script):
    mb = load_script("marl_breakdown")
    env = Crossing(num_worlds=16, num_agents=6, grid_size=16, max_steps=24, start_width=4)
    right = mb.breakdown(env, POLICIES["move_right"], 3, 0)
    assert right["step_cost"] == 0.0 and right["collisions"] > 0  # MOVE_RIGHT only collides
    greedy = mb.breakdown(env, POLICIES["greedy"], 3, 0)
    assert greedy["step_cost"] > 0 and greedy["collisions"] < right["collisions"]
    for name, row in (("move_right", right), ("greedy", greedy)):
        assert row["return"] == pytest.approx(-(row["collisions"] + row["step_cost"]))
        # play() averages per world first; with a fixed count that is the same per-agent mean
        assert row["return"] == pytest.approx(float(play(env, POLICIES[name], 3, 0).mean()), abs=1e-5)


def test_move_counts_and_waiting_position(load_script):
    mb = load_script("marl_breakdown")
    env = Crossing(num_worlds=16, num_agents=6, grid_size=16, max_steps=24, start_width=4)
    right = mb.breakdown(env, POLICIES["move_right"], 3, 0)
    # everyone moves right and parks, so nobody waits
    assert right["right_first_step"] == right["right_open_crossing"] == right["parked"] == 1.0
    assert right["waiting_x"] is None
    stay = mb.breakdown(env, lambda e, gen: torch.full((e.B, e.L), STAY), 3, 0)
    assert stay["right_first_step"] == stay["right_open_crossing"] == stay["parked"] == 0.0
    env.seed(3)
    env.reset()  # the starts breakdown() used: staying agents end where they began
    assert stay["waiting_x"] == pytest.approx(float(env.positions[..., 0][env.mask].float().mean()))


def test_figure_of_position_and_moves_over_time(load_script, tmp_path):
    mb = load_script("marl_breakdown")
    env = Crossing(num_worlds=4, num_agents=6, grid_size=16, max_steps=24, start_width=4)
    table = {L: {n: mb.breakdown(env, POLICIES[n], 3, 0) for n in ("move_right", "priority")} for L in (6,)}
    row = table[6]["move_right"]
    assert len(row["right_by_step"]) == 24 and len(row["mean_x_by_step"]) == 25
    assert row["right_by_step"][0] == 1.0 and row["mean_x_by_step"][-1] == 15.0  # all parked at x = N - 1
    mb.figure(table, tmp_path / "moves.png")
    assert (tmp_path / "moves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
