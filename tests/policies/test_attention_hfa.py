"""HyperFeatureAttention: kernels vs references, reduction to SA at A = 1, parameter counts."""

import pytest
import torch

from policies import HyperFeatureAttention, SelfAttention
from policies.base import key_mask, pair_mask
from policies.hfa import linear_hfa, linear_hfa_reference, softmax_hfa, softmax_hfa_reference


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("dim,heads,factors", [(12, 2, 2), (24, 2, 3), (64, 4, 4), (16, 1, 1)])
def test_softmax_hfa_matches_sa_projection_parameters(dim, heads, factors):
    """d_h = dim / (H A): W_Q, W_K, W_V hold exactly SA's 3 d^2 weights; W_O reads d / A features."""
    sa = SelfAttention(dim=dim, heads=heads, kind="softmax")
    hfa = HyperFeatureAttention(dim=dim, heads=heads, factors=factors, kind="softmax")
    assert hfa.head_dim == dim // (heads * factors)
    assert hfa.qkv.weight.numel() == sa.qkv.weight.numel() == 3 * dim * dim
    assert count(hfa) == count(sa) - dim * dim + dim * dim // factors


@pytest.mark.parametrize("causal", [False, True])
def test_one_factor_softmax_hfa_is_softmax_sa(causal):
    sa = SelfAttention(dim=12, heads=3, kind="softmax", causal=causal).double()
    hfa = HyperFeatureAttention(dim=12, heads=3, factors=1, kind="softmax", causal=causal).double()
    hfa.load_state_dict(sa.state_dict())
    x = torch.randn(2, 7, 12, dtype=torch.float64)
    mask = torch.tensor([[True] * 7, [True, False, True, True, False, True, False]])
    torch.testing.assert_close(hfa(x, mask), sa(x, mask))


def test_one_factor_linear_hfa_is_linear_sa():
    sa = SelfAttention(dim=6, heads=2, kind="linear", out_dim=3).double()
    hfa = HyperFeatureAttention(dim=6, heads=2, factors=1, kind="linear", out_dim=3).double()
    with torch.no_grad():
        hfa.C.copy_(sa.C[:, None])
        hfa.W_V.copy_(sa.W_V[:, None])
    x = torch.randn(3, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(hfa(x), sa(x))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("A", [1, 2, 3])
def test_linear_kernel_equals_reference(causal, A):
    gen = torch.Generator().manual_seed(A)
    B, L, H, d, o = 2, 6, 2, 5, 3
    mask = torch.rand(B, L, generator=gen) > 0.3
    x = torch.randn(B, L, d, generator=gen, dtype=torch.float64) * mask[..., None]
    C = torch.randn(H, A, d, d, generator=gen, dtype=torch.float64)
    W = torch.randn(H, A, d, o, generator=gen, dtype=torch.float64)
    ref, scores, factors = linear_hfa_reference(x, C, W, pair_mask(mask, causal))
    torch.testing.assert_close(linear_hfa(x, C, W, causal), ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(scores, factors.prod(2))
    # the paper's per-head product, written out for head 0, factor by factor
    by_hand = torch.ones(B, L, L, dtype=torch.float64)
    for a in range(A):
        by_hand = by_hand * (x @ C[0, a] @ x.transpose(1, 2))
    torch.testing.assert_close(scores[:, 0], by_hand * pair_mask(mask, causal))


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("block", [1, 3, None])
def test_softmax_kernel_equals_reference(masked, causal, block):
    gen = torch.Generator().manual_seed(9)
    B, H, A, L, d_h = 2, 2, 3, 8, 4
    q, k, v = (torch.randn(B, H, A, L, d_h, generator=gen, dtype=torch.float64) for _ in range(3))
    mask = torch.rand(B, L, generator=gen) > 0.3 if masked else torch.ones(B, L, dtype=torch.bool)
    mask[:, 0] = True
    allowed = key_mask(mask, causal)
    ref, logits, att, factors = softmax_hfa_reference(q, k, v, allowed)
    fast = softmax_hfa(q, k, v, allowed if masked else None, causal, block)
    real = mask[:, None].expand(B, H, L)  # padded queries' outputs are zeroed later by the module
    torch.testing.assert_close(fast[real], ref[real], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(logits, factors.prod(2))
    torch.testing.assert_close(factors[:, :, 1], q[:, :, 1] @ k[:, :, 1].transpose(-1, -2) / 2.0)


def test_softmax_scores_record_factors():
    m = HyperFeatureAttention(dim=8, heads=2, factors=2, kind="softmax").double()
    x = torch.randn(1, 5, 8, dtype=torch.float64)
    _, sc = m(x, return_scores=True)
    torch.testing.assert_close(sc.logits, sc.factors.prod(2))
    torch.testing.assert_close(sc.scores, sc.logits.softmax(-1))


@pytest.mark.parametrize("A", [1, 2])
@pytest.mark.parametrize("masked", [False, True])
def test_fast_and_reference_gradients_agree(A, masked):
    """The fast path masks in place, per block of queries; autograd must see the reference's function."""
    gen = torch.Generator().manual_seed(A)
    B, H, L, d_h = 2, 2, 11, 3
    mask = torch.rand(B, L, generator=gen) > 0.3 if masked else torch.ones(B, L, dtype=torch.bool)
    mask[:, 0] = True
    allowed = key_mask(mask, causal=True)
    real = mask[:, None, :, None].double()  # padded queries are zeroed by the module
    grads = []
    for fast in (True, False):
        qkv = [
            torch.randn(B, H, A, L, d_h, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
            for i in range(3)
        ]
        qkv = [t.requires_grad_() for t in qkv]
        out = (
            softmax_hfa(*qkv, allowed if masked else None, True, 4)
            if fast
            else softmax_hfa_reference(*qkv, allowed)[0]
        )
        (out * real).square().sum().backward()
        grads.append([t.grad for t in qkv])
    for fast, ref in zip(*grads, strict=True):
        torch.testing.assert_close(fast, ref)
