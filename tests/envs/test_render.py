"""Rendering: agent-coloured pixels at agent centres, headless human mode, wrap-around copies, the
colour legend of labelled scenarios."""

import numpy as np
import torch

from envs.colliding_agents_v0 import parallel_env
from envs.render import View, agent_colors


def test_rgb_frame_has_agent_colours_at_agent_centres():
    env = parallel_env(num_agents=4, grid_size=40, radius=1, render_mode="rgb_array")
    start = [[3, 5], [20, 20], [35, 33], [10, 30]]  # far apart: no disc covers another's centre
    env.reset(options={"positions": start})
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    view, colors = View(40), agent_colors(4)
    for (x, y), color in zip(start, colors, strict=True):
        col, row = view.world_to_screen(x, y)
        assert tuple(frame[row, col]) == color


def test_frame_changes_when_agents_move_and_human_mode_is_headless_safe():
    env = parallel_env(num_agents=3, grid_size=30, radius=1, render_mode="rgb_array")
    env.reset(seed=1)
    before = env.render()
    env.step(dict.fromkeys(env.agents, 1))
    assert not np.array_equal(before, env.render())
    human = parallel_env(num_agents=3, grid_size=30, radius=1, render_mode="human")
    human.reset(seed=1)
    assert human.render() is None
    human.close()


def test_agent_on_the_seam_is_drawn_on_both_edges():
    env = parallel_env(num_agents=1, grid_size=20, radius=2, render_mode="rgb_array")
    env.reset(options={"positions": [[10, 0]]})
    frame = env.render()
    view = View(20)
    color = agent_colors(1)[0]
    col, row_bottom = view.world_to_screen(10, 0)
    _, row_top = view.world_to_screen(10, 20)  # the copy one cylinder turn up
    r = int(view.scale * 2)
    assert tuple(frame[row_bottom, col]) == color
    assert (frame[row_top : row_top + r, col] == color).all(-1).any()


def test_world_to_screen_is_monotone_and_inside_the_canvas():
    v = View(50)
    xs = [v.world_to_screen(x, 0)[0] for x in range(50)]
    ys = [v.world_to_screen(0, y)[1] for y in range(50)]
    assert xs == sorted(xs) and ys == sorted(ys, reverse=True)
    w, h = v.size
    assert all(0 <= c < w for c in xs) and all(0 <= r < h for r in ys)
    assert torch.tensor(xs).unique().numel() == 50


def _legend_row(frame: np.ndarray) -> np.ndarray:
    """The strip of the HUD under the status line, where labelled scenarios draw their legend."""
    from envs.render import LEGEND_ROW, LEGEND_SWATCH

    return frame[LEGEND_ROW : LEGEND_ROW + 2 * LEGEND_SWATCH]


def test_labelled_scenarios_draw_a_colour_legend_and_pairwise_none():
    from envs.render import LABEL_PALETTES, colors_for, legend_entries

    for scenario in ("predator_prey", "alliances"):
        env = parallel_env(num_agents=6, grid_size=40, radius=1, scenario=scenario, render_mode="rgb_array")
        env.reset(seed=0)
        frame = env.render()
        row = _legend_row(frame)
        drawn = set(colors_for(env.labels[0], scenario))
        entries = legend_entries(scenario, env.scenario.label_sizes)
        assert [c for c, _ in entries] == LABEL_PALETTES[scenario][: len(entries)]
        for color, _ in entries:  # a colour is in the legend row iff some agent's disc has it
            assert (row == color).all(-1).any() == (color in drawn), (scenario, color)
        assert drawn
        # without the legend that row is plain background
        plain = env._renderer.draw(env.world, env.labels, scenario=env.scenario, legend=False)
        assert not np.array_equal(row, _legend_row(plain))
        assert (_legend_row(plain) == 255).all()
    env = parallel_env(num_agents=6, grid_size=40, radius=1, scenario="pairwise", render_mode="rgb_array")
    env.reset(seed=0)
    assert legend_entries("pairwise") == []
    assert (_legend_row(env.render()) == 255).all()


def test_legend_names_species_and_policy_and_shares_colours_between_many_alliances():
    from envs.render import colors_for, legend_entries

    names = [name for _, name in legend_entries("predator_prey", (2, 2))]
    assert names == ["hunter, right", "hunter, up", "prey, right", "prey, up"]
    labels = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])
    assert colors_for(labels, "predator_prey") == [c for c, _ in legend_entries("predator_prey")]
    many = legend_entries("alliances", (7,))
    assert [name for _, name in many][:3] == ["alliances 0, 5", "alliances 1, 6", "alliance 2"]


def test_legend_lists_only_the_kinds_on_screen():
    from envs.crossing import Crossing
    from envs.render import LABEL_PALETTES, Renderer, legend_entries

    # the learning predator-prey task: hunters of both scripts and prey that learn, none moving up
    env = Crossing(num_worlds=1, num_agents=8, predator_prey=True)
    env.reset()
    labels, scenario = env.scenario_labels()
    frame = Renderer(env.N, env.R, mode="rgb_array").draw(env.world, labels=labels, scenario=scenario)
    row = _legend_row(frame)
    prey_up = LABEL_PALETTES["predator_prey"][3]
    assert not (row == prey_up).all(-1).any()
    for color in LABEL_PALETTES["predator_prey"][:3]:
        assert (row == color).all(-1).any(), color
    hunters_right, _, prey_right, _ = LABEL_PALETTES["predator_prey"]
    names = [name for _, name in legend_entries("predator_prey", (2, 2), present={hunters_right, prey_right})]
    assert names == ["hunter, right", "prey, right"]
    shown = set(LABEL_PALETTES["alliances"][1:3])
    alliances = [name for _, name in legend_entries("alliances", (7,), present=shown)]
    assert alliances == ["alliances 1, 6", "alliance 2"]
