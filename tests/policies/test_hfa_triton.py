"""The fused Triton HFA kernel equals the einsum reference in float64, forward and gradients.

It runs in Triton's interpreter on the CPU (a subprocess, since TRITON_INTERPRET must be set before
the kernels are defined); tests/policies/test_attention_cuda.py runs it compiled on a GPU."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def interpreter_runs() -> bool:
    """Triton 3.6's interpreter converts size-1 arrays to ints, which numpy 2.4 refuses (2.2 accepts;
    2.3 is untried, so skipped); 3.9's does not."""
    if importlib.util.find_spec("triton") is None:
        return False
    import numpy
    import triton

    def version(v):
        return tuple(int(x) for x in v.split(".")[:2])

    return version(triton.__version__) >= (3, 9) or version(numpy.__version__) < (2, 3)


pytestmark = pytest.mark.skipif(not interpreter_runs(), reason="needs triton (>= 3.9 with numpy >= 2.3)")
ROOT = Path(__file__).resolve().parents[2]

CHECK = """
import json, sys, torch
from policies import hfa_triton
from policies.hfa import softmax_hfa_reference
B, H, L, d_h, causal, pad, empty, blocks, dots = json.loads(sys.argv[1])
hfa_triton.FIXED = dict(BLOCK_M=blocks[0], BLOCK_N=blocks[1])  # one of the tuner's tile shapes
gen = torch.Generator().manual_seed(0)
# as the module hands them over: permuted views of one (B, L, 3 H 2 d_h) projection, not contiguous
qkv = torch.randn(B, L, 3 * H * 2 * d_h, generator=gen, dtype=torch.float64).requires_grad_()
q, k, v = (t.view(B, L, H, 2, d_h).permute(0, 2, 3, 1, 4) for t in qkv.chunk(3, -1))
keep = torch.rand(B, L, generator=gen) > 0.4 if pad else torch.ones(B, L, dtype=torch.bool)
keep[:, 0] = not empty  # empty: world 0 may see no key at all when causal (query 0's only key)
allowed = keep[:, None, :] & (torch.ones(L, L, dtype=torch.bool).tril() if causal else True)
# a row that sees no key is NaN in the reference: let it see every key there (its weight w is 0)
ref = softmax_hfa_reference(q, k, v, allowed | ~allowed.any(-1, keepdim=True))[0]
args = [t.float() if dots else t for t in (q, k, v)]  # dots: fp32 inputs with those products
out = hfa_triton.softmax_hfa2(*args, keep if pad or empty else None, causal, dots).double()
seen = (allowed.any(-1) & keep)[:, None, :, None]  # real queries that see some key
w = torch.randn(ref.shape, generator=gen, dtype=torch.float64) * seen
grads = [torch.autograd.grad((t * w).sum(), qkv) for t in (out, ref)]
print(json.dumps({
    "out": ((out - ref) * seen).abs().max().item(),
    "grad": max((a - b).abs().max().item() for a, b in zip(*grads)),
    "finite": bool(out.isfinite().all() and all(g.isfinite().all() for g in grads[0])),
}))
"""


def run(case):
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", CHECK, json.dumps(case)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "case",
    [
        (2, 2, 37, 16, False, False, False, (64, 64)),  # L not a multiple of the 64-wide blocks
        (2, 2, 130, 16, True, False, False, (64, 64)),  # causal over three query and key blocks
        (2, 1, 70, 12, False, True, False, (64, 64)),  # d_h not a power of 2; padded keys
        (1, 3, 65, 32, True, True, True, (64, 64)),  # a query that sees no key outputs 0, gradients finite
        (2, 2, 130, 16, True, True, False, (32, 64)),  # causal with key blocks wider than query blocks
        (2, 2, 130, 16, True, True, False, (64, 32)),  # and narrower
    ],
)
def test_fused_hfa_equals_reference(case):
    err = run([*case, None])
    assert err["finite"]
    assert err["out"] < 1e-12 and err["grad"] < 1e-12, err


@pytest.mark.parametrize("dots", ["ieee", "tf32x3"])
def test_fused_hfa_fp32_products_are_passed_through(dots):
    """fp32 inputs with explicit products (the interpreter multiplies in fp32 whatever is asked; a
    GPU run measures tf32x3's error in bench_attention.py's kernel table)."""
    err = run([2, 2, 70, 16, True, True, False, (64, 64), dots])
    assert err["finite"] and err["out"] < 1e-5 and err["grad"] < 1e-4, err


def test_fp32_dots_is_checked():
    from policies import hfa_triton

    x = torch.zeros(1, 1, 2, 4, 16)
    with pytest.raises(ValueError, match="fp32_dots"):
        hfa_triton.softmax_hfa2(x, x, x, None, True, "tf16")
