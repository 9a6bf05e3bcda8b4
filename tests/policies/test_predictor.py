"""Predictor: padding-aware per-token values, the table fast path, and the learned pair table."""

import pytest
import torch

from policies import (
    AttentionSum,
    FeatureProductEmbedding,
    HyperAttention,
    HyperFeatureAttention,
    LearnedEmbedding,
    OneHotEmbedding,
    Predictor,
    SelfAttention,
    SinusoidalEmbedding,
    circular_window,
    load_linear_sa,
    make_attention,
    one_hot_band,
    sinusoidal_diagonal,
)


def tokens_and_mask(B, L, N, seed=0, features=None):
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, N, (B, L), generator=gen)
    if features is not None:
        labels = [torch.randint(0, s, (B, L, 1), generator=gen) for s in features]
        tokens = torch.cat(labels + [tokens[..., None]], -1)
    mask = torch.rand(B, L, generator=gen) > 0.3
    mask[:, 0] = True
    return tokens, mask


EMBEDDINGS = {
    "onehot": lambda: OneHotEmbedding(10),
    "sinusoidal": lambda: SinusoidalEmbedding(10),
    "learned": lambda: LearnedEmbedding(10, 6),
    "labelled": lambda: FeatureProductEmbedding([2, 3], SinusoidalEmbedding(10, normalized=True)),
}


@pytest.mark.parametrize("name", list(EMBEDDINGS))
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("heads,mlp", [(1, None), (2, None), (2, 5)])
def test_forward_table_equals_forward(name, causal, heads, mlp):
    torch.manual_seed(0)
    emb = EMBEDDINGS[name]()
    att = SelfAttention(
        dim=emb.dim, heads=heads, kind="linear", causal=causal, out_dim=1 if mlp is None else 3
    )
    model = Predictor(emb, att, mlp_hidden=mlp).double()
    tokens, mask = tokens_and_mask(4, 9, 10, features=[2, 3] if name == "labelled" else None)
    torch.testing.assert_close(model.forward_table(tokens, mask), model(tokens, mask), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("embedding", ["onehot", "sinusoidal"])
def test_pair_table_of_devised_parameters_is_minus_the_window(embedding):
    N, R = 40, 2
    emb = OneHotEmbedding(N) if embedding == "onehot" else SinusoidalEmbedding(N)
    C, W = one_hot_band(N, R) if embedding == "onehot" else sinusoidal_diagonal(N, R)
    model = Predictor(
        emb, load_linear_sa(SelfAttention(dim=N, kind="linear", out_dim=1).double(), C, W)
    ).double()
    torch.testing.assert_close(model.pair_table(), -circular_window(N, R), rtol=0, atol=1e-12)


def test_pair_table_gives_every_output():
    torch.manual_seed(1)
    model = Predictor(
        LearnedEmbedding(7, 4), SelfAttention(dim=4, heads=3, kind="linear", out_dim=1)
    ).double()
    G = model.pair_table()
    tokens = torch.tensor([[3, 0, 6, 3]])
    torch.testing.assert_close(model(tokens)[0], G[tokens[0]][:, tokens[0]].sum(1))


@pytest.mark.parametrize(
    "att",
    [
        lambda d: SelfAttention(dim=d, heads=2, kind="softmax", out_dim=1),
        lambda d: HyperFeatureAttention(dim=d, heads=1, factors=2, kind="softmax", out_dim=1),
        lambda d: HyperAttention(dim=d, heads=2, order=3, kind="linear", out_dim=1),
        lambda d: make_attention("ha", dim=d, order=4, heads=2, kind="softmax", out_dim=4),
    ],
)
def test_any_attention_padding_aware(att):
    torch.manual_seed(2)
    emb = SinusoidalEmbedding(10, normalized=True)
    module = att(emb.dim)
    model = Predictor(emb, module, mlp_hidden=None if module.out_dim == 1 else 8).double()
    tokens, mask = tokens_and_mask(3, 6, 10)
    out = model(tokens, mask)
    assert out.shape == (3, 6) and torch.all(out[~mask] == 0)
    garbage = tokens.masked_fill(~mask, -7)  # padded tokens may hold anything, even invalid ids
    torch.testing.assert_close(model(garbage, mask), out)
    for b in range(3):  # each row alone, without its padding, predicts the same values
        keep = mask[b]
        torch.testing.assert_close(model(tokens[b : b + 1, keep])[0], out[b, keep])


def test_bad_predictor_args():
    emb = OneHotEmbedding(6)
    with pytest.raises(ValueError, match="out_dim must be 1"):
        Predictor(emb, SelfAttention(dim=6, kind="linear"))
    with pytest.raises(ValueError, match="attention.dim must equal embedding.dim=6"):
        Predictor(emb, SelfAttention(dim=8, kind="linear", out_dim=1))
    with pytest.raises(TypeError, match="embedding must be a TokenEmbedding"):
        Predictor(torch.nn.Identity(), SelfAttention(dim=6, out_dim=1))
    model = Predictor(emb, SelfAttention(dim=6, kind="softmax", out_dim=1))
    with pytest.raises(TypeError, match="tables need linear attention"):
        model.pair_table()
    with pytest.raises(ValueError, match=r"mask must be a bool tensor of shape \(B, L\) = \(1, 3\)"):
        model(torch.tensor([[0, 1, 2]]), torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        model(torch.tensor([[0, 1, 6]]))


@pytest.mark.parametrize("name", list(EMBEDDINGS))
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("family", ["sa", "hfa", "ha", "sa+ha"])
@pytest.mark.parametrize("rank", [None, 3])
def test_table_path_of_every_linear_family_equals_forward(name, causal, family, rank):
    """Tables of SA, HFA, order-3 HA and their sum, full or low-rank, gathered == the module's forward."""
    torch.manual_seed(0)
    emb = EMBEDDINGS[name]()
    att = make_attention(family, dim=emb.dim, heads=2, kind="linear", causal=causal, out_dim=1, rank=rank)
    model = Predictor(emb, att).double()
    tokens, mask = tokens_and_mask(4, 7, 10, features=[2, 3] if name == "labelled" else None)
    torch.testing.assert_close(model.forward_table(tokens, mask), model(tokens, mask), rtol=1e-10, atol=1e-10)
    orders = [G.dim() for G in model.tables()]
    assert orders == {"sa": [2], "hfa": [2], "ha": [3], "sa+ha": [2, 3]}[family]


@pytest.mark.parametrize("family", ["sa", "hfa"])
def test_low_rank_linear_equals_reference_with_C_from_its_factors(family):
    """C = W_Q W_K^T, computed here by hand, through the paper's einsum; ranks r < d really are rank r."""
    from policies.hfa import linear_hfa_reference
    from policies.sa import linear_sa_reference

    torch.manual_seed(2)
    att = make_attention(family, dim=8, heads=2, factors=3, kind="linear", out_dim=2, rank=3).double()
    x = torch.randn(5, 6, 8, dtype=torch.float64)
    mask = torch.rand(5, 6) < 0.8
    C = torch.einsum("...dr,...er->...de", att.W_Q, att.W_K)
    ok = mask[:, :, None] & mask[:, None, :]
    ref = (linear_sa_reference if family == "sa" else linear_hfa_reference)(
        x * mask[..., None], C, att.W_V, ok
    )[0]
    torch.testing.assert_close(att(x, mask) * mask[..., None], ref * mask[..., None])
    assert int(torch.linalg.matrix_rank(att.interaction()).max()) == 3
    assert not hasattr(att, "C")


def test_rank_and_attention_sum_errors():
    with pytest.raises(ValueError, match="rank needs kind='linear'"):
        make_attention("sa", dim=4, kind="softmax", rank=2)
    with pytest.raises(ValueError, match="rank must be an int >= 1"):
        make_attention("hfa", dim=4, kind="linear", rank=0)
    with pytest.raises(TypeError, match="rank must be an int"):
        make_attention("ha", dim=4, kind="linear", rank=2.5)
    with pytest.raises(ValueError, match="share dim, out_dim and causal"):
        AttentionSum(SelfAttention(dim=4, kind="linear"), SelfAttention(dim=6, kind="linear"))
    with pytest.raises(ValueError, match="at least one"):
        AttentionSum()
