"""Training entry point: resume with no lost steps, bad config, and "can it learn"."""

import json

import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback

from envs.crossing import POLICIES, Crossing
from training.marl import main, preset_config
from training.ood import OODConfig, iqm, paired_gain_ci, play, policy_actor, stratified_bootstrap
from training.ood import main as ood_main

TINY = dict(
    backend="sb3",  # with preset_config: the SB3 path at its own defaults
    width=8,
    blocks=1,
    heads=2,
    net_arch=(8,),
    num_agents=(2, 3),
    num_worlds=4,
    grid_size=16,
    max_steps=12,
    start_width=4,
    n_steps=12,
    batch_size=48,
    n_epochs=1,
    progress=False,
)


class StopAfter(BaseCallback):
    """Interrupt training once ``n`` timesteps were collected (as a crash or Ctrl-C would)."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def _on_step(self) -> bool:
        return self.num_timesteps < self.n


def test_resume_continues_with_no_lost_steps(tmp_path):
    # One rollout = 4 worlds * 3 slots * 12 steps = 144 timesteps; checkpoints at rollout boundaries.
    cfg = preset_config(
        **TINY, total_timesteps=144 * 6, checkpoint_every=144, runs_dir=str(tmp_path), run_name="r"
    )
    first = main(cfg, callbacks=[StopAfter(400)])
    assert not first["finished"] and first["checkpoint_timesteps"] == 288
    assert PPO.load(tmp_path / "r" / "checkpoint.zip").num_timesteps == 288
    second = main(cfg)
    assert second["finished"] and second["resumed_from"] == 288
    assert second["num_timesteps"] == cfg.total_timesteps
    assert PPO.load(tmp_path / "r" / "checkpoint.zip").num_timesteps == cfg.total_timesteps
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert saved["num_timesteps"] == cfg.total_timesteps
    assert json.loads((tmp_path / "r" / "config.json").read_text())["family"] == "sa"
    assert main(cfg)["num_timesteps"] == cfg.total_timesteps  # a finished run trains no more


def test_entropy_and_learning_rate_schedules_decay_and_survive_resume(tmp_path):
    cfg = preset_config(
        **TINY,
        total_timesteps=144 * 4,
        checkpoint_every=144,
        runs_dir=str(tmp_path),
        run_name="s",
        ent_coef=0.01,
        ent_coef_final=0.0,
        learning_rate=1e-3,
        learning_rate_final=1e-4,
    )
    main(cfg, callbacks=[StopAfter(300)])  # interrupted after 2 of 4 rollouts
    model = PPO.load(tmp_path / "s" / "checkpoint.zip")
    assert model.ent_coef == pytest.approx(0.01 * (1 - 144 / 576))  # set before the 2nd rollout
    main(cfg)
    model = PPO.load(tmp_path / "s" / "checkpoint.zip")
    assert model.ent_coef == pytest.approx(0.01 * (1 - 432 / 576))  # the last rollout's value
    assert model.lr_schedule(1.0) == pytest.approx(1e-3) and model.lr_schedule(0.0) == pytest.approx(1e-4)
    assert model.policy.optimizer.param_groups[0]["lr"] < 1e-3


def test_ood_writes_marl_eval_json_and_png(tmp_path):
    cfg = preset_config(**TINY, total_timesteps=144, runs_dir=str(tmp_path), run_name="o")
    main(cfg)
    summary = ood_main(OODConfig(run=(str(tmp_path / "o"),), counts=(2, 5), episodes=4, reps=200))
    assert set(summary[5]) == {"move_right", "greedy", "cautious", "priority", "random", "sa"}
    assert summary[5]["move_right"]["gain"] == 0.0
    data = json.loads((tmp_path / "o" / "ood.json").read_text())
    run = data["crossing"]["L=5"]["sa"]["seed_0"]
    assert len(run["step_0"]["return"]) == 4 and run["step_0"]["step_count"] == 144
    assert "absolute_metrics" in run and (tmp_path / "o" / "ood.png").stat().st_size > 0
    merged = ood_main(
        OODConfig(merge=(str(tmp_path / "o" / "ood.json"),), out_dir=str(tmp_path / "m"), reps=200)
    )
    assert merged[5]["sa"]["mean"] == pytest.approx(summary[5]["sa"]["mean"])
    config = json.loads((tmp_path / "m" / "ood_summary.json").read_text())["config"]
    assert config["counts"] == [2, 5] and config["episodes"] == 4  # the merged data's, not the defaults


@pytest.mark.parametrize(
    "change, name",
    [
        (dict(family="gru"), "family"),
        (dict(num_agents=(0, 3)), "num_agents"),
        (dict(num_agents=(4, 2)), "num_agents"),
        (dict(width=0), "width"),
        (dict(total_timesteps=0), "total_timesteps"),
        (dict(features="pixels"), "features"),
    ],
)
def test_bad_config_raises(tmp_path, change, name):
    with pytest.raises(ValueError, match=name):
        main(preset_config(**{**TINY, **change}, runs_dir=str(tmp_path)))


def test_ood_evaluates_each_run_on_its_own_feature_set(tmp_path):
    main(preset_config(**TINY, total_timesteps=144, runs_dir=str(tmp_path), run_name="base"))
    main(
        preset_config(
            **TINY, features="touch", seed=1, total_timesteps=144, runs_dir=str(tmp_path), run_name="t"
        )
    )
    touch = PPO.load(tmp_path / "t" / "checkpoint.zip")
    assert touch.observation_space.shape == (3 * 20,)  # L_max = 3 slots of 20 features
    # A run from before the option has no "features" in its config: it reads as "base".
    cfg_file = tmp_path / "base" / "config.json"
    cfg_file.write_text(
        json.dumps({k: v for k, v in json.loads(cfg_file.read_text()).items() if k != "features"})
    )
    runs = (str(tmp_path / "base"), str(tmp_path / "t"))
    summary = ood_main(
        OODConfig(run=runs, counts=(2, 4), episodes=4, reps=200, out_dir=str(tmp_path / "ood"))
    )
    assert summary[4]["sa"]["seeds"] == 2 and np.isfinite(summary[4]["sa"]["mean"])


def test_ood_rejects_bad_counts_and_runs(tmp_path):
    with pytest.raises(ValueError, match="counts"):
        ood_main(OODConfig(counts=(0, 2)))
    with pytest.raises(ValueError, match="run"):
        ood_main(OODConfig(run=(str(tmp_path),), counts=(2,)))
    # the MLP reads a fixed number of neighbours: a view cap would be ignored, so it is refused
    main(preset_config(**TINY, family="mlp", total_timesteps=48, runs_dir=str(tmp_path), run_name="m"))
    with pytest.raises(ValueError, match="neighbours caps an attention policy's view; .* is an MLP run"):
        ood_main(OODConfig(run=(str(tmp_path / "m"),), counts=(2,), neighbours=3))


def test_statistics():
    x = np.arange(8.0)
    assert iqm(x) == pytest.approx(3.5)  # mean of 2..5
    lo, hi = stratified_bootstrap([np.zeros(10), np.ones(10)], np.mean, 2000)
    assert 0.3 < lo <= 0.5 <= hi < 0.7
    ref = -np.ones(20)
    assert paired_gain_ci(np.full((1, 20), -0.5), ref, 500) == pytest.approx((0.5, 0.5))


@pytest.mark.slow
def test_ppo_learns_to_beat_random(tmp_path):
    cfg = preset_config(
        backend="sb3",
        family="sa",
        width=16,
        blocks=1,
        num_agents=(3, 3),
        num_worlds=16,
        grid_size=16,
        max_steps=24,
        start_width=4,
        n_steps=24,
        batch_size=384,
        n_epochs=4,
        learning_rate=1e-3,
        total_timesteps=30_000,
        runs_dir=str(tmp_path),
        run_name="learn",
        progress=False,
    )
    main(cfg)
    model = PPO.load(tmp_path / "learn" / "checkpoint.zip")
    env = Crossing(num_worlds=64, num_agents=3, grid_size=16, max_steps=24, start_width=4)
    policy = play(env, policy_actor(model, True, 1024), 99, 0).mean()
    rand = play(env, POLICIES["random"], 99, 0).mean()
    right = play(env, POLICIES["move_right"], 99, 0).mean()
    assert policy > rand + 0.75 * (right - rand), (policy, rand, right)
