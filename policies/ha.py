"""HyperAttention (HA) of order n: one query attends to (n-1)-tuples of keys (paper Sec. 6, App. F).

Per head, with Q = X W_Q and K_m = X W_K,m, V_m = X W_V,m of width d_h (m = 1..n-1):
    scores  A[i, j_1..j_{n-1}] = sum_s Q[i,s] K_1[j_1,s] ... K_{n-1}[j_{n-1},s]
    values  V[j_1..j_{n-1}, t] = sum_s V_1[j_1,s] ... V_{n-1}[j_{n-1},s] W_Vn[t,s]   (W_Vn a parameter)
    out[i, t] = sum over tuples of weight(A)[i, j..] V[j.., t]
Linear: weight = A itself (no normalisation), heads summed, W_Vn maps straight to out_dim.
Softmax (Def. F.1): weight = softmax of A / sqrt(d_h) jointly over the L^(n-1) key tuples,
W_Vn is d_h x d_h, heads concatenated, then W_O. Causal: only tuples with every j_m <= i.
Tuples may repeat a token (j_1 = j_2, or j_m = i), as in the paper's sums over [L]^(n-1).

Fast paths (each beside its `_reference`, the formula as plain einsums over all L^n entries):
  * linear: the sums factor per key (App. F.3): M_m[s,t] = sum_j K_m[j,s] V_m[j,t], then
    out = Q (prod_m M_m) W_Vn^T in O(L d_h^2); causal uses prefix sums of M_m over j.
  * softmax, exact, order 3 on the CPU (`policies/ha_pairs.py`): attention over key pairs in
    blocks of pair rows, half of the pairs when the key slots are shared, causal blocks seen only
    by later queries, each block as pair keys or query keys (whichever builds less), no shift
    while the scores are bounded, bfloat16 matmuls under bfloat16 autocast, a hand-written
    recomputing backward; O(block) memory.
  * softmax, exact, other orders (or an explicit `chunk`): queries in chunks, so only
    chunk * L^(n-1) scores exist at once.
  * softmax, approximate: exp(score) ~ sum_r phi_q[r] phi_1[r] ... phi_{n-1}[r] (App. F.3), after
    which the linear reordering applies: O(L r d_h) time, no tuple axis at all. Two feature maps:
    `approx_features=r`, r positive random features, unbiased (`_log_features`) but with a
    variance that grows fast with the scores' size; `approx_features="taylor"`, the exact
    features of 1 + t + t^2/2 (r = 1 + d_h + d_h^2), accurate while |t| < ~1.
    benchmarks/bench_attention.py measures both against the exact kernel.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from policies.base import (
    KINDS,
    AttentionScores,
    block_elements,
    check_choice,
    check_divisible,
    check_input,
    check_int,
    check_rank,
    exp_shifted,
    free_bytes,
    key_mask,
    pair_mask,
    zero_padding,
)
from policies.ha_pairs import pair_attention

# Scores per chunk of exact softmax HA, as a multiple of the device's block (`block_elements`):
# a chunk's rows of L^(n-1) tuples are long, so chunks are larger than HFA's blocks.
HA_CHUNK_SCALE = 8
KEEP_SCORES_BYTES = 2**32  # at most this much of exp(scores) is kept per call for backward
# Tuple scores per second the size guard assumes (forward; backward about twice that). On one CPU
# thread the query-chunk kernel measured about 2.7e8 at L = 128 and 5e7 to 1e8 at L = 1024 (rows of
# L^2 scores leave the cache); the order-3 key-pair kernel about 1e9 (d_h = 16) and 3e8 (d_h = 64)
# at L = 128 to 1024, causal, fp32. A GPU figure below what an H100-class device sustains.
SCORES_PER_SECOND = {"cpu": 5e7, "cpu pairs": 3e8, "cuda": 1e10}
_KEY_LETTERS = "jklmnpqruvwxyz"  # einsum letters of the key axes (b h i s t o are taken)


def tuple_mask(ok: Tensor, m: int) -> Tensor:
    """Pair mask ok[b, i, j] (B, L_q, L) -> (B, 1, L_q, L, ..., L) with m key axes: every j_m ok for i."""
    B, Lq, L = ok.shape
    out = torch.ones((B, 1, Lq) + (1,) * m, dtype=torch.bool, device=ok.device)
    for a in range(m):
        out = out & ok.view((B, 1, Lq) + (1,) * a + (L,) + (1,) * (m - 1 - a))
    return out


def _outer(ts: list[Tensor], like: Tensor) -> Tensor:
    """Row-wise product over tuples: list of (..., L, X) -> (..., L^len, X), j_1 slowest; [] -> ones."""
    if len(ts) == 1:
        return ts[0]
    out = torch.ones_like(like[..., :1, :])  # (..., 1, X): the empty product
    for t in ts:
        out = (out[..., :, None, :] * t[..., None, :, :]).flatten(-3, -2)
    return out


def _einsum_terms(m: int) -> tuple[str, str]:
    keys = _KEY_LETTERS[:m]
    return keys, ",".join(f"bh{c}s" for c in keys)


# ---------------------------------------------------------------- linear kernels


def linear_ha_reference(q: Tensor, ks: list[Tensor], vs: list[Tensor], w_vn: Tensor, ok: Tensor):
    """Order-n linear HA verbatim. q, ks[m], vs[m] (B, H, L, d_h); w_vn (H, o, d_h); ok (B, L, L).

    Returns out (B, L, o) summed over heads and scores (B, H, L, *[L] * (n - 1)).
    """
    keys, terms = _einsum_terms(len(ks))
    scores = torch.einsum(f"bhis,{terms}->bhi{keys}", q, *ks) * tuple_mask(ok, len(ks))
    values = torch.einsum(f"{terms},hts->bh{keys}t", *vs, w_vn)  # (B, H, L, .., L, o)
    return torch.einsum(f"bhi{keys},bh{keys}t->bit", scores, values), scores


def linear_ha(q: Tensor, ks: list[Tensor], vs: list[Tensor], w_vn: Tensor, causal: bool) -> Tensor:
    """O(L d_h^2) linear HA; padded tokens must already be zero in q, ks, vs. Returns (B, L, o)."""
    pairs = list(zip(ks, vs, strict=True))
    if not causal:
        P = math.prod(k.transpose(-1, -2) @ v for k, v in pairs)  # prod_m of (B, H, d_h, L) x (B, H, L, d_h)
        return (q @ P @ w_vn.transpose(-1, -2)).sum(1)  # (B, H, L, d_h) x (d_h, d_h) x (d_h, o) -> (B, L, o)
    # Tuples with all j_m <= i: each factor becomes its prefix sum up to i.
    P = math.prod((k[..., :, None] * v[..., None, :]).cumsum(2) for k, v in pairs)  # (B, H, L, d_h, d_h)
    y = (q[..., None, :] @ P).squeeze(-2)  # (B, H, L, 1, d_h) x (B, H, L, d_h, d_h) -> (B, H, L, d_h)
    return (y @ w_vn.transpose(-1, -2)).sum(1)


# ---------------------------------------------------------------- exact softmax kernels


def softmax_ha_reference(q: Tensor, ks: list[Tensor], vs: list[Tensor], w_vn: Tensor, allowed: Tensor):
    """Def. F.1 verbatim, all L^n scores at once. w_vn (H, d_h, d_h); allowed (B, L, L).

    Returns out (B, H, L, d_h), logits and weights (B, H, L, *[L] * (n - 1)).
    """
    keys, terms = _einsum_terms(len(ks))
    logits = torch.einsum(f"bhis,{terms}->bhi{keys}", q, *ks) / math.sqrt(q.shape[-1])
    masked = logits.masked_fill(~tuple_mask(allowed, len(ks)), float("-inf"))
    att = masked.flatten(3).softmax(-1).view_as(logits)  # joint softmax over the (n-1)-tuple
    values = torch.einsum(f"{terms},hts->bh{keys}t", *vs, w_vn)
    return torch.einsum(f"bhi{keys},bh{keys}t->bhit", att, values), logits, att


def softmax_ha(
    q: Tensor,
    ks: list[Tensor],
    vs: list[Tensor],
    w_vn: Tensor,
    keep: Tensor | None = None,
    chunk: int | None = None,
    causal: bool = False,
) -> Tensor:
    """Exact softmax HA in blocks: peak memory O(block), never O(L^n).

    Order 3 on the CPU without `chunk` runs `policies.ha_pairs.pair_attention` (`softmax_ha_values`
    says when); otherwise queries go in chunks (below).

    q (B, H, L_q, d_h), ks[m] and vs[m] (B, H, L, d_h), w_vn (H, d_h, d_h); keep (B, L) bool marks
    real keys (None: all). Returns (B, H, L_q, d_h). Query i sees a key tuple when every key in it
    is real and, if `causal` (needs L_q = L), comes at or before i; queries that see no tuple
    (only padded ones can) output zero. The same function as `softmax_ha_reference` with
    allowed = keep for every real query. `chunk` overrides the queries per chunk (`ha_chunk`).

    Causal chunk i0:i1 builds only tuples of keys < i1, skipping about (n-1)/n of the work. Every
    contraction is a batched matmul: per chunk, the query times the first n-2 keys forms a
    (c L^(n-2), d_h) matrix whose product with the last key's (d_h, L) gives the scores. Under
    autograd the kernel runs as `_ChunkedHA`, whose backward keeps the exponentiated scores when
    free memory allows (else recomputes them per chunk) instead of autograd's several L^n copies.
    """
    u = softmax_ha_values(q, ks, vs, keep, chunk, causal)
    return u @ w_vn.transpose(-1, -2).to(u.dtype)  # (B, H, L_q, d_h)


def softmax_ha_values(q, ks, vs, keep=None, chunk=None, causal=False, keep_scores=None, pairs=None) -> Tensor:
    """`softmax_ha` before the parameter value factor W_Vn: sum over tuples of weight * prod_m V_m.

    keep_scores: whether backward reuses the forward's exponentiated scores (True) or recomputes
    them per chunk (False); None decides from free memory. pairs: order 3 only, True runs the
    key-pair kernel (`policies.ha_pairs`), False the query-chunk kernel; None picks key pairs on the
    CPU (2-2.5x faster there, benchmarks/README_attention.md) unless `chunk` or `keep_scores` is
    given, and query chunks on other devices, where only they have been measured so far.
    """
    B, H, Lq, d_h = q.shape
    m, Lk = len(ks), ks[0].shape[2]
    if causal and Lq != Lk:
        raise ValueError(f"causal needs as many queries as keys, got L_q={Lq} and L={Lk}")
    if pairs and m != 2:
        raise ValueError(f"pairs=True needs order 3 (two key slots), got {m} key slots")
    q = q * d_h**-0.5
    if B * H * Lq * Lk == 0:  # nothing to attend: zeros of the right shape, still in the graph
        return q.new_zeros(B, H, Lq, d_h) + 0.0 * sum(t.sum() for t in (q, *ks, *vs))
    flat = [t.reshape(B * H, -1, d_h) for t in (q, *ks, *vs)]  # (B H, L, d_h) each
    if pairs is None:
        pairs = m == 2 and chunk is None and keep_scores is None and q.device.type == "cpu"
    if pairs:  # order 3: attention over key pairs
        if ks[0] is ks[1] and vs[0] is vs[1]:  # shared slots: one flattened tensor, as the kernel checks
            flat[2], flat[4] = flat[1], flat[3]
        u = pair_attention(flat[0], flat[1:3], flat[3:], keep, B, causal)
        return u.to(q.dtype).view(B, H, Lq, d_h)
    chunk = chunk or ha_chunk(B * H, Lq, Lk, m, q)
    plan = (m, B, keep, causal, chunk, keep_scores)
    if torch.is_grad_enabled() and any(t.requires_grad for t in flat):
        u = _ChunkedHA.apply(plan, *flat)
    else:
        u = _ha_forward(plan, flat[0], flat[1 : m + 1], flat[m + 1 :], False)[0]
    return u.view(B, H, Lq, d_h)


def ha_chunk(BH: int, Lq: int, Lk: int, m: int, like: Tensor) -> int:
    """Queries per chunk: about `block_elements` tuple scores (at least one query)."""
    budget = block_elements(like.device, 4, 6, HA_CHUNK_SCALE)  # scores, probabilities, gradients
    return max(1, min(Lq, budget // (BH * Lk**m)))


def _outer_grad(grad: Tensor, ts: list[Tensor]) -> list[Tensor]:
    """Gradients of `_outer(ts)` for each t, given grad (BH, L^len, X)."""
    if len(ts) == 1:
        return [grad]
    BH, K, X = ts[0].shape
    r = len(ts)
    g = grad.view(BH, *([K] * r), X)
    out = []
    for a in range(r):
        prod = g
        for b in range(r):
            if b != a:
                shape = [BH] + [1] * r + [X]
                shape[1 + b] = K
                prod = prod * ts[b].view(shape)
        out.append(prod.sum([1 + b for b in range(r) if b != a]))
    return out


def _chunk_mask(keep, B: int, causal: bool, i0: int, i1: int, K: int, m: int, device) -> Tensor | None:
    """(B or 1, 1, c, K^m) bool, True where query i may not see key tuple J (j_1 slowest)."""
    mask = None
    if keep is not None:
        ok = torch.ones(B, 1, dtype=torch.bool, device=device)
        for _ in range(m):  # every key of the tuple real
            ok = (ok[:, :, None] & keep[:, None, :K]).flatten(1)
        mask = ~ok[:, None, None]  # (B, 1, 1, K^m)
    if causal and K - 1 > i0:  # some tuple has a key after some query of the chunk
        last = torch.zeros(1, dtype=torch.long, device=device)
        for _ in range(m):  # the largest key index of each tuple
            last = torch.maximum(last[:, None], torch.arange(K, device=device)[None]).flatten()
        future = last[None] > torch.arange(i0, i1, device=device)[:, None]  # (c, K^m)
        mask = future[None, None] if mask is None else mask | future
    return mask


def _ha_chunk_scores(q, ks, keep, B, causal, i0, i1, K, stat):
    """Masked scores (B H, c, K^m) of chunk i0:i1 against tuples of the first K keys, in dtype
    `stat`, and the (B H, c K^(m-1), d_h) matrix qk = q_i * k_1 * ... * k_(m-1) that formed them."""
    BH, d_h = q.shape[0], q.shape[2]
    c, m = i1 - i0, len(ks)
    kk = _outer([k[:, :K] for k in ks[:-1]], q)  # (B H, P, d_h), P = K^(m-1)
    qk = (q[:, i0:i1, None] * kk[:, None]).view(BH, -1, d_h)  # (B H, c P, d_h)
    z = torch.bmm(qk, ks[-1][:, :K].transpose(1, 2)).view(BH, c, -1)  # (B H, c, P K)
    if z.dtype != stat:
        z = z.to(stat)
    mask = _chunk_mask(keep, B, causal, i0, i1, K, m, q.device)
    if mask is not None:
        z.view(B, -1, c, z.shape[2]).masked_fill_(mask, -math.inf)
    return z, qk, kk


def _ha_forward(plan, q, ks, vs, keep_exp: bool):
    """Chunked forward on (B H, L, d_h) factors, q pre-scaled. Returns u (B H, L_q, d_h), the
    per-chunk records the backward needs, and whether the exponentiated scores were kept."""
    m, B, keep, causal, chunk, _ = plan
    BH, Lq, d_h = q.shape
    Lk = ks[0].shape[1]
    stat = torch.promote_types(q.dtype, torch.float32)  # softmax statistics never below fp32
    u = torch.empty(BH, Lq, d_h, dtype=stat, device=q.device)
    records = []
    with torch.autocast(q.device.type, enabled=False):  # dtypes are explicit below
        for i0 in range(0, Lq, chunk):  # a loop over query chunks, not over tokens
            i1 = min(Lq, i0 + chunk)
            c, K = i1 - i0, i1 if causal else Lk
            z, _, _ = _ha_chunk_scores(q, ks, keep, B, causal, i0, i1, K, stat)  # (B H, c, P K)
            top = z.amax(-1, keepdim=True).clamp_min_(torch.finfo(stat).min)  # finite for empty rows
            e = exp_shifted(z.sub_(top)).to(q.dtype)  # (B H, c, P K): exp(score - row max)
            norm = e.sum(-1, keepdim=True, dtype=stat)  # (B H, c, 1)
            av = torch.bmm(e.view(BH, -1, K), vs[-1][:, :K])  # (B H, c P, d_h)
            vv = _outer([v[:, :K] for v in vs[:-1]], q)  # (B H, P, d_h)
            u_c = (av.view(BH, c, -1, d_h) * vv[:, None]).sum(2, dtype=stat)  # (B H, c, d_h)
            u[:, i0:i1] = u_c / norm.clamp_min(torch.finfo(stat).tiny)
            records.append((top, norm, av if keep_exp else None, e if keep_exp else None))
    return u.to(q.dtype), records


def _ha_backward(plan, q, ks, vs, u, records, du):
    """Gradients of `_ha_forward` for (q, ks, vs). Per chunk, with e = exp(z - max), p = e / norm:
    du' = du / norm, D = sum_s du_s u_s / norm, dz = e (dA' - D) where dA' = (du' * vv) v_last^T;
    then the scores' matmuls and the outer products are differentiated by hand."""
    m, B, keep, causal, chunk, _ = plan
    BH, Lq, d_h = q.shape
    Lk = ks[0].shape[1]
    stat = torch.promote_types(q.dtype, torch.float32)
    dq = torch.zeros(BH, Lq, d_h, dtype=stat, device=q.device)
    dks = [torch.zeros(BH, Lk, d_h, dtype=stat, device=q.device) for _ in ks]
    dvs = [torch.zeros(BH, Lk, d_h, dtype=stat, device=q.device) for _ in vs]
    du = du.to(stat)
    with torch.autocast(q.device.type, enabled=False):
        for n_chunk, i0 in enumerate(range(0, Lq, chunk)):
            i1 = min(Lq, i0 + chunk)
            c, K = i1 - i0, i1 if causal else Lk
            top, norm, av, e = records[n_chunk]
            if e is None:  # recompute the exponentiated scores of this chunk
                z, qk, kk = _ha_chunk_scores(q, ks, keep, B, causal, i0, i1, K, stat)
                e = exp_shifted(z.sub_(top)).to(q.dtype)
                av = torch.bmm(e.view(BH, -1, K), vs[-1][:, :K])
            else:
                kk = _outer([k[:, :K] for k in ks[:-1]], q)
                qk = (q[:, i0:i1, None] * kk[:, None]).view(BH, -1, d_h)
            inv = torch.where(norm > 0, norm, math.inf).reciprocal_()  # (B H, c, 1); 0 for empty rows
            du_c = du[:, i0:i1] * inv  # (B H, c, d_h)
            minus_D = -(du_c * u[:, i0:i1].to(stat)).sum(-1, keepdim=True)  # (B H, c, 1)
            vv = _outer([v[:, :K] for v in vs[:-1]], q)  # (B H, P, d_h)
            dav = (du_c[:, :, None] * vv[:, None]).view(BH, -1, d_h).to(q.dtype)  # (B H, c P, d_h)
            dvs[-1][:, :K] += torch.bmm(e.view(BH, -1, K).transpose(1, 2), dav)
            dvv = (av.view(BH, c, -1, d_h) * du_c[:, :, None]).sum(1, dtype=stat)  # (B H, P, d_h)
            # dz = e (dav v_last^T - D), the shift D folded in as a bias: (B H, c P, K) -> (B H, c, P K)
            dz = torch.baddbmm(
                minus_D.to(q.dtype).repeat_interleave(dav.shape[1] // c, 1),
                dav,
                vs[-1][:, :K].transpose(1, 2),
            ).view(BH, c, -1)
            dz = dz.mul_(e).view(BH, -1, K)  # (B H, c P, K)
            dks[-1][:, :K] += torch.bmm(dz.transpose(1, 2), qk)
            dqk = torch.bmm(dz, ks[-1][:, :K]).view(BH, c, -1, d_h).to(stat)  # (B H, c, P, d_h)
            dq[:, i0:i1] += (dqk * kk[:, None]).sum(2)
            if m > 1:
                dkk = (dqk * q[:, i0:i1, None]).sum(1)  # (B H, P, d_h)
                for dk, g in zip(dks, _outer_grad(dkk, [k[:, :K] for k in ks[:-1]]), strict=False):
                    dk[:, :K] += g
                for dv, g in zip(dvs, _outer_grad(dvv, [v[:, :K] for v in vs[:-1]]), strict=False):
                    dv[:, :K] += g
    return dq, dks, dvs


class _ChunkedHA(torch.autograd.Function):
    """`_ha_forward` with a hand-written backward; keeps exp(scores) when free memory allows."""

    @staticmethod
    def forward(ctx, plan, q, *kvs):
        m = plan[0]
        ks, vs = list(kvs[:m]), list(kvs[m:])
        BH, Lq, _ = q.shape
        Lk = ks[0].shape[1]
        tuples = BH * Lq * Lk**m // (m + 1 if plan[3] else 1)  # about the scores kept, causal or not
        keep_exp = plan[5]
        if keep_exp is None:  # keeping exp(scores) saves a third of backward; bounded by memory
            keep_exp = tuples * q.element_size() <= min(KEEP_SCORES_BYTES, free_bytes(q.device) // 8)
        u, records = _ha_forward(plan, q, ks, vs, keep_exp)
        ctx.save_for_backward(q, *kvs, u)
        ctx.plan, ctx.records = plan, records
        return u

    @staticmethod
    def backward(ctx, du):
        q, *kvs, u = ctx.saved_tensors
        m = ctx.plan[0]
        dq, dks, dvs = _ha_backward(ctx.plan, q, kvs[:m], kvs[m:], u, ctx.records, du)
        return (None, dq.to(q.dtype), *(g.to(q.dtype) for g in (*dks, *dvs)))


# ---------------------------------------------------------------- random-feature softmax


def feature_matrices(order: int, head_dim: int, features: int, generator: torch.Generator | None = None):
    """Gaussian matrices for `_log_features`: level l (from the last key inwards) is (r, d_h 2^l)."""
    return [torch.randn(features, head_dim * 2**lvl, generator=generator) for lvl in range(order - 1)]


def _log_features(q: Tensor, ks: list[Tensor], Ws: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
    """Log positive random features: E_r[exp(lq + sum_m lk_m)] = exp(<q, k_1 * ... * k_{n-1}>).

    q (..., 1, D) and ks[m] (..., 1 or r, D); returns lq (..., r) and one (..., r) per key.
    Performer's identity exp(<x, y>) = E_w[P_w(x) P_w(y)], P_w(z) = exp(<w, z> - |z|^2 / 2), w ~ N(0, I),
    peels the last key off with x = q * k_1 * ... * k_{m-1}. The leftover P_w(x) is again an
    exponential of a multilinear form, with one key fewer, in doubled width:
        P_w(y * k) = exp(<[y, y^2], [w * k, -k^2 / 2]>),   [y, y^2] = [q, q^2] * [k_1, k_1^2] * ...
    so recursion ends at one key. Feature r pairs the r-th rows of every level, keeping it unbiased.
    """
    W = Ws[0].to(q)
    last = _log_p(W, ks[-1])
    if len(ks) == 1:
        return _log_p(W, q), [last]
    prev = ks[-2]
    wk = W * prev  # (..., r, D)
    bridge = torch.cat([wk, (-0.5 * prev.square()).expand_as(wk)], -1)  # (..., r, 2D)
    lq, lks = _log_features(_with_square(q), [_with_square(k) for k in ks[:-2]] + [bridge], Ws[1:])
    return lq, lks + [last]


def _with_square(z: Tensor) -> Tensor:
    return torch.cat([z, z.square()], -1)


def _log_p(W: Tensor, z: Tensor) -> Tensor:
    """log P_w(z) for every row w of W (r, D): z (..., 1 or r, D) -> (..., r)."""
    if z.shape[-2] == 1:  # same z for every feature: one matmul
        return z[..., 0, :] @ W.T - 0.5 * z[..., 0, :].square().sum(-1, keepdim=True)
    return (z * W).sum(-1) - 0.5 * z.square().sum(-1)


def softmax_ha_features(
    q: Tensor,
    ks: list[Tensor],
    vs: list[Tensor],
    w_vn: Tensor,
    mask: Tensor,
    causal: bool,
    Ws: list[Tensor],
    return_weights: bool = False,
):
    """Softmax HA with exp(score) replaced by its positive random-feature estimate: O(L r d_h).

    q, ks[m], vs[m] (B, H, L, d_h); mask (B, L); Ws from `feature_matrices`. Returns (B, H, L, d_h)
    and, if asked, the implied weights (B, H, L, *[L] * (n - 1)) (this one materialises L^n).
    """
    m, d_h = len(ks), q.shape[-1]
    scale = d_h ** (-0.5 / (m + 1))  # 1/sqrt(d_h) split evenly over the n factors: smaller variance
    lq, lks = _log_features(q[..., None, :] * scale, [k[..., None, :] * scale for k in ks], Ws)
    # Constants per query cancel in the ratio, and so does one constant for all keys of a
    # (batch, head): subtracting maxima only prevents overflow.
    phq = (lq - lq.amax(-1, keepdim=True)).exp()  # (B, H, L, r)
    phks = [(lk - (lk.amax((-2, -1), keepdim=True) if lk.shape[-2] else 0.0)).exp() for lk in lks]  # L = 0 ok
    return _feature_softmax(phq, phks, vs, w_vn, mask, causal, return_weights)


def softmax_ha_taylor(
    q: Tensor,
    ks: list[Tensor],
    vs: list[Tensor],
    w_vn: Tensor,
    mask: Tensor,
    causal: bool,
    return_weights: bool = False,
):
    """Deterministic alternative to `softmax_ha_features`: exp(t) ~ 1 + t + t^2 / 2 (always > 0).

    t = <q, k_1 * ... * k_{n-1}> / sqrt(d_h) factors exactly into features [1, z, vec(z z^T)] of
    width 1 + d_h + d_h^2 per factor (the polynomial method of App. F.3); accurate while |t| < ~1.
    """
    m, d_h = len(ks), q.shape[-1]
    scale = d_h ** (-0.5 / (m + 1))

    def poly(z: Tensor, c: float) -> Tensor:  # (B, H, L, d_h) -> (B, H, L, 1 + d_h + d_h^2)
        z = z * scale
        return torch.cat(
            [torch.ones_like(z[..., :1]), z, c * (z[..., :, None] * z[..., None, :]).flatten(-2)], -1
        )

    return _feature_softmax(poly(q, 0.5), [poly(k, 1.0) for k in ks], vs, w_vn, mask, causal, return_weights)


def _feature_softmax(
    phq: Tensor,
    phks: list[Tensor],
    vs: list[Tensor],
    w_vn: Tensor,
    mask: Tensor,
    causal: bool,
    return_weights: bool,
):
    """sum_J sim(i, J) V[J] / sum_J sim(i, J) with sim(i, J) = sum_r phq[i, r] prod_m phks[m][j_m, r].

    phq, phks[m] (B, H, L, r): the linear-HA reordering applies, so no tuple axis is ever built.
    """
    phks = [pk * mask[:, None, :, None] for pk in phks]  # padded keys weigh nothing
    pairs = list(zip(phks, vs, strict=True))
    if causal:  # prefix sums over j, as in causal linear attention
        prefix = math.prod((pk[..., :, None] * v[..., None, :]).cumsum(2) for pk, v in pairs)  # (B,H,L,r,d_h)
        num = (phq[..., None, :] @ prefix).squeeze(-2)  # (B, H, L, d_h)
        den = (phq * math.prod(pk.cumsum(2) for pk in phks)).sum(-1)  # (B, H, L)
    else:
        num = phq @ math.prod(pk.transpose(-1, -2) @ v for pk, v in pairs)  # (B, H, L, r) x (B, H, r, d_h)
        den = (phq @ math.prod(pk.sum(2) for pk in phks)[..., None])[..., 0]  # (B, H, L)
    den = den.clamp_min(torch.finfo(den.dtype).tiny)
    out = (num / den[..., None]) @ w_vn.transpose(-1, -2)
    if not return_weights:
        return out
    B, H, L, _ = phq.shape
    m = len(phks)
    weights = (phq[:, :, :, None] * _outer(phks, phq)[:, :, None]).sum(-1) / den[..., None]  # (B, H, L, L^m)
    return out, weights.view((B, H, L) + (L,) * m) * tuple_mask(pair_mask(mask, causal), m)


# ---------------------------------------------------------------- module


class HyperAttention(nn.Module):
    """HyperAttention of order n: a query attends to (n-1)-tuples of keys, jointly.

    Args:
        dim: token width d.
        heads: H; head width (the CP rank of the paper's order-n tensors) d_h = dim / heads.
        order: n >= 2 (2 is ordinary attention with a value matrix W_Vn, 3 is one query, two keys).
        kind: "linear" or "softmax".
        causal: only tuples whose keys all come at or before the query.
        out_dim: output width (default dim).
        share_kv: one key and one value projection used for all n-1 key slots (K_1 = K_2 = ...).
        rank: linear only: the CP rank per head, d_h (default dim / heads). Theorem F.2's exact
            order-3 tensors can need a rank well above d, so a finite-domain fit may ask for more.
        approx_features: softmax only; replace the exact O(L^n) softmax by a feature-map estimate,
            linear in L: an int r uses r positive random features (unbiased, see `_log_features`,
            but high variance unless scores are small: measured in benchmarks/), "taylor" the
            deterministic exp(t) ~ 1 + t + t^2/2 map (`softmax_ha_taylor`, accurate for |t| < ~1).
        max_seconds: size guard of the exact softmax kernel, O(B H L^n): a call whose estimated
            time (`SCORES_PER_SECOND`) exceeds this raises ValueError instead of running for
            minutes. None disables the guard; the attribute may be changed after construction.

    `forward(x (B, L, dim), mask (B, L) bool | None, return_scores)` -> (B, L, out_dim), plus
    `AttentionScores` with scores (B, H, L, *[L] * (n - 1)) when `return_scores` (O(L^n) memory).
    """

    def __init__(
        self,
        *,
        dim: int,
        heads: int = 1,
        order: int = 3,
        kind: str = "softmax",
        causal: bool = False,
        out_dim: int | None = None,
        share_kv: bool = False,
        approx_features: int | None = None,
        rank: int | None = None,
        max_seconds: float | None = 30.0,
    ):
        super().__init__()
        check_choice("kind", kind, KINDS)
        self.dim, self.heads = check_int("dim", dim, 1), check_int("heads", heads, 1)
        self.order = check_int("order", order, 2)
        self.out_dim = dim if out_dim is None else check_int("out_dim", out_dim, 1)
        self.rank = check_rank(rank, kind)
        self.head_dim = d_h = check_divisible(dim, heads, "heads") if rank is None else rank
        self.kind, self.causal, self.share_kv = kind, bool(causal), bool(share_kv)
        self.slots = slots = 1 if share_kv else order - 1
        width = heads * d_h
        self.q = nn.Linear(dim, width, bias=False)  # W_Q for every head
        self.k = nn.Linear(dim, slots * width, bias=False)  # W_K,1 .. W_K,n-1 side by side
        self.v = nn.Linear(dim, slots * width, bias=False)  # W_V,1 .. W_V,n-1
        # W_Vn: the value factor that is a parameter, not a function of X (Def. F.1).
        self.W_Vn = nn.Parameter(
            torch.randn(heads, self.out_dim if kind == "linear" else d_h, d_h) / math.sqrt(d_h)
        )
        if kind == "softmax":
            self.proj = nn.Linear(dim, self.out_dim, bias=False)  # W_O
        self.approx_features = approx_features
        if max_seconds is not None and (isinstance(max_seconds, bool) or not max_seconds > 0):
            raise ValueError(f"max_seconds must be a number > 0 or None, got {max_seconds!r}")
        self.max_seconds = max_seconds
        if approx_features is not None:
            if kind != "softmax":
                raise ValueError(f"approx_features needs kind='softmax', got kind={kind!r}")
            if approx_features != "taylor":
                check_int("approx_features (an int >= 1 or 'taylor')", approx_features, 1)
                for lvl, W in enumerate(feature_matrices(order, d_h, approx_features)):
                    self.register_buffer(f"features_{lvl}", W)  # one fixed draw, saved with the weights

    def forward(self, x: Tensor, mask: Tensor | None = None, return_scores: bool = False):
        given = mask is not None
        mask = check_input(x, mask, self.dim)
        return self._forward(x, mask, given, return_scores)

    def attend(self, x: Tensor, mask: Tensor | None, first_only: bool = False) -> Tensor:
        """`forward` without its input checks, for a caller that validated x once (AttentionExtractor).

        x (B, L, dim), real tokens finite; mask (B, L) bool or None (no padding). first_only: the
        output of query 0 only, (B, 1, out_dim); computed alone for exact non-causal softmax.
        """
        first_only = first_only and x.shape[1] > 0  # no token 0 when L = 0: the empty full pass
        full = x.new_ones(x.shape[:2], dtype=torch.bool) if mask is None else mask
        one = first_only and self.kind == "softmax" and self.approx_features is None and not self.causal
        if not one:
            out = self._forward(x, full, mask is not None, False)
            return out[:, :1] if first_only else out
        x = zero_padding(x, full)
        B, L, d = x.shape
        H, d_h, m = self.heads, self.head_dim, self.order - 1
        self.check_size(B, 1, L, x.device, torch.is_grad_enabled() and self.q.weight.requires_grad, False)
        q = self.q(x[:, :1]).view(B, 1, H, d_h).transpose(1, 2)  # (B, H, 1, d_h): token 0 only
        ks, vs = (list(p(x).view(B, L, self.slots, H, d_h).permute(2, 0, 3, 1, 4)) for p in (self.k, self.v))
        if self.share_kv:
            ks, vs = ks * m, vs * m
        y = softmax_ha(q, ks, vs, self.W_Vn, mask)  # (B, H, 1, d_h)
        return self.proj(y.transpose(1, 2).reshape(B, 1, d)) * full[:, :1, None]

    def _forward(self, x: Tensor, mask: Tensor, given: bool, return_scores: bool):
        """`forward` after its checks; mask (B, L) bool, given False when the caller passed None."""
        x = zero_padding(x, mask)
        B, L, d = x.shape
        grad = torch.is_grad_enabled() and (x.requires_grad or self.q.weight.requires_grad)
        self.check_size(B, L, L, x.device, grad, return_scores)
        H, d_h, m = self.heads, self.head_dim, self.order - 1
        q = self.q(x).view(B, L, H, d_h).transpose(1, 2)  # (B, H, L, d_h)
        ks, vs = (list(p(x).view(B, L, self.slots, H, d_h).permute(2, 0, 3, 1, 4)) for p in (self.k, self.v))
        if self.share_kv:
            ks, vs = ks * m, vs * m  # the same tensor in every key slot
        if self.kind == "linear":
            if not return_scores:
                return linear_ha(q, ks, vs, self.W_Vn, self.causal)
            out, scores = linear_ha_reference(q, ks, vs, self.W_Vn, pair_mask(mask, self.causal))
            return out, AttentionScores("linear", scores)
        y, scores, logits = self._softmax(q, ks, vs, mask, given, return_scores)  # y (B, H, L, d_h)
        out = self.proj(y.transpose(1, 2).reshape(B, L, d)) * mask[..., None]  # concat heads, W_O
        return (out, AttentionScores("softmax", scores, logits=logits)) if return_scores else out

    def check_size(self, B: int, Lq: int, L: int, device: torch.device, grad: bool, scores: bool) -> None:
        """Raise ValueError, naming x and the override, before a call that would take too long or
        too much memory: the exact softmax kernel (B H L_q L^(n-1) tuple scores, about 1/n of them
        when causal, backward about twice the forward) against `max_seconds`, and `return_scores`,
        which materialises a few (B, H, L_q, L, ..., L) tensors, against half the free memory."""
        H, n = self.heads, self.order
        tuples = B * H * Lq * L ** (n - 1)
        if scores and 4 * 8 * tuples > free_bytes(device) // 2:
            raise ValueError(
                f"return_scores=True would hold {tuples:.3g} scores per tensor for x with L={L} "
                f"(order n={n}, B={B}, H={H}), more than half the free memory: ask for scores of a shorter x"
            )
        if self.kind != "softmax" or self.approx_features is not None or self.max_seconds is None:
            return
        work = tuples / (n if self.causal else 1) * (3 if grad else 1)
        kind = "cpu pairs" if device.type == "cpu" and n == 3 else device.type  # softmax_ha_values' pick
        rate = SCORES_PER_SECOND.get(kind, SCORES_PER_SECOND["cpu"])
        seconds = work / rate  # extra CPU threads are not counted: they scale poorly on shared machines
        if seconds > self.max_seconds:
            raise ValueError(
                f"x with L={L} tokens: exact softmax HA of order n={n} scores B H L^n = {tuples:.3g} "
                f"key tuples (B={B}, H={H}), estimated {seconds:.0f} s on {device.type}, over "
                f"max_seconds={self.max_seconds}. Use a shorter x, approx_features='taylor' (linear in "
                "L), or set HyperAttention.max_seconds higher (None disables this guard)."
            )

    def tables(self, P: Tensor | None = None) -> list[Tensor]:
        """Linear only: [G], G[mu, nu_1..nu_m, t] = sum_h A_h[mu, nu..] V_h[nu.., t] over a finite domain.

        P (M, d): every domain element's embedding (None: one-hot, the identity). G has M^n * o
        entries, so this is for small domains; then y_i = sum_{j_1..j_m} G[t_i, t_j1, .., t_jm].
        """
        if self.kind != "linear":
            raise TypeError("tables needs kind='linear'")
        H, d_h, m = self.heads, self.head_dim, self.order - 1
        P = torch.eye(self.dim, dtype=self.W_Vn.dtype, device=self.W_Vn.device) if P is None else P
        M = P.shape[0]
        q = self.q(P).view(M, H, d_h)
        ks, vs = (list(p(P).view(M, self.slots, H, d_h).unbind(1)) for p in (self.k, self.v))
        if self.share_kv:
            ks, vs = ks * m, vs * m
        keys, _ = _einsum_terms(m)
        terms = ",".join(f"{c}hs" for c in keys)
        scores = torch.einsum(f"ihs,{terms}->hi{keys}", q, *ks)  # (H, M, M, .., M)
        values = torch.einsum(f"{terms},hts->h{keys}t", *vs, self.W_Vn)  # (H, M, .., M, o)
        return [(scores[..., None] * values[:, None]).sum(0)]  # (M, M, .., M, o)

    def _softmax(self, q, ks, vs, mask: Tensor, given: bool, return_scores: bool):
        """Per-head outputs (B, H, L, d_h), plus weights and logits (B, H, L, ..., L) if asked."""
        approx, m = self.approx_features, self.order - 1
        if approx is not None:
            if approx == "taylor":
                res = softmax_ha_taylor(q, ks, vs, self.W_Vn, mask, self.causal, return_scores)
            else:
                Ws = [getattr(self, f"features_{lvl}") for lvl in range(m)]
                res = softmax_ha_features(q, ks, vs, self.W_Vn, mask, self.causal, Ws, return_scores)
            return (*res, None) if return_scores else (res, None, None)
        if not return_scores:
            keep = mask if given else None
            return softmax_ha(q, ks, vs, self.W_Vn, keep, causal=self.causal), None, None
        y, logits, att = softmax_ha_reference(q, ks, vs, self.W_Vn, key_mask(mask, self.causal))
        ok = tuple_mask(pair_mask(mask, self.causal), m)
        return y, att * ok, logits * ok
