"""Predictor datasets: exact targets, the versatility check, and the genotype task."""

import pytest
import torch

from envs.datasets import count_vectors, make_dataset, sample_positions, versatility_ranks, versatility_report
from envs.genotype import ALWAYS, JUNK, make_genotype_dataset, phenotype, sample_rules
from envs.scenarios import rollout_returns


@pytest.mark.parametrize("scenario", ["pairwise", "alliances", "predator_prey"])
def test_targets_are_the_simulated_returns(scenario):
    d = make_dataset(scenario, 40, 6, grid_size=30, radius=2, seed=3, self_term=False)
    labels = d.tokens[..., :-1] if scenario == "alliances" else d.tokens[..., :2]
    labels = labels if scenario != "pairwise" else None
    sim = rollout_returns(scenario, d.positions, labels, grid_size=30, radius=2)
    assert torch.equal(d.targets, sim)
    with_self = make_dataset(scenario, 40, 6, grid_size=30, radius=2, seed=3)
    self_value = {"pairwise": -1.0, "predator_prey": 0.0, "alliances": -2.0}[scenario]
    assert torch.equal(with_self.targets, sim + self_value)  # the paper's Eq. 9 for pairwise


def test_token_layout_and_domains():
    assert make_dataset("pairwise", 5, 3, grid_size=30, radius=2).domain == (30,)
    d = make_dataset("predator_prey", 5, 3, grid_size=30, radius=2)
    assert d.domain == (2, 2, 30, 30) and d.tokens.shape == (5, 3, 4)
    assert (d.tokens < torch.tensor(d.domain)).all()


def test_unique_positions_have_no_repeated_y():
    pos = sample_positions(torch.Generator().manual_seed(0), 200, 15, 20, unique=True)
    assert all(len(set(row.tolist())) == 15 for row in pos[..., 1])
    with pytest.raises(ValueError, match="num_agents <= grid_size"):
        sample_positions(torch.Generator(), 2, 21, 20, unique=True)


def test_versatility_holds_for_iid_positions_and_fails_without_repeats():
    iid = make_dataset("pairwise", 3000, 6, grid_size=24, radius=1, seed=0)
    unique = make_dataset("pairwise", 3000, 6, grid_size=24, radius=1, seed=0, unique=True)
    assert versatility_report(iid.tokens[..., 0], 24)["ok"]
    rep = versatility_report(unique.tokens[..., 0], 24)
    assert not rep["ok"] and rep["deficient_elements"] == 24
    # Remark D.3: with every row summing to L, the mu column (all ones) is sum(columns) / L: rank N - 1.
    assert (versatility_ranks(unique.tokens[..., 0], 24, max_rows=10_000) == 23).all()


def test_versatility_ranks_match_numpy_style_rank():
    tokens = make_dataset("pairwise", 200, 3, grid_size=9, radius=1, seed=5).tokens[..., 0]
    S = count_vectors(tokens, 9)
    want = [int(torch.linalg.matrix_rank(S[S[:, m] > 0])) for m in range(9)]
    assert versatility_ranks(tokens, 9, max_rows=10_000).tolist() == want


def test_bad_dataset_arguments():
    with pytest.raises(ValueError, match="scenario must be one of"):
        make_dataset("nope", 5, 3)
    with pytest.raises(ValueError, match="num must be >= 1"):
        make_dataset("pairwise", 0, 3)
    with pytest.raises(ValueError, match="num_agents"):
        make_dataset("pairwise", 5, 0)


def test_genotype_phenotype_rules():
    rules = sample_rules(12, seed=1)
    tokens, y = make_genotype_dataset(rules, 50, 8, seed=2)
    assert all(len(set(r.tolist())) == 8 for r in tokens[..., 0])
    kind = rules.kind[tokens[..., 0]]
    assert (y[kind == ALWAYS] == 1).all() and (y[kind == JUNK] == 0).all()
    assert ((y >= 0) & (y <= 1)).all()
    # one hand-checked case: allele a activated by b and c; only b present -> 1/2
    a = int(torch.nonzero(rules.activates.sum(-1) == 2)[0, 0])
    acts = torch.nonzero(rules.activates[a]).flatten().tolist()
    others = [v for v in range(12) if v not in acts and v != a]
    val = phenotype(rules, torch.tensor([[a, acts[0], others[0]]]))
    assert val[0, 0].item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="length must lie in"):
        make_genotype_dataset(rules, 5, 13)
