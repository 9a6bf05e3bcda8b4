"""SelfAttention: the kernels against their references and against the paper's formula by hand."""

import math

import pytest
import torch

from policies import SelfAttention
from policies.base import key_mask, pair_mask
from policies.sa import linear_sa, linear_sa_reference, softmax_sa, softmax_sa_reference


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("L", [1, 4, 13])
def test_linear_kernel_equals_reference(causal, L):
    gen = torch.Generator().manual_seed(L)
    B, H, d, o = 3, 2, 6, 4
    x = torch.randn(B, L, d, generator=gen, dtype=torch.float64)
    mask = torch.rand(B, L, generator=gen) > 0.3
    x = x * mask[..., None]  # the kernel's contract: padding already zero
    C = torch.randn(H, d, d, generator=gen, dtype=torch.float64)
    W = torch.randn(H, d, o, generator=gen, dtype=torch.float64)
    ref, _ = linear_sa_reference(x, C, W, pair_mask(mask, causal))
    torch.testing.assert_close(linear_sa(x, C, W, causal), ref * mask[..., None], rtol=1e-10, atol=1e-10)


def test_linear_sa_is_a_pairwise_interaction_sum():
    """One-hot tokens: y_i = sum_j C[t_i, t_j] W[t_j] (paper Eq. 2 with f = C, w = W)."""
    N = 7
    m = SelfAttention(dim=N, heads=1, kind="linear", out_dim=1).double()
    tokens = torch.tensor([[0, 3, 3, 6, 1]])
    y = m(torch.nn.functional.one_hot(tokens, N).double())[0, :, 0]
    C, W = m.C[0], m.W_V[0, :, 0]
    t = tokens[0]
    expected = torch.stack([sum(C[t[i], t[j]] * W[t[j]] for j in range(5)) for i in range(5)])
    torch.testing.assert_close(y, expected)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_sdpa_equals_einsum_reference(causal, masked):
    gen = torch.Generator().manual_seed(5)
    B, H, L, d_h = 2, 3, 9, 4
    q, k, v = (torch.randn(B, H, L, d_h, generator=gen, dtype=torch.float64) for _ in range(3))
    mask = torch.rand(B, L, generator=gen) > 0.3 if masked else torch.ones(B, L, dtype=torch.bool)
    mask[:, 0] = True
    allowed = key_mask(mask, causal)
    ref, logits, att = softmax_sa_reference(q, k, v, allowed)
    fast = softmax_sa(q, k, v, allowed if masked else None, causal)
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(logits, q @ k.transpose(-1, -2) / math.sqrt(d_h))


def test_softmax_sa_matches_torch_multihead_attention():
    """Same weights in nn.MultiheadAttention (no biases) give the same output."""
    d, H = 12, 3
    m = SelfAttention(dim=d, heads=H, kind="softmax").double()
    mha = torch.nn.MultiheadAttention(d, H, bias=False, batch_first=True).double()
    with torch.no_grad():
        mha.in_proj_weight.copy_(m.qkv.weight)
        mha.out_proj.weight.copy_(m.proj.weight)
    x = torch.randn(2, 6, d, dtype=torch.float64)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    ours = m(x, mask)
    theirs, _ = mha(x, x, x, key_padding_mask=~mask)
    torch.testing.assert_close(ours[mask], theirs[mask])


def test_linear_scores_are_raw_bilinear_forms():
    m = SelfAttention(dim=5, heads=2, kind="linear").double()
    x = torch.randn(1, 4, 5, dtype=torch.float64)
    _, sc = m(x, return_scores=True)
    torch.testing.assert_close(sc.scores[0, 1], x[0] @ m.C[1] @ x[0].T)
    assert sc.logits is None and sc.factors is None
