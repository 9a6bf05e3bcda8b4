"""Properties every attention module must have: reference equality, causality, permutation
equivariance, padding invariance, score records, gradients, argument validation."""

import pytest
import torch

from policies import AttentionScores, HyperAttention, HyperFeatureAttention, SelfAttention

D = 12  # divisible by heads * factors below
# (name, constructor, kwargs); every module is built with kind and causal on top of these.
VARIANTS = [
    ("sa", SelfAttention, dict(heads=2)),
    ("sa-h3-scalar", SelfAttention, dict(heads=3, out_dim=1)),
    ("hfa-A1", HyperFeatureAttention, dict(heads=2, factors=1)),
    ("hfa-A2", HyperFeatureAttention, dict(heads=2, factors=2)),
    ("hfa-A3", HyperFeatureAttention, dict(heads=1, factors=3, out_dim=5)),
    ("ha-n2", HyperAttention, dict(heads=2, order=2)),
    ("ha-n3", HyperAttention, dict(heads=2, order=3)),
    ("ha-n3-shared", HyperAttention, dict(heads=3, order=3, share_kv=True)),
    ("ha-n4", HyperAttention, dict(heads=1, order=4, out_dim=3)),
]
KINDS = ["linear", "softmax"]


def build(ctor, kwargs, kind, causal, seed=0):
    torch.manual_seed(seed)
    return ctor(dim=D, kind=kind, causal=causal, **kwargs).double()


def random_mask(B, L, gen):
    mask = torch.rand(B, L, generator=gen) > 0.35
    mask[:, 0] = True  # at least one real token per row
    return mask


MODULES = [
    pytest.param(ctor, kw, kind, id=f"{name}-{kind}") for name, ctor, kw in VARIANTS for kind in KINDS
] + [
    pytest.param(HyperAttention, dict(heads=2, order=3, approx_features=16), "softmax", id="ha-n3-rf"),
    pytest.param(
        HyperAttention, dict(heads=2, order=3, approx_features="taylor"), "softmax", id="ha-n3-taylor"
    ),
]


@pytest.mark.parametrize("ctor,kw,kind", MODULES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("L", [1, 5, 9])
def test_fast_path_equals_reference(ctor, kw, kind, causal, L):
    """forward() runs the fast kernels, return_scores=True the `_reference` einsums (approx HA: one path)."""
    gen = torch.Generator().manual_seed(L)
    m = build(ctor, kw, kind, causal)
    x = torch.randn(3, L, D, generator=gen, dtype=torch.float64)
    for mask in (None, random_mask(3, L, gen)):
        fast = m(x, mask)
        ref, scores = m(x, mask, return_scores=True)
        assert fast.shape == (3, L, m.out_dim)
        torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-10)
        assert isinstance(scores, AttentionScores) and scores.kind == kind


@pytest.mark.parametrize("ctor,kw,kind", MODULES)
def test_causal_output_ignores_later_tokens(ctor, kw, kind):
    gen = torch.Generator().manual_seed(1)
    m = build(ctor, kw, kind, causal=True)
    x = torch.randn(2, 8, D, generator=gen, dtype=torch.float64)
    mask = random_mask(2, 8, gen)
    out = m(x, mask)
    for i in (0, 3, 6):
        y = x.clone()
        y[:, i + 1 :] = torch.randn_like(y[:, i + 1 :]) * 3
        m2 = mask.clone()
        m2[:, i + 1 :] = torch.rand(2, 7 - i, generator=gen) > 0.5
        torch.testing.assert_close(m(y, m2)[:, : i + 1], out[:, : i + 1], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("ctor,kw,kind", MODULES)
def test_permutation_equivariance(ctor, kw, kind):
    gen = torch.Generator().manual_seed(2)
    m = build(ctor, kw, kind, causal=False)
    x = torch.randn(2, 7, D, generator=gen, dtype=torch.float64)
    mask = random_mask(2, 7, gen)
    perm = torch.randperm(7, generator=gen)
    out, scores = m(x, mask, return_scores=True)
    out_p, scores_p = m(x[:, perm], mask[:, perm], return_scores=True)
    torch.testing.assert_close(out_p, out[:, perm], rtol=1e-10, atol=1e-10)
    s = scores.scores  # every token axis (query and keys) permutes together
    for axis in range(2, s.dim()):
        s = s.index_select(axis, perm)
    torch.testing.assert_close(scores_p.scores, s, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("ctor,kw,kind", MODULES)
@pytest.mark.parametrize("causal", [False, True])
def test_padding_changes_no_real_output(ctor, kw, kind, causal):
    """Insert padded tokens (any content, even NaN) anywhere: real outputs unchanged, padded ones zero."""
    gen = torch.Generator().manual_seed(3)
    m = build(ctor, kw, kind, causal)
    x = torch.randn(2, 6, D, generator=gen, dtype=torch.float64)
    out = m(x)
    L2 = 11
    real_at = torch.sort(torch.randperm(L2, generator=gen)[:6]).values  # keeps the real tokens' order
    big = torch.randn(2, L2, D, generator=gen, dtype=torch.float64) * 100
    big[:, real_at] = x
    mask = torch.zeros(2, L2, dtype=torch.bool)
    mask[:, real_at] = True
    big[~mask] = float("nan")  # padding may hold anything, even NaN
    out_big = m(big, mask)
    torch.testing.assert_close(out_big[:, real_at], out, rtol=1e-10, atol=1e-10)
    assert torch.all(out_big[~mask] == 0)


@pytest.mark.parametrize("ctor,kw,kind", MODULES)
def test_scores_shape_and_masked_entries_zero(ctor, kw, kind):
    gen = torch.Generator().manual_seed(4)
    m = build(ctor, kw, kind, causal=True)
    B, L = 2, 5
    x = torch.randn(B, L, D, generator=gen, dtype=torch.float64)
    mask = random_mask(B, L, gen)
    _, sc = m(x, mask, return_scores=True)
    n_keys = m.order - 1 if isinstance(m, HyperAttention) else 1
    assert sc.scores.shape == (B, m.heads, L) + (L,) * n_keys
    if isinstance(m, HyperFeatureAttention):
        assert sc.factors.shape == (B, m.heads, m.factors, L, L)
    # an entry is allowed iff query and every key are real and no key comes after the query
    idx = torch.arange(L)
    ok = (
        mask[:, None, :, None]
        & mask[:, None, None, :]
        & (idx[None, None, None, :] <= idx[None, None, :, None])
    )
    ok_tuple = ok.view(B, 1, L, *([1] * (n_keys - 1)), L)
    for a in range(n_keys - 1):
        shape = [B, 1, L] + [1] * n_keys
        shape[3 + a] = L
        ok_tuple = ok_tuple & ok.view(shape)
    assert torch.all(sc.scores[~ok_tuple.expand_as(sc.scores)] == 0)
    if kind == "softmax":  # real queries' weights sum to one over allowed key tuples
        sums = sc.scores.flatten(3).sum(-1)
        torch.testing.assert_close(
            sums[mask[:, None].expand_as(sums)], torch.ones_like(sums[mask[:, None].expand_as(sums)])
        )
        assert torch.all(sc.scores >= 0)


@pytest.mark.parametrize("ctor,kw,kind", MODULES)
def test_gradients_flow(ctor, kw, kind):
    m = build(ctor, kw, kind, causal=True)
    x = torch.randn(2, 5, D, dtype=torch.float64, requires_grad=True)
    m(x, random_mask(2, 5, torch.Generator().manual_seed(0))).square().sum().backward()
    grads = [p.grad for p in m.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ---------------------------------------------------------------- argument validation


@pytest.mark.parametrize(
    "ctor,kwargs,error,words",
    [
        (SelfAttention, dict(dim=10, heads=3, kind="softmax"), ValueError, ["dim=10", "heads=3"]),
        (HyperFeatureAttention, dict(dim=12, heads=2, factors=4), ValueError, ["heads * factors=8"]),
        (HyperFeatureAttention, dict(dim=12, factors=0), ValueError, ["factors", ">= 1"]),
        (HyperAttention, dict(dim=12, order=1), ValueError, ["order", ">= 2"]),
        (HyperAttention, dict(dim=12, order=2.0), TypeError, ["order", "int"]),
        (HyperAttention, dict(dim=12, heads=5), ValueError, ["heads=5"]),
        (SelfAttention, dict(dim=12, kind="relu"), ValueError, ["kind", "'linear', 'softmax'", "relu"]),
        (HyperAttention, dict(dim=12, kind="performer"), ValueError, ["kind", "'softmax'"]),
        (HyperAttention, dict(dim=12, kind="linear", approx_features=8), ValueError, ["approx_features"]),
        (HyperAttention, dict(dim=12, approx_features=0), ValueError, ["approx_features"]),
        (SelfAttention, dict(dim=0), ValueError, ["dim", ">= 1"]),
        (SelfAttention, dict(dim=12, out_dim=0), ValueError, ["out_dim"]),
    ],
)
def test_bad_constructor_args(ctor, kwargs, error, words):
    with pytest.raises(error) as info:
        ctor(**kwargs)
    assert all(w in str(info.value) for w in words), str(info.value)


@pytest.mark.parametrize("ctor", [SelfAttention, HyperFeatureAttention, HyperAttention])
@pytest.mark.parametrize("kind", KINDS)
def test_bad_forward_inputs(ctor, kind):
    m = ctor(dim=D, heads=2, kind=kind)
    x = torch.randn(2, 4, D)
    cases = [
        (torch.randn(4, D), ValueError, "x must have shape (B, L, dim=12)"),
        (torch.randn(2, 4, D + 1), ValueError, "x must have shape (B, L, dim=12)"),
        (torch.ones(2, 4, D, dtype=torch.long), TypeError, "floating-point"),
    ]
    for bad, error, words in cases:
        with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
            m(bad)
    with pytest.raises(ValueError, match=r"mask must have shape \(B, L\) = \(2, 4\)"):
        m(x, torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask must be a bool"):
        m(x, torch.ones(2, 4))
    nan = x.clone()
    nan[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        m(nan)


# ---------------------------------------------------------------- edge inputs


@pytest.mark.parametrize("ctor,kw,kind", MODULES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [(0, 5), (2, 0), (0, 0)])
def test_empty_batch_or_set_gives_empty_output(ctor, kw, kind, causal, shape):
    """B = 0 or L = 0: an empty output of the right shape (and scores), differentiable, never an error."""
    m = build(ctor, kw, kind, causal)
    x = torch.randn(*shape, D, dtype=torch.float64, requires_grad=True)
    for mask in (None, torch.ones(shape, dtype=torch.bool)):
        out = m(x, mask)
        assert out.shape == (*shape, m.out_dim)
        out.sum().backward()
        assert x.grad.shape == x.shape
        _, scores = m(x, mask, return_scores=True)
        assert scores.scores.shape[:3] == (shape[0], m.heads, shape[1])
        for first_only in (False, True):
            y = m.attend(x, mask, first_only)
            assert y.shape == (shape[0], min(shape[1], 1) if first_only else shape[1], m.out_dim)
