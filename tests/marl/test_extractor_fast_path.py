"""The extractor's fast path (validate once, ``attend``, query 0 only in the last block) against
the reference: every block through the attention's public ``forward`` on all tokens."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

from policies.actor_critic import AttentionExtractor, nearest_order, real_mask, split_tokens
from policies.ha import HyperAttention
from policies.hfa import HyperFeatureAttention
from policies.sa import (
    SelfAttention,
    softmax_sa,
    softmax_sa_first,
    softmax_sa_first_reference,
    softmax_sa_packed,
    softmax_sa_reference,
)

F = 10


def reference(ext: AttentionExtractor, obs: torch.Tensor, return_tokens: bool = False) -> torch.Tensor:
    """The extractor as written before the fast path: checked forward, all tokens, every block."""
    tokens = split_tokens(obs, ext.num_features)
    mask = real_mask(tokens, ext.present_feature)
    if ext.neighbours is not None and tokens.shape[1] > ext.neighbours + 1:
        keep = nearest_order(tokens, mask, ext.position_features, ext.dx_weight)[:, : ext.neighbours + 1]
        tokens = torch.gather(tokens, 1, keep[..., None].expand(-1, -1, ext.num_features))
        mask = torch.gather(mask, 1, keep)
    x = ext.embed(tokens) * mask[..., None]
    given = None if bool(mask.all()) else mask
    for block in ext.blocks:
        x = block.norm1(x + block.attention(x, given))
        x = block.norm2(x + block.ff(x))
    return x if return_tokens else x[:, 0]


def observations(B: int, L: int, padded: bool, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(B, L, F, generator=g)
    present = torch.rand(B, L, generator=g) < 0.6 if padded else torch.ones(B, L, dtype=torch.bool)
    obs[..., 0] = present.float()
    return obs.reshape(B, L * F)


CASES = [
    dict(family="sa"),
    dict(family="sa", heads=4, blocks=3),
    dict(family="sa", kind="linear"),
    dict(family="hfa"),
    dict(family="hfa", factors=3, width=24, heads=1),
    dict(family="hfa", kind="linear"),
    dict(family="ha"),
    dict(family="ha", order=2),
    dict(family="ha", kind="linear"),
    dict(family="sa", blocks=1),
    dict(family="sa", neighbours=3),
    dict(family="hfa", neighbours=3, dx_weight=0.5),
    dict(family="ha", neighbours=3),
]


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("kwargs", CASES)
def test_fast_path_matches_reference(kwargs, padded):
    torch.manual_seed(0)
    ext = AttentionExtractor(gym.spaces.Box(-1, 1, (8 * F,)), num_features=F, **kwargs)
    obs = observations(64, 8, padded)
    obs.requires_grad_(True)
    out, ref = ext(obs), reference(ext, obs)
    assert out.shape == ref.shape == (64, ext.features_dim)
    assert torch.allclose(out, ref, atol=1e-6, rtol=1e-5)
    tokens = ext(obs, return_tokens=True)
    assert torch.allclose(tokens, reference(ext, obs, return_tokens=True), atol=1e-6, rtol=1e-5)
    # Gradients too: PPO trains through this path.
    w = torch.randn_like(out)
    g_fast = torch.autograd.grad((out * w).sum(), [obs, *ext.parameters()])
    g_ref = torch.autograd.grad((ref * w).sum(), [obs, *ext.parameters()])
    for a, b in zip(g_fast, g_ref, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "make",
    [
        lambda: SelfAttention(dim=16, heads=2),
        lambda: SelfAttention(dim=16, heads=2, causal=True),
        lambda: SelfAttention(dim=16, heads=2, kind="linear"),
        lambda: HyperFeatureAttention(dim=16, heads=2, factors=2),
        lambda: HyperFeatureAttention(dim=16, heads=2, factors=2, causal=True),
        lambda: HyperAttention(dim=16, heads=2, order=3),
        lambda: HyperAttention(dim=16, heads=2, order=3, causal=True),
        lambda: HyperAttention(dim=16, heads=2, order=3, share_kv=True),
        lambda: HyperAttention(dim=16, heads=2, order=3, approx_features="taylor"),
    ],
)
@pytest.mark.parametrize("padded", [False, True])
def test_attend_matches_forward(make, padded):
    torch.manual_seed(1)
    att = make()
    x = torch.randn(5, 7, 16)
    mask = torch.rand(5, 7) < 0.6 if padded else None
    if padded:
        mask[0, 0] = False  # a padded query 0 too
        mask[:, 1] = True  # no empty row
    ref = att(x, mask)
    assert torch.allclose(att.attend(x, mask), ref, atol=1e-6)
    assert torch.allclose(att.attend(x, mask, first_only=True), ref[:, :1], atol=1e-6)


def test_non_finite_real_token_still_raises_and_padding_may_hold_nan():
    ext = AttentionExtractor(gym.spaces.Box(-1, 1, (4 * F,)), num_features=F)
    obs = observations(3, 4, padded=False)
    obs.view(3, 4, F)[1, 0, 0] = 0.0  # token 0 counts as real whatever its flag
    obs.view(3, 4, F)[1, 2, 0] = 0.0  # padding ...
    obs.view(3, 4, F)[1, 2, 5] = float("nan")  # ... may hold NaN
    assert torch.allclose(ext(obs), reference(ext, obs), atol=1e-6)
    obs.view(3, 4, F)[2, 1, 4] = float("inf")  # a real token may not
    with pytest.raises(ValueError, match="finite"):
        ext(obs)


@pytest.mark.parametrize("padded", [False, True])
def test_first_query_kernel_matches_reference(padded):
    torch.manual_seed(2)
    x, W = torch.randn(6, 9, 24), torch.randn(3, 3, 8, 24)
    allowed = torch.rand(6, 9) < 0.5 if padded else None
    if padded:
        allowed[:, 0] = True
    ref = softmax_sa_first_reference(x, W, allowed)
    assert torch.allclose(softmax_sa_first(x, W, allowed), ref, atol=1e-6)
    # and the reference is row 0 of the all-queries reference
    q, k, v = (torch.einsum("bjd,hsd->bhjs", x, w) for w in W)
    ok = torch.ones(6, 9, 9, dtype=torch.bool) if allowed is None else allowed[:, None].expand(-1, 9, -1)
    assert torch.allclose(softmax_sa_reference(q, k, v, ok)[0][:, :, 0], ref, atol=1e-6)


@pytest.mark.parametrize("B", [6, 7])
@pytest.mark.parametrize("L", [2, 3, 4, 8])
def test_packed_softmax_matches_reference(B, L):
    torch.manual_seed(3)
    q, k, v = (torch.randn(B, 2, L, 8) for _ in range(3))
    ref = softmax_sa_reference(q, k, v, torch.ones(B, L, L, dtype=torch.bool))[0]
    assert torch.allclose(softmax_sa(q, k, v, None, False), ref, atol=1e-6)  # packs when B allows
    for group in (g for g in (2, 3) if B % g == 0):
        assert torch.allclose(softmax_sa_packed(q, k, v, group), ref, atol=1e-6)
