"""The TorchRL face of the crossing task and the batched trainer behind ``train --backend torchrl``."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from torchrl.envs.utils import check_env_specs

from envs.checks import check_device
from envs.crossing import FEATURE_SETS, NUM_ACTIONS, POLICIES, Crossing
from envs.torchrl_env import CrossingEnv
from training import marl, marl_torchrl, ood

TASK = dict(grid_size=24, radius=1, max_steps=30, start_width=6)


@pytest.mark.parametrize("num_agents, features", [(3, "base"), ((2, 5), "base"), ((2, 5), "time")])
def test_check_env_specs(num_agents, features):
    env = CrossingEnv(num_worlds=4, num_agents=num_agents, seed=0, features=features, **TASK)
    check_env_specs(env)


def test_env_equals_crossing_world_for_world():
    """Same seed, same actions: identical observations, masks, rewards and episode ends, across
    the automatic reset at the time limit."""
    env = CrossingEnv(num_worlds=5, num_agents=(2, 6), seed=3, **TASK)
    ref = Crossing(num_worlds=5, num_agents=(2, 6), seed=3, **TASK)
    gen = torch.Generator().manual_seed(0)
    td = env.reset()
    ref.reset()
    resets = 0
    for _ in range(2 * TASK["max_steps"] + 5):
        assert torch.equal(td["agents", "observation"], ref.observations())
        assert torch.equal(td["agents", "mask"], ref.mask)
        assert torch.equal(td["agents", "active"], ref.mask & ~ref.parked)
        action = torch.randint(0, NUM_ACTIONS, (5, ref.L), generator=gen)
        td["agents", "action"] = action
        out, td = env.step_and_maybe_reset(td)
        reward = ref.step(action)
        assert torch.equal(out["next", "agents", "reward"].squeeze(-1), reward)
        assert torch.equal(out["next", "done"].squeeze(-1), ref.done)
        assert not out["next", "terminated"].any()  # the crossing ends by truncation only
        if ref.done.all():
            ref.reset()
            resets += 1
    assert resets == 2


def test_partial_reset_restarts_only_flagged_worlds():
    env = CrossingEnv(num_worlds=3, num_agents=4, seed=1, **TASK)
    td = env.reset()
    for _ in range(4):
        td["agents", "action"] = torch.full((3, 4), 1)
        td = env.step(td)["next"]
    before = env.task.positions.clone()
    env.reset(td.set("_reset", torch.tensor([[False], [True], [False]])))
    after = env.task.positions
    assert torch.equal(after[[0, 2]], before[[0, 2]])
    assert int(env.task.steps[1]) == 0 and int(env.task.steps[0]) == 4
    assert (after[1, :, 0] < TASK["start_width"]).all()  # world 1 is back at the start area


def tiny_cfg(tmp_path, **kw) -> marl.TrainConfig:
    base = dict(
        backend="torchrl",
        num_agents=(2, 4),
        num_worlds=16,
        n_steps=15,
        batch_size=512,
        n_epochs=2,
        total_timesteps=4000,
        checkpoint_every=1000,
        runs_dir=str(tmp_path),
        run_name="tr",
        progress=False,
        **TASK,
    )
    # MAPPO's central critic over every agent, constant schedules, every move sampled: what these
    # tests were sized for (the default recipe's shared encoder and sampled share have tests below)
    base |= dict(critic="central", neighbours=None, learning_rate_final=None, ent_coef_final=None)
    base |= dict(sample_fraction=1.0)
    return marl.TrainConfig(**(base | kw))


def test_short_run_beats_random_and_ood_reads_it(tmp_path):
    cfg = tiny_cfg(tmp_path, total_timesteps=12_000, learning_rate=3e-3)
    metrics = marl.main(cfg)
    assert metrics["backend"] == "torchrl" and metrics["finished"]
    assert metrics["num_timesteps"] >= 12_000
    net, steps = marl_torchrl.load_net(tmp_path / "tr" / "checkpoint.pt", vars(cfg))
    assert steps == metrics["num_timesteps"]
    env = Crossing(num_worlds=64, num_agents=4, **TASK)
    trained = ood.play(env, ood.policy_actor(net, True, 4096), 7, 7).mean()
    rand = ood.play(env, POLICIES["random"], 7, 7).mean()
    assert trained > rand + 1.0, (trained, rand)
    summary = ood.main(ood.OODConfig(run=(str(tmp_path / "tr"),), counts=(3, 6), episodes=8, reps=100))
    assert set(summary[3]) >= {"sa", "move_right", "random"}


def test_each_iteration_times_its_phases(tmp_path):
    cfg = tiny_cfg(tmp_path, total_timesteps=1500)
    net = marl_torchrl.build_net(cfg, FEATURE_SETS[cfg.features])
    history = marl_torchrl.train(cfg, net, torch.device("cpu"))["history"]
    assert len(history) >= 2
    for record, before in zip(history[1:], history, strict=False):
        phases = [record[f"{k}_s"] for k in marl_torchrl.PHASES]
        assert min(phases) > 0
        # the three phases are the whole iteration (seconds is cumulative and rounded to 1 ms)
        assert sum(phases) == pytest.approx(record["seconds"] - before["seconds"], abs=2e-3)


def _shared_setup(tmp_path, device="cpu", **kw):
    """A shared-encoder net, its loss and a rollout's samples, all on ``device``."""
    cfg = tiny_cfg(tmp_path, critic="shared", neighbours=3, batch_size=64, device=device, **kw)
    torch.manual_seed(0)
    net = marl_torchrl.build_net(cfg, FEATURE_SETS[cfg.features]).to(device)
    env = CrossingEnv(**marl_torchrl.task_kwargs(cfg), device=torch.device(device), seed=0)
    data = marl_torchrl.samples(marl_torchrl.collect(env, env.reset(), net, cfg.n_steps)[0], net, cfg)
    return cfg, net, marl_torchrl.make_loss(net, cfg).to(device), data


def test_minibatch_steps_read_nothing_back_from_the_device(tmp_path, monkeypatch):
    """On a GPU every bool() of a tensor waits for the queued kernels: the PPO minibatch loop has
    none (the epoch's loss sums are read once, by tolist)."""
    cfg, net, loss, data = _shared_setup(tmp_path)
    opt = torch.optim.Adam(net.parameters())
    reads = []
    real_bool = torch.Tensor.__bool__
    monkeypatch.setattr(torch.Tensor, "__bool__", lambda t: reads.append(t.shape) or real_bool(t))
    stats = marl_torchrl.update(net, loss, opt, data, cfg, torch.Generator().manual_seed(0))
    assert data.batch_size[0] > 2 * cfg.batch_size and all(map(math.isfinite, stats.values()))
    assert reads == []


def test_graph_step_takes_the_full_minibatches_and_changes_nothing(tmp_path):
    """The update hands full minibatches to the CUDA-graph step and runs the short last one
    eagerly; on the CPU CudaGraphModule passes through, so both updates must agree exactly."""
    params, sizes = [], []

    def recorded(step):
        return lambda batch: sizes.append(batch.batch_size[0]) or step(batch)

    for graphed in (False, True):
        cfg, net, loss, data = _shared_setup(tmp_path)
        opt = marl_torchrl.make_optimizer(net, cfg, torch.device("cpu"))
        graph = None
        if graphed:
            with pytest.warns(UserWarning, match="without CUDA"):
                graph = recorded(marl_torchrl.graphed_step(net, loss, opt))
        stats = marl_torchrl.update(net, loss, opt, data, cfg, torch.Generator().manual_seed(0), graph)
        assert all(map(math.isfinite, stats.values()))
        params.append([p.detach().clone() for p in net.parameters()])
    M = data.batch_size[0]
    assert M % cfg.batch_size, "the test needs a short last minibatch"
    assert sizes == [cfg.batch_size] * (M // cfg.batch_size * cfg.n_epochs)
    assert all(torch.equal(a, b) for a, b in zip(*params, strict=True))


def test_optimizer_of_a_graph_run_resumes_eagerly(tmp_path):
    """A CUDA-graph run saves a capturable Adam with a tensor learning rate; resumed without graphs
    the optimizer is plain again and keeps its moments."""
    cfg, net, loss, data = _shared_setup(tmp_path)
    opt = marl_torchrl.make_optimizer(net, cfg, torch.device("cpu"))
    marl_torchrl.update(net, loss, opt, data, cfg, torch.Generator().manual_seed(0))
    saved = opt.state_dict()
    for group in saved["param_groups"]:  # as a graph run's checkpoint holds it, on the CPU
        group |= {"capturable": True, "lr": torch.tensor(group["lr"])}
    resumed = marl_torchrl.make_optimizer(net, cfg, torch.device("cpu"), saved)
    group = resumed.param_groups[0]
    assert group["capturable"] is False and group["lr"] == pytest.approx(cfg.learning_rate)
    assert isinstance(group["lr"], float)
    first = resumed.state[next(net.parameters())]
    assert torch.equal(first["exp_avg"], opt.state[next(net.parameters())]["exp_avg"])
    marl_torchrl.set_learning_rate(resumed, 1e-4)
    marl_torchrl.update(net, loss, resumed, data, cfg, torch.Generator().manual_seed(1))
    assert resumed.param_groups[0]["lr"] == 1e-4 and first["step"].device.type == "cpu"


def _updated_params(tmp_path, device: str, **kw) -> tuple[list[torch.Tensor], list[torch.Tensor], object]:
    """The parameters before and after two updates (the learning rate changing between them, as
    scheduled) with the full-minibatch step of ``kw`` (cuda_graphs, compile), and that step."""
    cfg, net, loss, data = _shared_setup(tmp_path, device, **kw)
    before = [p.detach().clone() for p in net.parameters()]
    opt = marl_torchrl.make_optimizer(net, cfg, torch.device(device))
    full = marl_torchrl.full_step(net, loss, opt, cfg)
    for lr in (1e-3, 5e-4):
        marl_torchrl.set_learning_rate(opt, lr)
        marl_torchrl.update(net, loss, opt, data, cfg, torch.Generator().manual_seed(0), full)
    return before, [p.detach().clone() for p in net.parameters()], full


def _assert_same_update(before, eager, other) -> None:
    """``other`` moved every parameter as ``eager`` did, up to 1% of the largest move: a GPU's
    reductions (atomics in attention's backward) differ from run to run in the last bits, while a
    step that replayed a stale learning rate (1e-3 for 5e-4) missed by 17% to 85% of it (CPU)."""
    for p0, a, b in zip(before, eager, other, strict=True):
        assert (a - b).abs().max() <= 0.01 * (a - p0).abs().max() + 1e-7


def _fell_back(recwarn) -> list[str]:
    return [str(w.message) for w in recwarn if "torch.compile failed" in str(w.message)]


def test_compiled_update_equals_the_eager_update(tmp_path, recwarn):
    """torch.compile fuses the step's kernels and must not change what it computes (tens of
    seconds here: the compile itself)."""
    from torch._dynamo.utils import counters

    before, eager, _ = _updated_params(tmp_path, "cpu")
    counters.clear()
    _assert_same_update(before, eager, _updated_params(tmp_path, "cpu", compile=True)[1])
    assert counters["stats"]["unique_graphs"] >= 1  # the step did go through the compiler
    assert _fell_back(recwarn) == []  # and ran compiled, not eagerly after a failure


def test_a_failing_compiled_step_warns_and_steps_eagerly(tmp_path, monkeypatch):
    """A compiler failure (torch 2.11's inductor failed in backward at minibatches of 65,536 on an
    H100) must not stop a run: the step warns once and from then on computes what eager does."""
    calls = []

    def broken(fn, **kw):
        def run(batch):
            calls.append(batch.batch_size[0])
            raise AssertionError("expected size 64==64, stride 768==256 at dim=0")

        return run

    before, eager, _ = _updated_params(tmp_path, "cpu")
    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(UserWarning, match=r"torch.compile failed on the PPO step \(AssertionError: expected"):
        fallen = _updated_params(tmp_path, "cpu", compile=True)[1]
    assert calls == [64]  # tried once, then never again
    assert all(torch.equal(a, b) for a, b in zip(eager, fallen, strict=True))


def test_an_eager_step_error_is_raised(tmp_path, monkeypatch):
    cfg, net, loss, data = _shared_setup(tmp_path)
    opt = marl_torchrl.make_optimizer(net, cfg, torch.device("cpu"))
    monkeypatch.setattr(net, "encode", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("out of memory")))
    with pytest.raises(RuntimeError, match="out of memory"):
        marl_torchrl.minibatch_step(net, loss, opt)(data[:64])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("compiled", [False, True])
def test_cuda_graph_update_equals_the_eager_update(tmp_path, compiled, recwarn):
    before, eager, _ = _updated_params(tmp_path, "cuda")
    _, graphed, graph = _updated_params(tmp_path, "cuda", cuda_graphs=True, compile=compiled)
    assert graph.counter == marl_torchrl.GRAPH_WARMUP  # captured, so the later full minibatches were replays
    _assert_same_update(before, eager, graphed)
    assert _fell_back(recwarn) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_run_trains_and_resumes_without_graphs(tmp_path):
    kw = dict(critic="shared", neighbours=3, batch_size=64, device="cuda")
    first = marl.main(tiny_cfg(tmp_path, total_timesteps=2000, cuda_graphs=True, **kw))
    second = marl.main(tiny_cfg(tmp_path, total_timesteps=4000, **kw))
    assert second["resumed_from"] == first["num_timesteps"] and second["finished"]


def test_resume_trains_only_the_missing_steps(tmp_path):
    first = marl.main(tiny_cfg(tmp_path, total_timesteps=2000))
    second = marl.main(tiny_cfg(tmp_path, total_timesteps=5000))
    assert second["resumed_from"] == first["num_timesteps"]
    assert second["num_timesteps"] - first["num_timesteps"] < 5000 - first["num_timesteps"] + 16 * 15 * 4
    steps = [row[0] for row in second["return_history"]]
    assert steps == sorted(set(steps))  # no step counted twice
    with pytest.raises(ValueError, match="seed"):  # a different run under the same name is refused
        marl.main(tiny_cfg(tmp_path, total_timesteps=5000, seed=1))


def test_sigint_saves_and_the_same_command_resumes(tmp_path):
    cmd = [sys.executable, "-m", "training.cli", "train", "--backend", "torchrl", "--num-worlds", "16"]
    cmd += ["--num-agents", "2", "4", "--n-steps", "15", "--batch-size", "512", "--n-epochs", "1"]
    cmd += ["--grid-size", "24", "--max-steps", "30", "--start-width", "6", "--no-progress"]
    cmd += ["--runs-dir", str(tmp_path), "--run-name", "int", "--checkpoint-every", "500"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [*cmd, "--total-timesteps", "10000000"], env=env, stderr=subprocess.PIPE, text=True
    )
    index = tmp_path / "int" / "checkpoints.json"
    deadline = time.time() + 120
    while not index.exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert len(err.strip().splitlines()) == 1 and "resume" in err
    step = json.loads(index.read_text())["checkpoints"][0]["step"]  # the latest
    done = subprocess.run(
        [*cmd, "--total-timesteps", str(step + 500)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "int" / "metrics.json").read_text())
    assert metrics["resumed_from"] == step and metrics["finished"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_without_cuda_is_one_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "training.cli", "train", "--backend", "torchrl", "--device", "cuda"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "cuda" in out.stderr.lower(), out.stderr


def test_backend_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="imitate_iterations"):
        marl.check_config(tiny_cfg(tmp_path, imitate_iterations=2))
    with pytest.raises(ValueError, match="device"):
        marl.check_config(tiny_cfg(tmp_path, backend="sb3", device="cuda"))
    with pytest.raises(ValueError, match="device"):
        check_device("tpu")
    with pytest.raises(ValueError, match="cuda_graphs"):
        marl.check_config(tiny_cfg(tmp_path, cuda_graphs=True))  # on the CPU
    with pytest.raises(ValueError, match="compile"):
        marl.check_config(tiny_cfg(tmp_path, backend="sb3", compile=True))
    with pytest.raises(ValueError, match=r"advantage_norm must be one of \('batch', 'count'\), got 'world'"):
        marl.check_config(tiny_cfg(tmp_path, advantage_norm="world"))
    with pytest.raises(ValueError, match=r"team_spirit must be a number in \[0, 1\], got -0.5"):
        marl.check_config(tiny_cfg(tmp_path, team_spirit=-0.5))
    with pytest.raises(ValueError, match="team_spirit needs --backend torchrl"):
        marl.check_config(tiny_cfg(tmp_path, backend="sb3", team_spirit=0.5))


@pytest.mark.parametrize("critic", ["central", "local", "shared"])
def test_actor_critic_reads_any_agent_count(tmp_path, critic):
    net = marl_torchrl.build_net(tiny_cfg(tmp_path, neighbours=3, critic=critic), 10)
    for L in (1, 4, 9):
        tokens = torch.randn(2, 5, L, 10)
        tokens[..., 0] = 1.0  # present
        assert net.actor(tokens).shape == (2, 5, NUM_ACTIONS)
        assert net.critic(tokens).shape == (2, 5, 1)
    assert (net.critic_encoder.neighbours is None) == (critic == "central")
    assert (net.critic_encoder is net.actor_encoder) == (critic == "shared")


def test_gae_values_skip_padding_and_reuse_the_next_step():
    """The values GAE reads equal the critic run on every stored observation: 0 on padded slots,
    and V(next obs) equal to the next step's value wherever the world went on."""
    cfg = tiny_cfg(None, runs_dir="unused")
    net = marl_torchrl.build_net(cfg, 10).eval()
    env = CrossingEnv(num_worlds=6, num_agents=(2, 5), seed=2, **TASK)
    torch.manual_seed(0)
    rollout, _ = marl_torchrl.collect(env, env.reset(), net, 40)  # crosses a reset at T = 30
    agents, nxt = rollout["agents"], rollout["next", "agents"]
    with torch.no_grad():
        full = net.critic(agents["observation"])  # (B, T, L, 1), padded slots included
        full_next = net.critic(nxt["observation"])
    value = marl_torchrl.values(net, agents["observation"], agents["mask"], 7)
    torch.testing.assert_close(value, full * agents["mask"].unsqueeze(-1))
    next_value = marl_torchrl.next_values(net, rollout, value, 7)
    torch.testing.assert_close(next_value, full_next * nxt["mask"].unsqueeze(-1))
    assert rollout["next", "done"].any()  # the reset branch was exercised
    inactive = ~agents["active"]
    assert (agents["action"][inactive] == 0).all() and (agents["action_log_prob"][inactive] == 0).all()


def _shared_net(**kw):
    torch.manual_seed(0)
    return marl_torchrl.build_net(tiny_cfg(None, runs_dir="unused", critic="shared", neighbours=2, **kw), 10)


def test_local_view_keeps_what_the_actor_reads():
    net = _shared_net().double()
    env = CrossingEnv(num_worlds=4, num_agents=(2, 6), seed=1, **TASK)
    obs = env.reset()["agents", "observation"].double()  # (B, L, L, F)
    view = net.local_view(obs)
    assert view.shape == (*obs.shape[:2], 3, 10)
    torch.testing.assert_close(net.actor(view), net.actor(obs))
    torch.testing.assert_close(net.critic(view), net.critic(obs))


def test_shared_loss_equals_the_two_pass_loss_and_reaches_the_encoder():
    """The shared path runs the encoder once per minibatch into "hidden"; the same loss built with
    the full actor and critic (the encoder run once for each head) gives the same value and grads."""
    cfg = tiny_cfg(None, runs_dir="unused", critic="shared", neighbours=2)
    net = _shared_net()
    env = CrossingEnv(num_worlds=6, num_agents=(2, 5), seed=3, **TASK)
    rollout, _ = marl_torchrl.collect(env, env.reset(), net, 12)
    data = marl_torchrl.samples(rollout, net, cfg)

    def grads(loss, batch):
        net.zero_grad()
        out = loss(batch)
        (out["loss_objective"] + out["loss_critic"] + out["loss_entropy"]).backward()
        return [p.grad.clone() for p in net.actor_encoder.parameters()]

    fast = data.clone()
    fast.set("hidden", net.encode(fast["observation"]))
    g_fast = grads(marl_torchrl.make_loss(net, cfg), fast)
    net.shared = False  # the same modules, each head running the encoder itself
    g_ref = grads(marl_torchrl.make_loss(net, cfg), data.clone())
    net.shared = True
    assert any(g.abs().sum() > 0 for g in g_fast)
    for a, b in zip(g_fast, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_shared_rollout_values_equal_the_critic():
    net = _shared_net().eval()
    env = CrossingEnv(num_worlds=5, num_agents=(2, 5), seed=4, **TASK)
    torch.manual_seed(0)
    rollout, _ = marl_torchrl.collect(env, env.reset(), net, 8)
    agents = rollout["agents"]
    with torch.no_grad():
        full = net.critic(agents["observation"]) * agents["mask"].unsqueeze(-1)
    torch.testing.assert_close(agents["state_value"], full)


def test_bf16_encoders_keep_float32_outputs():
    net = _shared_net(precision="bf16")
    assert net.compute_dtype == torch.bfloat16
    tokens = torch.randn(3, 6, 10)
    tokens[..., 0] = 1.0
    logits, value = net.actor(tokens), net.critic(tokens)
    assert logits.dtype == value.dtype == torch.float32
    net.compute_dtype = None
    torch.testing.assert_close(logits, net.actor(tokens), atol=0.1, rtol=0.1)


@pytest.mark.parametrize("shared", [True, False])
def test_sample_fraction_plays_the_argmax_elsewhere_and_trains_on_the_sampled_steps(shared):
    critic = "shared" if shared else "local"
    cfg = tiny_cfg(None, runs_dir="unused", critic=critic, neighbours=2, sample_fraction=0.4)
    torch.manual_seed(0)
    net = marl_torchrl.build_net(cfg, 10).eval()
    env = CrossingEnv(num_worlds=6, num_agents=(2, 5), seed=5, **TASK)
    rollout, _ = marl_torchrl.collect(env, env.reset(), net, 10, cfg.sample_fraction)
    agents = rollout["agents"]
    sampled, active, real = agents["sampled"], agents["active"], agents["mask"]
    with torch.no_grad():
        greedy = net.actor(agents["observation"]).argmax(-1)  # (B, T, L)
    played = active & ~sampled
    assert played.any() and (active & sampled).any()
    assert torch.equal(agents["action"][played], greedy[played])
    # sampled actions leave the argmax often enough to show they were drawn, not chosen
    assert (agents["action"] != greedy)[active & sampled].any()
    assert 0.3 < sampled[real].float().mean() < 0.5
    data = marl_torchrl.samples(rollout, net, cfg)
    assert data.batch_size[0] == int((real & sampled).sum())
    torch.testing.assert_close(data["action"], agents["action"][real & sampled])


def test_a_rollout_without_sampled_steps_updates_nothing(tmp_path):
    cfg, net, loss, data = _shared_setup(tmp_path)
    opt = torch.optim.Adam(net.parameters())
    before = [p.clone() for p in net.parameters()]
    stats = marl_torchrl.update(net, loss, opt, data[:0], cfg, torch.Generator().manual_seed(0))
    assert all(math.isnan(v) for v in stats.values()) and set(stats) == {"objective", "critic", "entropy"}
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


def test_advantages_per_count_have_unit_scale_within_each_count():
    """Per count, each count's active advantages get mean 0 and std 1, whatever their scale; a
    count with one active sample takes the batch's statistics; inactive samples are left out of
    every statistic."""
    gen = torch.Generator().manual_seed(0)
    group = torch.tensor([2, 24, 7]).repeat(40)[:-2].tolist() + [5]  # count 5: a single sample
    group = torch.tensor(group)
    scale = {2: 0.1, 24: 8.0, 7: 1.0, 5: 1.0}
    adv = torch.stack([torch.randn((), generator=gen) * scale[g] + g for g in group.tolist()])[:, None]
    active = torch.ones(len(group), dtype=torch.bool)
    active[:6] = False
    adv[:6] = 1e6  # would swamp any statistic that read them
    out = marl_torchrl.normalise_advantages(adv, active, group)
    for g in (2, 24, 7):
        m = (group == g) & active
        torch.testing.assert_close(out[m].mean(), torch.tensor(0.0), atol=1e-5, rtol=0)
        torch.testing.assert_close(out[m].std(), torch.tensor(1.0), atol=1e-5, rtol=0)
    a = adv[active]
    torch.testing.assert_close(out[-1], (adv[-1] - a.mean()) / (a.std() + 1e-8))
    whole = marl_torchrl.normalise_advantages(adv, active, None)
    torch.testing.assert_close(whole[active].mean(), torch.tensor(0.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(whole[active].std(), torch.tensor(1.0), atol=1e-5, rtol=0)


def test_samples_scale_advantages_per_world_count():
    cfg = tiny_cfg(None, runs_dir="unused", critic="shared", neighbours=2, advantage_norm="count")
    torch.manual_seed(0)
    net = marl_torchrl.build_net(cfg, 10).eval()
    env = CrossingEnv(num_worlds=8, num_agents=(2, 5), seed=5, **TASK)
    rollout, _ = marl_torchrl.collect(env, env.reset(), net, 10, 1.0)
    real = rollout["agents", "mask"]
    count = real.sum(-1, keepdim=True).expand_as(real)[real]  # (M,)
    data = marl_torchrl.samples(rollout, net, cfg)
    adv, active = data["advantage"].squeeze(-1), data["active"]
    assert len(count.unique()) > 1 and torch.equal(adv[~active], torch.zeros_like(adv[~active]))
    for c in count.unique():
        m = (count == c) & active
        if m.sum() > 1:
            torch.testing.assert_close(adv[m].mean(), torch.tensor(0.0), atol=1e-4, rtol=0)
            torch.testing.assert_close(adv[m].std(), torch.tensor(1.0), atol=1e-4, rtol=0)


def test_team_rewards_mix_each_world_mean_over_its_real_agents():
    reward = torch.tensor([[[1.0, 3.0, 0.0], [2.0, -4.0, 8.0]]]).unsqueeze(-1)  # (B=1, T=2, L=3, 1)
    real = torch.tensor([[[True, True, False], [True, True, True]]])
    assert marl_torchrl.team_rewards(reward, real, 0.0) is reward
    mixed = marl_torchrl.team_rewards(reward, real, 0.25).squeeze(-1)
    # step 0: mean over the two real agents is 2, the padded slot stays 0; step 1: mean 2
    expected = torch.tensor(
        [[[0.75 * 1 + 0.5, 0.75 * 3 + 0.5, 0.0], [0.75 * 2 + 0.5, 0.75 * -4 + 0.5, 0.75 * 8 + 0.5]]]
    )
    torch.testing.assert_close(mixed, expected)
    whole = marl_torchrl.team_rewards(reward, real, 1.0).squeeze(-1)  # every real agent gets the mean
    torch.testing.assert_close(whole, torch.tensor([[[2.0, 2.0, 0.0], [2.0, 2.0, 2.0]]]))


def test_team_spirit_reaches_the_value_targets():
    """The value targets that samples() trains on are built from the mixed rewards."""
    cfg = tiny_cfg(None, runs_dir="unused", critic="shared", neighbours=2)
    torch.manual_seed(0)
    net = marl_torchrl.build_net(cfg, 10).eval()
    env = CrossingEnv(num_worlds=4, num_agents=(3, 5), seed=2, **TASK)
    rollout, _ = marl_torchrl.collect(env, env.reset(), net, 10, 1.0)
    selfish = marl_torchrl.samples(rollout, net, cfg)["value_target"]
    cfg.team_spirit = 1.0
    team = marl_torchrl.samples(rollout, net, cfg)["value_target"]
    reward = rollout["next", "agents", "reward"]
    real = rollout["agents", "mask"]
    assert not torch.equal(reward[real], marl_torchrl.team_rewards(reward, real, 1.0)[real])
    assert selfish.shape == team.shape and not torch.allclose(selfish, team)
