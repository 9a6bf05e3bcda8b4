"""``hyperagents fit`` end to end on tiny configurations: learning, resume, figures, bad configs."""

import json

import pytest
import torch

from envs.genotype import make_genotype_dataset, sample_rules
from policies.devised import genotype_target
from training import fit
from training.runs import load_torch as load

TINY = dict(
    grid_size=16,
    radius=1,
    train_agents=6,
    num_train=3000,
    num_test=300,
    eval_agents=(2, 6, 12),
    batch_size=500,
    learning_rate=0.3,
    progress=False,
)


def test_tiny_fit_learns_and_generalises_in_length(tmp_path):
    cfg = fit.FitConfig(**TINY, steps=600, runs_dir=str(tmp_path), run_name="tiny")
    untrained = fit.main(
        fit.FitConfig(**TINY, steps=0, runs_dir=str(tmp_path), run_name="untrained", figures=False)
    )
    m = fit.main(cfg)
    assert m["versatility_rank_ok"] is True
    for L, before in untrained["test_mse"].items():
        assert m["test_mse"][L] < 1e-3 * before, (L, m["test_mse"][L], before)  # orders of magnitude
    assert m["product_mse"] < 1e-4
    saved = json.loads((tmp_path / "tiny" / "metrics.json").read_text())
    assert set(saved) >= {
        "train_mse",
        "test_mse",
        "product_mse",
        "versatility_rank_ok",
        "num_params",
        "seconds",
    }
    for name in ("interaction_matrices.png", "figure1.png", "ood.png", "loss.png", "config.json"):
        assert (tmp_path / "tiny" / name).stat().st_size > 0


def test_resume_continues_from_the_checkpoint(tmp_path):
    kw = dict(TINY, num_train=1000, runs_dir=str(tmp_path), run_name="r", figures=False, checkpoint_every=50)
    fit.main(fit.FitConfig(**kw, steps=100))  # stands for a run interrupted at step 100
    state = load(tmp_path / "r" / "checkpoint.pt")
    assert state["step"] == 100 and state["seconds"][0] > 0
    resumed = fit.main(fit.FitConfig(**kw, steps=200))
    assert resumed["seconds"] > state["seconds"][0]  # the interrupted part's time is counted too
    straight = fit.main(fit.FitConfig(**{**kw, "run_name": "s"}, steps=200, resume=False))
    # The cosine schedule depends on the total steps, so compare a resumed 200-step run with the
    # checkpoint history it continued: no step was lost or repeated.
    hist = load(tmp_path / "r" / "checkpoint.pt")["history"]
    assert sorted(hist) == list(range(1, 201))
    assert straight["steps"] == resumed["steps"] == 200


def test_a_run_stored_under_the_old_flag_names_resumes_and_loads(tmp_path):
    kw = dict(TINY, num_train=500, runs_dir=str(tmp_path), run_name="old", figures=False)
    fit.main(fit.FitConfig(**kw, steps=20))
    path = tmp_path / "old" / "config.json"
    stored = json.loads(path.read_text())
    old_names = {"run_name": "name", "runs_dir": "out_dir", "learning_rate": "lr"}
    path.write_text(json.dumps({old_names.get(k, k): v for k, v in stored.items()}))
    resumed = fit.main(fit.FitConfig(**kw, steps=30))  # same run: accepted, trains the 10 missing steps
    assert resumed["steps"] == 30 and "learning_rate" in json.loads(path.read_text())
    cfg, _ = fit.load_run(tmp_path / "old")
    assert cfg.learning_rate == TINY["learning_rate"] and cfg.run_name == "old"
    path.write_text(json.dumps({old_names.get(k, k): v for k, v in stored.items()}))
    with pytest.raises(ValueError, match="learning_rate 0.3 -> 0.1"):
        fit.main(fit.FitConfig(**{**kw, "learning_rate": 0.1}, steps=30))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(eval_agents=(0, 5)), "eval_agents"),
        (dict(embedding="onehot", dim=10), "dim = domain size"),
        (dict(train_agents=0), "train_agents"),
        (dict(scenario="genotype", num_alleles=10), "num_alleles"),
        (dict(train_agents=5, train_agents_max=3), "train_agents_max"),
        (dict(rank=4, kind="softmax"), "rank needs kind='linear'"),
    ],
)
def test_bad_configs_stop_at_once(kwargs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        fit.main(fit.FitConfig(**{**TINY, **kwargs}, runs_dir=str(tmp_path)))


def test_unknown_scenario_is_rejected_by_the_dataset():
    with pytest.raises(ValueError, match="scenario must be one of"):
        fit.draw(fit.FitConfig(scenario="nope"), 2, 2, 0)  # type: ignore[arg-type]


def test_genotype_targets_agree_between_envs_and_policies():
    rules = sample_rules(15, seed=2)
    tokens, y = make_genotype_dataset(rules, 40, 7, seed=1)
    assert torch.allclose(y, genotype_target(tokens[..., 0], rules.as_dict(), 15))


@pytest.mark.parametrize("attention", ["sa", "sa+ha"])
def test_training_on_a_range_of_agent_counts_pads_and_fits(attention, tmp_path):
    """train_agents..train_agents_max: equal shares of each count, padded, and the loss still falls."""
    kw = dict(
        scenario="alliances",
        grid_size=8,
        radius=1,
        eval_agents=(2, 9),
        attention=attention,
        train_agents=3,
        train_agents_max=6,
        rank=None if attention == "sa" else 12,
        init_std=0.0,
        learning_rate=0.03,
        steps=150,
        runs_dir=str(tmp_path),
        figures=False,
    )
    cfg = fit.FitConfig(**{**TINY, **kw})
    data = fit.draw_train(cfg)
    assert data.tokens.shape[1] == 6 and sorted(set(data.mask.sum(1).tolist())) == [3, 4, 5, 6]
    assert not data.tokens[~data.mask].any()  # padding holds the valid token 0, masked out
    m = fit.main(cfg)
    assert m["versatility_rank_ok"] is None and m["product_mse"] is None
    assert m["train_mse"] < 0.5 * float(data.targets[data.mask].var())


def test_fit_ends_by_printing_where_its_outputs_are(tmp_path, capsys):
    fit.main(
        fit.FitConfig(
            **{**TINY, "num_train": 200}, steps=0, runs_dir=str(tmp_path), run_name="o", figures=False
        )
    )
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert (
        last.startswith(f"outputs: {tmp_path / 'o'}/ (") and "config.json" in last and "metrics.json" in last
    )


@pytest.mark.parametrize(
    "attention, kind, embedding, matrices, learned",
    [
        (
            "hfa",
            "linear",
            "onehot",
            ["learned factor 1", "learned factor 2", "learned product", "devised C.W"],
            1,
        ),
        ("sa", "linear", "sinusoidal", ["learned C", "devised C", "learned C.W", "devised C.W"], 1),
        ("sa", "linear", "onehot", None, 0),  # with a ReLU head: no pair table, no C.W
    ],
)
def test_figures_show_hfa_matrices_and_the_learned_diagonal_where_it_exists(
    attention, kind, embedding, matrices, learned, tmp_path, monkeypatch
):
    from viz import figures

    seen = {}
    for name in ("matrix_panels", "diagonal_plot"):
        real = getattr(figures, name)

        def spy(panels, path, title="", _real=real, _name=name, **kw):
            seen[_name] = (list(panels), title)
            return _real(panels, path, title=title, **kw)

        monkeypatch.setattr(figures, name, spy)
    kw = dict(TINY, num_train=500, runs_dir=str(tmp_path), run_name="f", steps=3)
    mlp = None if learned else 4
    m = fit.main(fit.FitConfig(**kw, attention=attention, kind=kind, embedding=embedding, mlp_hidden=mlp))
    assert (tmp_path / "f" / "figure1.png").stat().st_size > 0
    curves, title = seen["diagonal_plot"]
    if learned:
        assert len(curves) == 2 and curves[1].startswith(f"learned {attention}-{kind}")
    else:
        assert len(curves) == 1 and "learned diagonal not defined: a ReLU layer" in title
    if matrices is None:
        assert "matrices" not in m["figures"] and "matrix_panels" not in seen
    else:
        assert (tmp_path / "f" / "interaction_matrices.png").stat().st_size > 0
        names = seen["matrix_panels"][0]
        assert len(names) == len(matrices)
        assert all(n.startswith(p) for n, p in zip(names, matrices, strict=True))


def test_softmax_sa_fits_and_reports_no_table(tmp_path):
    """Softmax attention has no C.W table: the run finishes and says so instead of failing."""
    cfg = fit.FitConfig(
        **TINY, kind="softmax", steps=20, runs_dir=str(tmp_path), run_name="sm", figures=False
    )
    metrics = fit.main(cfg)
    assert metrics["product_mse"] is None
    assert all(v == v for v in metrics["test_mse"].values())  # finite, not NaN
