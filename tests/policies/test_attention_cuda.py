"""The blockwise and chunked kernels on a CUDA device (skipped without one): float64 equality with
the einsum references, gradients, bf16 autocast. The CPU runs the same kernels in the other tests."""

import pytest
import torch

from policies import HyperAttention, HyperFeatureAttention
from policies.base import key_mask
from policies.ha import softmax_ha_reference, softmax_ha_values
from policies.hfa import FUSED_MIN_KEYS, softmax_hfa, softmax_hfa_reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEV = "cuda"


def rand(*shape, seed=0):
    gen = torch.Generator(device=DEV).manual_seed(seed)
    return torch.randn(*shape, generator=gen, device=DEV, dtype=torch.float64)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("block", [None, (16, 32), (7, 5)])
def test_hfa_blockwise_equals_reference_with_gradients(causal, block):
    B, H, A, L, d_h = 2, 3, 2, 70, 8
    mask = torch.rand(B, L, device=DEV) > 0.3
    mask[:, 0] = True
    real = mask[:, None, :, None].double()
    grads = []
    for fast in (True, False):
        q, k, v = (rand(B, H, A, L, d_h, seed=s).requires_grad_() for s in range(3))
        if fast:
            out = softmax_hfa(q, k, v, mask, causal, block)
        else:
            out = softmax_hfa_reference(q, k, v, key_mask(mask, causal))[0]
        (out * real).square().sum().backward()
        grads.append([out * real, q.grad, k.grad, v.grad])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("dots", ["ieee", "tf32x3"])
@pytest.mark.parametrize("causal", [False, True])
def test_hfa_fused_kernel_equals_reference_with_gradients(causal, dots):
    """The Triton kernel compiled, fp32 with gradients (fp32 products, or three TF32 ones), against
    the float64 reference."""
    hfa_triton = pytest.importorskip("policies.hfa_triton")
    B, H, A, L, d_h = 2, 2, 2, FUSED_MIN_KEYS + 44, 16
    mask = torch.rand(B, L, device=DEV) > 0.3
    mask[:, 0] = True
    real = mask[:, None, :, None].double()
    grads = []
    for fast in (True, False):
        q, k, v = (rand(B, H, A, L, d_h, seed=s) for s in range(3))
        q, k, v = (t.float().requires_grad_() if fast else t.requires_grad_() for t in (q, k, v))
        if fast:
            out = hfa_triton.softmax_hfa2(q, k, v, mask, causal, dots)
        else:
            out = softmax_hfa_reference(q, k, v, key_mask(mask, causal))[0]
        (out * real).square().sum().backward()
        grads.append([(out * real).double(), q.grad.double(), k.grad.double(), v.grad.double()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_hfa_fused_path_in_bf16_is_close_to_float64():
    """softmax_hfa's own choice: bf16 from FUSED_MIN_KEYS keys runs the Triton kernel."""
    B, H, A, L, d_h = 2, 2, 2, FUSED_MIN_KEYS + 44, 16
    q, k, v = (rand(B, H, A, L, d_h, seed=s) for s in range(3))
    exact = softmax_hfa_reference(q, k, v, key_mask(torch.ones(B, L, dtype=torch.bool, device=DEV), True))[0]
    low = [t.bfloat16().requires_grad_() for t in (q, k, v)]
    out = softmax_hfa(*low, None, True)
    out.float().square().sum().backward()
    assert out.dtype == torch.bfloat16 and all(t.grad.isfinite().all() for t in low)
    assert ((out.double() - exact).norm() / exact.norm()).item() < 2e-2


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("keep_scores", [False, True])
def test_ha_chunked_equals_reference_with_gradients(causal, keep_scores):
    B, H, L, d_h = 2, 2, 20, 4
    mask = torch.rand(B, L, device=DEV) > 0.3
    mask[:, 0] = True
    real = mask[:, None, :, None].double()
    eye = torch.eye(d_h, device=DEV, dtype=torch.float64).expand(H, d_h, d_h)
    grads = []
    for fast in (True, False):
        q, k1, k2, v1, v2 = (rand(B, H, L, d_h, seed=s).requires_grad_() for s in range(5))
        if fast:
            out = softmax_ha_values(q, [k1, k2], [v1, v2], mask, 3, causal, keep_scores)
        else:
            out = softmax_ha_reference(q, [k1, k2], [v1, v2], eye, key_mask(mask, causal))[0]
        (out * real).square().sum().backward()
        grads.append([out * real] + [t.grad for t in (q, k1, k2, v1, v2)])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("ctor", [HyperFeatureAttention, HyperAttention])
def test_bf16_autocast_close_to_float32(ctor):
    torch.manual_seed(0)
    m = ctor(dim=64, heads=2, causal=True).to(DEV)
    x = torch.randn(4, 300 if ctor is HyperFeatureAttention else 64, 64, device=DEV)
    with torch.no_grad():
        exact = m(x)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        low = m(x)
    low.float().square().sum().backward()
    assert float((low.detach().float() - exact).norm() / exact.norm()) < 0.03
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())
