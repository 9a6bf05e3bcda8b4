"""HyperAttention: O(L d_h^2) linear and chunked softmax kernels vs the O(L^n) references,
the paper's sums written out by hand, weight sharing, and the feature-map approximations."""

import math

import pytest
import torch

from policies import HyperAttention
from policies.base import key_mask, pair_mask
from policies.ha import (
    _log_features,
    feature_matrices,
    linear_ha,
    linear_ha_reference,
    softmax_ha,
    softmax_ha_reference,
    softmax_ha_taylor,
    softmax_ha_values,
    tuple_mask,
)
from policies.ha_pairs import pair_attention
from policies.sa import softmax_sa_reference


def factors(n, B=2, H=2, L=6, d_h=3, seed=0, scale=1.0, mask=None):
    gen = torch.Generator().manual_seed(seed)
    rand = lambda: torch.randn(B, H, L, d_h, generator=gen, dtype=torch.float64) * scale  # noqa: E731
    keep = 1.0 if mask is None else mask[:, None, :, None]
    return rand() * keep, [rand() * keep for _ in range(n - 1)], [rand() * keep for _ in range(n - 1)]


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("causal", [False, True])
def test_linear_kernel_equals_reference(n, causal):
    mask = torch.tensor([[True, True, False, True, True, True], [True, False, True, True, False, False]])
    q, ks, vs = factors(n, mask=mask, seed=n)
    w = torch.randn(2, 4, 3, dtype=torch.float64)  # (H, o, d_h)
    ref, scores = linear_ha_reference(q, ks, vs, w, pair_mask(mask, causal))
    torch.testing.assert_close(linear_ha(q, ks, vs, w, causal), ref, rtol=1e-10, atol=1e-10)
    assert scores.shape == (2, 2, 6) + (6,) * (n - 1)


def test_third_order_linear_ha_by_hand():
    """HA_i,t = sum_{j,k} (sum_s Q_is K1_js K2_ks)(sum_s V1_js V2_ks W_ts): Def. 6.1 in CP form."""
    q, ks, vs = factors(3, B=1, H=1, L=4, d_h=2, seed=3)
    w = torch.randn(1, 3, 2, dtype=torch.float64)
    out = linear_ha(q, ks, vs, w, causal=False)[0]
    Q, (K1, K2), (V1, V2), W = q[0, 0], [k[0, 0] for k in ks], [v[0, 0] for v in vs], w[0]
    for i in range(4):
        total = torch.zeros(3, dtype=torch.float64)
        for j in range(4):
            for k in range(4):
                total += (Q[i] * K1[j] * K2[k]).sum() * (W @ (V1[j] * V2[k]))
        torch.testing.assert_close(out[i], total)


MASK = torch.tensor([[True, True, False, True, True, True], [True, False, True, True, False, False]])


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("chunk", [1, 4, None])
@pytest.mark.parametrize("masked", [False, True])
def test_chunked_softmax_equals_reference(n, causal, chunk, masked):
    """Float64: the chunked bmm kernel == Def. F.1's einsum over all L^n tuples, every real query."""
    q, ks, vs = factors(n, seed=10 + n)
    w = torch.randn(2, 3, 3, dtype=torch.float64)
    mask = MASK if masked else torch.ones(2, 6, dtype=torch.bool)
    ref, logits, att = softmax_ha_reference(q, ks, vs, w, key_mask(mask, causal))
    with torch.no_grad():
        out = softmax_ha(q, ks, vs, w, mask if masked else None, chunk=chunk, causal=causal)
    real = mask[:, None].expand(2, 2, 6)
    torch.testing.assert_close(out[real], ref[real], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("keep_scores", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_chunked_gradients_equal_reference(n, causal, keep_scores, masked):
    """The hand-written backward (scores kept or recomputed) == autograd through the reference."""
    mask = MASK if masked else torch.ones(2, 6, dtype=torch.bool)
    real = mask[:, None, :, None].double()
    weight = torch.randn(2, 2, 6, 3, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    grads = []
    for fast in (True, False):
        q, ks, vs = factors(n, seed=20 + n)
        inputs = [t.requires_grad_() for t in (q, *ks, *vs)]
        if fast:
            out = softmax_ha_values(q, ks, vs, mask if masked else None, 4, causal, keep_scores)
        else:
            eye = torch.eye(3, dtype=torch.float64).expand(2, 3, 3)
            out = softmax_ha_reference(q, ks, vs, eye, key_mask(mask, causal))[0]
        (out * real * weight).sum().backward()
        grads.append([t.grad for t in inputs])
    for fast, ref in zip(*grads, strict=True):
        torch.testing.assert_close(fast, ref, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("keep_scores", [False, True])
def test_chunked_backward_passes_gradcheck(keep_scores):
    q, ks, vs = factors(3, B=1, H=1, L=5, d_h=2, seed=2)
    keep = torch.tensor([[True, True, False, True, True]])

    def fn(q, k1, k2, v1, v2):
        return softmax_ha_values(q, [k1, k2], [v1, v2], keep, 2, True, keep_scores)

    assert torch.autograd.gradcheck(fn, [t.requires_grad_() for t in (q, *ks, *vs)])


def test_fewer_queries_than_keys():
    """The extractor's query-0 path: the first L_q queries against every key tuple, not causal."""
    q, ks, vs = factors(3, seed=8)
    w = torch.randn(2, 3, 3, dtype=torch.float64)
    ref = softmax_ha_reference(q, ks, vs, w, key_mask(MASK, False))[0]
    for Lq in (1, 4):
        out = softmax_ha(q[:, :, :Lq], ks, vs, w, MASK, chunk=3)
        real = MASK[:, None, :Lq].expand(2, 2, Lq)
        torch.testing.assert_close(out[real], ref[:, :, :Lq][real], rtol=1e-10, atol=1e-10)


def test_query_that_sees_no_tuple_outputs_zero():
    """Causal with padding: padded query 0 sees no real key; zero output, finite gradients."""
    q, ks, vs = factors(3, B=1, H=1, seed=9)
    inputs = [t.requires_grad_() for t in (q, *ks, *vs)]
    keep = torch.tensor([[False, True, True, False, True, True]])
    for keep_scores in (False, True):
        out = softmax_ha_values(q, ks, vs, keep, 2, True, keep_scores)
        assert torch.all(out[:, :, 0] == 0) and torch.isfinite(out).all()
        (out * keep[:, None, :, None]).sum().backward()
        assert all(torch.isfinite(t.grad).all() for t in inputs)


@pytest.mark.parametrize("L", [0, 1])
@pytest.mark.parametrize("B", [0, 2])
def test_empty_inputs(B, L):
    q, ks, vs = factors(3, B=B, L=L, seed=1)
    inputs = [t.requires_grad_() for t in (q, *ks, *vs)]
    out = softmax_ha(q, ks, vs, torch.eye(3, dtype=torch.float64)[None], None, causal=True)
    assert out.shape == (B, 2, L, 3)
    out.sum().backward()
    assert inputs[0].grad.shape == q.shape


def test_bf16_autocast_close_to_float32():
    """Under autocast the scores' matmuls run in bf16, the softmax statistics in fp32."""
    torch.manual_seed(0)
    m = HyperAttention(dim=32, heads=2, order=3, causal=True)
    x = torch.randn(2, 24, 32)
    with torch.no_grad():
        exact = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = m(x)
        low.float().square().sum().backward()
    assert low.dtype == torch.bfloat16
    assert float((low.detach().float() - exact).norm() / exact.norm()) < 0.03
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_softmax_is_joint_over_key_tuples():
    q, ks, vs = factors(3, B=1, H=1, L=5, seed=4)
    w = torch.eye(3, dtype=torch.float64)[None]
    _, logits, att = softmax_ha_reference(q, ks, vs, w, torch.ones(1, 5, 5, dtype=torch.bool))
    expected = torch.einsum("is,js,ks->ijk", q[0, 0], ks[0][0, 0], ks[1][0, 0]) / math.sqrt(3)
    torch.testing.assert_close(logits[0, 0], expected)
    torch.testing.assert_close(att[0, 0], expected.flatten(1).softmax(-1).view(5, 5, 5))


def test_order_two_softmax_ha_is_attention_with_value_matrix():
    q, (k,), (v,) = factors(2, seed=6)
    w = torch.randn(2, 3, 3, dtype=torch.float64)
    allowed = key_mask(torch.ones(2, 6, dtype=torch.bool), causal=True)
    sa, _, _ = softmax_sa_reference(q, k, v @ w.transpose(-1, -2), allowed)
    torch.testing.assert_close(softmax_ha(q, [k], [v], w, None, chunk=2, causal=True), sa)


@pytest.mark.parametrize("kind", ["linear", "softmax"])
def test_shared_kv_ties_the_key_slots(kind):
    shared = HyperAttention(dim=8, heads=2, order=4, kind=kind, share_kv=True).double()
    free = HyperAttention(dim=8, heads=2, order=4, kind=kind).double()
    assert shared.k.weight.shape == (8, 8) and free.k.weight.shape == (24, 8)
    state = shared.state_dict()
    state["k.weight"], state["v.weight"] = shared.k.weight.repeat(3, 1), shared.v.weight.repeat(3, 1)
    free.load_state_dict(state)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    torch.testing.assert_close(free(x), shared(x))


def test_tuple_mask_requires_every_key():
    ok = torch.tensor([[[True, False, True], [True, True, False], [False, True, True]]])
    t = tuple_mask(ok, 2)[0, 0]
    assert t.shape == (3, 3, 3)
    assert torch.equal(t, ok[0][:, :, None] & ok[0][:, None, :])


# ---------------------------------------------------------------- feature-map approximations


@pytest.mark.parametrize("n", [2, 3, 4])
def test_random_features_are_positive_and_unbiased(n):
    """Mean over many features of exp(lq + sum_m lk_m) -> exp(<q, k_1 * .. * k_{n-1}>)."""
    gen = torch.Generator().manual_seed(n)
    D = 3
    q = torch.randn(4, 1, D, generator=gen, dtype=torch.float64) * 0.3
    ks = [torch.randn(4, 1, D, generator=gen, dtype=torch.float64) * 0.3 for _ in range(n - 1)]
    exact = torch.exp((q * math.prod(ks)).sum(-1))[:, 0]
    Ws = [W.double() for W in feature_matrices(n, D, 200_000, generator=gen)]
    lq, lks = _log_features(q, ks, Ws)
    samples = torch.exp(lq + sum(lks))  # (4, r), each entry a positive unbiased sample
    assert torch.all(samples > 0)
    torch.testing.assert_close(samples.mean(-1), exact, rtol=0.05, atol=0)


@pytest.mark.parametrize("causal", [False, True])
def test_taylor_map_is_exact_for_the_second_order_polynomial(causal):
    """softmax_ha_taylor == weights proportional to 1 + t + t^2/2 over all tuples, computed naively."""
    mask = torch.tensor([[True, True, False, True, True, True], [True] * 6])
    q, ks, vs = factors(3, seed=7)
    w = torch.randn(2, 3, 3, dtype=torch.float64)
    t = torch.einsum("bhis,bhjs,bhks->bhijk", q, *ks) / math.sqrt(3)
    sim = (1 + t + t**2 / 2) * tuple_mask(pair_mask(mask, causal), 2)
    weights = sim / sim.sum((-1, -2), keepdim=True)
    values = torch.einsum("bhjs,bhks,hts->bhjkt", *vs, w)
    naive = torch.einsum("bhijk,bhjkt->bhit", weights, values)
    out, got = softmax_ha_taylor(q, ks, vs, w, mask, causal, return_weights=True)
    real = mask[:, None].expand(2, 2, 6)
    torch.testing.assert_close(out[real], naive[real])
    torch.testing.assert_close(got[real], weights[real])


@pytest.mark.parametrize("approx", [4096, "taylor"])
def test_approximations_close_to_exact_for_small_scores(approx):
    torch.manual_seed(0)
    exact = HyperAttention(dim=8, heads=2, order=3, kind="softmax").double()
    approx_m = HyperAttention(dim=8, heads=2, order=3, kind="softmax", approx_features=approx).double()
    approx_m.load_state_dict(exact.state_dict(), strict=False)
    x = torch.randn(2, 20, 8, dtype=torch.float64) * 0.5  # scores |t| << 1, where the maps are accurate
    err = (approx_m(x) - exact(x)).norm() / exact(x).norm()
    assert err < (5e-3 if approx == "taylor" else 0.15), float(err)


# ---------------------------------------------------------------- size guard


def test_size_guard_refuses_huge_exact_softmax_quickly():
    """L = 2048, order 3: B H L^3 = 8.6e9 tuple scores, minutes on a CPU: a ValueError at once."""
    m = HyperAttention(dim=8, heads=1, order=3)
    x = torch.zeros(1, 2048, 8)
    with pytest.raises(ValueError, match=r"x with L=2048 tokens.*max_seconds=30"):
        m(x)
    with pytest.raises(ValueError, match="x with L=2048"), torch.no_grad():
        m.attend(torch.zeros(4096, 2048, 8), None, first_only=True)  # query 0 only, but B L^2 large
    causal = HyperAttention(dim=8, order=3, causal=True, max_seconds=1e-3)
    with pytest.raises(ValueError, match="max_seconds=0.001"):
        causal(torch.zeros(1, 256, 8))


def test_size_guard_override_and_scope():
    m = HyperAttention(dim=8, heads=1, order=3, max_seconds=None)  # guard off: runs
    assert m(torch.randn(1, 40, 8)).shape == (1, 40, 8)
    m.max_seconds = 1e-6  # the attribute is the override
    with pytest.raises(ValueError, match="approx_features='taylor'"):
        m(torch.randn(1, 40, 8))
    taylor = HyperAttention(dim=8, order=3, approx_features="taylor", max_seconds=1e-6)
    assert taylor(torch.randn(1, 40, 8)).shape == (1, 40, 8)  # linear in L: not guarded
    with pytest.raises(ValueError, match="max_seconds must be a number > 0 or None"):
        HyperAttention(dim=8, max_seconds=0)


# ---------------------------------------------------------------- order 3: attention over key pairs


def pair_case(causal, shared, masked, target=None, scale=1.0, Lq=None, seed=0, dtype=torch.float64):
    """`pair_attention` and the reference on one random case: (out, ref, inputs, real, weight).

    B = 2, H = 2, L = 9, d_h = 3; Lq < L only when not causal (queries are the first Lq tokens).
    """
    gen = torch.Generator().manual_seed(seed + 3 + 2 * shared + causal)
    B, H, L, d_h = 2, 2, 9, 3
    Lq = L if Lq is None else Lq
    rand = lambda: torch.randn(B, H, L, d_h, generator=gen, dtype=torch.float64) * scale  # noqa: E731
    q, k1, v1 = rand(), rand(), rand() / scale
    k2, v2 = (k1, v1) if shared else (rand(), rand() / scale)
    mask = torch.rand(B, L, generator=gen) > 0.3 if masked else torch.ones(B, L, dtype=torch.bool)
    inputs = [t.requires_grad_() for t in ((q, k1, v1) if shared else (q, k1, k2, v1, v2))]
    real = mask[:, None, :Lq, None].double()
    weight = torch.randn(B, H, Lq, d_h, generator=gen, dtype=torch.float64)
    scaled = q[:, :, :Lq] * d_h**-0.5
    flat = [t.to(dtype).reshape(B * H, -1, d_h) for t in (scaled, k1, k2, v1, v2)]
    if shared:
        flat[2], flat[4] = flat[1], flat[3]
    out = pair_attention(flat[0], flat[1:3], flat[3:], mask if masked else None, B, causal, target)
    out = out.view(B, H, Lq, d_h)
    eye = torch.eye(d_h, dtype=torch.float64).expand(H, d_h, d_h)
    ref = softmax_ha_reference(q, [k1, k2], [v1, v2], eye, key_mask(mask, causal))[0][:, :, :Lq]
    return out, ref, inputs, real, weight


def assert_pair_case(out, ref, inputs, real, weight, rtol=1e-10, atol=1e-12):
    """Values and the gradients of every input equal to the reference's (float64 tolerances)."""
    torch.testing.assert_close(out * real, ref * real, rtol=rtol, atol=atol)
    fast = torch.autograd.grad((out * real * weight).sum(), inputs)
    slow = torch.autograd.grad((ref * real * weight).sum(), inputs)
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, rtol=10 * rtol, atol=10 * atol)


FORMS = {"both forms": 1.0, "pair keys only": math.inf, "query keys only": 0.0}


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("target", [None, 40])
@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_pair_kernel_equals_reference(causal, shared, masked, target, form, scale, monkeypatch):
    """Float64: `pair_attention` == Def. F.1's einsum over all L^3 tuples, values and gradients.

    One half of the pairs when the slots share keys, two otherwise; pair keys, query keys or each
    where it builds less; target=40 forces many blocks (query chunks, slices of B H); scale 4
    bounds the scores above `MAX_UNSHIFTED`, so each query is shifted by its bound."""
    import policies.ha_pairs as ha_pairs

    monkeypatch.setattr(ha_pairs, "QK_OVER", FORMS[form])
    assert_pair_case(*pair_case(causal, shared, masked, target, scale))


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("Lq", [1, 4])
@pytest.mark.parametrize("form", list(FORMS))
def test_pair_kernel_fewer_queries_than_keys(shared, Lq, form, monkeypatch):
    """Float64, not causal, L_q < L (the extractor's query-0 path): values and gradients."""
    import policies.ha_pairs as ha_pairs

    monkeypatch.setattr(ha_pairs, "QK_OVER", FORMS[form])
    assert_pair_case(*pair_case(False, shared, True, Lq=Lq, seed=5))


def test_pair_kernel_shift_choice(monkeypatch):
    """Scores bounded by `MAX_UNSHIFTED` are exponentiated as they are; larger ones are shifted by
    each query's bound, and where that bound is too loose the kernel reruns with exact maxima,
    whose gradients are exact too (float64, the fallback forced by a zero gap)."""
    import policies.ha_pairs as ha_pairs

    shifts = []
    accumulate = ha_pairs._Plan._accumulate
    monkeypatch.setattr(
        ha_pairs._Plan,
        "_accumulate",
        lambda self, q, shift: shifts.append(shift) or accumulate(self, q, shift),
    )
    pair_case(True, True, True, scale=1.0)
    assert shifts == [None]
    shifts.clear()
    pair_case(True, True, True, scale=4.0)
    assert len(shifts) == 1 and shifts[0] is not None
    shifts.clear()
    monkeypatch.setitem(ha_pairs.FLOORS, torch.float64, (-700.0, -600.0, 0.0))  # min_den = 1
    for shared in (False, True):
        case = pair_case(True, shared, True, scale=4.0)
        assert len(shifts) == 2  # bound, then exact maxima
        assert_pair_case(*case)
        shifts.clear()


@pytest.mark.parametrize("shared", [False, True])
def test_pair_kernel_bfloat16(shared):
    """bfloat16 inputs (autocast): bfloat16 matmuls, float32 sums; within bfloat16 error of the
    float64 reference, values and gradients."""
    out, ref, inputs, real, weight = pair_case(True, shared, True, dtype=torch.bfloat16)
    assert out.dtype == torch.float32
    out = out.double()
    torch.testing.assert_close(out * real, ref * real, rtol=0.05, atol=0.03)
    fast = torch.autograd.grad((out * real * weight).sum(), inputs)
    slow = torch.autograd.grad((ref * real * weight).sum(), inputs)
    for a, b in zip(fast, slow, strict=True):
        assert (a - b).norm() <= 0.05 * b.norm()


def test_pair_kernel_serves_fewer_queries_than_keys():
    """The extractor's query-0 path goes through the pair kernel too (order 3, no chunk given)."""
    q, ks, vs = factors(3, seed=8)
    w = torch.randn(2, 3, 3, dtype=torch.float64)
    ref = softmax_ha_reference(q, ks, vs, w, key_mask(MASK, False))[0]
    for Lq in (1, 4):
        out = softmax_ha(q[:, :, :Lq], ks, vs, w, MASK)
        real = MASK[:, None, :Lq].expand(2, 2, Lq)
        torch.testing.assert_close(out[real], ref[:, :, :Lq][real], rtol=1e-10, atol=1e-10)


def test_pair_kernel_gradcheck_and_empty_row():
    """Causal, padded query 0 sees no pair: it outputs zero; gradients pass gradcheck."""
    q, (k, _), (v, _) = factors(3, B=1, H=1, L=5, d_h=2, seed=2)
    keep = torch.tensor([[False, True, True, False, True]])

    def fn(q, k, v):
        return softmax_ha_values(q, [k, k], [v, v], keep, causal=True)

    inputs = [t.requires_grad_() for t in (q, k, v)]
    assert torch.all(fn(*inputs)[:, :, 0] == 0)
    assert torch.autograd.gradcheck(fn, inputs)


def test_pair_kernel_exact_maxima_when_the_bound_is_loose(monkeypatch):
    """Float32, large scores: the per-query bound is too loose for the shifted sums, so the kernel
    reruns with exact maxima; small scores do not. Both stay close to the float64 reference."""
    import policies.ha_pairs as ha_pairs

    calls, maxima = [], ha_pairs._Plan.maxima
    monkeypatch.setattr(ha_pairs._Plan, "maxima", lambda self, *a: calls.append(1) or maxima(self, *a))
    for scale, expected in ((0.5, 0), (5.0, 1)):
        q, ks, vs = factors(3, L=10, d_h=4, seed=6, scale=scale)
        w = torch.eye(4, dtype=torch.float64).expand(2, 4, 4)
        ref = softmax_ha_reference(q, ks, vs, w, key_mask(torch.ones(2, 10, dtype=torch.bool), True))[0]
        with torch.no_grad():
            out = softmax_ha_values(q.float(), [k.float() for k in ks], [v.float() for v in vs], causal=True)
        torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)
        assert len(calls) == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("shared", [False, True])
def test_pair_kernel_on_cuda_equals_reference(shared):
    """The key-pair kernel (asked for: CUDA defaults to query chunks) with the GPU's block sizes:
    causal, padded, float64, values and gradients."""
    gen = torch.Generator(device="cuda").manual_seed(1)
    B, H, L, d_h = 2, 2, 40, 4
    rand = lambda: torch.randn(B, H, L, d_h, generator=gen, device="cuda", dtype=torch.float64)  # noqa: E731
    q, k1, v1 = rand(), rand(), rand()
    k2, v2 = (k1, v1) if shared else (rand(), rand())
    mask = torch.rand(B, L, generator=gen, device="cuda") > 0.3
    inputs = [t.requires_grad_() for t in ((q, k1, v1) if shared else (q, k1, k2, v1, v2))]
    real = mask[:, None, :, None].double()
    out = softmax_ha_values(q, [k1, k2], [v1, v2], mask, causal=True, pairs=True)
    eye = torch.eye(d_h, device="cuda", dtype=torch.float64).expand(H, d_h, d_h)
    ref = softmax_ha_reference(q, [k1, k2], [v1, v2], eye, key_mask(mask, True))[0]
    torch.testing.assert_close(out * real, ref * real, rtol=1e-10, atol=1e-12)
    fast = torch.autograd.grad((out * real).square().sum(), inputs)
    slow = torch.autograd.grad((ref * real).square().sum(), inputs)
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_pair_kernel_is_order_three_only():
    q, ks, vs = factors(4, seed=1)
    with pytest.raises(ValueError, match="pairs=True needs order 3"):
        softmax_ha_values(q, ks, vs, pairs=True)
