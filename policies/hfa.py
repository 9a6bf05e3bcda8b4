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

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from policies.base import (
    KINDS,
    AttentionScores,
    attend_prelude,
    check_choice,
    check_divisible,
    check_input,
    check_int,
    check_rank,
    domain_scores,
    interaction,
    key_mask,
    pair_mask,
    zero_padding,
)

QUERY_BLOCK = 2**22  # scores per block of queries in the fast softmax path (about cache-sized)

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
    q: Tensor, k: Tensor, v: Tensor, allowed: Tensor | None, causal: bool, block: int | None = None
) -> Tensor:
    """Fast path over blocks of queries (shapes as in the reference; allowed None = no padding).

    When not causal, q may hold fewer queries than k and v have keys: q (B, H, A, L_q, d_h) and
    allowed (B, L_q, L) give out (B, H, L_q, d_h).

    A (B, H, c, L) block stays in cache through the factor product, mask and softmax, which are
    memory-bound; on the full (B, H, L, L) they cost more than the matmuls. When causal, block
    i0:i1 reads keys :i1 only, skipping about half the work (as fused SDPA kernels do), and
    without padding only its last c x c corner needs masking.
    """
    B, H, A, L, d_h = q.shape
    Lk = k.shape[3]  # keys: L, or more when only some queries are asked for (not causal)
    c = block or min(L, max(16, QUERY_BLOCK // (B * H * Lk)))  # queries per block
    q = q * d_h**-0.5  # prod_a of 1/sqrt(d_h), applied to the small tensor
    kt, values = k.transpose(-1, -2), v.prod(2)  # (B, H, A, d_h, L), (B, H, L, d_h)
    outs = []
    for i0 in range(0, L, c):  # a loop over query blocks, and inside it over the A factors
        i1 = min(L, i0 + c)
        keys = i1 if causal else Lk
        logits = q[:, :, 0, i0:i1] @ kt[:, :, 0, :, :keys]  # (B, H, c, d_h) x (B, H, d_h, keys)
        for a in range(1, A):
            logits = logits * (q[:, :, a, i0:i1] @ kt[:, :, a, :, :keys])
        if allowed is not None:
            logits = logits.masked_fill_(~allowed[:, None, i0:i1, :keys], float("-inf"))
        elif causal:  # keys i0:i1 against queries i0:i1: mask j > i
            future = torch.ones(i1 - i0, i1 - i0, dtype=torch.bool, device=q.device).triu(1)
            logits[..., i0:i1].masked_fill_(future, float("-inf"))
        outs.append(logits.softmax(-1) @ values[:, :, :keys])  # (B, H, c, keys) x (B, H, keys, d_h)
    return torch.cat(outs, 2)  # (B, H, L, d_h)


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
        allowed = None if mask is None else key_mask(mask, False)[:, :Lq]  # (B, L_q, L)
        y = softmax_hfa(q, k, v, allowed, False)  # (B, H, L_q, d_h)
        out = self.proj(y.transpose(1, 2).reshape(B, Lq, H * d_h))  # (B, L_q, out_dim)
        return out if mask is None else out * mask[:, :Lq, None]  # padded tokens output zero

    def _softmax(self, x: Tensor, mask: Tensor, given: bool, return_scores: bool):
        B, L, d = x.shape
        H, A, d_h = self.heads, self.factors, self.head_dim
        q, k, v = (t.view(B, L, H, A, d_h).permute(0, 2, 3, 1, 4) for t in self.qkv(x).split(d, -1))
        allowed = key_mask(mask, self.causal)  # (B, L, L)
        if return_scores:
            y, logits, att, factors = softmax_hfa_reference(q, k, v, allowed)
        else:
            y = softmax_hfa(
                q, k, v, allowed if (given or self.causal) else None, self.causal
            )  # (B, H, L, d_h)
        out = self.proj(y.transpose(1, 2).reshape(B, L, H * d_h)) * mask[..., None]
        if not return_scores:
            return out
        ok = pair_mask(mask, self.causal)[:, None]
        return out, AttentionScores("softmax", att * ok, logits=logits * ok, factors=factors * ok[:, :, None])
