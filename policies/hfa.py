"""HyperFeatureAttention (HFA): each head multiplies A score matrices element-wise (paper Def. 5.1, E.2).

Linear (Def. 5.1, summed over heads):
    out = sum_h [prod_a X C_(h,a) X^T] [prod_a X W_V,(h,a)]     (products element-wise over a)
so a head scores a pair by a *product* of A feature interactions, e.g. species x position,
which additive multi-head SA cannot represent (Theorem E.3).

Softmax (Def. E.2): per head softmax(prod_a Q_a K_a^T / d_h^(A/2)) . prod_a V_a, heads
concatenated, then W_O. Q_a, K_a, V_a have width d_h = dim / (heads * A), so W_Q, W_K, W_V
together hold exactly the 3 d^2 weights of softmax SA. The output projection W_O reads the
concatenated heads, H d_h = d / A wide: it has d out_dim / A weights against SA's d out_dim.
Each factor is scaled by 1/sqrt(d_h), as in SA, so the product stays O(1).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from policies.base import (
    EXP_FLOOR,
    KINDS,
    AttentionScores,
    attend_prelude,
    block_elements,
    check_choice,
    check_divisible,
    check_input,
    check_int,
    check_rank,
    domain_scores,
    free_bytes,
    interaction,
    key_mask,
    pair_mask,
    zero_padding,
)
from policies.scratch import Scratch

# ---------------------------------------------------------------- linear kernels


def linear_hfa_reference(x: Tensor, C: Tensor, W_V: Tensor, ok: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Def. 5.1 verbatim. x (B, L, d), C (H, A, d, d), W_V (H, A, d, o), ok (B, L, L).

    Returns out (B, L, o), combined scores (B, H, L, L), per-factor scores (B, H, A, L, L).
    """
    factors = torch.einsum("bid,hade,bje->bhaij", x, C, x) * ok[:, None, None]
    scores = factors.prod(2)  # Hadamard over a
    values = torch.einsum("bjd,hado->bhajo", x, W_V).prod(2)  # (B, H, L, o)
    return torch.einsum("bhij,bhjo->bio", scores, values), scores, factors


def linear_hfa(x: Tensor, C: Tensor, W_V: Tensor, causal: bool) -> Tensor:
    """Batched-matmul linear HFA; padded tokens of x must already be zero. x (B, L, d) -> (B, L, o)."""
    B, L, d = x.shape
    xt = x.transpose(1, 2)[:, None]  # (B, 1, d, L)
    scores, values = 1.0, 1.0
    for a in range(C.shape[1]):  # A is small: one matmul per factor, never a stacked (B, H, A, L, L)
        scores = scores * (
            (x[:, None] @ C[:, a]) @ xt
        )  # (B, 1, L, d) x (H, d, d) x (B, 1, d, L) -> (B, H, L, L)
        values = values * (x[:, None] @ W_V[:, a])  # (B, H, L, o)
    if causal:
        scores = scores.tril()
    return (scores @ values).sum(1)


# ---------------------------------------------------------------- softmax kernels


def softmax_hfa_reference(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor):
    """q, k, v (B, H, A, L, d_h); allowed (B, L, L).

    Returns out (B, H, L, d_h), logits and weights (B, H, L, L), per-factor logits (B, H, A, L, L).
    """
    factors = torch.einsum("bhais,bhajs->bhaij", q, k) / math.sqrt(q.shape[-1])
    logits = factors.prod(2)
    att = logits.masked_fill(~allowed[:, None], float("-inf")).softmax(-1)
    return torch.einsum("bhij,bhjs->bhis", att, v.prod(2)), logits, att, factors


def softmax_hfa(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    keep: Tensor | None = None,
    causal: bool = False,
    block: tuple[int, int] | None = None,
) -> Tensor:
    """Softmax HFA without any (B, H, L, L) tensor: blocks of scores with an online softmax.

    q (B, H, A, L_q, d_h), k and v (B, H, A, L, d_h); keep (B, L) bool marks real keys (None: all).
    Returns (B, H, L_q, d_h). Query i sees key j when keep[j] and, if `causal` (needs L_q = L),
    j <= i. Padded queries' outputs are finite but unspecified (the module zeroes them).
    `block` = (queries, keys) per block forces the blockwise kernel with those sizes; by default
    they are chosen from L and free memory (`block_sizes`).

    The same function as `softmax_hfa_reference` with allowed = keep, for every real query.
    Under autograd, a problem small enough for one block runs as plain differentiable ops;
    a larger one runs `_BlockwiseHFA`, which keeps only per-row statistics for backward and
    recomputes the scores block by block there (as FlashAttention does), so memory is O(L),
    not O(L^2). On CUDA, two factors from FUSED_MIN_KEYS keys run the fused Triton kernel of
    policies/hfa_triton.py instead, in the precisions where it measured faster (`fused_applies`).
    """
    B, H, A, Lq, d_h = q.shape
    Lk = k.shape[3]
    if causal and Lq != Lk:
        raise ValueError(f"causal needs as many queries as keys, got L_q={Lq} and L={Lk}")
    fused = block is None and B * H * Lq > 0 and fused_applies(q.device.type, q.dtype, A, d_h, Lk)
    kernels = triton_kernels() if fused else None
    if kernels is not None:
        dots = fused_fp32_dots(torch.backends.cuda.matmul.allow_tf32)
        return kernels.softmax_hfa2(q, k, v, keep, causal, dots)
    q = q * d_h**-0.5  # prod_a of 1/sqrt(d_h), applied to the small tensor
    values = math.prod(v.unbind(2))  # (B, H, L, d_h): Hadamard product of the A value matrices
    if B * H * Lq * Lk == 0:  # no query or no key: zeros of the right shape, still in the graph
        return values.new_zeros(B, H, Lq, d_h) + 0.0 * (q.sum() + k.sum() + values.sum())
    # (A B H, L_q, d_h) and (A B H, d_h, L), factor-major: one copy each, then one bmm per block
    # gives every factor's scores.
    qa = q.permute(2, 0, 1, 3, 4).reshape(A * B * H, Lq, d_h)
    kt = k.permute(2, 0, 1, 4, 3).reshape(A * B * H, d_h, Lk)
    vals = values.reshape(B * H, Lk, d_h)
    keep_bh = None if keep is None else keep[:, None].expand(B, H, Lk).reshape(B * H, Lk)
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (qa, kt, vals))
    saved = (A + 3) * B * H * Lq * Lk * 4  # bytes autograd would keep through plain ops
    if block is None and (B * H * Lq * Lk <= WHOLE_ELEMENTS or (grad and saved <= dense_bytes(q.device))):
        # Plain differentiable ops over chunks of whole rows: fastest while memory allows.
        c = max(1, min(Lq, WHOLE_ELEMENTS // (B * H * Lk)))
        outs = [_hfa_dense(qa, kt, vals, keep_bh, causal, i0, min(Lq, i0 + c)) for i0 in range(0, Lq, c)]
        out = outs[0] if len(outs) == 1 else torch.cat(outs, 1)
    else:
        cq, ck = block or block_sizes(B * H, Lq, Lk, A, q)
        dtype = vals.dtype  # bf16 / fp16 blocks run in fp32: the kernels accumulate in place
        qa, kt, vals = (t.to(torch.promote_types(dtype, torch.float32)) for t in (qa, kt, vals))
        if grad:
            out = _BlockwiseHFA.apply(qa, kt, vals, keep_bh, causal, cq, ck)
        else:
            out = _hfa_forward(qa, kt, vals, keep_bh, causal, cq, ck)[0]
        out = out.to(dtype)
    return out.view(B, H, Lq, d_h)


# From this many keys CUDA runs A = 2 as one fused Triton kernel (policies/hfa_triton.py): scores
# live only in registers, so memory is O(L) as in SDPA. Fewer keys keep the batched matmuls.
FUSED_MIN_KEYS = 256


def fused_applies(device: str, dtype: torch.dtype, A: int, d_h: int, Lk: int) -> bool:
    """Whether softmax HFA runs the fused Triton kernel: CUDA, A = 2, d_h <= 128, at least
    FUSED_MIN_KEYS keys, in every precision but float64 (Triton 3.6 could not compile its dots for
    sm_90). Measured on one H100 (B = 8, H = 4, d_h = 32, L = 4096, causal, forward + backward): bf16
    1.95 ms; fp32 with TF32 allowed 3.7 ms; strict fp32 7.9 ms with three TF32 products per product
    (`fused_fp32_dots`), output within 7e-7 of float64; the torch blockwise kernel 42-47 ms in fp32,
    and SDPA 8.3 ms in strict fp32."""
    return device == "cuda" and A == 2 and d_h <= 128 and Lk >= FUSED_MIN_KEYS and dtype != torch.float64


def fused_fp32_dots(allow_tf32: bool) -> str | None:
    """How the fused kernel multiplies fp32 inputs: as torch's matmuls would with TF32 allowed, else
    by three TF32 products (tf32x3), as accurate as fp32 products (relative error 6.9e-7 against
    9.4e-7 at L = 4096) and 2.8x faster than them forward + backward on an H100 (7.9 ms against
    22.3)."""
    return None if allow_tf32 else "tf32x3"


@functools.cache
def triton_kernels():
    """policies.hfa_triton, or None where Triton is missing (the torch kernels then run on CUDA too)."""
    try:
        from policies import hfa_triton
    except ImportError:
        return None
    return hfa_triton


def dense_bytes(device: torch.device) -> int:
    """Memory autograd may keep for plain-op HFA before the recomputing kernel takes over."""
    return min(DENSE_BYTES, free_bytes(device) // 8)


# Up to this many scores (B H L_q L) a call is one chunk of plain ops, which beats a loop of small
# blocks; it is also the size of the row chunks when autograd may keep the scores (DENSE_BYTES).
WHOLE_ELEMENTS = 2**22
# Under autograd, plain ops keep (A + 3) score-sized tensors for backward: up to this many bytes that
# is faster than recomputing (2x at L = 1024, B = 8 on the CPU); above it `_BlockwiseHFA` runs.
DENSE_BYTES = 2**30


def block_sizes(BH: int, Lq: int, Lk: int, A: int, like: Tensor) -> tuple[int, int]:
    """(queries, keys) per block: the whole problem while it is small (`WHOLE_ELEMENTS`), else
    blocks holding `block_elements` scores (CPU: `CPU_BLOCK_SCALE` times that, square). On the CPU
    B = 1, H = 4, L = 4096 ran fastest with 256 x 256 blocks (1.4-1.5x SA against 1.6-1.8x for
    128 x 256 and 1.6-1.9x for 64-128 x 1024: fewer blocks, fewer Python steps, rows still in cache);
    on an H200 blocks of about c x 2c beat whole rows of 4096 keys by 1.3-2x (64-row bmms)."""
    if BH * Lq * Lk <= WHOLE_ELEMENTS:
        return Lq, Lk
    budget = block_elements(like.device, 4, A + 4)  # A factors, product, probabilities, gradients
    if like.device.type == "cpu":
        side = max(16, math.isqrt(CPU_BLOCK_SCALE * budget // BH) // 16 * 16)
        return min(Lq, side), min(Lk, side)
    ck = min(Lk, max(64, 2 * math.isqrt(budget // (2 * BH)) // 16 * 16))
    return min(Lq, max(16, budget // (BH * ck))), ck


CPU_BLOCK_SCALE = 2  # CPU blocks of 2^18 scores: 256 x 256 at B H = 4


def _block_mask(keep, causal: bool, i0: int, i1: int, j0: int, j1: int, device) -> Tensor | None:
    """(B H, c_q, c_k) or broadcastable bool: True where query i may not see key j, or None if all may."""
    mask = None
    if keep is not None:
        mask = ~keep[:, None, j0:j1]  # (B H, 1, c_k)
    if causal and j1 - 1 > i0:  # some key of the block comes after some query of it
        rows = torch.arange(i0, i1, device=device)
        future = torch.arange(j0, j1, device=device)[None, :] > rows[:, None]  # (c_q, c_k)
        mask = future if mask is None else mask | future
    return mask


def _hfa_dense(qa, kt, vals, keep, causal: bool, i0: int, i1: int) -> Tensor:
    """Queries i0:i1 as plain differentiable ops: (B H, i1 - i0, d_h); keys :i1 when causal.

    Padded queries (keep False at their own index) may see every key, so no row is empty and
    softmax never returns NaN; their outputs are zeroed by the module. Probabilities below e^-60
    are set to 0 (subnormal floats would slow the next matmul a hundredfold).
    """
    stat = torch.promote_types(qa.dtype, torch.float32)
    BH, Lk = vals.shape[0], i1 if causal else kt.shape[2]
    S = torch.bmm(qa[:, i0:i1], kt[:, :, :Lk]).to(stat).view(-1, BH, i1 - i0, Lk)  # every factor's scores
    z = math.prod(S[1:], start=S[0])  # (B H, c, L); products, not prod(): its backward is slow
    mask = _block_mask(keep, causal, i0, i1, 0, Lk, qa.device)
    if mask is not None:
        if keep is not None and i0 < keep.shape[1]:
            mask = mask & keep[:, i0:i1, None]  # padded queries: nothing masked
        z = z.masked_fill_(mask, -math.inf)  # in place: the products' backward needs S, not z
    p = F.threshold(z.softmax(-1), math.exp(EXP_FLOOR), 0.0)
    return torch.bmm(p.to(vals.dtype), vals[:, :Lk])


def _block_scores(qa, kt, BH: int, i0: int, i1: int, j0: int, j1: int, stat, keep_factors: bool):
    """(A, B H, c_q, c_k) factor scores of one block (or None) and their product z, in dtype `stat`.

    Without `keep_factors` the product is formed in place over the first factor's scores.
    """
    S = torch.bmm(qa[:, i0:i1], kt[:, :, j0:j1]).to(stat).view(-1, BH, i1 - i0, j1 - j0)
    if S.shape[0] == 1:
        return S, S[0]
    z = S[0] * S[1] if keep_factors else S[0].mul_(S[1])
    for a in range(2, S.shape[0]):
        z = z.mul_(S[a])
    return (S if keep_factors else None), z


def _exp_masked(z: Tensor, mask: Tensor | None) -> Tensor:
    """exp(z) in place for z <= 0: entries below EXP_FLOOR weigh exp(EXP_FLOOR) ~ 1e-26 of the
    row's largest, and masked entries (z = -inf) exactly 0. The vectorised exp handles only inputs
    whose result is a normal float quickly (-inf or -100 take 8-24 ns against 0.3 ns, measured),
    so the floor comes first and the mask, where a block has one, after."""
    p = z.clamp_min_(EXP_FLOOR).exp_()
    return p if mask is None else p.masked_fill_(mask, 0.0)


def _hfa_forward(qa, kt, vals, keep, causal: bool, cq: int, ck: int) -> tuple[Tensor, Tensor]:
    """Blockwise forward. qa (A B H, L_q, d_h) pre-scaled, kt (A B H, d_h, L), vals (B H, L, d_h),
    keep (B H, L) | None. Returns out (B H, L_q, d_h) and the rows' log-sum-exp (B H, L_q).

    Loops over query blocks and, inside, over key blocks: a Python loop over blocks (not tokens)
    is what bounds memory; each step is a few batched matmuls and elementwise passes over a block.
    Every row's scores are shifted by a bound known before any block (`_score_bound`), so blocks
    add up without the online softmax's running maxima and rescaling; where a bound is too loose
    for float precision (a row's sum of exp(z - bound) below MIN_SUM) `_hfa_forward_online` runs.
    """
    BH, Lk, d_h = vals.shape
    AB, Lq = qa.shape[:2]
    A = AB // BH
    stat = torch.promote_types(qa.dtype, torch.float32)  # softmax statistics never below fp32
    shift, sees = _score_bound(qa, kt, keep, causal, A, stat)  # (B H, L_q) each
    out = torch.empty(BH, Lq, d_h, dtype=stat, device=qa.device)
    norms = torch.empty(BH, Lq, 1, dtype=stat, device=qa.device)
    kts = [(j0, kt[:, :, j0 : j0 + ck], vals[:, j0 : j0 + ck]) for j0 in range(0, Lk, ck)]
    scratch = Scratch(stat, qa.device)
    with torch.autocast(qa.device.type, enabled=False):  # dtypes are explicit below
        for i0 in range(0, Lq, cq):
            i1 = min(Lq, i0 + cq)
            q_blk, minus_shift = qa[:, i0:i1], -shift[:, i0:i1, None]
            acc = norm = None
            for j0, kt_blk, v_blk in kts if not causal else kts[: (i1 - 1) // ck + 1]:
                S = _bmm(q_blk, kt_blk, scratch, "S").view(A, BH, i1 - i0, -1)  # every factor's scores
                if A == 1:
                    z = S[0].add_(minus_shift)
                elif A == 2:
                    z = torch.addcmul(minus_shift, S[0], S[1], out=scratch.get("z", S.shape[1:]))
                else:
                    z = S[1:].prod(0).mul_(S[0]).add_(minus_shift)
                mask = _block_mask(keep, causal, i0, i1, j0, j0 + z.shape[-1], qa.device)
                if mask is not None:
                    z = z.masked_fill_(mask, -math.inf)
                p = _exp_masked(z, mask).to(vals.dtype)  # (B H, c_q, c_k)
                if acc is None:
                    acc, norm = torch.bmm(p, v_blk).to(stat), p.sum(-1, keepdim=True, dtype=stat)
                else:
                    acc, norm = acc.baddbmm_(p, v_blk), norm.add_(p.sum(-1, keepdim=True, dtype=stat))
            out[:, i0:i1] = acc / norm.clamp_min(torch.finfo(stat).tiny)
            norms[:, i0:i1] = norm
    norms = norms[..., 0]
    if bool(((norms < MIN_SUM) & sees).any()):
        return _hfa_forward_online(qa, kt, vals, keep, causal, cq, ck)
    return out.to(vals.dtype), shift + norms.log()  # -inf for a row that saw no key


def _bmm(a: Tensor, b: Tensor, scratch: Scratch, name: str) -> Tensor:
    """a @ b in the statistics dtype, into a reused buffer when no conversion is needed."""
    if a.dtype == scratch.dtype:
        return torch.bmm(a, b, out=scratch.get(name, (a.shape[0], a.shape[1], b.shape[2])))
    return torch.bmm(a, b).to(scratch.dtype)


MIN_SUM = math.exp(-25.0)  # see `_hfa_forward`: terms floored at exp(EXP_FLOOR) stay 1e-15 of the sum


def _score_bound(qa, kt, keep, causal: bool, A: int, stat) -> tuple[Tensor, Tensor]:
    """An upper bound on every score a query sees, prod_a |q_a,i| max_j |k_a,j| over the keys j it
    may see (Cauchy-Schwarz per factor), and whether it sees any key at all: (B H, L_q) each."""
    qn = torch.linalg.vector_norm(qa.to(stat), dim=-1)  # (A B H, L_q)
    kn = torch.linalg.vector_norm(kt.to(stat), dim=1)  # (A B H, L)
    BH, Lq, L = qn.shape[0] // A, qn.shape[1], kn.shape[1]
    if keep is not None:
        kn = kn.view(A, BH, L).mul(keep).flatten(0, 1)
    if causal:
        top = kn.cummax(-1).values[:, :Lq]
    else:
        top = kn.amax(-1, keepdim=True) if L else kn.new_zeros(kn.shape[0], 1)
    shift = (qn * top).view(A, BH, Lq).prod(0)
    if keep is None:
        sees = torch.ones(BH, Lq, dtype=torch.bool, device=qa.device)
    else:
        sees = keep.cumsum(1)[:, :Lq] > 0 if causal else keep.any(1, keepdim=True).expand(BH, Lq)
    return shift, sees


def _hfa_forward_online(qa, kt, vals, keep, causal: bool, cq: int, ck: int) -> tuple[Tensor, Tensor]:
    """`_hfa_forward` with each row's running maximum as the shift, for rows whose scores lie far
    below their bound. The online softmax keeps per row the running max m, the sum l of exp(z - m) and the
    accumulated exp(z - m) V, rescaling both by exp(m_old - m_new) when a block raises the max.
    """
    BH, Lk, d_h = vals.shape
    Lq = qa.shape[1]
    stat = torch.promote_types(qa.dtype, torch.float32)  # softmax statistics never below fp32
    lowest = torch.finfo(stat).min
    out = torch.empty(BH, Lq, d_h, dtype=stat, device=qa.device)
    lse = torch.empty(BH, Lq, dtype=stat, device=qa.device)
    with torch.autocast(qa.device.type, enabled=False):  # dtypes are explicit below
        for i0 in range(0, Lq, cq):
            i1 = min(Lq, i0 + cq)
            m = acc = norm = None
            for j0 in range(0, i1 if causal else Lk, ck):
                j1 = min(Lk, j0 + ck)
                _, z = _block_scores(qa, kt, BH, i0, i1, j0, j1, stat, False)  # (B H, c_q, c_k)
                mask = _block_mask(keep, causal, i0, i1, j0, j1, qa.device)
                if mask is not None:
                    z = z.masked_fill_(mask, -math.inf)
                m_blk = z.amax(-1, keepdim=True).clamp_min_(lowest)  # finite even for empty rows
                m_new = m_blk if m is None else torch.maximum(m, m_blk)
                p = _exp_masked(z.sub_(m_new), mask)  # (B H, c_q, c_k), in place over the scores
                if m is None:
                    acc = torch.bmm(p.to(vals.dtype), vals[:, j0:j1]).to(stat)  # (B H, c_q, d_h)
                    norm = p.sum(-1, keepdim=True)
                else:  # rescale both to the new max
                    scale = (m - m_new).exp_()  # (B H, c_q, 1)
                    acc = acc.mul_(scale).baddbmm_(p.to(vals.dtype), vals[:, j0:j1])
                    norm = norm.mul_(scale).add_(p.sum(-1, keepdim=True))
                m = m_new
            out[:, i0:i1] = acc / norm.clamp_min(torch.finfo(stat).tiny)
            lse[:, i0:i1] = (m + norm.log())[..., 0]  # -inf for a row that saw no key
    return out.to(vals.dtype), lse


def _hfa_backward(qa, kt, vals, keep, causal, cq, ck, out, lse, dout):
    """Gradients of `_hfa_forward`'s output for (qa, kt, vals), recomputing each block's scores.

    With p = exp(z - lse) and D_i = sum_s dout_is out_is: dvals = p^T dout, dz = p (dout vals^T - D),
    dS_a = dz prod_(b != a) S_b, dq_a = dS_a k_a, dk_a = dS_a^T q_a. Each gradient accumulates in
    a contiguous tensor per query block (dq) or key block (dk, dvals): baddbmm_ into a strided
    slice would fall back to one small matmul per batch entry. -D rides along as an extra column
    of dout against a column of ones beside vals, so dout vals^T - D is one matmul.
    """
    BH, Lk, d_h = vals.shape
    AB, Lq = qa.shape[:2]
    A = AB // BH
    stat = lse.dtype
    dout = dout.to(stat)
    minus_D = -(dout * out.to(stat)).sum(-1, keepdim=True)  # (B H, L_q, 1)
    dout_aug = torch.cat([dout, minus_D], -1)  # (B H, L_q, d_h + 1)
    vals_aug = torch.cat([vals.to(stat), torch.ones_like(minus_D[:, :1]).expand(BH, Lk, 1)], -1)
    lse = torch.where(torch.isinf(lse), math.inf, lse)[..., None]  # empty rows: p = exp(-inf) = 0
    k, q_stat = kt.transpose(1, 2).to(stat), qa.to(stat)  # (A B H, L, d_h), (A B H, L_q, d_h)
    keys = [
        (j0, kt[:, :, j0 : j0 + ck], k[:, j0 : j0 + ck], vals_aug[:, j0 : j0 + ck].transpose(1, 2))
        for j0 in range(0, Lk, ck)
    ]
    dk = [q_stat.new_zeros(AB, kb[2].shape[1], d_h) for kb in keys]
    dvals = [q_stat.new_zeros(BH, kb[2].shape[1], d_h) for kb in keys]
    dq = []
    scratch = Scratch(stat, qa.device)
    with torch.autocast(qa.device.type, enabled=False):
        for i0 in range(0, Lq, cq):
            i1 = min(Lq, i0 + cq)
            do_aug, q_blk, minus_lse = dout_aug[:, i0:i1], q_stat[:, i0:i1], -lse[:, i0:i1]
            do = do_aug[..., :d_h]  # (B H, c_q, d_h)
            dq_blk = q_stat.new_zeros(AB, i1 - i0, d_h)
            seen = keys if not causal else keys[: (i1 - 1) // ck + 1]
            for jb, (j0, kt_blk, k_blk, vT_aug) in enumerate(seen):
                S = _bmm(qa[:, i0:i1], kt_blk, scratch, "S").view(A, BH, i1 - i0, -1)
                z = scratch.get("z", S.shape[1:])
                if A == 1:
                    z = torch.add(S[0], minus_lse, out=z)
                else:  # z - lse = S_0 ... S_(A-2) S_(A-1) - lse, the last product fused with the shift
                    z = torch.addcmul(minus_lse, S[0] if A == 2 else S[:-1].prod(0), S[-1], out=z)
                mask = _block_mask(keep, causal, i0, i1, j0, j0 + z.shape[-1], qa.device)
                if mask is not None:
                    z = z.masked_fill_(mask, -math.inf)
                p = _exp_masked(z, mask)  # (B H, c_q, c_k)
                dvals[jb].baddbmm_(p.transpose(1, 2), do)
                dz = torch.bmm(do_aug, vT_aug, out=scratch.get("dz", z.shape)).mul_(p)  # p (dout vals^T - D)
                if A == 1:
                    ds = dz
                else:  # (A B H, c_q, c_k): dz times the product of the other factors, per factor
                    ds = scratch.get("ds", S.shape)
                    for a in range(A):
                        others = [S[b] for b in range(A) if b != a]
                        torch.mul(dz, others[0], out=ds[a])
                        for other in others[1:]:
                            ds[a].mul_(other)
                    ds = ds.view(AB, i1 - i0, -1)
                dq_blk.baddbmm_(ds, k_blk)
                dk[jb].baddbmm_(ds.transpose(1, 2), q_blk)
            dq.append(dq_blk)
    dk, dvals = torch.cat(dk, 1), torch.cat(dvals, 1)
    return torch.cat(dq, 1).to(qa.dtype), dk.transpose(1, 2).to(kt.dtype), dvals.to(vals.dtype)


class _BlockwiseHFA(torch.autograd.Function):
    """`_hfa_forward` with a backward that recomputes scores per block: saves O(L) per row."""

    @staticmethod
    def forward(ctx, qa, kt, vals, keep, causal, cq, ck):
        out, lse = _hfa_forward(qa, kt, vals, keep, causal, cq, ck)
        ctx.save_for_backward(qa, kt, vals, keep, out, lse)
        ctx.plan = (causal, cq, ck)
        return out

    @staticmethod
    def backward(ctx, dout):
        qa, kt, vals, keep, out, lse = ctx.saved_tensors
        causal, cq, ck = ctx.plan
        grads = _hfa_backward(qa, kt, vals, keep, causal, cq, ck, out, lse, dout)
        return (*grads, None, None, None, None)


# ---------------------------------------------------------------- module


class HyperFeatureAttention(nn.Module):
    """HyperFeatureAttention: per head, a pair's score is the product of A factor scores.

    Args:
        dim: token width d.
        heads: H.
        factors: A >= 1 score factors per head (A = 1 is ordinary SA).
        kind: "linear" (C_(h,a), W_V,(h,a) full d x d and d x out_dim) or "softmax"
            (d_h = dim / (heads * factors)).
        causal: token i only sees tokens j <= i.
        out_dim: output width (default dim).
        rank: linear only. None: full C_(h,a). An int r: C_(h,a) = W_Q,(h,a) W_K,(h,a)^T with d x r
            factors. The Hadamard product of A rank-r factors has rank up to r^A, which is why
            HFA needs far fewer weights than SA for product-structured interactions (experiment 4).

    `forward(x (B, L, dim), mask (B, L) bool | None, return_scores)` -> (B, L, out_dim), plus
    `AttentionScores` with combined scores (B, H, L, L) and per-factor scores (B, H, A, L, L).
    """

    def __init__(
        self,
        *,
        dim: int,
        heads: int = 1,
        factors: int = 2,
        kind: str = "softmax",
        causal: bool = False,
        out_dim: int | None = None,
        rank: int | None = None,
    ):
        super().__init__()
        check_choice("kind", kind, KINDS)
        self.dim, self.heads = check_int("dim", dim, 1), check_int("heads", heads, 1)
        self.factors = check_int("factors", factors, 1)
        self.out_dim = dim if out_dim is None else check_int("out_dim", out_dim, 1)
        self.kind, self.causal = kind, bool(causal)
        self.rank = check_rank(rank, kind)
        if kind == "linear":
            # std 1/d per C entry keeps each factor's score O(1) for unit-norm tokens.
            if rank is None:
                self.C = nn.Parameter(torch.randn(heads, factors, dim, dim) / dim)
            else:
                self.W_Q = nn.Parameter(torch.randn(heads, factors, dim, rank) / math.sqrt(dim))
                self.W_K = nn.Parameter(torch.randn(heads, factors, dim, rank) / math.sqrt(dim * rank))
            self.W_V = nn.Parameter(torch.randn(heads, factors, dim, self.out_dim) / math.sqrt(dim))
        else:
            self.head_dim = check_divisible(dim, heads * factors, "heads * factors")
            self.qkv = nn.Linear(dim, 3 * dim, bias=False)  # W_Q, W_K, W_V for every (head, factor)
            self.proj = nn.Linear(heads * self.head_dim, self.out_dim, bias=False)  # W_O

    def forward(self, x: Tensor, mask: Tensor | None = None, return_scores: bool = False):
        given = mask is not None
        mask = check_input(x, mask, self.dim)
        x = zero_padding(x, mask)
        if self.kind == "linear":
            C = self.interaction()
            if not return_scores:
                return linear_hfa(x, C, self.W_V, self.causal)
            out, scores, factors = linear_hfa_reference(x, C, self.W_V, pair_mask(mask, self.causal))
            return out, AttentionScores("linear", scores, factors=factors)
        return self._softmax(x, mask, given, return_scores)

    def interaction(self) -> Tensor:
        """The linear model's C, (H, A, d, d): the free parameter, or W_Q W_K^T when low-rank."""
        return interaction(self)

    def tables(self, P: Tensor | None = None) -> list[Tensor]:
        """Linear only: [G], G[mu, nu, o] = sum_h prod_a (p_mu^T C_ha p_nu) * prod_a (p_nu^T W_V,ha)_o.

        P (M, d): every domain element's embedding (None: one-hot, the identity). See SelfAttention.
        """
        S = domain_scores(self, P)  # (H, A, M, M)
        V = self.W_V if P is None else P @ self.W_V  # (H, A, M, o)
        return [(S.prod(1)[..., None] * V.prod(1)[:, None]).sum(0)]  # (M, M, o)

    def attend(self, x: Tensor, mask: Tensor | None, first_only: bool = False) -> Tensor:
        """`forward` without its input checks, for a caller that validated x once (AttentionExtractor).

        x (B, L, dim), real tokens finite; mask (B, L) bool, or None for no padding (then no masking
        work at all). first_only: the output of query 0 only, (B, 1, out_dim) (keys still span all L).
        """
        first_only = first_only and x.shape[1] > 0  # no token 0 when L = 0: the empty full pass
        x, out = attend_prelude(self, x, mask, first_only, linear_hfa)
        if out is not None:
            return out
        B, L, d = x.shape
        H, A, d_h = self.heads, self.factors, self.head_dim
        Lq = 1 if first_only else L
        if first_only:  # q of token 0 only; k, v of every token
            q = F.linear(x[:, :1], self.qkv.weight[:d]).view(B, 1, H, A, d_h).permute(0, 2, 3, 1, 4)
            k, v = (
                t.view(B, L, H, A, d_h).permute(0, 2, 3, 1, 4)
                for t in F.linear(x, self.qkv.weight[d:]).split(d, -1)
            )  # (B, H, A, L, d_h)
        else:
            q, k, v = (t.view(B, L, H, A, d_h).permute(0, 2, 3, 1, 4) for t in self.qkv(x).split(d, -1))
        y = softmax_hfa(q, k, v, mask, False)  # (B, H, L_q, d_h)
        out = self.proj(y.transpose(1, 2).reshape(B, Lq, H * d_h))  # (B, L_q, out_dim)
        return out if mask is None else out * mask[:, :Lq, None]  # padded tokens output zero

    def _softmax(self, x: Tensor, mask: Tensor, given: bool, return_scores: bool):
        B, L, d = x.shape
        H, A, d_h = self.heads, self.factors, self.head_dim
        q, k, v = (t.view(B, L, H, A, d_h).permute(0, 2, 3, 1, 4) for t in self.qkv(x).split(d, -1))
        if return_scores:
            y, logits, att, factors = softmax_hfa_reference(q, k, v, key_mask(mask, self.causal))
        else:
            y = softmax_hfa(q, k, v, mask if given else None, self.causal)  # (B, H, L, d_h)
        out = self.proj(y.transpose(1, 2).reshape(B, L, H * d_h)) * mask[..., None]
        if not return_scores:
            return out
        ok = pair_mask(mask, self.causal)[:, None]
        return out, AttentionScores("softmax", att * ok, logits=logits * ok, factors=factors * ok[:, :, None])
