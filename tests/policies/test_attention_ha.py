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
    tuple_mask,
)
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


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("chunk", [1, 4, None])
def test_chunked_softmax_equals_reference(n, causal, chunk):
    mask = torch.tensor([[True, True, False, True, True, True], [True, False, True, True, False, False]])
    q, ks, vs = factors(n, seed=10 + n)
    w = torch.randn(2, 3, 3, dtype=torch.float64)
    allowed = key_mask(mask, causal)
    ref, logits, att = softmax_ha_reference(q, ks, vs, w, allowed)
    out = softmax_ha(q, ks, vs, w, allowed, chunk=chunk, causal=causal)
    torch.testing.assert_close(out[mask[:, None].expand(2, 2, 6)], ref[mask[:, None].expand(2, 2, 6)])
    if not causal:  # no mask at all: the kernel's unmasked branch
        torch.testing.assert_close(
            softmax_ha(q, ks, vs, w, None, chunk=chunk),
            softmax_ha_reference(q, ks, vs, w, torch.ones(2, 6, 6, dtype=torch.bool))[0],
        )


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
    torch.testing.assert_close(softmax_ha(q, [k], [v], w, allowed, chunk=2), sa)


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
