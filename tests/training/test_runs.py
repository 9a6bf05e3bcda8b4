"""training/runs.py on its own: names, manifests, the lock, checkpoints, metrics, signals."""

import json
import os
import signal

import pytest

from training import runs

MANIFEST = {"command": "fit", "seed": 0, "grid_size": 16, "steps": 10}


def write_bytes(data: bytes):
    return lambda path: path.write_bytes(data)


@pytest.mark.parametrize("name", ["..", ".", "", "../x", "a/b", "/abs", "a\\b"])
def test_names_that_are_not_one_folder_are_refused_before_anything_is_written(tmp_path, name):
    runs_dir = tmp_path / "runs"
    with pytest.raises(ValueError, match="run_name must be"):
        runs.open_run(runs_dir, name, MANIFEST, name_flag="run_name")
    assert list(tmp_path.iterdir()) == []


def test_a_different_manifest_is_refused_before_writing_and_may_change_fields_are_allowed(tmp_path):
    with runs.open_run(tmp_path, "r", MANIFEST) as run:
        run.save_checkpoint(write_bytes(b"a"), 10)
    before = {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()}
    with pytest.raises(ValueError, match=r"seed 0 -> 3.*grid_size|grid_size 16 -> 20.*seed") as err:
        runs.open_run(tmp_path, "r", {**MANIFEST, "seed": 3, "grid_size": 20})
    assert "\n" not in str(err.value) and "--overwrite" in str(err.value)
    assert {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()} == before
    with runs.open_run(tmp_path, "r", {**MANIFEST, "steps": 20}, may_change=("steps",)) as run:
        assert run.resumed and run.checkpoint.step == 10
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["steps"] == 20 and config["changes"] == [{"steps": [10, 20]}]


def test_a_field_the_stored_run_predates_compares_with_its_default(tmp_path):
    with runs.open_run(tmp_path, "r", MANIFEST) as run:
        run.save_checkpoint(write_bytes(b"a"), 1)
    with runs.open_run(tmp_path, "r", {**MANIFEST, "backend": "sb3"}, defaults={"backend": "sb3"}) as run:
        assert run.resumed
    config = tmp_path / "r" / "config.json"
    config.write_text(json.dumps(MANIFEST))  # as a run made before the field existed
    with pytest.raises(ValueError, match="backend"):
        runs.open_run(tmp_path, "r", {**MANIFEST, "backend": "torchrl"}, defaults={"backend": "sb3"})


def test_the_refusal_names_every_differing_field_and_the_flags_that_resume(tmp_path):
    with runs.open_run(tmp_path, "r", MANIFEST) as run:
        run.save_checkpoint(write_bytes(b"a"), 1)
    other = {**MANIFEST, "seed": 1, "grid_size": 8, "steps": 5, "a": 1, "b": 2, "c": 3}
    with pytest.raises(ValueError) as err:
        runs.open_run(tmp_path, "r", other, name_flag="run-name", resume_flags=lambda stored: "--seed 0")
    line = str(err.value)
    assert "\n" not in line and "grid_size 16 -> 8 (+2 more: seed, steps));" in line, line  # sorted
    resume = "pass --seed 0 to resume it, another --run-name to start a new run, or --overwrite"
    assert line.endswith(f"{resume} to replace this one")
    with pytest.raises(ValueError, match="; pass another --run-name to start a new run, or --overwrite"):
        runs.open_run(tmp_path, "r", other, name_flag="run-name", resume_flags=lambda stored: "")


def test_checkpoint_or_stop_saves_every_so_often_and_on_a_stop(tmp_path, capsys):
    with runs.open_run(tmp_path, "r", MANIFEST) as run:
        saved = []

        def save(step):
            run.save_checkpoint(write_bytes(b"x"), step)
            saved.append(step)

        for step in (4, 8, 12, 16, 20):
            run.checkpoint_or_stop(step, 10, lambda step=step: save(step))
        assert saved == [12] and run.saved_step == 12
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(SystemExit) as exit_:
            run.checkpoint_or_stop(14, 10, lambda: save(14))  # due only because of the stop
    assert exit_.value.code == 130 and saved == [12, 14]
    assert "stopped by SIGINT; checkpoint at step 14" in capsys.readouterr().err
    with runs.open_run(tmp_path, "r", MANIFEST) as run:
        assert run.saved_step == 14  # a resumed run counts from its checkpoint


def test_overwrite_wipes_the_run(tmp_path):
    with runs.open_run(tmp_path, "r", MANIFEST) as run:
        run.save_checkpoint(write_bytes(b"a"), 1)
        run.update_metrics({"x": 1})
    with runs.open_run(tmp_path, "r", {**MANIFEST, "seed": 5}, overwrite=True) as run:
        assert not run.resumed and run.read_metrics() == {}
    assert json.loads((tmp_path / "r" / "config.json").read_text())["seed"] == 5


def test_an_attempt_that_left_no_checkpoint_or_metric_is_replaced(tmp_path):
    runs.open_run(tmp_path, "r", MANIFEST).close()  # crashed before its first checkpoint
    with runs.open_run(tmp_path, "r", {**MANIFEST, "seed": 1}) as run:
        assert not run.resumed
    assert json.loads((tmp_path / "r" / "config.json").read_text())["seed"] == 1


def test_the_lock_refuses_a_second_opener_until_the_first_closes(tmp_path):
    # Another process's attempt is in test_run_integrity.py; flock also separates two opens here.
    with runs.open_run(tmp_path, "r", MANIFEST):
        with pytest.raises(runs.RunError, match=f"in use by another process \\(pid {os.getpid()}\\)"):
            runs.open_run(tmp_path, "r", MANIFEST)
    runs.open_run(tmp_path, "r", MANIFEST).close()  # released on exit


def test_temp_files_are_unique_per_process_and_call(tmp_path):
    names = {runs.tmp_path(tmp_path / "checkpoint.zip").name for _ in range(20)}
    assert len(names) == 20 and all(f".{os.getpid()}." in n and n.endswith(".zip") for n in names)


def test_the_last_two_checkpoints_are_kept_with_their_digests(tmp_path):
    with runs.open_run(tmp_path, "r", MANIFEST, suffix=".zip") as run:
        for step in (1, 2, 3):
            run.save_checkpoint(write_bytes(f"state {step}".encode()), step, {"seconds": step})
    folder = tmp_path / "r"
    assert (folder / "checkpoint.zip").read_bytes() == b"state 3"
    assert (folder / "checkpoint.prev.zip").read_bytes() == b"state 2"
    index = json.loads((folder / "checkpoints.json").read_text())["checkpoints"]
    assert [(e["step"], e["state"]) for e in index] == [(3, {"seconds": 3}), (2, {"seconds": 2})]
    assert index[0]["sha256"] == runs.sha256(folder / "checkpoint.zip")
    assert sorted(p.name for p in folder.iterdir() if "tmp" in p.name) == []


def test_a_truncated_latest_checkpoint_falls_back_with_a_warning_and_none_valid_is_an_error(tmp_path):
    with runs.open_run(tmp_path, "r", MANIFEST) as run:
        run.save_checkpoint(write_bytes(b"x" * 100), 1)
        run.save_checkpoint(write_bytes(b"y" * 100), 2)
    latest = tmp_path / "r" / "checkpoint.pt"
    latest.write_bytes(latest.read_bytes()[:40])
    with pytest.warns(
        UserWarning, match=r"step 2\) is missing or corrupt; resuming from the previous one \(step 1"
    ):
        with runs.open_run(tmp_path, "r", MANIFEST) as run:
            assert run.checkpoint.step == 1 and run.checkpoint.path.read_bytes() == b"x" * 100
            run.save_checkpoint(write_bytes(b"z"), 2)  # the good one is kept as the previous
    assert (tmp_path / "r" / "checkpoint.prev.pt").read_bytes() == b"x" * 100
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (tmp_path / "r" / name).write_bytes(b"")
    with pytest.raises(runs.RunError, match="no valid checkpoint"):
        runs.open_run(tmp_path, "r", MANIFEST)


def test_metrics_are_merged_never_rebuilt(tmp_path):
    with runs.open_run(tmp_path, "r", MANIFEST) as run:
        run.update_metrics({"a": 1, "b": {"x": 1}})
        runs.merge_metrics(run.path, {"ood_det_full": {"2": 0.5}})  # another command's result
        merged = run.update_metrics({"b": {"y": 2}})
        assert merged == {"a": 1, "b": {"y": 2}, "ood_det_full": {"2": 0.5}}
        run.append_history("h", [[1, 0.1], [2, 0.2], [3, 0.3]])
        # A resume from step 2's checkpoint redoes step 3: its row is replaced, not doubled.
        assert run.append_history("h", [[3, 0.33], [4, 0.4]])["h"] == [
            [1, 0.1],
            [2, 0.2],
            [3, 0.33],
            [4, 0.4],
        ]


def test_a_signal_sets_stop_requested_and_exit_interrupted_says_so_in_one_line(tmp_path, capsys):
    before = signal.getsignal(signal.SIGTERM)  # not always SIG_DFL: ray.init in this process sets its own
    with runs.open_run(tmp_path, "r", MANIFEST) as run:
        os.kill(os.getpid(), signal.SIGTERM)
        assert run.stop_requested == "SIGTERM"
        with pytest.raises(SystemExit) as exit_:
            run.exit_interrupted(7)
    assert exit_.value.code == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stopped by SIGTERM; checkpoint at step 7" in err
    assert signal.getsignal(signal.SIGTERM) is before  # restored on close
