"""policies/lm.py: causal masking, weight tying, matched parameter counts, context-length errors."""

import pytest
import torch

from policies.lm import LM, LMConfig

# Every family the comparison runs; width 32 divides by heads * factors for A = 2 and 4.
VARIANTS = {
    "sa": dict(family="sa"),
    "hfa_A2": dict(family="hfa", factors=2),
    "hfa_A4": dict(family="hfa", factors=4),
    "ha_n3_shared": dict(family="ha", order=3, share_kv=True),
    "ha_n3_noshare": dict(family="ha", order=3, share_kv=False),
}


def small(**kw) -> LMConfig:
    return LMConfig(**{**dict(vocab_size=64, block_size=12, n_layer=2, n_head=2, n_embd=32), **kw})


@pytest.mark.parametrize("variant", VARIANTS)
def test_changing_a_later_token_leaves_earlier_logits_unchanged(variant):
    torch.manual_seed(0)
    model = LM(small(**VARIANTS[variant])).eval()
    idx = torch.randint(0, 64, (3, 12))
    t = 7
    changed = idx.clone()
    changed[:, t] = (idx[:, t] + 1) % 64
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(changed)
    assert a.shape == (3, 12, 64)
    torch.testing.assert_close(a[:, :t], b[:, :t], rtol=0, atol=1e-5)
    assert (a[:, t:] - b[:, t:]).abs().amax() > 1e-4  # the change does reach position t and later


@pytest.mark.parametrize("variant", VARIANTS)
def test_output_head_is_tied_to_the_token_embedding(variant):
    model = LM(small(**VARIANTS[variant]))
    assert model.lm_head.weight is model.wte.weight
    assert model.num_params() == sum(p.numel() for p in set(model.parameters()))
    assert model.num_params(non_embedding=True) == model.num_params() - 12 * 32


def test_parameter_counts_match_across_families():
    counts = {name: LM(small(**kw)).num_params() for name, kw in VARIANTS.items()}
    reference = counts["sa"]
    for name, count in counts.items():
        assert abs(count - reference) / reference < 0.02, (name, counts)
    # Without matching, HA without shared factors is clearly larger: the matching does the work.
    unmatched = LM(small(family="ha", share_kv=False, match_params=False)).num_params()
    assert unmatched > 1.1 * reference


def test_loss_is_the_mean_next_token_cross_entropy():
    model = LM(small())
    idx = torch.randint(0, 64, (2, 12))
    logits, loss = model(idx, idx)
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 64), idx.reshape(-1))
    torch.testing.assert_close(loss, expected)
    assert model(idx)[1] is None


def test_context_longer_than_block_size_raises():
    model = LM(small(family="ha"))
    with pytest.raises(ValueError, match="block_size=12"):
        model(torch.zeros(1, 13, dtype=torch.long))


def test_unknown_family_raises():
    with pytest.raises(ValueError, match="family"):
        LM(small(family="mamba"))


def test_generate_appends_tokens_and_crops_the_context():
    model = LM(small(family="hfa"))
    out = model.generate(torch.zeros(1, 10, dtype=torch.long), 5, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 15)
