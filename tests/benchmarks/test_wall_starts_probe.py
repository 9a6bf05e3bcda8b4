"""benchmarks/wall_starts_probe.py: agents start parked at the wall, apart, in crowds only."""

import pytest
import torch

from envs.crossing import RIGHT, Crossing
from envs.world import circular_delta


@pytest.fixture
def probe(load_script):
    module = load_script("wall_starts_probe")
    yield module
    Crossing.sample_starts, Crossing.reset = module._sample_starts, module._reset


def test_crowds_start_with_parked_agents_that_touch_nobody(probe):
    probe.install(1.0)
    env = Crossing(num_worlds=256, num_agents=(2, 24), count_power=1.0, seed=0)
    env.reset()
    pos, mask, parked = env.positions, env.mask, env.parked
    count = mask.sum(1)
    assert bool(parked[count >= probe.MIN_COUNT].any(1).all())  # share 1: every crowd
    assert not bool(parked[count < probe.MIN_COUNT].any())  # small worlds keep their starts
    assert bool((parked.sum(1) <= count // 2).all())
    assert bool((pos[..., 0][parked] == env.N - 1).all())
    assert bool((pos[..., 0][mask & ~parked] < env.start_width).all())
    dy = circular_delta(pos[:, None, :, 1], pos[:, :, None, 1], env.N)
    dx = pos[:, :, None, 0] - pos[:, None, :, 0]
    pair = mask[:, :, None] & mask[:, None, :] & ~torch.eye(env.L, dtype=torch.bool)
    assert not bool(((dx**2 + dy**2 <= (2 * env.R) ** 2) & pair).any())  # nobody touches at reset
    # parked agents stay put and pay no step cost (nobody is near them yet)
    reward = env.step(torch.full((env.B, env.L), RIGHT))
    assert bool((reward[parked] == 0).all())
    assert bool((env.positions[..., 0][parked] == env.N - 1).all())


def test_share_zero_keeps_the_task_starts(probe):
    plain = Crossing(num_worlds=32, num_agents=(8, 16), seed=3)
    plain.reset()
    probe.install(0.0)
    patched = Crossing(num_worlds=32, num_agents=(8, 16), seed=3)
    patched.reset()
    assert torch.equal(plain.positions, patched.positions)
    assert not bool(patched.parked.any())


def test_other_tasks_and_bad_shares_are_refused(probe, capsys):
    probe.install(0.5)
    with pytest.raises(ValueError, match="one-way crossing"):
        Crossing(num_worlds=2, num_agents=4, two_way=True, features="heading", seed=0).reset()
    with pytest.raises(SystemExit) as err:
        probe.main(["--share", "1.5"])
    assert err.value.code == 2
    assert "--share must be in [0, 1], got 1.5" in capsys.readouterr().err
