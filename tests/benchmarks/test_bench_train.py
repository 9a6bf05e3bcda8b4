"""benchmarks/bench_train.py times the recipe `hyperagents train` runs, not a copy of it."""

import dataclasses

from training import cli, marl


def test_the_timed_recipe_is_the_default_command_with_only_the_worlds_and_minibatch_set(load_script):
    bt = load_script("bench_train")
    default = cli.parse(["train"])
    timed = bt.torchrl_cfg(64)
    assert dataclasses.replace(timed, preset=None) == default
    wide = bt.torchrl_cfg(256, 4096, critic="central")
    assert (wide.num_worlds, wide.batch_size, wide.critic) == (256, 4096, "central")
    assert dataclasses.replace(wide, num_worlds=64, batch_size=1024, critic="shared", preset=None) == default
    gpu = bt.torchrl_cfg(4096, None, "cuda")
    assert dataclasses.replace(gpu, num_worlds=4096) == marl.preset_config("gpu", num_worlds=4096)
    assert gpu.precision == "bf16" and gpu.n_steps == marl.PRESETS["gpu"]["n_steps"]
