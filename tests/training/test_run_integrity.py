"""Run folders never lie, as a user meets them: reused names, two processes, kill -9, Ctrl-C,
truncated checkpoints, names outside the runs folder, and ood where MOVE_RIGHT scores 0."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from stable_baselines3.common.callbacks import BaseCallback

from training import fit, marl, ood, runs

ROOT = Path(__file__).resolve().parents[2]  # the subprocesses import tests.training from here
FIT = dict(
    grid_size=16,
    radius=1,
    train_agents=6,
    num_train=600,
    num_test=100,
    eval_agents=(2, 6),
    batch_size=100,
    learning_rate=0.3,
    steps=120,
    checkpoint_every=25,
    progress=False,
    figures=False,
)
TRAIN = dict(
    backend="sb3",  # built with marl.preset_config: the SB3 path at its own defaults
    width=8,
    blocks=1,
    heads=2,
    net_arch=(8,),
    num_agents=(2, 3),
    num_worlds=4,
    grid_size=16,
    max_steps=12,
    start_width=4,
    n_steps=12,  # one rollout = 4 worlds * 3 slots * 12 steps = 144 timesteps
    batch_size=48,
    n_epochs=1,
    checkpoint_every=144,
    total_timesteps=144 * 4,
    progress=False,
)


def python(code: str, wait: bool = True):
    """Run ``code`` in a fresh interpreter, as a second user process would."""
    args = [sys.executable, "-c", textwrap.dedent(code)]
    if not wait:
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    return subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT)


def fit_in_subprocess(cfg: dict, before: str = "", wait: bool = True):
    """``fit.main`` of ``cfg`` in a subprocess; ``before`` runs first (e.g. patches Adam.step)."""
    return python(
        f"import os, signal, time, torch\nfrom training import fit\n{textwrap.dedent(before)}\n"
        f"fit.main(fit.FitConfig(**{cfg!r}))",
        wait,
    )


def at_adam_step(when: str, action: str) -> str:
    """Code that runs ``action`` inside the optimiser steps whose count meets ``when`` (e.g. "== 60")."""
    return f"""
        calls, original = [0], torch.optim.Adam.step
        def step(self, *args, **kwargs):
            calls[0] += 1
            if calls[0] {when}:
                {action}
            return original(self, *args, **kwargs)
        torch.optim.Adam.step = step
    """


def one_line_error(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"hyperagents {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def flags(cfg: dict) -> list[str]:
    """``cfg`` as command-line flags (tyro's spelling)."""
    out = []
    for key, value in cfg.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else flag.replace("--", "--no-", 1))
        else:
            out += [flag, *map(str, value if isinstance(value, tuple) else (value,))]
    return out


def cli(argv: list[str], capsys) -> tuple[int, str]:
    from training.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    return exit_.value.code, capsys.readouterr().err


# ---------------------------------------------------------------- 1, 2: a resume must match the run


def test_fit_with_another_seed_or_grid_under_a_used_name_is_refused_and_leaves_the_run_intact(
    tmp_path, capsys
):
    cfg = dict(FIT, steps=30, runs_dir=str(tmp_path), run_name="x")
    fit.main(fit.FitConfig(**cfg))
    folder = tmp_path / "x"
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}
    for flag, value, field in (("--seed", "3", "seed 0 -> 3"), ("--grid-size", "20", "grid_size 16 -> 20")):
        code, err = cli(["fit", *flags(cfg), flag, value], capsys)
        line = one_line_error(err, "fit")
        assert code == 2 and field in line and "--overwrite" in line and "--run-name" in line
    after = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert after == files  # config.json, checkpoints and metrics untouched: the run still rebuilds
    rebuilt, _ = fit.load_run(folder)
    assert rebuilt.seed == 0 and rebuilt.grid_size == 16
    again = fit.main(fit.FitConfig(**{**cfg, "steps": 40}))  # more steps may change
    assert again["steps"] == 40
    fresh = fit.main(fit.FitConfig(**{**cfg, "seed": 3, "overwrite": True}))
    assert json.loads((folder / "config.json").read_text())["seed"] == 3 and fresh["steps"] == 30


def test_train_with_another_family_under_a_used_name_is_refused(tmp_path, capsys):
    base = dict(TRAIN, total_timesteps=144, runs_dir=str(tmp_path), run_name="m")
    marl.main(marl.preset_config(**base, family="mlp"))
    with pytest.raises(ValueError, match='family "mlp" -> "sa"'):
        marl.main(marl.preset_config(**base, family="sa"))
    assert json.loads((tmp_path / "m" / "config.json").read_text())["family"] == "mlp"
    assert ood.load_runs((str(tmp_path / "m"),))[0]["algo"] == "mlp"
    marl.main(marl.preset_config(**{**base, "run_name": "s"}, family="sa"))  # finished SA run
    code, err = cli(["train", *flags({**base, "run_name": "s"}), "--family", "hfa"], capsys)
    assert code == 2 and 'family "sa" -> "hfa"' in one_line_error(err, "train")


@pytest.mark.parametrize("predates", [(), ("backend", "critic", "neighbours")])
def test_an_sb3_run_is_never_resumed_by_the_default_trainer_and_the_refusal_says_how(
    tmp_path, capsys, predates
):
    """A run of the SB3 path's defaults (its manifest written before ``predates`` existed, or not)
    under the name a no-backend command uses: that command (torchrl) is refused in one line naming
    the fields and ``--backend sb3``, and ``--backend sb3`` resumes it."""
    tiny = {k: v for k, v in TRAIN.items() if k != "backend"} | {"runs_dir": str(tmp_path)}
    tiny["total_timesteps"] = 144
    marl.main(marl.preset_config(**tiny, backend="sb3"))
    config = tmp_path / marl.preset_config(**tiny).name / "config.json"
    stored = {k: v for k, v in json.loads(config.read_text()).items() if k not in predates}
    config.write_text(json.dumps(stored))
    folder = config.parent
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}
    code, err = cli(["train", *flags(tiny)], capsys)
    line = one_line_error(err, "train")
    assert code == 2 and 'backend "sb3" -> "torchrl"' in line and 'critic "central" -> "shared"' in line
    assert "neighbours" in line and "pass --backend sb3 to resume it" in line, line
    after = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert after == files  # nothing written: no torchrl checkpoint beside the SB3 one
    from training.cli import main

    main(["train", "--backend", "sb3", *flags({**tiny, "total_timesteps": 288})])
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["resumed_from"] == 144 and metrics["num_timesteps"] == 288


def test_a_torchrl_run_from_before_sample_fraction_resumes_only_as_it_trained(tmp_path, capsys):
    """A torchrl run whose manifest predates ``sample_fraction`` trained on every sample: the plain
    command (a quarter sampled) is refused in one line naming ``--sample-fraction 1.0``, which
    resumes it."""
    tiny = {k: v for k, v in TRAIN.items() if k != "backend"} | {"runs_dir": str(tmp_path)}
    tiny |= {"total_timesteps": 96, "num_worlds": 2, "batch_size": 32, "n_steps": 4}
    marl.main(marl.preset_config(**tiny, sample_fraction=1.0))
    config = tmp_path / marl.preset_config(**tiny).name / "config.json"
    stored = json.loads(config.read_text())
    assert stored.pop("sample_fraction") == 1.0
    config.write_text(json.dumps(stored))
    code, err = cli(["train", *flags(tiny)], capsys)
    line = one_line_error(err, "train")
    assert code == 2 and "sample_fraction 1.0 -> 0.25" in line and "pass --sample-fraction 1.0" in line, line
    from training.cli import main

    main(["train", "--sample-fraction", "1", *flags({**tiny, "total_timesteps": 192})])
    metrics = json.loads((config.parent / "metrics.json").read_text())
    assert metrics["resumed_from"] >= 96 and metrics["num_timesteps"] >= 192


# ---------------------------------------------------------------- 3: one process at a time


def test_two_processes_on_one_name_one_wins_and_the_folder_is_consistent(tmp_path):
    cfg = dict(FIT, runs_dir=str(tmp_path), run_name="both")
    go = tmp_path / "go"
    # The first process holds the folder, mid-run, until the second one has tried it.
    hold = at_adam_step("== 1", f"while not os.path.exists({str(go)!r}): time.sleep(0.05)")
    first = fit_in_subprocess({**cfg, "seed": 0}, hold, wait=False)
    try:
        while not (tmp_path / "both" / "config.json").exists() and first.poll() is None:
            time.sleep(0.05)
        second = fit_in_subprocess({**cfg, "seed": 1}, wait=True)
    finally:
        go.touch()  # never leave the first process waiting
        first.communicate(timeout=300)
    assert first.returncode == 0
    assert second.returncode != 0 and "is in use by another process" in second.stderr
    config = json.loads((tmp_path / "both" / "config.json").read_text())
    metrics = json.loads((tmp_path / "both" / "metrics.json").read_text())
    assert config["seed"] == 0 and metrics["steps"] == cfg["steps"]


def test_the_cli_reports_a_busy_run_in_one_line(tmp_path, capsys):
    with runs.open_run(tmp_path, "busy", {"command": "fit"}):
        code, err = cli(["fit", "--runs-dir", str(tmp_path), "--run-name", "busy"], capsys)
    assert code == 1 and "in use by another process" in one_line_error(err, "fit")


# ---------------------------------------------------------------- 4: names stay inside the runs folder


@pytest.mark.parametrize("name", ["..", "../escaped", "/abs/run", "."])
def test_names_outside_the_runs_folder_are_refused_by_every_command(tmp_path, capsys, name):
    runs_dir = tmp_path / "runs"
    for argv, flag in (
        (["fit", "--runs-dir", str(runs_dir), "--run-name", name], "run_name"),
        (["lm", "--runs-dir", str(runs_dir), "--run-name", name], "run_name"),
        (["train", "--runs-dir", str(runs_dir), "--run-name", name], "run_name"),
    ):
        code, err = cli(argv, capsys)
        assert code == 2 and f"{flag} must be" in one_line_error(err, argv[0])
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- 5, 7: kills, Ctrl-C, corrupt files


def test_fit_killed_mid_run_resumes_to_the_uninterrupted_result(tmp_path):
    cfg = dict(FIT, runs_dir=str(tmp_path), run_name="k")
    killed = fit_in_subprocess(cfg, at_adam_step("== 60", "os.kill(os.getpid(), signal.SIGKILL)"))
    assert killed.returncode == -signal.SIGKILL
    assert runs.find_checkpoint(tmp_path / "k").step == 50  # the last one before the kill
    resumed = fit.main(fit.FitConfig(**cfg))
    straight = fit.main(fit.FitConfig(**{**cfg, "run_name": "straight"}))
    for key in ("train_mse", "test_mse", "product_mse"):
        assert resumed[key] == straight[key], key  # bit-identical, as fit's docstring promises
    history = runs.load_torch(tmp_path / "k" / "checkpoint.pt")["history"]
    assert history == runs.load_torch(tmp_path / "straight" / "checkpoint.pt")["history"]


def test_sigint_saves_a_checkpoint_and_exits_with_one_line(tmp_path):
    cfg = dict(FIT, runs_dir=str(tmp_path), run_name="c")
    slow = at_adam_step("> 25", "time.sleep(0.05)")  # slow steps after the first checkpoint
    proc = fit_in_subprocess(cfg, slow, wait=False)
    while runs.find_checkpoint(tmp_path / "c") is None and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    step = runs.find_checkpoint(tmp_path / "c").step
    assert 25 <= step < cfg["steps"]
    assert (
        line.startswith(f"hyperagents fit: stopped by SIGINT; checkpoint at step {step} ")
        and "resume" in line
    )
    resumed = fit.main(fit.FitConfig(**cfg))
    straight = fit.main(fit.FitConfig(**{**cfg, "run_name": "straight"}))
    assert resumed["test_mse"] == straight["test_mse"]


def test_a_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    cfg = dict(FIT, steps=50, runs_dir=str(tmp_path), run_name="t")
    fit.main(fit.FitConfig(**cfg))
    latest = tmp_path / "t" / "checkpoint.pt"
    latest.write_bytes(latest.read_bytes()[:100])
    with pytest.warns(UserWarning, match="corrupt; resuming from the previous one \\(step 25\\)"):
        resumed = fit.main(fit.FitConfig(**cfg))
    straight = fit.main(fit.FitConfig(**{**cfg, "run_name": "straight"}))
    assert resumed["test_mse"] == straight["test_mse"]
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (tmp_path / "t" / name).write_bytes(b"\x00")
    code, err = cli(["fit", *flags(cfg)], capsys)
    assert code == 1 and "no valid checkpoint" in one_line_error(err, "fit")


class KillAt(BaseCallback):
    def __init__(self, n: int, sig: int):
        super().__init__()
        self.n, self.sig = n, sig

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.n:
            os.kill(os.getpid(), self.sig)  # once, as a user's Ctrl-C or kill
            self.n = float("inf")
        return True


def train_in_subprocess(cfg: dict, kill_at: int, sig: int):
    return python(
        f"""
        from tests.training.test_run_integrity import KillAt
        from training import marl
        marl.main(marl.preset_config(**{cfg!r}), callbacks=[KillAt({kill_at}, {int(sig)})])
        """
    )


def test_train_killed_mid_run_keeps_history_time_and_other_commands_results(tmp_path):
    cfg = dict(TRAIN, runs_dir=str(tmp_path), run_name="k")
    killed = train_in_subprocess(cfg, 144 * 2 + 100, signal.SIGKILL)  # in the third rollout
    assert killed.returncode == -signal.SIGKILL
    before = runs.find_checkpoint(tmp_path / "k")
    assert before.step == 288 and before.state["seconds"] > 0 and before.state["history"]
    resumed = marl.main(marl.preset_config(**cfg))
    straight = marl.main(marl.preset_config(**{**cfg, "run_name": "straight"}))
    assert resumed["resumed_from"] == 288 and resumed["num_timesteps"] == straight["num_timesteps"]
    kept = [row for row in straight["return_history"] if row[0] <= 288]
    assert resumed["return_history"][: len(kept)] == kept  # the killed process's history survives
    assert len(resumed["return_history"]) == len(straight["return_history"])
    assert resumed["train_seconds"] > before.state["seconds"]
    ood.main(ood.OODConfig(run=(str(tmp_path / "k"),), counts=(2,), episodes=2, reps=50))
    rerun = marl.main(marl.preset_config(**cfg))  # finished: nothing to train
    saved = json.loads((tmp_path / "k" / "metrics.json").read_text())
    assert "ood_sto_full" in saved and rerun["return_history"] == resumed["return_history"]
    assert rerun["train_seconds"] == resumed["train_seconds"] and rerun["steps_per_second"] > 0


def test_train_stopped_by_sigterm_saves_the_learned_steps(tmp_path):
    cfg = dict(TRAIN, runs_dir=str(tmp_path), run_name="s", checkpoint_every=10_000)
    stopped = train_in_subprocess(cfg, 144 + 50, signal.SIGTERM)  # mid second rollout
    assert stopped.returncode == 130 and "Traceback" not in stopped.stderr
    assert "stopped by SIGTERM; checkpoint at step 144" in stopped.stderr
    assert runs.find_checkpoint(tmp_path / "s").step == 144
    assert marl.main(marl.preset_config(**cfg))["resumed_from"] == 144


# ---------------------------------------------------------------- 6: ood where MOVE_RIGHT scores 0


def test_ood_at_two_agents_and_five_episodes_reports_finite_gains(tmp_path, capsys):
    # seed 2: five starts at L = 2 in which MOVE_RIGHT meets nobody (checked below)
    summary = ood.main(ood.OODConfig(counts=(2,), episodes=5, reps=200, seed=2, out_dir=str(tmp_path)))
    s = summary[2]
    assert s["move_right"]["mean"] == 0.0  # no collision to avoid: no relative gain exists
    for algo, v in s.items():
        values = [v["gain"], *v["ci_gain"]]
        assert np.all(np.isfinite(values)) and max(map(abs, values)) < 100, (algo, v)
        assert v["gain_kind"] == "absolute"
        assert v["gain"] == pytest.approx(v["mean"] - s["move_right"]["mean"])
    assert "gains are absolute differences" in capsys.readouterr().out
    assert "abs [" in (tmp_path / "ood_table.md").read_text()
