"""``hyperagents train --backend rllib``: the crossing task through Ray RLlib in the project's run folder.

The training tests need Ray RLlib (the ``rllib`` extra) and skip without it; the option checks
do not. Slow-marked: Ray's start-up and env runner processes take most of their 30-60 s.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from training import cli, marl, ood

TASK = dict(grid_size=16, radius=1, max_steps=20, start_width=4)


def rllib_cfg(runs_dir, **kw) -> marl.TrainConfig:
    """About 480 agent-steps per PPO iteration (8 worlds x 20 steps x 2-4 agents)."""
    base = dict(
        backend="rllib",
        num_agents=(2, 4),
        num_worlds=8,
        n_steps=20,
        batch_size=128,
        n_epochs=2,
        learning_rate=3e-3,
        total_timesteps=4000,
        checkpoint_every=100_000,
        runs_dir=str(runs_dir),
        run_name="rl",
        progress=False,
        **TASK,
    )
    return marl.preset_config(**(base | kw))  # the rllib backend's own defaults for the rest


@pytest.fixture
def local_ray():
    """One local Ray for a test's several runs (each run would otherwise start its own)."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.rllib")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_two_env_runners_beat_random_resume_and_ood_reads_it(local_ray, tmp_path):
    first = marl.main(rllib_cfg(tmp_path, num_env_runners=2))
    assert first["backend"] == "rllib" and first["finished"] and first["num_env_runners"] == 2
    assert first["num_timesteps"] >= 4000 and first["resumed_from"] == 0
    run = tmp_path / "rl"
    assert (
        json.loads((run / "checkpoints.json").read_text())["checkpoints"][0]["step"] == first["num_timesteps"]
    )

    # The argmax policy: after so few steps sampling still wanders, while the most likely action
    # is already RIGHT (uniform random scores about -2.1 here, all-RIGHT about -0.5).
    cfg = ood.OODConfig(run=(str(run),), counts=(4,), episodes=24, reps=100, deterministic=True)
    summary = ood.main(cfg)
    trained, rand = summary[4]["sa"], summary[4]["random"]
    assert trained["ci_mean"][0] > rand["ci_mean"][1], (trained, rand)  # 95% CIs apart
    assert "ood_det_full" in json.loads((run / "metrics.json").read_text())

    # The same command again: nothing left to train, so no Ray work and the same figures.
    again = marl.main(rllib_cfg(tmp_path, num_env_runners=2))
    assert again["num_timesteps"] == first["num_timesteps"]
    assert again["train_seconds"] == first["train_seconds"]

    # More steps, on another number of env runners (a setting a resume may change).
    more = marl.main(rllib_cfg(tmp_path, num_env_runners=0, total_timesteps=6000))
    assert more["resumed_from"] == first["num_timesteps"] and more["finished"]
    one_iteration = 8 * 20 * 4  # worlds x steps x the most agents a world holds
    assert more["num_timesteps"] - first["num_timesteps"] < 6000 - first["num_timesteps"] + one_iteration
    steps = [row[0] for row in more["return_history"]]
    assert steps == sorted(set(steps))  # no step counted twice
    assert more["train_seconds"] > first["train_seconds"]

    with pytest.raises(ValueError, match="seed"):  # a different run under the same name is refused
        marl.main(rllib_cfg(tmp_path, total_timesteps=6000, seed=1))


@pytest.mark.slow
def test_sigterm_saves_after_the_iteration_under_way(tmp_path, monkeypatch):
    """SIGTERM mid-run (whose handler ``ray.init`` replaces: the run's must be put back) saves after
    the PPO iteration under way and exits 130; the checkpoint holds the steps it reports."""
    pytest.importorskip("ray.rllib")
    from training import marl_rllib

    record = marl_rllib.Session.record

    def record_then_stop(self, result, seconds):
        record(self, result, seconds)
        if len(self.state["history"]) == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(marl_rllib.Session, "record", record_then_stop)
    with pytest.raises(SystemExit) as stop:
        marl.main(rllib_cfg(tmp_path, num_env_runners=0, total_timesteps=100_000))  # its own Ray
    assert stop.value.code == 130
    run = tmp_path / "rl"
    saved = json.loads((run / "checkpoints.json").read_text())["checkpoints"][0]["step"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_timesteps"] == saved and len(metrics["return_history"]) <= 2
    assert not metrics["finished"]
    _, steps = marl_rllib.load_net(run / "checkpoint.tar", json.loads((run / "config.json").read_text()))
    assert steps == saved


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        (dict(imitate_iterations=2), "imitate_iterations"),
        (dict(device="cuda"), "device"),
        (dict(precision="bf16"), "precision"),
        (dict(num_env_runners=-1), "num_env_runners"),
        (dict(address=""), "address"),
        (dict(batch_size=4096), "batch_size"),
        (dict(backend="sb3", num_env_runners=2), "num_env_runners"),
        (dict(backend="torchrl", address="auto"), "address"),
    ],
)
def test_options_rllib_cannot_honour_are_refused(tmp_path, fields, named):
    with pytest.raises(ValueError, match=named):
        marl.check_config(rllib_cfg(tmp_path, **fields))


def test_bad_option_at_the_cli_is_one_line_exit_2(tmp_path, capsys):
    argv = ["train", "--backend", "rllib", "--num-env-runners", "-1", "--runs-dir", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "\n" not in err and "num_env_runners" in err
    assert not any(tmp_path.iterdir())  # refused before a run folder was made


def test_every_network_field_build_net_reads_reaches_the_rllib_module():
    """The RLModule's network is built from NET_DEFAULTS' fields of the config: a network field
    left out would be dropped silently in training and then read from the manifest by ood."""
    from types import SimpleNamespace

    from training import marl_rllib, marl_torchrl

    read = set()

    class Recorder(SimpleNamespace):
        def __getattribute__(self, name):
            if not name.startswith("__"):
                read.add(name)
            return super().__getattribute__(name)

    cfg = marl.preset_config(backend="rllib", neighbours=7, lane_tokens=2)
    fields = vars(cfg)
    marl_torchrl.build_net(Recorder(**fields), 10)
    network = read & set(fields) - {"precision"}  # precision is torchrl's own (the RLModule runs fp32)
    assert "lane_tokens" in network and network <= set(marl_rllib.NET_DEFAULTS)
