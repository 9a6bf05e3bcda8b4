"""HyperFeatureAttention: kernels vs references, reduction to SA at A = 1, parameter counts."""

import pytest
import torch

from policies import HyperFeatureAttention, SelfAttention
from policies.base import key_mask, pair_mask
from policies.hfa import (
    FUSED_MIN_KEYS,
    fused_applies,
    fused_fp32_dots,
    linear_hfa,
    linear_hfa_reference,
    softmax_hfa,
    softmax_hfa_reference,
)


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


def qkv(B=2, H=2, A=3, L=8, d_h=4, seed=9, Lq=None, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    rand = lambda n: torch.randn(B, H, A, n, d_h, generator=gen, dtype=torch.float64) * scale  # noqa: E731
    return rand(L if Lq is None else Lq), rand(L), rand(L)


def real_mask(B, L, seed, masked=True):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(B, L, generator=gen) > 0.3 if masked else torch.ones(B, L, dtype=torch.bool)
    mask[:, 0] = True
    return mask


# (queries, keys) per block: one block, query blocks only, key blocks (online softmax), both, ragged
BLOCKS = [None, (1, 64), (3, 64), (64, 2), (3, 3), (5, 4)]


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("A", [1, 2, 3])
def test_softmax_kernel_equals_reference(masked, causal, block, A):
    """Blockwise online softmax == the einsum of Def. E.2, float64, for every real query."""
    B, H, L = 2, 2, 11
    q, k, v = qkv(B, H, A, L, seed=A)
    mask = real_mask(B, L, A, masked)
    ref, logits, att, factors = softmax_hfa_reference(q, k, v, key_mask(mask, causal))
    real = mask[:, None].expand(B, H, L)  # padded queries' outputs are zeroed later by the module
    with torch.no_grad():
        fast = softmax_hfa(q, k, v, mask if masked else None, causal, block)
    torch.testing.assert_close(fast[real], ref[real], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(logits, factors.prod(2))
    torch.testing.assert_close(factors[:, :, 0], q[:, :, 0] @ k[:, :, 0].transpose(-1, -2) / 2.0)


@pytest.mark.parametrize("block", [(2, 3), (4, 64), (64, 5)])
def test_fewer_queries_than_keys(block):
    """The extractor's query-0 path: q of the first L_q tokens against all L keys, not causal."""
    B, H, A, L = 3, 2, 2, 9
    q, k, v = qkv(B, H, A, L, seed=5)
    mask = real_mask(B, L, 5)
    ref = softmax_hfa_reference(q, k, v, key_mask(mask, False))[0]
    for Lq in (1, 4):
        fast = softmax_hfa(q[:, :, :, :Lq], k, v, mask, False, block)
        real = mask[:, None, :Lq].expand(B, H, Lq)
        torch.testing.assert_close(fast[real], ref[:, :, :Lq][real], rtol=1e-10, atol=1e-10)


def test_large_scores_do_not_overflow():
    """Products of A factor scores reach hundreds: the online max keeps every exp <= 1."""
    q, k, v = qkv(1, 1, 2, 12, seed=3, scale=6.0)
    ref = softmax_hfa_reference(q, k, v, key_mask(torch.ones(1, 12, dtype=torch.bool), True))[0]
    fast = softmax_hfa(q, k, v, None, True, (4, 3))
    assert torch.isfinite(fast).all()
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-10)


def test_query_that_sees_no_key_stays_finite():
    """Causal with padding: padded query 0's only key is padded. Plain ops let padded queries see
    every key; the blockwise kernel gives an empty row zero. Either way no NaN, in value or gradient."""
    q, k, v = (t.requires_grad_() for t in qkv(1, 1, 2, 6, seed=4))
    keep = torch.tensor([[False, True, True, False, True, True]])
    for block in [None, (2, 2)]:
        out = softmax_hfa(q, k, v, keep, True, block)
        assert torch.isfinite(out).all() and (block is None or torch.all(out[:, :, 0] == 0))
        (out * keep[:, None, :, None]).sum().backward()
        assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


@pytest.mark.parametrize("A", [1, 2, 3])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("block", [None, (4, 64), (3, 4)])
def test_fast_and_reference_gradients_agree(A, masked, causal, block):
    """One block: autograd through plain ops; more: _BlockwiseHFA's hand-written backward."""
    B, H, L = 2, 2, 11
    mask = real_mask(B, L, A, masked)
    real = mask[:, None, :, None].double()  # padded queries are zeroed by the module
    weight = torch.randn(B, H, L, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grads = []
    for fast in (True, False):
        q, k, v = (t.requires_grad_() for t in qkv(B, H, A, L, d_h=2, seed=A))
        if fast:
            out = softmax_hfa(q, k, v, mask if masked else None, causal, block)
        else:
            out = softmax_hfa_reference(q, k, v, key_mask(mask, causal))[0]
        (out * real * weight).sum().backward()
        grads.append([q.grad, k.grad, v.grad])
    for fast, ref in zip(*grads, strict=True):
        torch.testing.assert_close(fast, ref, rtol=1e-9, atol=1e-10)


def test_blockwise_backward_passes_gradcheck():
    q, k, v = (t.requires_grad_() for t in qkv(1, 1, 2, 5, d_h=2, seed=2))
    keep = torch.tensor([[True, True, False, True, True]])
    assert torch.autograd.gradcheck(lambda *t: softmax_hfa(*t, keep, True, (2, 2)), (q, k, v))


@pytest.mark.parametrize("L", [0, 1])
@pytest.mark.parametrize("B", [0, 2])
def test_empty_inputs(B, L):
    q, k, v = (t.requires_grad_() for t in qkv(B, 2, 2, L, seed=1))
    out = softmax_hfa(q, k, v, None, True)
    assert out.shape == (B, 2, L, 4)
    out.sum().backward()
    assert q.grad.shape == q.shape


def test_bf16_autocast_close_to_float32():
    torch.manual_seed(0)
    m = HyperFeatureAttention(dim=32, heads=2, factors=2, causal=True)
    x = torch.randn(2, 40, 32)
    with torch.no_grad():
        exact = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = m(x)
        low.float().square().sum().backward()
    assert low.dtype == torch.bfloat16
    assert float((low.detach().float() - exact).norm() / exact.norm()) < 0.03, "bf16 far from float32"
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_softmax_scores_record_factors():
    m = HyperFeatureAttention(dim=8, heads=2, factors=2, kind="softmax").double()
    x = torch.randn(1, 5, 8, dtype=torch.float64)
    _, sc = m(x, return_scores=True)
    torch.testing.assert_close(sc.logits, sc.factors.prod(2))
    torch.testing.assert_close(sc.scores, sc.logits.softmax(-1))


@pytest.mark.parametrize("causal", [False, True])
def test_loose_bound_falls_back_to_online_softmax(causal):
    """Scores far below their Cauchy-Schwarz bound: the shifted sums would lose float32 precision,
    so the kernel reruns with running maxima, and still matches the float64 reference."""
    q, k, v = qkv(1, 2, 2, 12, d_h=4, seed=5, scale=4.0)
    with torch.no_grad():
        fast = softmax_hfa(q.float(), k.float(), v.float(), None, causal, (4, 4))
    ref = softmax_hfa_reference(q, k, v, key_mask(torch.ones(1, 12, dtype=torch.bool), causal))[0]
    torch.testing.assert_close(fast.double(), ref, rtol=2e-4, atol=2e-5)


def test_loose_bound_is_detected(monkeypatch):
    """The same inputs do take the fallback (else the test above checks the shifted path only)."""
    import policies.hfa as hfa

    q, k, v = qkv(1, 2, 2, 12, d_h=4, seed=5, scale=4.0)
    calls, online = [], hfa._hfa_forward_online
    monkeypatch.setattr(hfa, "_hfa_forward_online", lambda *a: calls.append(1) or online(*a))
    with torch.no_grad():
        softmax_hfa(q.float(), k.float(), v.float(), None, True, (4, 4))
        softmax_hfa(q.float() / 8, k.float() / 8, v.float(), None, True, (4, 4))  # small scores: none
    assert len(calls) == 1


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_blockwise_kernel_takes_half_precision_inputs(dtype):
    """bf16 / fp16 q, k, v (a module cast to bf16, or autocast) run the blockwise kernels in fp32."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 2, 150, 8, generator=gen, dtype=torch.float64) for _ in range(3))
    exact = softmax_hfa_reference(q, k, v, torch.ones(2, 150, 150, dtype=torch.bool).tril())[0]
    low = [t.to(dtype).requires_grad_() for t in (q, k, v)]
    out = softmax_hfa(*low, None, True, (32, 32))
    out.float().square().sum().backward()
    assert out.dtype == dtype and all(t.grad.dtype == dtype and t.grad.isfinite().all() for t in low)
    assert ((out.double() - exact).norm() / exact.norm()).item() < 2e-2


def test_fused_kernel_is_chosen_only_where_it_measured_faster():
    bf16, fp32, fp64 = torch.bfloat16, torch.float32, torch.float64
    base = dict(device="cuda", dtype=bf16, A=2, d_h=32, Lk=FUSED_MIN_KEYS)
    assert fused_applies(**base)
    assert fused_applies(**(base | dict(dtype=fp32)))
    for change in [
        dict(device="cpu"),
        dict(A=3),
        dict(d_h=129),
        dict(Lk=FUSED_MIN_KEYS - 1),
        dict(dtype=fp64),
    ]:
        assert not fused_applies(**(base | change)), change


def test_strict_fp32_runs_the_fused_kernel_on_three_tf32_products():
    # fp32 products in Triton were 2.8x slower than tf32x3 for the same accuracy; with TF32 allowed
    # the kernel follows torch's flag, as a matmul would
    assert fused_fp32_dots(allow_tf32=False) == "tf32x3"
    assert fused_fp32_dots(allow_tf32=True) is None
