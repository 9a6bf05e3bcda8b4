"""DAgger warm start: it clones either expert, survives resume, and rejects bad settings."""

import json

import pytest
import torch
from stable_baselines3 import PPO

from envs.crossing import POLICIES, Crossing
from envs.world import RIGHT, STAY, UP
from training.imitate import discounted_returns, imitate, sample_weights
from training.marl import main, make_env, make_task, policy_kwargs, preset_config
from training.ood import load_runs, play, policy_actor

SMALL = dict(
    backend="sb3",  # with preset_config: the SB3 path at its own defaults (DAgger is SB3's)
    family="sa",
    width=16,
    blocks=1,
    heads=2,
    net_arch=(16,),
    num_agents=(2, 4),
    num_worlds=32,
    grid_size=16,
    max_steps=16,
    start_width=4,
    n_steps=16,
    batch_size=256,
    n_epochs=1,
    progress=False,
)


def test_discounted_returns_by_hand():
    rewards = torch.tensor([1.0, 0.0, -2.0]).view(3, 1, 1)  # (T, B, L)
    out = discounted_returns(rewards, 0.5).flatten()
    assert out.tolist() == pytest.approx([1.0 + 0.25 * -2.0, 0.5 * -2.0, -2.0])


def test_sample_weights_by_hand():
    mask = torch.tensor([[True, True, True, True], [True, False, False, False]])  # worlds of 4 and 1
    keep = mask.unsqueeze(0).expand(2, -1, -1).clone()  # (T=2, B, L): every real agent, both steps
    keep[1, 0, 3] = False  # one agent parked at the second step
    labels = torch.full((int(keep.sum()),), RIGHT)
    assert sample_weights(mask, keep, labels, "agent", 1.0).tolist() == [1.0] * 9
    w = sample_weights(mask, keep, labels, "world", 1.0)
    # Samples are ordered (t, b, l): world 0's 4 agents, world 1's one, then 3 + 1 again.
    assert w.tolist() == pytest.approx([2.5 / 4] * 4 + [2.5] + [2.5 / 4] * 3 + [2.5])
    labels[[0, 4]] = torch.tensor([UP, STAY])
    avoid = sample_weights(mask, keep, labels, "world", 3.0)
    assert avoid.tolist() == pytest.approx([7.5 / 4] + [2.5 / 4] * 3 + [7.5] + [2.5 / 4] * 3 + [2.5])


def test_world_weighting_equalises_worlds():
    mask = torch.arange(16).unsqueeze(0) < torch.tensor([[2], [16]])  # (B=2, L=16): 2 and 16 agents
    keep = mask.unsqueeze(0).expand(5, -1, -1)
    w = sample_weights(mask, keep, torch.full((int(keep.sum()),), RIGHT), "world", 1.0)
    world = mask.nonzero()[:, 0].repeat(5)  # each sample's world, in the same (t, b, l) order
    # Same total weight per world, and the mean weight stays 1 while nobody parks.
    assert w[world == 0].sum() == pytest.approx(w[world == 1].sum()) and w.mean() == pytest.approx(1.0)
    assert w[world == 0][0] == pytest.approx(8 * w[world == 1][0])


@pytest.mark.parametrize("expert", ["greedy", "cautious", "priority"])
def test_dagger_clones_the_expert(expert):
    cfg = preset_config(**SMALL)
    model = PPO("MlpPolicy", make_env(cfg), policy_kwargs=policy_kwargs(cfg), seed=0)
    task = make_task(cfg, seed=0)
    stats = imitate(model.policy, task, 6, epochs=8, batch_size=256, learning_rate=3e-3, expert=expert)
    # The untrained argmax agrees with the expert by chance; after five fits it mostly agrees.
    assert stats.agreement[0] < 0.5 and stats.agreement[-1] > 0.9, stats.agreement
    env = Crossing(num_worlds=64, num_agents=4, grid_size=16, max_steps=16, start_width=4)
    clone = play(env, policy_actor(model, True, 1024), 7, 0).mean()
    teacher, right = (play(env, POLICIES[p], 7, 0).mean() for p in (expert, "move_right"))
    # Either expert recovers ~94% of MOVE_RIGHT's collision cost here; the clone most of that.
    assert teacher > right and clone > right + 0.75 * (teacher - right), (clone, teacher, right)


def test_warm_start_runs_once_and_resume_skips_it(tmp_path):
    cfg = preset_config(
        **SMALL, imitate_iterations=1, total_timesteps=1, runs_dir=str(tmp_path), run_name="d"
    )
    first = main(cfg)
    assert len(first["imitation"]["agreement"]) == 1 and first["imitation"]["samples"] > 0
    saved = (tmp_path / "d" / "imitation.json").read_text()
    again = main(preset_config(**{**cfg.__dict__, "total_timesteps": 2048}))  # resume: PPO only
    assert again["resumed_from"] > 0 and again["imitation"] == json.loads(saved)
    assert (tmp_path / "d" / "imitation.json").read_text() == saved
    # The clone before PPO is kept beside the checkpoint, and `hyperagents ood` can evaluate it.
    run = (str(tmp_path / "d"),)
    assert load_runs(run, checkpoint="warm_start.zip")[0]["steps"] == 0 < load_runs(run)[0]["steps"]
    with pytest.raises(ValueError, match="with final.zip and config.json"):
        load_runs(run, checkpoint="final.zip")


def test_dagger_worlds_may_hold_more_agents_than_ppo(tmp_path):
    cfg = preset_config(**SMALL, imitate_iterations=1, imitate_num_agents=(6, 6), total_timesteps=1)
    out = main(preset_config(**{**cfg.__dict__, "runs_dir": str(tmp_path), "run_name": "wide"}))
    # PPO's worlds hold at most 4 agents: 32 worlds x 16 steps x 4 = 2048 labelled states at most.
    assert out["imitation"]["samples"] > 32 * 16 * 4


def test_mixed_dagger_plays_both_ranges(tmp_path):
    base = dict(
        SMALL, imitate_iterations=1, imitate_num_agents=(6, 6), total_timesteps=1, runs_dir=str(tmp_path)
    )
    wide = main(preset_config(**base, run_name="wide"))["imitation"]["samples"]
    mixed = main(preset_config(**base, imitate_mixed=True, run_name="mixed"))["imitation"]["samples"]
    # Same seeded 6-agent batch in both, plus (mixed) a batch of 32 worlds of 2..4 agents whose
    # narrower observations are padded to the 6-agent width.
    assert wide < mixed <= wide + 32 * 16 * 4, (wide, mixed)


def test_bad_imitation_settings_raise(tmp_path):
    with pytest.raises(ValueError, match="imitate_iterations"):
        main(preset_config(**SMALL, imitate_iterations=-1, runs_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="imitate_learning_rate"):
        main(
            preset_config(
                **SMALL, imitate_iterations=1, imitate_learning_rate=float("nan"), runs_dir=str(tmp_path)
            )
        )
    with pytest.raises(ValueError, match="imitate_epochs"):
        main(preset_config(**SMALL, imitate_iterations=1, imitate_epochs=0, runs_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="imitate_num_agents"):
        main(preset_config(**SMALL, imitate_iterations=1, imitate_num_agents=(9, 3), runs_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="imitate_expert"):
        main(preset_config(**SMALL, imitate_iterations=1, imitate_expert="oracle", runs_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="imitate_mixed needs imitate_num_agents"):
        main(preset_config(**SMALL, imitate_iterations=1, imitate_mixed=True, runs_dir=str(tmp_path)))
    model = PPO("MlpPolicy", "CartPole-v1")
    with pytest.raises(ValueError, match="share one feature set"):
        imitate(model.policy, [Crossing(num_worlds=2), Crossing(num_worlds=2, features="touch")], 1)
    with pytest.raises(ValueError, match="expert"):
        imitate(model.policy, Crossing(num_worlds=2), 1, expert="random")
    with pytest.raises(ValueError, match="iterations"):
        imitate(model.policy, Crossing(num_worlds=2), 0)
    with pytest.raises(ValueError, match="learning_rate"):
        imitate(model.policy, Crossing(num_worlds=2), 1, learning_rate=0.0)


def test_weighted_dagger_still_clones():
    cfg = preset_config(**SMALL)
    model = PPO("MlpPolicy", make_env(cfg), policy_kwargs=policy_kwargs(cfg), seed=0)
    task = make_task(cfg, seed=0, num_agents=(2, 8))
    kw = dict(epochs=8, batch_size=256, learning_rate=3e-3, weighting="world", avoid_weight=3.0)
    stats = imitate(model.policy, task, 4, **kw)
    assert stats.agreement[0] < 0.5 and stats.agreement[-1] > 0.85, stats.agreement


def test_bad_weighting_settings_raise(tmp_path):
    cfg = preset_config(**SMALL)
    model = PPO("MlpPolicy", make_env(cfg), policy_kwargs=policy_kwargs(cfg))
    with pytest.raises(ValueError, match="weighting"):
        imitate(model.policy, Crossing(num_worlds=2), 1, weighting="episode")
    for bad in ([], [Crossing(num_worlds=2), "task"]):
        with pytest.raises(TypeError, match="env must be a Crossing"):
            imitate(model.policy, bad, 1)
    for bad in (0.0, -1.0, float("nan"), True):
        with pytest.raises(ValueError, match="avoid_weight"):
            imitate(model.policy, Crossing(num_worlds=2), 1, avoid_weight=bad)
    for name, bad in (("imitate_weighting", "episode"), ("imitate_avoid_weight", float("nan"))):
        with pytest.raises(ValueError, match=name):
            main(preset_config(**SMALL, imitate_iterations=1, runs_dir=str(tmp_path), **{name: bad}))
