"""Exact order-3 softmax HA as attention over key pairs, for `policies.ha.softmax_ha_values`.

Order 3 scores a query i against a pair (j_1, j_2): z = <q_i, k1_j1 * k2_j2>. Split the L^2 pairs
into two triangles, rows t and columns c <= t: (t, c) = (j_1, j_2) with j_2 <= j_1, and
(t, c) = (j_2, j_1) with j_1 < j_2. With shared keys and values (k1 = k2, v1 = v2) the two
triangles hold the same scores and values, so one triangle does, its diagonal weighted 1/2 (a
bias of -log 2). Causal attention then needs no pair loop either: pair (t, c) is visible to
query i iff t <= i, so a block of rows t0 <= t < t1 is seen by queries i >= t0 only.

Per block of rows, its pair keys KK[(t, c)] = k_row[t] * k_col[c] and pair values VV (R, d_h)
are built, and scores come from one batched matmul against the queries: (R, d_h + 2) x
(d_h + 2, L_q). Two extra columns fold in a per-query shift and a per-pair bias (-log 2 on a shared
diagonal, -MASKED for c > t or padded keys) so that no elementwise pass is spent on them. The
shift is an upper bound on every score of the query (Cauchy-Schwarz: <q, a * b> <= sqrt(sum_s
|q_s| a_s^2) sqrt(sum_s |q_s| b_s^2)), so no pass computes row maxima; where the bound is too
loose for float precision the forward runs again with the exact maxima. The backward recomputes
each block's probabilities (as FlashAttention does): 7 matmuls per score for forward + backward.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from policies.base import CUDA_BLOCK_ELEMENTS
from policies.scratch import Scratch

MASKED = 1e30  # bias of a pair that must weigh nothing: after the shift, far below any floor
# Per statistics dtype: (forward floor, backward floor, fallback gap). Shifted scores are clamped
# to the floor before exp: exp of anything below ~-87 (float32) underflows into a slow path of
# the vectorised exp (8-24 ns instead of 0.3 ns per element, measured), and into subnormal
# numbers that make the next matmul ~100x slower. A clamped term still weighs exp(floor); rows
# whose softmax sum falls below exp(-gap), where that could show in the result, run again with
# exact maxima as the shift.
FLOORS = {torch.float64: (-700.0, -600.0, 550.0), torch.float32: (-60.0, -60.0, 25.0)}
CPU_BLOCK = 2**19  # scores per block on the CPU (2 MiB): 2^18 to 2^20 measured alike for L = 128 LM steps
NB_CPU = 8  # pair rows per block on the CPU (4 to 16 measured alike at L = 128); 32 on a GPU


def pair_attention(q: Tensor, ks: list[Tensor], vs: list[Tensor], keep, B: int, causal: bool, target=None):
    """sum over key pairs of softmax weight * v1_j1 * v2_j2, for every query: (B H, L_q, d_h).

    q (B H, L_q, d_h) already scaled by 1/sqrt(d_h); ks, vs two (B H, L, d_h) each, the same
    tensors for shared slots; keep (B, L) bool or None; causal needs L_q = L. Queries that see no
    pair output zero. `target` overrides the scores per block.
    """
    stat = torch.promote_types(q.dtype, torch.float32)
    shared = ks[0] is ks[1] and vs[0] is vs[1]
    q, *kv = (t.to(stat) for t in (q, *ks, *vs))
    plan = _Plan(q, kv, shared, keep, B, causal, target)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, *kv)):
        return _PairHA.apply(plan, q, *kv)
    return plan.forward(q, kv)[0]


class _PairHA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, plan, q, *kv):
        u, lse = plan.forward(q, list(kv))
        ctx.save_for_backward(q, *kv, u, lse)
        ctx.plan = plan
        return u

    @staticmethod
    def backward(ctx, du):
        q, *kv, u, lse = ctx.saved_tensors
        grads = ctx.plan.backward(q, kv[:4], u, lse, du)
        return (None, *grads)


class _Plan:
    """Blocks, masks and the three passes (maxima, forward, backward) of one call."""

    def __init__(self, q, kv, shared: bool, keep, B: int, causal: bool, target):
        BH, self.Lq, self.d = q.shape
        self.L = kv[0].shape[1]
        self.BH, self.shared, self.causal = BH, shared, causal
        self.keep = None if keep is None else keep.repeat_interleave(BH // max(B, 1), 0)  # (B H, L)
        self.floor_fwd, self.floor_bwd, gap = FLOORS.get(q.dtype, FLOORS[torch.float32])
        self.min_den = math.exp(-gap)
        cpu = q.device.type == "cpu"
        budget = target or (CPU_BLOCK if cpu else CUDA_BLOCK_ELEMENTS)
        self.blocks = list(_blocks(BH, self.Lq, self.L, causal, budget, NB_CPU if cpu else 32))
        self.visible = self._visible(q.device)  # (B H, L_q) bool: the query sees some pair
        # (row slot, column slot, diagonal): shared keys need one triangle, else both.
        self.triangles = [(0, 0, "half")] if shared else [(0, 1, "keep"), (1, 0, "drop")]
        self._buffers, self._masks = {}, {}
        self._scratch = Scratch(q.dtype, q.device)

    # ---------------------------------------------------------------- masks and shifts

    def _visible(self, device) -> Tensor:
        if self.keep is None:
            return torch.ones(self.BH, self.Lq, dtype=torch.bool, device=device)
        if self.causal:  # the pair (i, i) or any earlier real pair
            return self.keep.cumsum(1) > 0
        return self.keep.any(1, keepdim=True).expand(self.BH, self.Lq)

    def _key_ok(self, device) -> Tensor | None:
        """(B H or 1, L_q, L) bool: query i may see key j (causal, padding), or None for all."""
        ok = None
        if self.causal:
            ok = torch.ones(self.Lq, self.L, dtype=torch.bool, device=device).tril()[None]
        if self.keep is not None:
            ok = self.keep[:, None] if ok is None else ok & self.keep[:, None]
        return ok

    def bound(self, q: Tensor, ks: list[Tensor]) -> Tensor:
        """(B H, L_q): an upper bound on every visible pair score of each query (module doc)."""
        ok = self._key_ok(q.device)
        tops = []
        for k in ks if not self.shared else ks[:1]:
            a = q.abs() @ k.square().transpose(1, 2)  # (B H, L_q, L): sum_s |q_s| k_js^2
            a = a if ok is None else a.masked_fill(~ok, 0.0)
            tops.append(a.amax(-1) if a.shape[-1] else a.sum(-1))
        top = tops[0] if self.shared else (tops[0] * tops[1]).sqrt()
        return torch.where(self.visible, top, 0.0)

    def _pair_bias(self, diag: str, t0: int, t1: int, b0: int, b1: int, like: Tensor) -> Tensor:
        """(1 or g, t1 - t0, t1): -log 2 on a shared diagonal, -MASKED where c > t, a dropped
        diagonal or a padded key, else 0."""
        t = torch.arange(t0, t1, device=like.device)[:, None]
        c = torch.arange(t1, device=like.device)[None]
        bias = like.new_zeros(t1 - t0, t1).masked_fill_(c > t, -MASKED)
        on_diag = (c == t).expand_as(bias)
        if diag == "half":
            bias = bias.masked_fill_(on_diag, -math.log(2.0))
        elif diag == "drop":
            bias = bias.masked_fill_(on_diag, -MASKED)
        if self.keep is None:
            return bias[None]
        real = self.keep[b0:b1]
        return bias.masked_fill(~(real[:, t0:t1, None] & real[:, None, :t1]), -MASKED)

    # ---------------------------------------------------------------- one block

    def _pairs(self, kv: list[Tensor], tri, blk, like: Tensor) -> Tensor:
        """(g, R, 2 d + 3) rows (t, c) of [bias, 1, k_row[t] * k_col[c], v_row[t] * v_col[c], 1]:
        [..., :d + 2] against [1, -shift, q] gives score - shift + bias, [..., d + 2:] holds the
        pair's value and a 1 whose product row is the softmax sum. One buffer per row block is
        reused by every slice of B H and by the maxima pass; its constant columns are set once."""
        row, col, diag = tri
        b0, b1, t0, t1 = blk[:4]
        g, nb, d = b1 - b0, t1 - t0, self.d
        key = (row, col, t0, t1)
        buf = self._buffers.get(key)
        if buf is None or buf.shape[0] < g:
            buf = like.new_empty(g, nb, t1, 2 * d + 3)
            buf[..., 1] = 1.0
            buf[..., 2 * d + 2] = 1.0
            if self.keep is None:
                buf[..., 0] = self._pair_bias(diag, t0, t1, b0, b1, like)
            self._buffers[key] = buf
        buf = buf[:g]
        if self.keep is not None:
            buf[..., 0] = self._pair_bias(diag, t0, t1, b0, b1, like)
        torch.mul(kv[row][b0:b1, t0:t1, None], kv[col][b0:b1, None, :t1], out=buf[..., 2 : 2 * d + 2])
        return buf.view(g, nb * t1, 2 * d + 3)

    def _future(self, blk, device) -> Tensor | None:
        """(t1 - t0, 1, w) bool: causal rows t after query i, for the block's first w queries."""
        t0, t1, i0, i1 = blk[2:]
        if not self.causal or i0 >= t1 - 1:
            return None
        w = min(i1, t1) - i0
        key = (t0, t1, i0, w)
        if key not in self._masks:
            t = torch.arange(t0, t1, device=device)[:, None, None]
            self._masks[key] = t > torch.arange(i0, i0 + w, device=device)
        return self._masks[key]

    def _scores(self, q_aug, pairs, blk, floor, fill=-MASKED) -> Tensor:
        """exp(clamp(score - shift + bias, floor)) (g, R, n_q) of one block (no exp if floor is None)."""
        b0, b1, t0, t1, i0, i1 = blk
        shape = (b1 - b0, pairs.shape[1], i1 - i0)
        z = torch.bmm(pairs[..., : self.d + 2], q_aug[b0:b1, :, i0:i1], out=self._scratch.get("z", shape))
        future = self._future(blk, z.device)
        if future is not None:
            z.view(b1 - b0, t1 - t0, t1, i1 - i0)[..., : future.shape[-1]].masked_fill_(future, fill)
        return z if floor is None else z.clamp_min_(floor).exp_()

    def _q_aug(self, q: Tensor, shift: Tensor) -> Tensor:
        """(B H, d + 2, L_q) = [1, -shift, q] transposed, the rows that meet [bias, 1, KK]."""
        return torch.cat([torch.ones_like(shift)[:, None], -shift[:, None], q.transpose(1, 2)], 1)

    def _kv(self, kv: list[Tensor]) -> list[Tensor]:
        """[k_m, v_m] side by side per key slot m: (B H, L, 2 d), so one product builds both."""
        return [torch.cat([kv[m], kv[2 + m]], -1) for m in range(1 if self.shared else 2)]

    # ---------------------------------------------------------------- passes

    def maxima(self, q: Tensor, kv: list[Tensor]) -> Tensor:
        """(B H, L_q): the exact largest visible score of each query (0 where none)."""
        top = torch.full((self.BH, self.Lq), -math.inf, dtype=q.dtype, device=q.device)
        q_aug = self._q_aug(q, torch.zeros_like(top))
        for tri in self.triangles:
            for blk in self.blocks:
                b0, b1, i0, i1 = blk[0], blk[1], blk[4], blk[5]
                z = self._scores(q_aug, self._pairs(kv, tri, blk, q), blk, None, -math.inf)
                blk_top = z.amax(1) if z.shape[1] else z.sum(1)
                top[b0:b1, i0:i1] = torch.maximum(top[b0:b1, i0:i1], blk_top)
        return torch.where(self.visible & (top > -MASKED / 2), top, 0.0)

    def forward(self, q: Tensor, kv: list[Tensor]) -> tuple[Tensor, Tensor]:
        """u (B H, L_q, d) and the log of each query's softmax sum (lse), one pass over blocks."""
        self._buffers, self._masks = {}, {}
        with torch.autocast(q.device.type, enabled=False):
            pair_kv = self._kv(kv)
            shift = self.bound(q, kv[:2])
            acc = self._accumulate(q, pair_kv, shift)
            bad = (acc[:, self.d] < self.min_den) & self.visible
            if bool(bad.any()):  # the bound was too loose for some query: use exact maxima
                shift = self.maxima(q, pair_kv)
                acc = self._accumulate(q, pair_kv, shift)
            num, den = acc[:, : self.d], acc[:, self.d]  # (B H, d, L_q), (B H, L_q)
            u = torch.where(self.visible[:, None], num / den[:, None], 0.0).transpose(1, 2)
            lse = torch.where(self.visible, shift + den.log(), MASKED)  # MASKED: p = exp(floor)
        self._buffers = {}
        return u.contiguous(), lse

    def _accumulate(self, q, pair_kv, shift) -> Tensor:
        """(B H, d + 1, L_q): sum of e * VV per query, then the sum of e, with e shifted by `shift`."""
        d = self.d
        q_aug = self._q_aug(q, shift)
        acc = q.new_zeros(self.BH, d + 1, self.Lq)
        for tri in self.triangles:
            for blk in self.blocks:
                b0, b1, i0, i1 = blk[0], blk[1], blk[4], blk[5]
                pairs = self._pairs(pair_kv, tri, blk, q)
                e = self._scores(q_aug, pairs, blk, self.floor_fwd)
                acc[b0:b1, :, i0:i1] += torch.bmm(pairs[..., d + 2 :].transpose(1, 2), e)
        return acc

    def backward(self, q, kv, u, lse, du):
        """Gradients for (q, k1, k2, v1, v2); None for a slot that shares the first one's tensor.

        With p = exp(score + bias - lse), D_i = <du_i, u_i>: dz = p (VV . du_i - D_i), then
        dq_i = sum dz KK, dKK = sum_i dz q_i, dVV = sum_i p du_i, and each pair's gradient goes to
        its row key k_row[t] (times k_col[c]) and its column key k_col[c] (times k_row[t]).
        """
        d = self.d
        self._buffers = {}
        with torch.autocast(q.device.type, enabled=False):
            du = torch.where(self.visible[..., None], du.to(q.dtype), 0.0)  # (B H, L_q, d)
            D = (du * u).sum(-1)
            du_aug = torch.cat([du.transpose(1, 2), -D[:, None]], 1)  # (B H, d + 1, L_q)
            q_aug = self._q_aug(q, lse)
            pair_kv = self._kv(kv)
            dqT = q.new_zeros(self.BH, d, self.Lq)
            grads = [torch.zeros_like(t) for t in pair_kv]  # per key slot: [dk, dv]
            for tri in self.triangles:
                row, col, _ = tri
                for blk in self.blocks:
                    b0, b1, t0, t1, i0, i1 = blk
                    g, nb = b1 - b0, t1 - t0
                    pairs = self._pairs(pair_kv, tri, blk, q)
                    p = self._scores(q_aug, pairs, blk, self.floor_bwd)
                    dz = self._scratch.get("dz", p.shape)  # (g, R, n_q)
                    dz = torch.bmm(pairs[..., d + 2 :], du_aug[b0:b1, :, i0:i1], out=dz).mul_(p)
                    dqT[b0:b1, :, i0:i1] += torch.bmm(pairs[..., 2 : d + 2].transpose(1, 2), dz)
                    dpair = self._scratch.get("dpair", (g, nb * t1, 2 * d))  # [dKK, dVV]
                    torch.bmm(dz, q[b0:b1, i0:i1], out=dpair[..., :d])
                    torch.bmm(p, du[b0:b1, i0:i1], out=dpair[..., d:])
                    dpair = dpair.view(g, nb, t1, 2 * d)
                    grads[row][b0:b1, t0:t1] += (dpair * pair_kv[col][b0:b1, None, :t1]).sum(2)
                    grads[col][b0:b1, :t1] += (dpair * pair_kv[row][b0:b1, t0:t1, None]).sum(1)
        self._buffers = {}
        dq = dqT.transpose(1, 2)
        if self.shared:
            return dq, grads[0][..., :d], None, grads[0][..., d:], None
        return dq, grads[0][..., :d], grads[1][..., :d], grads[0][..., d:], grads[1][..., d:]


def _blocks(BH: int, Lq: int, L: int, causal: bool, budget: int, nb: int):
    """(b0, b1, t0, t1, i0, i1): rows t0:t1 of a triangle for B H slices b0:b1 and queries i0:i1,
    about `budget` scores each. Causal rows t are seen only by queries i >= t0. `nb` rows per
    block: the masked half of each block's diagonal tile costs about nb / L of the work, and a
    GPU wants fewer, larger blocks."""
    for t0 in range(0, L, nb):
        t1 = min(L, t0 + nb)
        R = (t1 - t0) * t1
        q0 = t0 if causal else 0
        if q0 >= Lq:
            continue
        nq = min(Lq - q0, max(16, budget // R))
        g = max(1, min(BH, budget // (R * nq)))
        for b0 in range(0, BH, g):
            for i0 in range(q0, Lq, nq):
                yield b0, min(BH, b0 + g), t0, t1, i0, min(Lq, i0 + nq)
