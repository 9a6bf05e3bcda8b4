"""Extractors: any agent count at evaluation, padding invariance, bad input."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from envs.crossing import NUM_FEATURES as F
from envs.crossing import PARKED_FEATURE as PARKED
from envs.crossing import Crossing
from policies.actor_critic import AttentionExtractor, NearestMLPExtractor, nearest_order


def space(L):
    return gym.spaces.Box(-1, 1, (L * F,), np.float32)


def obs_at(L, worlds=2, seed=0):
    env = Crossing(num_worlds=worlds, num_agents=L, seed=seed)
    env.reset()
    return env.observations().reshape(worlds * L, L * F)


EXTRACTORS = [
    (AttentionExtractor, dict(family="sa")),
    (AttentionExtractor, dict(family="hfa")),
    (AttentionExtractor, dict(family="ha")),
    (AttentionExtractor, dict(family="sa", kind="linear")),
    (AttentionExtractor, dict(family="ha", neighbours=4)),
    (NearestMLPExtractor, dict(k=6)),
]


@pytest.mark.parametrize("cls, kwargs", EXTRACTORS)
def test_trained_at_8_runs_at_other_counts(cls, kwargs):
    torch.manual_seed(0)
    ext = cls(space(8), num_features=F, **kwargs)
    for L in (1, 2, 8, 17, 40):
        out = ext(obs_at(L))
        assert out.shape == (2 * L, ext.features_dim) and torch.isfinite(out).all()


@pytest.mark.parametrize("cls, kwargs", EXTRACTORS)
def test_padding_does_not_change_real_agents(cls, kwargs):
    torch.manual_seed(0)
    ext = cls(space(5), num_features=F, **kwargs).eval()
    obs = obs_at(5).reshape(10, 5, F)
    padded = torch.cat([obs, torch.zeros(10, 3, F)], 1).reshape(10, 8 * F)
    assert torch.allclose(ext(obs.reshape(10, -1)), ext(padded), atol=1e-5)


def test_bad_inputs_raise_naming_the_argument():
    with pytest.raises(ValueError, match="family"):
        AttentionExtractor(space(4), family="gru")
    with pytest.raises(ValueError, match="width"):
        AttentionExtractor(space(4), width=0)
    with pytest.raises(ValueError, match="k"):
        NearestMLPExtractor(space(4), k=0)
    ext = AttentionExtractor(space(4))
    with pytest.raises(ValueError, match="observations"):
        ext(torch.zeros(3, 4 * F + 1))
    with pytest.raises(ValueError, match="observations"):
        ext(torch.zeros(3, 4, F))


def test_self_token_shortcut_matches_full_pass():
    torch.manual_seed(0)
    ext = AttentionExtractor(space(6), family="hfa").eval()
    obs = obs_at(6)
    assert torch.allclose(ext(obs), ext(obs, return_tokens=True)[:, 0], atol=1e-6)


def test_dx_weight_ranks_nearby_lanes_first():
    tokens = torch.zeros(1, 3, F)
    tokens[0, :, 0] = 1.0
    tokens[0, 1, 1:3] = torch.tensor([0.1, 0.0])  # 0.1 ahead in the same lane
    tokens[0, 2, 1:3] = torch.tensor([0.0, 0.05])  # level, 0.05 to the side
    mask = tokens[..., 0] > 0.5
    assert nearest_order(tokens, mask, (1, 2)).tolist() == [[0, 2, 1]]
    assert nearest_order(tokens, mask, (1, 2), dx_weight=0.25).tolist() == [[0, 1, 2]]
    with pytest.raises(ValueError, match="dx_weight"):
        AttentionExtractor(space(4), dx_weight=0.0)


def _lane_reference(tokens, k, lanes):
    """Per row, by plain Python: self + k nearest real tokens, then the `lanes` parked real tokens
    left over with the smallest |dy| (ties by index); the set of token rows kept."""
    kept = []
    for row in tokens:
        real = [j for j in range(1, len(row)) if row[j, 0] > 0.5]
        near = sorted(real, key=lambda j: (float(row[j, 1] ** 2 + row[j, 2] ** 2), j))[:k]
        parked = [j for j in real if j not in near and row[j, PARKED] > 0.5]
        wall = sorted(parked, key=lambda j: (float(row[j, 2].abs()), j))[:lanes]
        kept.append({tuple(row[j].tolist()) for j in [0, *near, *wall]})
    return kept


def test_lane_tokens_add_the_parked_agents_nearest_in_lane():
    env = Crossing(num_worlds=3, num_agents=(14, 20), seed=2)
    env.reset()
    for _ in range(60):  # most agents park at the far wall
        env.step(torch.full((env.B, env.L), 1))
    env.step(torch.randint(0, 5, (env.B, env.L), generator=torch.Generator().manual_seed(0)))
    obs = env.observations()
    flat = obs.reshape(-1, *obs.shape[2:])  # (B L, L, F)
    mask = flat[..., 0] > 0.5
    mask[:, 0] = True
    ext = AttentionExtractor(space(4), neighbours=3, lane_tokens=4, flag_feature=PARKED)
    view, kept = ext.nearest(flat, mask)
    assert view.shape == (flat.shape[0], 8, F)
    real = flat[:, 0, 0] > 0.5  # padded agents' own views are all zero
    assert torch.equal(kept[real], view[real][..., 0] > 0.5)  # slots left unfilled read as padding
    rows = zip(view, kept, strict=True)
    got = [{tuple(t.tolist()) for t, m in zip(v, k, strict=True) if m} for v, k in rows]
    ref = _lane_reference(flat, 3, 4)
    assert all(g == r for g, r, ok in zip(got, ref, real, strict=True) if ok)
    assert any(len(r) == 8 for r in ref) and any(4 < len(r) < 8 for r in ref)  # both cases met
    again, _ = ext.nearest(view, view[..., 0] > 0.5)  # a view is its own view
    assert torch.equal(again, view)


def test_lane_tokens_keep_every_token_at_small_counts_and_refuse_bad_values():
    ext = AttentionExtractor(space(4), neighbours=3, lane_tokens=2, flag_feature=PARKED)
    obs = obs_at(6).reshape(12, 6, F)
    view, _ = ext.nearest(obs, obs[..., 0] > 0.5)
    assert torch.equal(view, obs)  # L = 6 <= 1 + 3 + 2
    with pytest.raises(ValueError, match="lane_tokens"):
        AttentionExtractor(space(4), neighbours=3, lane_tokens=-1)
