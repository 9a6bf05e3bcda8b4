"""benchmarks/two_way_report.py: gains over everyone-forward and the paired difference to the MLP."""

import json

import numpy as np
import pytest


def write_ood(path, returns: dict) -> None:
    """An ood.json (marl-eval layout) holding {L: {algo: (S, E) returns}}."""
    crossing = {
        f"L={L}": {
            algo: {
                f"seed_{s}": {"step_0": {"step_count": 0, "return": row.tolist()}}
                for s, row in enumerate(ret)
            }
            for algo, ret in algos.items()
        }
        for L, algos in returns.items()
    }
    (path / "ood.json").write_text(json.dumps({"crossing": crossing}))


def test_gains_differences_and_table(load_script, tmp_path):
    report_mod = load_script("two_way_report")
    rng = np.random.default_rng(0)
    ref = -2.0 + 0.1 * rng.standard_normal(200)  # everyone-forward, (E,)
    sa = np.stack([ref * 0.5, ref * 0.3])  # two seeds: gains +0.5 and +0.7
    mlp = np.stack([ref * 0.9, ref * 0.9])  # +0.1
    write_ood(tmp_path, {64: {"move_right": ref[None], "sa": sa, "mlp": mlp, "random": 2 * ref[None]}})
    report = report_mod.compare(report_mod.load(tmp_path), reps=500)
    row = report[64]
    assert row["sa"]["per_seed"] == pytest.approx([0.5, 0.7]) and row["sa"]["gain"] == pytest.approx(0.6)
    assert row["mlp"]["gain"] == pytest.approx(0.1) and row["random"]["gain"] == pytest.approx(-1.0)
    assert row["sa"]["vs_mlp"] == pytest.approx(0.5)
    lo, hi = row["sa"]["vs_mlp_ci"]
    assert 0.4 < lo <= 0.5 <= hi < 0.6  # returns proportional to the reference: a narrow paired CI
    assert "vs_mlp" not in row["mlp"]
    text = report_mod.table(report, 24, ["sa", "mlp"])
    assert "64 (unseen)" in text and "**+0.50**" in text


def test_a_variant_joins_only_on_the_same_starts(load_script, tmp_path):
    report_mod = load_script("two_way_report")
    ref = -np.linspace(1.0, 3.0, 50)
    main, same, other = (tmp_path / n for n in ("main", "same", "other"))
    for d in (main, same, other):
        d.mkdir()
    write_ood(main, {8: {"move_right": ref[None], "mlp": ref[None] * 0.5}})
    write_ood(same, {8: {"move_right": ref[None], "sa": ref[None] * 0.25}})
    write_ood(other, {8: {"move_right": ref[None] * 2, "sa": ref[None] * 0.25}})
    returns = report_mod.load(main)
    report_mod.add_variant(returns, "sa_nolabel", report_mod.load(same))
    row = report_mod.compare(returns, reps=100)[8]["sa_nolabel"]
    assert row["gain"] == pytest.approx(0.75) and row["vs_mlp"] == pytest.approx(0.25)
    # a variant is also set against the MLP variant trained alike (sa_6m against mlp_6m)
    report_mod.add_variant(returns, "sa_6m", report_mod.load(same))
    report_mod.add_variant(returns, "mlp_6m", report_mod.load(same))
    report = report_mod.compare(returns, reps=100)
    twin = report[8]
    assert twin["sa_6m"]["vs_twin_mlp"] == pytest.approx(0.0) and twin["sa_6m"]["vs_mlp"] == pytest.approx(
        0.25
    )
    assert "vs_twin_mlp" not in twin["sa_nolabel"] and "vs_twin_mlp" not in twin["mlp_6m"]
    report_mod.figure(report, 4, tmp_path / "f.png", ("sa_6m", "mlp_6m"))
    assert (tmp_path / "f.png").stat().st_size > 0
    with pytest.raises(ValueError, match="not the main output's starts"):
        report_mod.add_variant(report_mod.load(main), "x", report_mod.load(other))


def test_hyper_attention_against_sa_counts_the_seeds_spread(load_script, tmp_path):
    report_mod = load_script("two_way_report")
    rng = np.random.default_rng(1)
    ref = -2.0 + 0.1 * rng.standard_normal(200)
    sa = np.stack([ref * 0.5, ref * 0.3])  # gains +0.5, +0.7
    hfa = np.stack([ref * 0.45, ref * 0.25])  # +0.55, +0.75: 0.05 above SA, seeds 0.2 apart
    ha = np.stack([ref * 0.05, ref * 0.05])  # +0.95, +0.95: above both SA seeds
    write_ood(tmp_path, {32: {"move_right": ref[None], "sa": sa, "hfa": hfa, "ha": ha}})
    row = report_mod.compare(report_mod.load(tmp_path), reps=2000)[32]
    assert row["hfa"]["vs_sa"] == pytest.approx(0.05) and row["ha"]["vs_sa"] == pytest.approx(0.35)
    lo, hi = row["hfa"]["vs_sa_ci"]
    assert lo < 0 < hi and hi - lo > 0.2  # two seeds each 0.2 apart: no claim from 0.05
    assert row["ha"]["vs_sa_ci"][0] > 0.1
    assert "vs_sa" not in row["sa"]
    text = report_mod.versus_sa(report_mod.compare(report_mod.load(tmp_path), reps=200), 24)
    assert (
        text.splitlines()[0] == "| L | hfa - sa | ha - sa |" and "32 (unseen)" in text and "**+0.35**" in text
    )
