"""Rendering: agent-coloured pixels at agent centres, headless human mode, wrap-around copies."""

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
