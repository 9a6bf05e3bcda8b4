"""Fused softmax HFA for two factors on CUDA (Triton): FlashAttention's tiling with a product of scores.

For query i and key j the logit is s_ij = c r1_ij r2_ij with r_a = q_a,i . k_a,j and c = 1 / d_h,
and the value of key j is v1_j * v2_j. Each program (one batch-head on grid axis 0, which has room
for any B H) holds a block of queries and walks the key blocks with an online softmax, so no
(B, H, L, L) tensor exists in forward or backward: memory is O(L), as for SDPA. The kernels read
q, k, v where they lie (the module's permuted views of its projection, any strides but the last)
and scale and multiply inside, so no copy of them is made. Backward recomputes the two factor
scores per block (FlashAttention-2's split: one kernel for dK, dV over query blocks, one for dQ
over key blocks):

    dS = P * (dP - rowsum(dO * O)),   dP = dO (v1 * v2)^T,   dv1_j = v2_j * sum_i P_ij dO_i
    dq1_i = c sum_j dS_ij r2_ij k1_j,   dk1_j = c sum_i dS_ij r2_ij q1_i   (and 1 <-> 2)

`softmax_hfa2` equals `policies.hfa.softmax_hfa_reference` with A = 2 (tests/policies run it in
Triton's interpreter on the CPU). Triton is imported here only; `policies.hfa` falls back to its
torch kernels where this module cannot be imported.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

LOG2E = tl.constexpr(1.4426950408889634)  # kernels read only constexpr globals

CONFIGS = [
    triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)
    for m, n, w, s in [(64, 64, 4, 2), (128, 64, 4, 2), (128, 64, 8, 3), (64, 128, 4, 3)]
]


@triton.jit
def _tile(ptr, rows, offs_d, n, D, stride):
    """(rows, BLOCK_D) of an (n, D) matrix whose rows are `stride` apart; zeros outside it."""
    mask = (rows[:, None] < n) & (offs_d[None, :] < D)
    return tl.load(ptr + rows[:, None] * stride + offs_d[None, :], mask=mask, other=0.0)


@triton.jit
def _pair(ptr, rows, offs_d, n, D, stride_a, stride):
    """Both factors' tiles of q, k or v at these rows."""
    return _tile(ptr, rows, offs_d, n, D, stride), _tile(ptr + stride_a, rows, offs_d, n, D, stride)


@triton.jit
def _query_rows(qb, do_ptr, lse_ptr, delta_ptr, bh, offs_m, offs_d, Lq, D, sq_a, sq_l):
    """What backward needs of a block of queries: q1, q2, dO, logsumexp, rowsum(dO * O)."""
    q1, q2 = _pair(qb, offs_m, offs_d, Lq, D, sq_a, sq_l)
    do = _tile(do_ptr + bh * Lq * D, offs_m, offs_d, Lq, D, D)
    lse = tl.load(lse_ptr + bh * Lq + offs_m, mask=offs_m < Lq, other=float("inf"))
    delta = tl.load(delta_ptr + bh * Lq + offs_m, mask=offs_m < Lq, other=0.0)
    return q1, q2, do, lse, delta


@triton.jit
def _logits(
    q1, q2, k1, k2, keep_ptr, offs_m, offs_n, Lk, c,
    causal: tl.constexpr, HAS_KEEP: tl.constexpr, PREC: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """(BLOCK_M, BLOCK_N) logits, -inf where the key is padded, in the future or past L; r1, r2."""
    r1 = tl.dot(q1, tl.trans(k1), input_precision=PREC, out_dtype=ACC)
    r2 = tl.dot(q2, tl.trans(k2), input_precision=PREC, out_dtype=ACC)
    ok = offs_n[None, :] < Lk
    if HAS_KEEP:
        ok = ok & (tl.load(keep_ptr + offs_n, mask=offs_n < Lk, other=0) != 0)[None, :]
    if causal:
        ok = ok & (offs_n[None, :] <= offs_m[:, None])
    return tl.where(ok, c * r1 * r2, float("-inf")), r1, r2, ok


@triton.jit
def _bases(q_ptr, k_ptr, v_ptr, keep_ptr, H, Lk, sq_b, sq_h, sk_b, sk_h, sv_b, sv_h):
    """This program's batch-head: where its q, k, v and keep rows start."""
    bh = tl.program_id(0)
    b, h = (bh // H).to(tl.int64), (bh % H).to(tl.int64)
    return (
        bh.to(tl.int64),
        q_ptr + b * sq_b + h * sq_h,
        k_ptr + b * sk_b + h * sk_h,
        v_ptr + b * sv_b + h * sv_h,
        keep_ptr + b * Lk,
    )


@triton.jit
def _forward(
    q_ptr, k_ptr, v_ptr, keep_ptr, o_ptr, lse_ptr, H, Lq, Lk, D, c,
    sq_b, sq_h, sq_a, sq_l, sk_b, sk_h, sk_a, sk_l, sv_b, sv_h, sv_a, sv_l,
    causal: tl.constexpr, HAS_KEEP: tl.constexpr, PREC: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    bh, qb, kb, vb, keep = _bases(q_ptr, k_ptr, v_ptr, keep_ptr, H, Lk, sq_b, sq_h, sk_b, sk_h, sv_b, sv_h)
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q1, q2 = _pair(qb, offs_m, offs_d, Lq, D, sq_a, sq_l)
    m = tl.full([BLOCK_M], float("-inf"), ACC)
    l = tl.zeros([BLOCK_M], ACC)  # noqa: E741
    acc = tl.zeros([BLOCK_M, BLOCK_D], ACC)
    end = tl.minimum(Lk, (tl.program_id(1) + 1) * BLOCK_M) if causal else Lk
    for n0 in range(0, end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        k1, k2 = _pair(kb, offs_n, offs_d, Lk, D, sk_a, sk_l)
        s, r1, r2, ok = _logits(q1, q2, k1, k2, keep, offs_m, offs_n, Lk, c, causal, HAS_KEEP, PREC, ACC)
        m_new = tl.maximum(m, tl.max(s, 1))
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with no key yet stays empty
        p = tl.exp2((s - shift[:, None]) * LOG2E)
        alpha = tl.exp2((m - shift) * LOG2E)
        v1, v2 = _pair(vb, offs_n, offs_d, Lk, D, sv_a, sv_l)
        vals = (v1 * v2).to(v1.dtype)
        acc = acc * alpha[:, None] + tl.dot(p.to(v1.dtype), vals, input_precision=PREC, out_dtype=ACC)
        l = l * alpha + tl.sum(p, 1)  # noqa: E741
        m = m_new
    out = acc / tl.where(l > 0, l, 1.0)[:, None]  # a query with no visible key outputs 0
    o_rows = o_ptr + bh * Lq * D + offs_m[:, None] * D + offs_d[None, :]
    tl.store(o_rows, out.to(o_ptr.dtype.element_ty), mask=(offs_m[:, None] < Lq) & (offs_d[None, :] < D))
    # +inf for an empty row makes its backward probabilities exp(-inf - inf) = 0, not NaN
    lse = tl.where(l > 0, m + tl.log(tl.where(l > 0, l, 1.0)), float("inf"))
    tl.store(lse_ptr + bh * Lq + offs_m, lse, mask=offs_m < Lq)


@triton.jit
def _backward_kv(
    q_ptr, k_ptr, v_ptr, keep_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr, H, Lq, Lk, D, c,
    sq_b, sq_h, sq_a, sq_l, sk_b, sk_h, sk_a, sk_l, sv_b, sv_h, sv_a, sv_l,
    causal: tl.constexpr, HAS_KEEP: tl.constexpr, PREC: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """dk, dv (B, H, 2, L, d_h) of one block of keys, summed over every query block that sees it."""
    bh, qb, kb, vb, keep = _bases(q_ptr, k_ptr, v_ptr, keep_ptr, H, Lk, sq_b, sq_h, sk_b, sk_h, sv_b, sv_h)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    k1, k2 = _pair(kb, offs_n, offs_d, Lk, D, sk_a, sk_l)
    v1, v2 = _pair(vb, offs_n, offs_d, Lk, D, sv_a, sv_l)
    vals = (v1 * v2).to(v1.dtype)
    dk1 = tl.zeros([BLOCK_N, BLOCK_D], ACC)
    dk2 = tl.zeros([BLOCK_N, BLOCK_D], ACC)
    dvals = tl.zeros([BLOCK_N, BLOCK_D], ACC)
    start = (tl.program_id(1) * BLOCK_N) // BLOCK_M * BLOCK_M if causal else 0
    for m0 in range(start, Lq, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        q1, q2, do, lse, delta = _query_rows(
            qb, do_ptr, lse_ptr, delta_ptr, bh, offs_m, offs_d, Lq, D, sq_a, sq_l
        )
        s, r1, r2, ok = _logits(q1, q2, k1, k2, keep, offs_m, offs_n, Lk, c, causal, HAS_KEEP, PREC, ACC)
        p = tl.where(ok, tl.exp2((s - lse[:, None]) * LOG2E), 0.0)  # (BLOCK_M, BLOCK_N)
        dvals += tl.dot(tl.trans(p).to(do.dtype), do, input_precision=PREC, out_dtype=ACC)
        ds = c * p * (tl.dot(do, tl.trans(vals), input_precision=PREC, out_dtype=ACC) - delta[:, None])
        dk1 += tl.dot(tl.trans(ds * r2).to(q1.dtype), q1, input_precision=PREC, out_dtype=ACC)
        dk2 += tl.dot(tl.trans(ds * r1).to(q2.dtype), q2, input_precision=PREC, out_dtype=ACC)
    rows = bh * 2 * Lk * D + offs_n[:, None] * D + offs_d[None, :]  # (B, H, 2, L, d_h), contiguous
    mask = (offs_n[:, None] < Lk) & (offs_d[None, :] < D)
    ty = dk_ptr.dtype.element_ty
    tl.store(dk_ptr + rows, dk1.to(ty), mask=mask)
    tl.store(dk_ptr + rows + Lk * D, dk2.to(ty), mask=mask)
    tl.store(dv_ptr + rows, (dvals * v2).to(ty), mask=mask)
    tl.store(dv_ptr + rows + Lk * D, (dvals * v1).to(ty), mask=mask)


@triton.jit
def _backward_q(
    q_ptr, k_ptr, v_ptr, keep_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr, H, Lq, Lk, D, c,
    sq_b, sq_h, sq_a, sq_l, sk_b, sk_h, sk_a, sk_l, sv_b, sv_h, sv_a, sv_l,
    causal: tl.constexpr, HAS_KEEP: tl.constexpr, PREC: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """dq (B, H, 2, L_q, d_h) of one block of queries, summed over the key blocks it sees."""
    bh, qb, kb, vb, keep = _bases(q_ptr, k_ptr, v_ptr, keep_ptr, H, Lk, sq_b, sq_h, sk_b, sk_h, sv_b, sv_h)
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q1, q2, do, lse, delta = _query_rows(
        qb, do_ptr, lse_ptr, delta_ptr, bh, offs_m, offs_d, Lq, D, sq_a, sq_l
    )
    dq1 = tl.zeros([BLOCK_M, BLOCK_D], ACC)
    dq2 = tl.zeros([BLOCK_M, BLOCK_D], ACC)
    end = tl.minimum(Lk, (tl.program_id(1) + 1) * BLOCK_M) if causal else Lk
    for n0 in range(0, end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        k1, k2 = _pair(kb, offs_n, offs_d, Lk, D, sk_a, sk_l)
        s, r1, r2, ok = _logits(q1, q2, k1, k2, keep, offs_m, offs_n, Lk, c, causal, HAS_KEEP, PREC, ACC)
        p = tl.where(ok, tl.exp2((s - lse[:, None]) * LOG2E), 0.0)
        v1, v2 = _pair(vb, offs_n, offs_d, Lk, D, sv_a, sv_l)
        vals = (v1 * v2).to(v1.dtype)
        ds = c * p * (tl.dot(do, tl.trans(vals), input_precision=PREC, out_dtype=ACC) - delta[:, None])
        dq1 += tl.dot((ds * r2).to(k1.dtype), k1, input_precision=PREC, out_dtype=ACC)
        dq2 += tl.dot((ds * r1).to(k2.dtype), k2, input_precision=PREC, out_dtype=ACC)
    rows = bh * 2 * Lq * D + offs_m[:, None] * D + offs_d[None, :]  # (B, H, 2, L_q, d_h), contiguous
    mask = (offs_m[:, None] < Lq) & (offs_d[None, :] < D)
    tl.store(dq_ptr + rows, dq1.to(dq_ptr.dtype.element_ty), mask=mask)
    tl.store(dq_ptr + rows + Lq * D, dq2.to(dq_ptr.dtype.element_ty), mask=mask)


# Triton's interpreter (TRITON_INTERPRET=1, the CPU tests) cannot time configurations: one fixed.
INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
# Backward holds about twice forward's tiles. With fp32 products ("ieee", no tensor cores) and fixed
# 64 x 64 tiles it took 311 ms against forward's 4.4 on one H100, which looks like registers
# spilling, so smaller tiles are among its choices. Each backward kernel overwrites its outputs, so
# the tuner's trial runs are harmless.
BACKWARD_CONFIGS = [
    triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)
    for m, n, w, s in [(64, 64, 4, 2), (32, 64, 4, 2), (64, 32, 4, 2), (32, 32, 4, 2)]
]
TUNE_KEY = ["Lq", "Lk", "BLOCK_D", "causal", "PREC"]
_forward_tuned, _backward_kv_tuned, _backward_q_tuned = _forward, _backward_kv, _backward_q
if not INTERPRETING:
    _forward_tuned = triton.autotune(CONFIGS, key=TUNE_KEY)(_forward)
    _backward_kv_tuned = triton.autotune(BACKWARD_CONFIGS, key=TUNE_KEY)(_backward_kv)
    _backward_q_tuned = triton.autotune(BACKWARD_CONFIGS, key=TUNE_KEY)(_backward_q)
FIXED = dict(BLOCK_M=64, BLOCK_N=64) if INTERPRETING else {}
FP32_DOTS = ("ieee", "tf32", "tf32x3")


def _precision(t: Tensor, fp32_dots: str | None) -> str:
    """The products of fp32 inputs: ``fp32_dots`` when given, else fp32 unless the user allowed TF32
    for matmuls, as torch does. tf32x3 sums three TF32 products (a high and a low part of each
    factor) for about fp32's accuracy on tensor cores."""
    if t.dtype != torch.float32:
        return "ieee"  # bf16 and fp16 products are exact in fp32 accumulators anyway; float64 too
    if fp32_dots is not None:
        return fp32_dots
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"


class _FusedHFA2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, keep, causal, fp32_dots):
        B, H, _, Lq, D = q.shape
        Lk = k.shape[3]
        o = q.new_empty(B, H, Lq, D)
        acc = torch.float64 if q.dtype == torch.float64 else torch.float32  # float64: the exactness tests
        lse = torch.empty(B * H, Lq, device=q.device, dtype=acc)
        has_keep = keep is not None
        keep_arg = keep if has_keep else o  # never read without HAS_KEEP
        meta = dict(
            causal=causal,
            HAS_KEEP=has_keep,
            PREC=_precision(q, fp32_dots),
            ACC=tl.float64 if acc == torch.float64 else tl.float32,
            BLOCK_D=max(16, triton.next_power_of_2(D)),
        )
        strides = (*q.stride()[:4], *k.stride()[:4], *v.stride()[:4])
        grid = lambda cfg: (B * H, triton.cdiv(Lq, cfg["BLOCK_M"]))  # noqa: E731
        _forward_tuned[grid](q, k, v, keep_arg, o, lse, H, Lq, Lk, D, 1.0 / D, *strides, **meta, **FIXED)
        ctx.save_for_backward(q, k, v, keep_arg, o, lse)
        ctx.meta, ctx.strides = meta, strides
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, keep, o, lse = ctx.saved_tensors
        B, H, _, Lq, D = q.shape
        Lk = k.shape[3]
        do = do.contiguous()
        delta = (do.to(lse.dtype) * o.to(lse.dtype)).sum(-1).view(B * H, Lq)  # rowsum(dO * O)
        dq = torch.empty(q.shape, device=q.device, dtype=q.dtype)
        dk, dv = (torch.empty(k.shape, device=k.device, dtype=k.dtype) for _ in range(2))
        args = (q, k, v, keep, do, lse, delta)
        sizes = (H, Lq, Lk, D, 1.0 / D, *ctx.strides)
        by_keys = lambda cfg: (B * H, triton.cdiv(Lk, cfg["BLOCK_N"]))  # noqa: E731
        by_queries = lambda cfg: (B * H, triton.cdiv(Lq, cfg["BLOCK_M"]))  # noqa: E731
        _backward_kv_tuned[by_keys](*args, dk, dv, *sizes, **ctx.meta, **FIXED)
        _backward_q_tuned[by_queries](*args, dq, *sizes, **ctx.meta, **FIXED)
        return dq, dk, dv, None, None, None


def softmax_hfa2(
    q: Tensor, k: Tensor, v: Tensor, keep: Tensor | None, causal: bool, fp32_dots: str | None = None
) -> Tensor:
    """q (B, H, 2, L_q, d_h), k and v (B, H, 2, L, d_h), unscaled, any strides with a last one of 1;
    keep (B, L) bool or None. Returns (B, H, L_q, d_h): `softmax_hfa` with A = 2. ``fp32_dots``
    (one of FP32_DOTS) sets how fp32 inputs are multiplied; None follows torch's allow_tf32."""
    if fp32_dots is not None and fp32_dots not in FP32_DOTS:
        raise ValueError(f"fp32_dots must be None or one of {FP32_DOTS}, got {fp32_dots!r}")
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    keep = None if keep is None else keep.to(torch.int8).contiguous()
    return _FusedHFA2.apply(q, k, v, keep, bool(causal), fp32_dots)
