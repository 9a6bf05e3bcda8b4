"""VMAS through TorchRL's VmasEnv: tokens, count-agnostic policies, a tiny training run, config checks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

pytest.importorskip("vmas")
pytest.importorskip("torchrl")

from training import marl_vmas as mv  # noqa: E402

CPU = torch.device("cpu")


def place(env, pos: torch.Tensor, vel: torch.Tensor, goal: torch.Tensor) -> None:
    """Put every agent of every env at a known state: pos, vel, goal (B, n, 2)."""
    for i, agent in enumerate(env._env.scenario.world.agents):
        agent.set_pos(pos[:, i], batch_index=None)
        agent.set_vel(vel[:, i], batch_index=None)
        agent.goal.set_pos(goal[:, i], batch_index=None)


def known_state(B: int = 2, n: int = 3):
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.rand(B, n, 2, generator=gen) * 2 - 1 for _ in range(3))


def test_tokens_match_the_vmas_world_self_first():
    B, n = 2, 3
    cfg = mv.VmasConfig()
    env = mv.make_env(cfg, n, B, 0, CPU)
    env.reset()
    pos, vel, goal = known_state(B, n)
    place(env, pos, vel, goal)
    read = mv.world_state(env)
    for got, want in zip(read, (pos, vel, goal), strict=True):
        torch.testing.assert_close(got, want)
    tokens = mv.token_sets(*read)  # (B, n, n, F)
    assert tokens.shape == (B, n, n, mv.NUM_FEATURES)
    f = {name: k for k, name in enumerate(mv.FEATURES)}
    for b in range(B):
        for i in range(n):
            own = tokens[b, i, 0]
            assert own[f["present"]] == 1 and own[f["self"]] == 1
            assert own[f["dx"]] == 0 and own[f["dy"]] == 0
            torch.testing.assert_close(own[[f["vx"], f["vy"]]], vel[b, i])
            torch.testing.assert_close(own[[f["gx"], f["gy"]]], goal[b, i] - pos[b, i])
            for k in range(1, n):
                j = (i + k) % n  # the others in index order after i, cyclically
                tok = tokens[b, i, k]
                assert tok[f["present"]] == 1 and tok[f["self"]] == 0
                torch.testing.assert_close(tok[[f["dx"], f["dy"]]], pos[b, j] - pos[b, i])
                torch.testing.assert_close(tok[[f["vx"], f["vy"]]], vel[b, j] - vel[b, i])
                torch.testing.assert_close(tok[[f["gx"], f["gy"]]], goal[b, j] - pos[b, j])


def test_reached_reads_the_goal_radius():
    cfg = mv.VmasConfig()
    env = mv.make_env(cfg, 2, 1, 0, CPU)
    env.reset()
    pos = torch.tensor([[[0.0, 0.0], [0.5, 0.5]]])
    goal = torch.tensor([[[0.05, 0.0], [0.9, 0.5]]])  # agent 0 within its radius 0.1, agent 1 not
    place(env, pos, torch.zeros_like(pos), goal)
    assert mv.reached(env).tolist() == [[True, False]]


@pytest.mark.parametrize("family", mv.TOKEN_FAMILIES)
def test_one_policy_runs_at_two_and_six_agents(family):
    cfg = mv.VmasConfig(family=family, width=16, mlp_k=3)
    torch.manual_seed(0)
    policy = mv.build_policy(cfg, 18, 9, CPU)
    for n in (2, 6):
        env = mv.make_env(cfg, n, 3, 0, CPU)
        td = env.reset()
        obs = policy.observe(env, td)
        assert obs.shape == (3, n, n, mv.NUM_FEATURES)
        assert policy.actor(obs).shape == (3, n, 9)
        assert policy.critic(obs).shape == (3, n, 1)
        out = mv.evaluate(policy, dataclasses.replace(cfg, eval_episodes=3, max_steps=5), n, CPU)
        assert len(out["returns"]) == 3 and all(np.isfinite(out["returns"]))


def test_token_policy_is_permutation_equivariant_over_the_others():
    cfg = mv.VmasConfig(family="sa", width=16)
    torch.manual_seed(0)
    policy = mv.build_policy(cfg, 18, 9, CPU)
    tokens = mv.token_sets(*known_state(2, 5))  # (B, n, n, F)
    swapped = tokens[:, :, [0, 3, 1, 4, 2]]  # the others in another order, self still first
    torch.testing.assert_close(policy.actor(tokens), policy.actor(swapped), atol=1e-5, rtol=1e-5)


def test_evaluation_repeats_itself_and_leaves_the_callers_rng():
    cfg = mv.VmasConfig(eval_episodes=8, max_steps=10)
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    first = mv.evaluate(mv.RandomPolicy(9), cfg, 3, CPU)
    assert torch.rand(1) == before
    assert mv.evaluate(mv.RandomPolicy(9), cfg, 3, CPU) == first


def test_peer_actor_moves_to_another_count():
    torch.manual_seed(0)
    peer = mv.PeerPolicy(18, 9, 4, 32, CPU)
    obs = torch.randn(5, 4, 18)
    at6 = peer.at_count(6)
    assert at6.critic_net is None
    torch.testing.assert_close(at6.actor(torch.cat([obs, obs[:, :2]], 1))[:, :4], peer.actor(obs))


def test_tiny_training_beats_random(tmp_path):
    """sa, one agent per env (the signal is "go to your goal"), 32k agent-steps, about 6 s of CPU:
    the sampled policy beats uniform random actions; the run folder and the eval table exist."""
    cfg = mv.VmasConfig(
        family="sa",
        counts=(1,),
        num_envs=128,
        n_steps=25,
        max_steps=50,
        total_timesteps=32_000,
        learning_rate=3e-3,
        batch_size=1024,
        ent_coef=0.0,
        width=16,
        runs_dir=str(tmp_path),
        progress=False,
        eval_episodes=100,
        eval_counts=(1, 2),
    )
    metrics = mv.main(cfg)
    assert metrics["num_timesteps"] >= cfg.total_timesteps and metrics["finished"]
    folder = tmp_path / mv.run_name(cfg)
    assert {"config.json", "metrics.json", "checkpoint.pt"} <= {p.name for p in folder.iterdir()}
    result = mv.main(dataclasses.replace(cfg, mode="eval", eval_runs=(str(folder),)))
    trained, random = result["table"]["sa"]["1"]["return"], result["table"]["random"]["1"]["return"]
    assert trained["ci95"][0] > random["ci95"][1] + 0.3, (trained, random)
    assert set(result["table"]["sa"]) == {"1", "2"}
    assert (tmp_path / "vmas_eval.json").exists()
    assert "n = 2" in mv.markdown_table(result)


def test_several_training_counts_alternate_and_a_run_resumes(tmp_path):
    cfg = mv.VmasConfig(
        family="hfa",
        counts=(2, 3),
        num_envs=4,
        n_steps=5,
        max_steps=10,
        n_epochs=1,
        width=8,
        neighbours=1,
        total_timesteps=200,
        runs_dir=str(tmp_path),
        progress=False,
    )
    mv.main(cfg)
    state = torch.load(tmp_path / mv.run_name(cfg) / "checkpoint.pt", weights_only=False)
    assert [h["count"] for h in state["history"]] == [2, 3, 2, 3]  # 40 + 60 agent-steps, twice
    more = mv.main(dataclasses.replace(cfg, total_timesteps=300))  # resumes: two more iterations
    assert more["num_timesteps"] == 300
    state = torch.load(tmp_path / mv.run_name(cfg) / "checkpoint.pt", weights_only=False)
    assert [h["count"] for h in state["history"]] == [2, 3, 2, 3, 2, 3]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("family", "gru"),
        ("counts", ()),
        ("counts", (0, 3)),
        ("num_envs", 0),
        ("total_timesteps", -1),
        ("learning_rate", 0.0),
        ("gamma", 1.5),
        ("clip_range", -0.1),
        ("ent_coef", -1.0),
        ("neighbours", 0),
        ("eval_neighbours", -2),
        ("eval_counts", (2, -1)),
        ("checkpoint_every", 0),
        ("mode", "test"),
    ],
)
def test_bad_config_raises_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        mv.main(mv.VmasConfig(**{field: value}))


def test_peer_needs_one_training_count_and_eval_needs_runs():
    with pytest.raises(ValueError, match="counts"):
        mv.main(mv.VmasConfig(family="mappo", counts=(2, 4)))
    with pytest.raises(ValueError, match="eval_runs"):
        mv.main(mv.VmasConfig(mode="eval"))


def test_cuda_request_without_cuda_is_a_value_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device"):
        mv.main(mv.VmasConfig(device="cuda"))
    with pytest.raises(ValueError, match="device"):
        mv.main(mv.VmasConfig(device="tpu"))


def test_bootstrap_ci_covers_the_pooled_mean():
    rng = np.random.default_rng(0)
    per_seed = [list(rng.normal(1.0, 0.5, 50)), list(rng.normal(1.2, 0.5, 50))]
    out = mv.summarise(per_seed, np.random.default_rng(1))
    assert out["ci95"][0] < out["mean"] < out["ci95"][1]
    assert out["episodes"] == 100 and len(out["per_seed"]) == 2
