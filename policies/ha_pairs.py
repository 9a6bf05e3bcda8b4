"""Exact order-3 softmax HA as attention over key pairs, for `policies.ha.softmax_ha_values`.

Order 3 scores a query i against a pair (j_1, j_2): z = <q_i, k1_j1 * k2_j2>. Split the L^2 pairs
into rows t and columns c: (t, c) = (j_1, j_2) with j_2 <= j_1, and (t, c) = (j_2, j_1) with
j_1 < j_2. With shared keys and values (k1 = k2, v1 = v2) both halves hold the same scores and
values, so one half does, at weight 1/2 where a pair appears twice. Causal attention needs no pair
loop either: pair (t, c) with c <= t is visible to query i iff t <= i, so a block of rows
t0 <= t < t1 is seen by queries i >= t0 only.

Blocks. Rows t0:t1 (nb of them) meet columns c < t1 and queries i >= t0. Inside the diagonal tile
t0 <= t, c < t1 the block takes the whole square rather than its lower half: with shared slots the
square's two halves are mirror images (weight 1/2 on every tile pair, the diagonal included, which
is the 1/2 above); without, the square is every pair of the tile once, and the other half (rows
from slot 2) keeps only its columns c < t0. So no pair is masked for lying above the diagonal,
and only the tile's first nb - 1 queries mask anything (pairs with a key after them).

Scores of a block are (queries, rows, columns), from one batched matmul in one of two forms:
  * pair keys: kk[t, c] = k_row[t] * k_col[c] (with vv and a "both keys real" weight beside it)
    against the queries;
  * query keys: qk[i, t] = q_i * k_row[t] against the columns' keys.
Each form builds, and reduces again for the gradients, d-wide tensors of nb * columns * d or
queries * nb * d elements: the kernel takes the smaller, pair keys for early rows and query keys
for late ones, which halves that elementwise work at L = 128 against pair keys alone. Forward and
backward take 7 matmuls per score (8 in query-key blocks, which recompute one sum the pair-key
form gets from its gradient), each with an inner dimension of d, d + 1, or pairs or queries.

Softmax. When no score can exceed `MAX_UNSHIFTED` in size (Cauchy-Schwarz bounds each query's:
|<q, a * b>| <= sqrt(sum_s |q_s| a_s^2) sqrt(sum_s |q_s| b_s^2) <= max_j sum_s |q_s| k_j,s^2),
exp(score) can neither overflow nor fall into the slow subnormal range, so the kernel
exponentiates the raw scores: no shift and no clamp pass. Otherwise each query is shifted by its
bound (an upper bound on its scores, so no pass computes row maxima) and clamped to a floor; where
that bound is too loose for float precision the forward runs again with the exact maxima. The
backward recomputes each block's probabilities (as FlashAttention does), with 1 / (softmax sum)
folded into the output gradient.

Precision. Matmuls run in bfloat16 when the inputs are bfloat16 (autocast), with float32
accumulation inside each matmul and float32 sums across blocks; otherwise in float32 or float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from policies.base import CUDA_BLOCK_ELEMENTS
from policies.scratch import kept

MASKED = 1e30  # log-sum of a query that sees no pair: its probabilities and gradients are 0
# |score| bound under which exp(score) is taken as is: exp(+-40) and sums of millions of them stay
# normal float32 numbers, and so do 1 / sum and the gradients scaled by it
MAX_UNSHIFTED = 40.0
# Per statistics dtype: (forward floor, backward floor, fallback gap), for shifted scores only.
# Shifted scores are clamped to the floor before exp: exp of anything below ~-87 (float32)
# underflows into a slow path of the vectorised exp (8-24 ns instead of 0.3 ns per element,
# measured), and into subnormal numbers that make the next matmul ~100x slower. A clamped term
# still weighs exp(floor); rows whose softmax sum falls below exp(-gap), where that could show in
# the result, run again with exact maxima as the shift.
FLOORS = {torch.float64: (-700.0, -600.0, 550.0), torch.float32: (-60.0, -60.0, 25.0)}
# Elements per block on the CPU, counted as pairs * (queries + BLOCK_D * d): the scores and the
# d-wide tensors beside them (pair keys, their gradients). At L = 128 with d = 16 and 64, 2^22
# measured faster than 2^19 to 2^21 (fewer blocks, less Python per score) and than 2^23 (cache).
CPU_BLOCK = 2**22
BLOCK_D = 4
NB_CPU = 8  # rows per block on the CPU (4, 6 and 16 measured up to 1.1x slower); a GPU takes 32
QK_OVER = 1.0  # query keys where columns > QK_OVER * queries: the form that builds fewer elements


def pair_attention(q: Tensor, ks: list[Tensor], vs: list[Tensor], keep, B: int, causal: bool, target=None):
    """sum over key pairs of softmax weight * v1_j1 * v2_j2, for every query: (B H, L_q, d_h).

    q (B H, L_q, d_h) already scaled by 1/sqrt(d_h); ks, vs two (B H, L, d_h) each, the same
    tensors for shared slots; keep (B, L) bool or None; causal needs L_q = L. Queries that see no
    pair output zero. `target` overrides the scores per block. bfloat16 inputs run the matmuls in
    bfloat16; the result is float32 (float64 for float64 inputs).
    """
    stat = torch.promote_types(q.dtype, torch.float32)
    mm = torch.bfloat16 if q.dtype == torch.bfloat16 else stat
    shared = ks[0] is ks[1] and vs[0] is vs[1]
    q, *kv = (t.to(stat) for t in (q, *ks, *vs))
    with torch.no_grad():  # the plan's copies of the factors are constants to autograd
        plan = _Plan(q.detach(), [t.detach() for t in kv], shared, keep, B, causal, target, mm)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, *kv)):
        return _PairHA.apply(plan, q, *kv)
    return plan.forward(q)[0]


class _PairHA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, plan, q, *kv):
        u, lse = plan.forward(q)
        ctx.save_for_backward(q, u, lse)
        ctx.plan = plan
        return u

    @staticmethod
    def backward(ctx, du):
        q, u, lse = ctx.saved_tensors
        return (None, *ctx.plan.backward(q, u, lse, du))


class _Slot:
    """One key slot's factors in the layouts the two forms read: padded keys zeroed, matmul dtype."""

    def __init__(self, k: Tensor, v: Tensor, keep: Tensor | None, mm: torch.dtype):
        if keep is not None:
            k, v = k * keep[..., None], v * keep[..., None]
        real = torch.ones_like(v[..., :1]) if keep is None else keep[..., None].to(v.dtype)
        d = k.shape[-1]
        v1 = torch.cat([v, real], -1)  # (B H, L, d + 1): [v, 1 if real]
        # pair keys: rows [k; v; real] (B H, 2 d + 1, L); the product of a row and a column is
        # [kk; vv; both real] in one multiply
        self.kvT = torch.cat([k, v1], -1).transpose(1, 2).to(mm).contiguous()
        self.kT = self.kvT[:, :d]  # (B H, d, L)
        self.kvT2 = self.kvT[:, : 2 * d].unflatten(1, (2, d)).transpose(0, 1)  # (2, B H, d, L): k, v
        self.v1 = v1.to(mm)  # query keys: the columns' values and the rows' [v, real]
        self.kv = torch.stack([k, v]).to(mm)  # (2, B H, L, d)
        self.k = self.kv[0]


class _Plan:
    """Blocks, masks and the passes (maxima, forward, backward) of one call."""

    def __init__(self, q, kv, shared: bool, keep, B: int, causal: bool, target, mm):
        BH, self.Lq, self.d = q.shape
        self.L = kv[0].shape[1]
        self.BH, self.shared, self.causal, self.mm = BH, shared, causal, mm
        self.keep = None if keep is None else keep.repeat_interleave(BH // max(B, 1), 0)  # (B H, L)
        self.floor_fwd, self.floor_bwd, gap = FLOORS.get(q.dtype, FLOORS[torch.float32])
        self.min_den = math.exp(-gap)
        self.visible = self._visible(q.device)  # (B H, L_q) bool: the query sees some pair
        slots = [_Slot(kv[m], kv[2 + m], self.keep, mm) for m in range(1 if shared else 2)]
        self.slots = slots if not shared else slots * 2
        # (row slot, column slot, weight of the diagonal tile or None: columns c < t0 only)
        self.halves = [(0, 0, 0.5)] if shared else [(0, 1, 1.0), (1, 0, None)]
        cpu = q.device.type == "cpu"
        budget = target or (CPU_BLOCK if cpu else CUDA_BLOCK_ELEMENTS)
        nb = NB_CPU if cpu else 32
        self.blocks = [
            (half, blk)
            for half in self.halves
            for blk in _blocks(BH, self.Lq, self.L, self.d, causal, budget, nb, half[2] is not None)
        ]
        self._scratch = kept(mm, q.device)
        self._masks: dict = {}
        self.shift = None

    # ---------------------------------------------------------------- masks and shifts

    def _visible(self, device) -> Tensor:
        if self.keep is None:
            return torch.ones(self.BH, self.Lq, dtype=torch.bool, device=device)
        if self.causal:  # the pair (i, i) or any earlier real pair
            return self.keep.cumsum(1) > 0
        return self.keep.any(1, keepdim=True).expand(self.BH, self.Lq)

    def bound(self, q: Tensor, causal: bool) -> Tensor:
        """(B H, L_q): an upper bound on |score| of every pair of real keys (at or before the
        query if `causal`) of each query (module doc); 0 where there is none."""
        tops = []
        for slot in self.slots[:1] if self.shared else self.slots:
            a = q.abs() @ slot.kT.to(q.dtype).square()  # (B H, L_q, L): sum_s |q_s| k_js^2
            if causal:
                a = a.tril()  # keys after the query give 0, below any real key's sum
            tops.append(a.amax(-1) if a.shape[-1] else a.sum(-1))
        top = tops[0] if self.shared else (tops[0] * tops[1]).sqrt()
        return torch.where(self.visible, top, 0.0)

    def _future(self, t0: int, t1: int, nc: int, tile: bool, w: int, device) -> Tensor:
        """(w, nb * nc) bool: pairs of rows t0:t1 that query t0 + j (j < w) must not see: row t
        after it, or a tile column after it."""
        key = (t0, t1, nc, tile, w)
        if key not in self._masks:
            i = torch.arange(t0, t0 + w, device=device)[:, None, None]
            t = torch.arange(t0, t1, device=device)[None, :, None]
            c = torch.arange(nc, device=device)[None, None, :]
            late = (t > i) | ((c > i) & tile)
            self._masks[key] = late.reshape(w, -1)
        return self._masks[key]

    # ---------------------------------------------------------------- one block

    def _scores(self, q_mm, half, blk, shift, floor, out):
        """exp(score - shift) of one block into `out`, masked and tile-weighted, (g, nq, nb, nc),
        and the block's factors: pair keys P = [kk; vv; both real] (g, 2 d + 1, nb, nc) with the
        tile weight in vv and the last row, or query keys (g, nq * nb, d + 1), q_i * k_row[t] in
        the first d columns. Without `floor`, the raw scores, -inf where not visible."""
        b0, b1, t0, t1, nc, i0, i1, qk = blk
        row, col = self.slots[half[0]], self.slots[half[1]]
        weight = half[2]
        g, nb, nq, d = b1 - b0, t1 - t0, i1 - i0, self.d
        if not qk:
            P = self._scratch.get("P", (g, 2 * d + 1, nb, nc))
            torch.mul(row.kvT[b0:b1, :, t0:t1, None], col.kvT[b0:b1, :, None, :nc], out=P)
            if weight is not None and weight != 1.0:
                P[:, d:, :, t0:t1].mul_(weight)
            z = torch.bmm(q_mm[b0:b1, i0:i1], P[:, :d].view(g, d, nb * nc), out=out.view(g, nq, nb * nc))
            factors = P
        else:
            factors = self._scratch.get("QD", (2, g, nq * nb, d + 1))[0]
            QK = factors.view(g, nq, nb, d + 1)[..., :d]
            torch.mul(q_mm[b0:b1, i0:i1, None], row.k[b0:b1, None, t0:t1], out=QK)
            z = torch.bmm(factors[..., :d], col.kT[b0:b1, :, :nc], out=out.view(g, nq * nb, nc))
        z = z.view(g, nq, nb * nc)
        if floor is not None:
            if shift is not None:
                z.sub_(shift[b0:b1, i0:i1, None].to(z.dtype)).clamp_min_(floor)
            z.exp_()
        w = min(nb - 1, nq) if self.causal and i0 == t0 else 0
        if w > 0:  # the tile's first queries: pairs with a key after the query weigh nothing
            late = self._future(t0, t1, nc, weight is not None, w, z.device)
            z[:, :w].masked_fill_(late, 0.0 if floor is not None else -math.inf)
        z = z.view(g, nq, nb, nc)
        if floor is None:  # maxima: padded pairs are no candidates
            if self.keep is not None:
                real = self.keep[b0:b1, t0:t1, None] & self.keep[b0:b1, None, :nc]
                z.masked_fill_(~real[:, None], -math.inf)
        elif qk and weight is not None and weight != 1.0:
            z[..., t0:t1].mul_(weight)
        return z, factors

    # ---------------------------------------------------------------- passes

    def maxima(self, q: Tensor) -> Tensor:
        """(B H, L_q): the exact largest visible score of each query (0 where none)."""
        top = torch.full((self.BH, self.Lq), -math.inf, dtype=q.dtype, device=q.device)
        q_mm = q.to(self.mm)
        with torch.inference_mode():
            for half, blk in self.blocks:
                b0, b1, t0, t1, nc, i0, i1, _ = blk
                out = self._scratch.get("z", (b1 - b0, i1 - i0, t1 - t0, nc))
                z, _ = self._scores(q_mm, half, blk, None, None, out)
                top[b0:b1, i0:i1] = torch.maximum(top[b0:b1, i0:i1], z.flatten(2).amax(-1).to(top.dtype))
        return torch.where(self.visible & (top > -MASKED / 2), top, 0.0)

    def forward(self, q: Tensor) -> tuple[Tensor, Tensor]:
        """u (B H, L_q, d) and the log of each query's softmax sum (lse), one pass over blocks."""
        with torch.autocast(q.device.type, enabled=False):
            if q.numel() and float(self.bound(q, False).max()) > MAX_UNSHIFTED:
                self.shift = self.bound(q, self.causal)
            acc = self._accumulate(q, self.shift)
            if self.shift is not None:
                bad = (acc[..., self.d] < self.min_den) & self.visible
                if bool(bad.any()):  # the bound was too loose for some query: use exact maxima
                    self.shift = self.maxima(q)
                    acc = self._accumulate(q, self.shift)
            num, den = acc[..., : self.d], acc[..., self.d]  # (B H, L_q, d), (B H, L_q)
            u = torch.where(self.visible[..., None], num / den[..., None], 0.0)
            shift = 0.0 if self.shift is None else self.shift
            lse = torch.where(self.visible, den.log() + shift, MASKED)
        return u, lse

    def _accumulate(self, q, shift) -> Tensor:
        """(B H, L_q, d + 1): per query the sum of e * v_row * v_col, then the sum of e, where
        e = exp(score - shift)."""
        d = self.d
        q_mm = q.to(self.mm)
        acc = q.new_zeros(self.BH, self.Lq, d + 1)
        # Block loops run in inference mode: ~110 small operations per block skip autograd's
        # per-operation bookkeeping (1-2% of the kernel's time, measured). The kept scratch
        # buffers are created and touched only there.
        with torch.inference_mode():
            self._accumulate_blocks(q_mm, shift, acc)
        return acc

    def _accumulate_blocks(self, q_mm, shift, acc) -> None:
        d, scratch = self.d, self._scratch
        for half, blk in self.blocks:
            b0, b1, t0, t1, nc, i0, i1, qk = blk
            g, nb, nq = b1 - b0, t1 - t0, i1 - i0
            e, factors = self._scores(
                q_mm, half, blk, shift, self.floor_fwd, scratch.get("z", (g, nq, nb, nc))
            )
            if not qk:  # e (g, nq, R) x [vv; w]^T (g, R, d + 1)
                vvw = factors[:, d:].view(g, d + 1, nb * nc).transpose(1, 2)
                acc[b0:b1, i0:i1].add_(
                    torch.bmm(e.view(g, nq, -1), vvw, out=scratch.get("a", (g, nq, d + 1)))
                )
            else:  # sum_c e v1_col[c], then sum over rows of v1_row[t] * that
                row, col = self.slots[half[0]], self.slots[half[1]]
                W = torch.bmm(
                    e.view(g, nq * nb, nc), col.v1[b0:b1, :nc], out=scratch.get("W", (g, nq * nb, d + 1))
                )
                prod = torch.mul(
                    W.view(g, nq, nb, d + 1),
                    row.v1[b0:b1, None, t0:t1],
                    out=scratch.get("t", (g, nq, nb, d + 1)),
                )
                acc[b0:b1, i0:i1].add_(prod.sum(2))

    def backward(self, q, u, lse, du):
        """Gradients for (q, k1, k2, v1, v2); None for a slot that shares the first one's tensor.

        With p = exp(score - lse) = e / den and D_i = <du_i, u_i>: dz = e (vv . du'_i - w D'_i)
        with du' = du / den and D' = D / den, then dq_i = sum dz kk, dkk = sum_i dz q_i, dvv =
        sum_i e du'_i, and each pair's gradient goes to its row key (times the column key) and
        its column key (times the row key); the query-key form contracts in the other order.
        Gradients of k and of v travel stacked, (2, ...), through the same operations.
        """
        d, L, BH, mm = self.d, self.L, self.BH, self.mm
        with torch.autocast(q.device.type, enabled=False):
            shift = 0.0 if self.shift is None else self.shift
            scale = torch.where(self.visible, (shift - lse).exp(), 0.0)  # 1 / den
            du = du.to(q.dtype) * scale[..., None]  # du' (B H, L_q, d)
            minus_D = -(du * u).sum(-1, keepdim=True)  # -D' (B H, L_q, 1)
            du_aug = torch.cat([du, minus_D], -1).to(mm)  # [du', -D'] meets [vv; w] and [v, real]
            q_mm = q.to(mm)
            qdu = torch.stack([q, du]).to(mm)  # (2, B H, L_q, d)
            qduT = qdu.transpose(2, 3).contiguous()  # (2, B H, d, L_q)
            dq = torch.zeros_like(q)
            grads = [q.new_zeros(2, BH, L, d) for _ in self.slots]  # per slot: [dk, dv]
            gradsT = [q.new_zeros(2, BH, d, L) for _ in self.slots]  # the same, transposed
            with torch.inference_mode():
                self._backward_blocks(q_mm, du_aug, qdu, qduT, dq, grads, gradsT)
        out = []
        real = 1.0 if self.keep is None else self.keep[..., None].to(q.dtype)
        for m in range(1 if self.shared else 2):
            dk, dv = grads[m] + gradsT[m].transpose(2, 3)
            out += [dk * real, dv * real]
        if self.shared:
            return dq, out[0], None, out[1], None
        return dq, out[0], out[2], out[1], out[3]

    def _backward_blocks(self, q_mm, du_aug, qdu, qduT, dq, grads, gradsT) -> None:
        """The backward's loop over blocks, adding into dq (B H, L_q, d) and each slot's [dk, dv]
        (2, B H, L, d) and transposed (2, B H, d, L)."""
        d, scratch = self.d, self._scratch
        for half, blk in self.blocks:
            b0, b1, t0, t1, nc, i0, i1, qk = blk
            g, nb, nq = b1 - b0, t1 - t0, i1 - i0
            r, c, weight = half
            row, col = self.slots[r], self.slots[c]
            ze = scratch.get("ze", (2, g, nq, nb, nc))  # [dz, e]
            e, factors = self._scores(q_mm, half, blk, self.shift, self.floor_bwd, ze[1])
            if not qk:
                R = nb * nc
                P = factors.view(g, 2 * d + 1, R)
                dz = torch.bmm(du_aug[b0:b1, i0:i1], P[:, d:], out=ze[0].view(g, nq, R)).mul_(
                    e.view(g, nq, R)
                )
                dq[b0:b1, i0:i1].add_(
                    torch.bmm(dz, P[:, :d].transpose(1, 2), out=scratch.get("dq", (g, nq, d)))
                )
                # [dkk; dvv] = [q; du']^T [dz; e], both at once (2 g, d, R)
                left = qduT[:, b0:b1, :, i0:i1].reshape(2 * g, d, nq)
                dp = torch.bmm(left, ze.view(2 * g, nq, R), out=scratch.get("dp", (2 * g, d, R)))
                dp = dp.view(2, g, d, nb, nc)
                if weight is not None and weight != 1.0:
                    dp[1, ..., t0:t1].mul_(weight)
                tmp = scratch.get("t", (2, g, d, nb, nc))
                gradsT[r][:, b0:b1, :, t0:t1].add_(
                    torch.mul(dp, col.kvT2[:, b0:b1, :, None, :nc], out=tmp).sum(-1)
                )
                gradsT[c][:, b0:b1, :, :nc].add_(
                    torch.mul(dp, row.kvT2[:, b0:b1, :, t0:t1, None], out=tmp).sum(-2)
                )
            else:
                QD = scratch.get("QD", (2, g, nq * nb, d + 1))  # [q_i k_row[t], du'_i [v_row[t], real]]
                torch.mul(
                    du_aug[b0:b1, i0:i1, None],
                    row.v1[b0:b1, None, t0:t1],
                    out=QD[1].view(g, nq, nb, d + 1),
                )
                e2 = e.view(g, nq * nb, nc)
                dz = torch.bmm(
                    QD[1], col.v1[b0:b1, :nc].transpose(1, 2), out=ze[0].view(g, nq * nb, nc)
                ).mul_(e2)
                # [M; W] = [dz; e] [k_col; v_col]: sums over columns
                MW = torch.bmm(
                    ze.view(2 * g, nq * nb, nc),
                    col.kv[:, b0:b1, :nc].reshape(2 * g, nc, d),
                    out=scratch.get("MW", (2 * g, nq * nb, d)),
                ).view(2, g, nq, nb, d)
                tmp = scratch.get("t", (2, g, nq, nb, d))
                dq[b0:b1, i0:i1].add_(torch.mul(MW[0], row.k[b0:b1, None, t0:t1], out=tmp[0]).sum(2))
                grads[r][:, b0:b1, t0:t1].add_(torch.mul(MW, qdu[:, b0:b1, i0:i1, None], out=tmp).sum(2))
                # [dk_col; dv_col] = [dz; e]^T [q k_row; du' v_row]: sums over queries and rows
                kc = torch.bmm(
                    ze.view(2 * g, nq * nb, nc).transpose(1, 2),
                    QD.view(2 * g, nq * nb, d + 1)[..., :d],
                    out=scratch.get("kc", (2 * g, nc, d)),
                )
                grads[c][:, b0:b1, :nc].add_(kc.view(2, g, nc, d))


def _blocks(BH: int, Lq: int, L: int, d: int, causal: bool, budget: int, nb: int, tile: bool):
    """(b0, b1, t0, t1, nc, i0, i1, qk): rows t0:t1 against columns c < nc (t1 with the diagonal
    tile, else t0) for B H slices b0:b1 and queries i0:i1; causal rows t are seen only by queries
    i >= t0. A block holds about `budget` elements of scores and of the tensors beside them, which
    grow with d (pair keys, their gradients). qk: the query-key form, where it builds fewer
    elements (queries * nb * d against nb * nc * d)."""
    for t0 in range(0, L, nb):
        t1 = min(L, t0 + nb)
        nc = t1 if tile else t0
        q0 = t0 if causal else 0
        if nc == 0 or q0 >= Lq:
            continue
        R = (t1 - t0) * nc
        nq = min(Lq - q0, max(16, budget // R))
        g = max(1, min(BH, budget // (R * (nq + BLOCK_D * d))))
        for i0 in range(q0, Lq, nq):
            i1 = min(Lq, i0 + nq)
            for b0 in range(0, BH, g):
                yield b0, min(BH, b0 + g), t0, t1, nc, i0, i1, nc > QK_OVER * (i1 - i0)
