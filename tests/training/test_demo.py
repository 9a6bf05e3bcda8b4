"""``hyperagents demo`` end to end on a small world: closed form, GIFs, predictor, overlay."""

import numpy as np

from training.cli import main as cli_main
from training.demo import DemoConfig, main


def test_demo_simulation_matches_closed_form_and_writes_gif(tmp_path, capsys):
    out = main(DemoConfig(num_agents=6, grid_size=40, radius=2, runs_dir=str(tmp_path), skip_fit=True))
    np.testing.assert_array_equal(out["returns"], out["closed_form"])
    assert out["gif"].exists() and out["gif"].stat().st_size > 0
    assert "all returns equal the closed form: True" in capsys.readouterr().out


def test_demo_trains_the_predictor_and_writes_the_overlay(tmp_path, capsys):
    cli_main(
        [
            "demo",
            "--num-agents",
            "6",
            "--grid-size",
            "24",
            "--radius",
            "1",
            "--fit-train",
            "2000",
            "--fit-steps",
            "150",
            "--frame-every",
            "6",
            "--runs-dir",
            str(tmp_path),
        ]
    )
    text = capsys.readouterr().out
    assert "agents L" in text and "overlay GIF" in text
    assert (tmp_path / "demo" / "overlay.gif").stat().st_size > 0
    assert (tmp_path / "demo_predictor" / "metrics.json").exists()
