"""The console script: a bad value of every command is one line on stderr and exit status 2;
`view` and `lm` edge inputs that used to be ignored or leak exceptions."""

import dataclasses
import json
import re

import pytest
import torch

from training import cli, fit, lm, marl

FIT = dict(
    grid_size=16,
    radius=1,
    train_agents=4,
    num_train=50,
    num_test=10,
    eval_agents=(4,),
    steps=1,
    batch_size=10,
    progress=False,
    figures=False,
)


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"hyperagents {argv[0]}: error: "), err
    return exit_.value.code, lines[0]


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["demo", "--num-agents", "0", "--skip-fit", "--frame-every", "0"], "num_agents"),
        (["fit", "--train-agents", "0"], "train_agents must be >= 1"),
        (["train", "--width", "0"], "width must be an int >= 1"),
        (["train", "--count-power", "-1"], r"count_power must be a number in \[0, 8\], got -1"),
        (["train", "--lane-tokens", "-1"], "lane_tokens must be an int >= 0"),
        (["train", "--start-width-low", "17"], r"start_width_low must be in \[1, start_width=16\], got 17"),
        (
            ["train", "--backend", "rllib", "--start-width-low", "8"],
            "start_width_low needs --backend torchrl",
        ),
        (["train", "--lane-tokens", "4", "--neighbours", "None"], "lane_tokens must be 0 unless"),
        (["train", "--lateral-cost", "-1"], r"lateral_cost must be a finite number >= 0, got -1.0"),
        (["train", "--backend", "rllib", "--lateral-cost", "0.05"], "lateral_cost needs --backend torchrl"),
        (["train", "--backend", "rllib", "--contact-charge", "mover"], "contact_charge needs --backend"),
        (["train", "--sample-fraction", "0"], r"sample_fraction must be a number in \(0, 1\], got 0.0"),
        (["train", "--backend", "sb3", "--sample-fraction", "0.5"], "sample_fraction needs --backend"),
        (["train", "--backend", "sb3", "--advantage-norm", "count"], "advantage_norm needs --backend"),
        (["train", "--two-way", "--features", "touch"], "two_way needs features 'base', 'time' or 'heading'"),
        (["train", "--two-way", "--start-width", "32"], r"two_way needs start_width <= .* = 31, got 32"),
        (["train", "--learning-rate", "-1"], r"learning_rate must be a finite number > 0, got -1.0"),
        (["train", "--gae-lambda", "2"], r"gae_lambda must be a number in \[0, 1\], got 2.0"),
        (["train", "--gamma", "nan"], r"gamma must be a number in \[0, 1\], got nan"),
        (["train", "--clip-range", "0"], r"clip_range must be a finite number > 0, got 0.0"),
        (["train", "--ent-coef-final", "-0.1"], r"ent_coef_final must be a finite number >= 0"),
        (["train", "--vf-coef", "inf"], r"vf_coef must be a finite number >= 0, got inf"),
        (["train", "--neighbours", "0"], "neighbours must be an int >= 1, got 0"),
        (["ood", "--counts", "0", "2"], "counts must be an int >= 1"),
        (["ood", "--reps", "10"], "reps must be an int >= 40, got 10"),
        (["ood", "--chunk", "0"], "chunk must be an int >= 1, got 0"),
        (["ood", "--neighbours", "-1"], "neighbours must be an int >= 1, got -1"),
        (["ood", "--threads", "0"], "threads must be an int >= 1, got 0"),
        (["lm", "--weight-decay", "-1"], r"weight_decay must be a finite number >= 0, got -1.0"),
        (["lm", "--ha-max-seconds", "0"], r"ha_max_seconds must be a finite number > 0, got 0.0"),
        (["fit", "--init-std", "-1"], r"init_std must be a finite number >= 0, got -1.0"),
        (["fit", "--num-alleles", "0"], "num_alleles must be an int >= 1, got 0"),
        (["lm", "--steps", "0"], "steps must be an int >= 1"),
        (["lm", "--device", "tpu9"], "device must be 'auto', 'cpu', 'cuda' or 'cuda:<index>', got 'tpu9'"),
        (["view", "--run", "no/such/run", "--record", "x.gif"], "does not exist"),
        (["view", "--run", "no/such/run", "--record", "x.avi"], r"\.gif or \.mp4"),
    ],
)
def test_a_bad_value_of_each_command_is_one_line_and_exit_2(argv, match, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything a command might write lands here
    code, line = run_cli(argv, capsys)
    assert code == 2
    assert re.search(match, line), line


def test_settings_too_large_for_memory_are_one_line(capsys, tmp_path, monkeypatch):
    # 10^13 worlds of 16 agents: petabytes, past any machine's address space, so the first
    # allocation fails at once
    monkeypatch.chdir(tmp_path)
    argv = [
        "train",
        "--num-worlds",
        str(10**13),
        "--num-agents",
        "16",
        "16",
        "--run-name",
        "big",
        "--no-progress",
    ]
    code, line = run_cli(argv, capsys)
    assert code == 2
    assert re.fullmatch(r".*: not enough memory \(an allocation of [\d.]+ GiB failed\); use fewer .*", line)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_lm_on_cuda_without_cuda_is_one_line(capsys, tmp_path):
    code, line = run_cli(["lm", "--device", "cuda", "--runs-dir", str(tmp_path)], capsys)
    assert code == 2 and "no CUDA GPU" in line and "--device cpu" in line
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def view_runs(tmp_path_factory):
    """A linear SA and a linear HFA fit run, and an lm run, each trained for one step."""
    root = tmp_path_factory.mktemp("runs")
    fit.main(fit.FitConfig(**FIT, runs_dir=str(root), run_name="sa"))
    fit.main(fit.FitConfig(**FIT, attention="hfa", runs_dir=str(root), run_name="hfa"))
    corpus = root / "corpus.txt"
    corpus.write_text("to be or not to be, that is the question. " * 20)
    tiny = dict(width=8, layers=1, heads=2, context=8, batch_size=2, steps=1, eval_windows=2, evals=1)
    lm.main(lm.LMTrainConfig(corpus=str(corpus), runs_dir=str(root), run_name="lm", progress=False, **tiny))
    return root


@pytest.mark.parametrize(
    ("run", "extra", "match"),
    [
        ("sa", ["--num-agents", "0"], r"num_agents must be an int in \[1, 400\], got 0"),
        ("sa", ["--num-agents", "401"], r"num_agents must be an int in \[1, 400\], got 401"),
        ("sa", ["--factor", "3"], "factor picks one of an HFA run's score factors; .* sa-linear run without"),
        ("hfa", ["--factor", "3"], r"factor must be an int in \[1, 2\], got 3"),
        ("sa", ["--seed", "-1"], "seed must be an int >= 0, got -1"),
        ("lm", [], "is a `hyperagents lm` run, not a `hyperagents fit` run"),
    ],
)
def test_view_edge_inputs_are_clear_errors(view_runs, run, extra, match, capsys, tmp_path):
    argv = ["view", "--run", str(view_runs / run), "--record", str(tmp_path / "v.gif"), "--steps", "1"]
    code, line = run_cli([*argv, *extra], capsys)
    assert code == 2
    assert re.search(match, line), line
    assert not (tmp_path / "v.gif").exists()


def test_view_records_a_valid_hfa_factor(view_runs, tmp_path, capsys):
    cli.main(["view", "--run", str(view_runs / "hfa"), "--record", str(tmp_path / "v.gif"), "--steps", "2"])
    cli.main(
        ["view", "--run", str(view_runs / "hfa"), "--factor", "2", "--screenshot", str(tmp_path / "f.png")]
    )
    assert (tmp_path / "v.gif").stat().st_size > 0 and (tmp_path / "f.png").stat().st_size > 0


def test_a_train_preset_sets_the_recipe_and_flags_given_override_it_in_any_position():
    best = cli.parse(["train", "--seed", "3", "--preset", "best", "--learning-rate", "1e-3"])
    assert best.preset == "best" and best.seed == 3 and best.learning_rate == 1e-3  # given: kept
    assert best.features == "touch" and best.imitate_iterations == 16 and best.num_agents == (2, 16)
    gpu = cli.parse(["train", "--preset=gpu"])
    assert (gpu.backend, gpu.device, gpu.num_worlds, gpu.batch_size) == ("torchrl", "cuda", 4096, 16384)
    assert gpu.learning_rate_final == 1e-4 and gpu.ent_coef_final == 0.001 and gpu.neighbours == 7
    assert (gpu.critic, gpu.precision, gpu.n_steps) == ("shared", "bf16", 16)
    scratch = cli.parse(["train", "--preset", "scratch-cpu"])
    assert (scratch.backend, scratch.num_worlds, scratch.batch_size) == ("torchrl", 64, 1024)
    assert (scratch.critic, scratch.precision) == ("shared", "fp32")
    assert scratch.name == "crossing_scratch-cpu__sa__0"
    assert best == marl.preset_config("best", seed=3, learning_rate=1e-3)  # the same in Python


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (
            ["train", "--width", "abc"],
            r"Error parsing --width: invalid literal .* 'abc' \(see hyperagents train --help\)$",
        ),
        (
            ["train", "--preset", "gpu", "--precision", "fp16"],
            r"invalid choice 'fp16' for argument '--precision'",
        ),
        (["train", "--bogus", "1"], "Unrecognized options: --bogus, 1"),
        (["fit", "--steps"], "Missing value for argument '--steps'"),
        (["ood", "--counts", "x"], "Error parsing --counts"),
        (["lm", "--precision", "fp8"], r"Expected one of \('fp32', 'bf16'\)"),
    ],
)
def test_a_flag_tyro_cannot_parse_is_one_line_and_exit_2(argv, match, capsys):
    code, line = run_cli(argv, capsys)
    assert code == 2 and re.search(match, line), line
    assert not set(line) & set("│╭╰─")  # none of the box tyro draws


def test_an_unknown_command_is_one_line_naming_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["trian"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(
        "hyperagents: error: Unrecognized options: trian; Available subcommands: demo,"
    )


def test_help_is_printed_whole_and_exits_0(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "--neighbour-dx-weight" in out and len(out.splitlines()) > 50


def test_an_unknown_train_preset_is_one_line_and_exit_2(capsys):
    code, line = run_cli(["train", "--preset", "fastest"], capsys)
    assert code == 2 and "preset must be one of" in line


def test_a_preset_run_is_recorded_and_resumes_with_the_same_settings_given_as_flags(tmp_path, capsys):
    tiny = ["--num-worlds", "2", "--num-agents", "2", "2", "--n-steps", "8", "--batch-size", "32"]
    common = [*tiny, "--runs-dir", str(tmp_path), "--run-name", "p", "--no-progress"]
    cli.main(["train", "--preset", "scratch-cpu", "--total-timesteps", "32", *common])
    stored = json.loads((tmp_path / "p" / "config.json").read_text())
    assert stored["preset"] == "scratch-cpu" and stored["learning_rate_final"] == 1e-4
    flags = [
        "--backend",
        "torchrl",
        "--critic",
        "shared",
        "--neighbours",
        "7",
        "--learning-rate-final",
        "1e-4",
    ]
    cli.main(["train", *flags, "--ent-coef-final", "0.001", "--total-timesteps", "64", *common])
    cli.main(["train", "--total-timesteps", "96", *common])  # the defaults are the same recipe
    assert json.loads((tmp_path / "p" / "metrics.json").read_text())["resumed_from"] == 64
    code, line = run_cli(["train", "--backend", "sb3", "--total-timesteps", "128", *common], capsys)
    assert code == 2 and 'holds a different run (backend "torchrl" -> "sb3", contact_cost 4.0 -> 1.0' in line
    assert "count_power 1.0 -> 0.0" in line and 'critic "shared" -> "central"' in line
    assert "pass --backend torchrl to resume it" in line


def test_no_flags_train_the_torchrl_recipe_and_a_backend_alone_brings_its_own_defaults(capsys):
    default = cli.parse(["train"])
    assert default == dataclasses.replace(marl.preset_config("scratch-cpu"), preset=None)
    assert (default.backend, default.device, default.name) == ("torchrl", "cpu", "crossing__sa__0")
    sb3 = {"num_agents": (8, 8), "num_worlds": 32, "neighbours": None, "critic": "central"}
    sb3 |= {"learning_rate_final": None, "ent_coef_final": None, "n_steps": 32, "batch_size": 1024}
    sb3 |= {"contact_cost": 1.0}
    for argv in (["--backend", "sb3"], ["--backend=rllib"], ["--preset", "sb3"]):
        cfg = cli.parse(["train", "--seed", "1", *argv, "--num-worlds", "8"])
        assert {k: getattr(cfg, k) for k in sb3} == sb3 | {"num_worlds": 8}, argv  # given: kept
        assert cfg == marl.preset_config(cfg.preset, backend=cfg.backend, seed=1, num_worlds=8)
    assert cli.parse(["train", "--backend", "sb3"]).name == "crossing__sa__0"  # the SB3 runs' name
    recipe = cli.parse(["train", "--preset", "scratch-cpu", "--backend", "sb3"])  # a preset over it
    assert (recipe.backend, recipe.num_worlds, recipe.neighbours, recipe.critic) == ("sb3", 64, 7, "shared")
    code, line = run_cli(["train", "--backend", "jax"], capsys)
    assert code == 2 and "backend must be one of" in line
