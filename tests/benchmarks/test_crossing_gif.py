"""benchmarks/crossing_gif.py: one episode of a trained run, on its own task, as frames."""

import numpy as np
import pytest

from envs.render import LABEL_PALETTES as PALETTE


@pytest.mark.parametrize("task", [dict(), dict(predator_prey=True, features="labels")])
def test_frames_play_the_runs_task_and_colour_the_hunters(load_script, tmp_path, task):
    from training import marl

    gif = load_script("crossing_gif")
    small = dict(num_agents=(2, 4), num_worlds=8, n_steps=10, batch_size=256, n_epochs=1, progress=False)
    small |= dict(total_timesteps=500, runs_dir=str(tmp_path), grid_size=24, max_steps=12, start_width=5)
    marl.main(marl.preset_config(None, run_name="r", **small, **task))
    shots = gif.frames(str(tmp_path / "r"), num_agents=6, seed=0, every=4)
    assert len(shots) == 1 + 12 // 4 and shots[0].ndim == 3 and shots[0].dtype == np.uint8
    assert not np.array_equal(shots[0], shots[-1])  # the agents moved
    colours = {tuple(int(v) for v in c) for c in shots[0].reshape(-1, 3)}
    assert (PALETTE["predator_prey"][1] in colours) == bool(task)  # "hunter, up": the scenario's colours
