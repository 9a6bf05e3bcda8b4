"""Embeddings (the paper's exact p(n)) and the devised parameters, checked against closed forms."""

import math

import numpy as np
import pytest
import torch

from policies import (
    FeatureProductEmbedding,
    LearnedEmbedding,
    OneHotEmbedding,
    Predictor,
    SelfAttention,
    SinusoidalEmbedding,
    change_embedding,
    circular_window,
    genotype_parameters,
    genotype_target,
    load_linear_sa,
    make_embedding,
    one_hot_band,
    sinusoidal_diagonal,
)
from policies.embeddings import sinusoidal_table

N, R = 360, 5

# ---------------------------------------------------------------- embeddings


@pytest.mark.parametrize("n_tokens", [2, 8, 360])
def test_sinusoidal_rows_are_orthogonal(n_tokens):
    P = sinusoidal_table(n_tokens)
    torch.testing.assert_close(P @ P.T, (n_tokens / 2) * torch.eye(n_tokens, dtype=torch.float64))
    Pn = sinusoidal_table(n_tokens, normalized=True)
    torch.testing.assert_close(Pn @ Pn.T, torch.eye(n_tokens, dtype=torch.float64))


def test_sinusoidal_slots_follow_the_paper():
    P = sinusoidal_table(12)
    n = torch.arange(12, dtype=torch.float64)
    torch.testing.assert_close(P[:, 0], torch.full((12,), 1 / math.sqrt(2), dtype=torch.float64))
    torch.testing.assert_close(P[:, 1], torch.sin(2 * math.pi * 1 * n / 12))
    torch.testing.assert_close(P[:, 2], torch.cos(2 * math.pi * 1 * n / 12))
    torch.testing.assert_close(P[:, 9], torch.sin(2 * math.pi * 5 * n / 12))
    torch.testing.assert_close(P[:, 10], torch.cos(2 * math.pi * 5 * n / 12))
    torch.testing.assert_close(P[:, 11], torch.cos(math.pi * n) / math.sqrt(2))


def test_embeddings_look_up_their_tables():
    tokens = torch.tensor([[0, 5, 5, 7]])
    for emb in (
        OneHotEmbedding(8),
        SinusoidalEmbedding(8),
        SinusoidalEmbedding(8, normalized=True),
        LearnedEmbedding(8, 3),
    ):
        out = emb(tokens)
        assert out.shape == (1, 4, emb.dim)
        torch.testing.assert_close(out[0], emb.table()[tokens[0]])
    assert torch.equal(OneHotEmbedding(8)(tokens)[0, 1], torch.eye(8)[5])
    assert SinusoidalEmbedding(8).double().table().dtype == torch.float64


def test_feature_product_embedding_kron_and_concat():
    pos = SinusoidalEmbedding(6, normalized=True)
    kron = FeatureProductEmbedding([2, 3], pos, mode="kron")
    cat = FeatureProductEmbedding([2, 3], pos, mode="concat")
    tokens = torch.tensor([[[1, 2, 4], [0, 2, 4], [1, 2, 1]]])
    z = kron(tokens)[0]
    assert kron.dim == 36 and cat.dim == 11 and kron.num_tokens == 36
    # kron of one-hots: inner products factor into label equality x position inner product
    gram = z @ z.T
    assert gram[0, 1] == 0 and torch.isclose(gram[0, 2], pos.table()[4] @ pos.table()[1])
    torch.testing.assert_close(z[0].view(2, 3, 6)[1, 2], pos.table()[4])
    c = cat(tokens)[0]
    torch.testing.assert_close(c[0], torch.cat([torch.tensor([0.0, 1, 0, 0, 1]), pos.table()[4]]))
    table = kron.table()
    torch.testing.assert_close(table[kron.index(tokens)][0], z)
    assert make_embedding("onehot", (2, 3, 6)).dim == 36


@pytest.mark.parametrize(
    "make,tokens,error,words",
    [
        (lambda: OneHotEmbedding(5), torch.tensor([[0, 5]]), ValueError, "[0, 5)"),
        (lambda: OneHotEmbedding(5), torch.tensor([[-1, 2]]), ValueError, "[0, 5)"),
        (lambda: OneHotEmbedding(5), torch.tensor([[0.0, 1.0]]), TypeError, "integer"),
        (lambda: OneHotEmbedding(5), torch.tensor([0, 1]), ValueError, "(B, L)"),
        (
            lambda: FeatureProductEmbedding([2], OneHotEmbedding(5)),
            torch.tensor([[[2, 0]]]),
            ValueError,
            "[0, 2)",
        ),
        (lambda: FeatureProductEmbedding([2], OneHotEmbedding(5)), torch.tensor([[1, 0]]), ValueError, "F=2"),
    ],
)
def test_bad_tokens(make, tokens, error, words):
    with pytest.raises(error) as info:
        make()(tokens)
    assert words in str(info.value)


def test_bad_embedding_args():
    with pytest.raises(ValueError, match="even"):
        SinusoidalEmbedding(7)
    with pytest.raises(ValueError, match="mode"):
        FeatureProductEmbedding([2], OneHotEmbedding(3), mode="sum")
    with pytest.raises(ValueError, match="name"):
        make_embedding("fourier", 8)


# ---------------------------------------------------------------- devised: colliding agents


def test_sinusoidal_diagonal_matches_figure_1():
    C, W = sinusoidal_diagonal(N, R)
    diag = C.diagonal()
    assert round(float(diag[0]), 4) == 0.1167
    np.testing.assert_allclose(
        diag[:7].numpy(), [0.1167, 0.1160, 0.1160, 0.1141, 0.1141, 0.1109, 0.1109], atol=5e-5
    )
    assert int(diag.argmin()) == 49 and round(float(diag.min()), 4) == -0.0254
    assert torch.count_nonzero(C - torch.diag(diag)) == 0


@pytest.mark.parametrize("normalized", [False, True])
def test_sinusoidal_parameters_reproduce_the_window(normalized):
    P = sinusoidal_table(N, normalized)
    C, W = sinusoidal_diagonal(N, R, normalized)
    torch.testing.assert_close(P @ C @ P.T, circular_window(N, R), rtol=0, atol=1e-12)
    torch.testing.assert_close(P @ W, -torch.ones(N, 1, dtype=torch.float64), rtol=0, atol=1e-12)


def test_last_sinusoidal_slot_is_the_nyquist_dtfs_coefficient():
    """C_{N-1,N-1} = 2 F[N/2] with F the window's DTFS, computed directly by a sum over shifts."""
    for n_pos, r in [(360, 5), (20, 2), (12, 1)]:
        shifts = torch.arange(n_pos)
        f = (torch.minimum(shifts, n_pos - shifts) <= 2 * r).double()
        F_nyquist = (f * torch.cos(math.pi * shifts)).sum() / n_pos
        C, _ = sinusoidal_diagonal(n_pos, r)
        torch.testing.assert_close(C[-1, -1], 2 * F_nyquist)


def test_change_embedding_carries_the_band_to_the_diagonal():
    C1, W1 = one_hot_band(N, R)
    for normalized in (False, True):
        C, W = change_embedding(C1, W1, torch.eye(N, dtype=torch.float64), sinusoidal_table(N, normalized))
        C_ref, W_ref = sinusoidal_diagonal(N, R, normalized)
        torch.testing.assert_close(C, C_ref, rtol=0, atol=1e-10)
        torch.testing.assert_close(W, W_ref, rtol=0, atol=1e-10)


def collision_target(y: np.ndarray) -> np.ndarray:
    """V_i = -#{j, i included : circular |y_i - y_j| <= 2R}, straight from the definition."""
    gap = np.abs(y[:, :, None] - y[:, None, :])
    return -(np.minimum(gap, N - gap) <= 2 * R).sum(-1)


@pytest.mark.parametrize("embedding", ["onehot", "sinusoidal", "sinusoidal_normalized"])
def test_devised_parameters_give_collision_targets_for_every_length(embedding):
    emb = make_embedding(embedding, N)
    if embedding == "onehot":
        C, W = one_hot_band(N, R)
    else:
        C, W = sinusoidal_diagonal(N, R, normalized=embedding.endswith("normalized"))
    attention = load_linear_sa(SelfAttention(dim=N, kind="linear", out_dim=1).double(), C, W)
    model = Predictor(emb, attention).double()
    rng = np.random.default_rng(0)
    for L in range(1, 61):
        y = rng.integers(0, N, size=(4, L))
        y[:, -1] = y[:, 0]  # repeats: agents may share a cell
        pred = model(torch.from_numpy(y))
        np.testing.assert_allclose(pred.detach().numpy(), collision_target(y), rtol=0, atol=1e-9)


# ---------------------------------------------------------------- devised: genotype-phenotype


def test_genotype_parameters_match_the_papers_example():
    C, W = genotype_parameters({1: [3], 2: [], 4: [2]}, num_alleles=5, train_length=4)
    expected = torch.zeros(5, 5, dtype=torch.float64)
    expected[1, 3], expected[2, :], expected[4, 2] = 1, 1 / 4, 1
    assert torch.equal(C, expected) and torch.equal(W, torch.ones(5, 1, dtype=torch.float64))


def test_genotype_construction_outputs_the_target_at_train_length():
    n_alleles, L_star = 30, 8
    rng = np.random.default_rng(1)
    rules = {}
    for mu in range(n_alleles):
        u = rng.random()
        if u < 0.2:
            rules[mu] = []  # always active
        elif u < 0.8:
            rules[mu] = sorted(rng.choice(n_alleles, size=rng.integers(1, 4), replace=False).tolist())
        # else: junk (absent)
    tokens = torch.from_numpy(np.stack([rng.permutation(n_alleles)[:L_star] for _ in range(64)]))
    C, W = genotype_parameters(rules, n_alleles, L_star)
    model = Predictor(
        OneHotEmbedding(n_alleles),
        load_linear_sa(SelfAttention(dim=n_alleles, kind="linear", out_dim=1).double(), C, W),
    ).double()
    target = genotype_target(tokens, rules, n_alleles)
    torch.testing.assert_close(model(tokens), target, rtol=0, atol=1e-12)
    # by hand for one token: fraction of its activators present, or 1 if always active
    t0 = int(tokens[0, 0])
    hand = (
        1.0 if rules.get(t0) == [] else (np.isin(rules[t0], tokens[0].numpy()).mean() if t0 in rules else 0.0)
    )
    assert math.isclose(float(target[0, 0]), hand)
    # at another length the always-active rows give L / L*: the paper's generalisation failure
    short = tokens[:, :4]
    always = torch.tensor([rules.get(int(t)) == [] for t in short.flatten()]).view(short.shape)
    gap = model(short) - genotype_target(short, rules, n_alleles)
    torch.testing.assert_close(gap[always], torch.full_like(gap[always], 4 / L_star - 1))
    assert torch.all(gap[~always].abs() < 1e-12)


def test_genotype_target_ignores_padding():
    rules = {0: [1, 2], 1: [], 3: [0]}
    tokens = torch.tensor([[0, 1, 2, -1], [0, 1, 3, 2]])
    mask = torch.tensor([[True, True, True, False], [True, True, False, True]])
    target = genotype_target(tokens, rules, 4, mask)
    expected = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(target, expected)
    with pytest.raises(ValueError, match="activators"):
        genotype_parameters({0: [7]}, 4, 3)
