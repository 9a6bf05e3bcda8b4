"""Self-attention (SA): the paper's linear form (X C X^T) X W_V and standard softmax multi-head.

Linear (paper Eq. 1): out_i = sum_h sum_j (x_i^T C_h x_j)(x_j^T W_V,h). C_h is a full d x d
matrix, so with d = N and orthonormal embeddings any pairwise interaction table is exact
(Theorem 3.1). No softmax and no normalisation.

Softmax: Q, K, V = X W_Q, X W_K, X W_V split into H heads of width d_h = d / H,
softmax(Q K^T / sqrt(d_h)) V, heads concatenated, then W_O: d -> out_dim.

Each kernel has a `_reference` twin: the formula written as plain einsums, kept for tests.
"""

from __future__ import annotations

import functools
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

# ---------------------------------------------------------------- linear kernels


def linear_sa_reference(x: Tensor, C: Tensor, W_V: Tensor, ok: Tensor) -> tuple[Tensor, Tensor]:
    """Eq. 1 verbatim: x (B, L, d), C (H, d, d), W_V (H, d, o), ok (B, L, L) -> (B, L, o), (B, H, L, L)."""
    scores = torch.einsum("bid,hde,bje->bhij", x, C, x) * ok[:, None]  # (B, H, L, L)
    values = torch.einsum("bjd,hdo->bhjo", x, W_V)  # (B, H, L, o)
    return torch.einsum("bhij,bhjo->bio", scores, values), scores


def linear_sa(x: Tensor, C: Tensor, W_V: Tensor, causal: bool) -> Tensor:
    """Fast linear SA; padded tokens of x must already be zero. x (B, L, d) -> (B, L, o).

    Two orders of the same product, picked by which intermediate is smaller:
    - L <= d or causal: the (B, H, L, L) scores (X C) X^T, masked when causal, times X W_V. A causal
      prefix sum would carry a d x o state per token, usually bigger than the L x L scores.
    - L > d: (X C X^T) X W_V = X [C (X^T X) W_V], O(L d^2) with no L x L matrix at all.
    """
    B, L, d = x.shape
    if causal or L <= d:
        xc = torch.einsum("bid,hde->bhie", x, C)  # (B, H, L, d)
        scores = xc @ x.transpose(1, 2)[:, None]  # (B, H, L, d) x (B, 1, d, L) -> (B, H, L, L)
        values = x[:, None] @ W_V  # (B, 1, L, d) x (H, d, o) -> (B, H, L, o)
        return ((scores.tril() if causal else scores) @ values).sum(1)
    gram = x.transpose(1, 2) @ x  # (B, d, L) x (B, L, d) -> (B, d, d)
    # Contract W_V first: C (gram W_V) costs O(B H d^2 o); einsum's left-to-right (C gram) W_V is O(B H d^3).
    G = (C @ (gram[:, None] @ W_V)).sum(1)  # (H, d, d) x (B, H, d, o) -> (B, d, o), summed over heads
    return x @ G  # (B, L, o)


# ---------------------------------------------------------------- softmax kernels

PACK_TOKENS = 16  # unpadded sets shorter than this are packed together (see softmax_sa_packed)


def softmax_sa_reference(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """q, k, v (B, H, L, d_h); allowed (B, L, L) -> out (B, H, L, d_h), logits and weights (B, H, L, L)."""
    logits = torch.einsum("bhis,bhjs->bhij", q, k) / math.sqrt(q.shape[-1])
    att = logits.masked_fill(~allowed[:, None], float("-inf")).softmax(-1)
    return torch.einsum("bhij,bhjs->bhis", att, v), logits, att


def softmax_sa(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor | None, causal: bool) -> Tensor:
    """Fused torch kernel; `allowed` None means no padding (then `causal` picks the built-in mask).

    q (B, H, L_q, d_h), k and v (B, H, L, d_h); L_q < L (some queries only) needs causal False.
    Short unpadded sets go through `softmax_sa_packed`, which computes the same thing faster.
    """
    B, L = q.shape[0], q.shape[2]
    group = PACK_TOKENS // L if 0 < L == k.shape[2] else 1
    if allowed is None and not causal and group > 1 and B % group == 0:
        return softmax_sa_packed(q, k, v, group)
    if allowed is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None])


def softmax_sa_packed(q: Tensor, k: Tensor, v: Tensor, group: int) -> Tensor:
    """Unpadded non-causal softmax SA, `group` batch items per fused-kernel problem. (B, H, L, d_h).

    At small L the CPU kernel's fixed cost per (batch, head) problem dominates; packing `group`
    sets into one of length group * L under a block-diagonal mask (no token sees another set's)
    gives the same outputs, up to summation order, in fewer problems. Needs B % group == 0.
    """
    B, H, L, d_h = q.shape

    def pack(t: Tensor) -> Tensor:  # (B, H, L, d_h) -> (B / group, H, group * L, d_h); a view when it can
        return t.transpose(1, 2).reshape(B // group, group * L, H, d_h).transpose(1, 2)

    y = F.scaled_dot_product_attention(
        pack(q), pack(k), pack(v), attn_mask=_block_diagonal(group, L, q.device)
    )
    return y.transpose(1, 2).reshape(B, L, H, d_h).transpose(1, 2)


@functools.lru_cache(maxsize=32)
def _block_diagonal(group: int, L: int, device: torch.device) -> Tensor:
    """(group * L, group * L) bool: True where query and key lie in the same set of L tokens."""
    sets = torch.arange(group * L, device=device) // L
    return sets[:, None] == sets[None, :]


def softmax_sa_first_reference(x: Tensor, W: Tensor, allowed: Tensor | None) -> Tensor:
    """Query 0's softmax SA output: x (B, L, d); W (3, H, d_h, d) = W_Q, W_K, W_V; allowed (B, L)."""
    q = torch.einsum("bd,hsd->bhs", x[:, 0], W[0])  # (B, H, d_h)
    k, v = (torch.einsum("bjd,hsd->bhjs", x, w) for w in W[1:])  # (B, H, L, d_h)
    logits = torch.einsum("bhs,bhjs->bhj", q, k) / math.sqrt(q.shape[-1])
    if allowed is not None:
        logits = logits.masked_fill(~allowed[:, None], float("-inf"))
    return torch.einsum("bhj,bhjs->bhs", logits.softmax(-1), v)  # (B, H, d_h)


def softmax_sa_first(x: Tensor, W: Tensor, allowed: Tensor | None) -> Tensor:
    """Same as the reference without projecting any token but token 0 (the extractor's last block).

    q_h . (W_K,h x_j) = (W_K,h^T q_h) . x_j and sum_j a_hj W_V,h x_j = W_V,h (sum_j a_hj x_j),
    so only (B, H, d) and (B, H, d_h) tensors are projected, never the (B, L, d) tokens.
    """
    B, d = x.shape[0], x.shape[2]
    H, d_h = W.shape[1], W.shape[2]
    q = F.linear(x[:, 0], W[0].reshape(H * d_h, d)).view(B, H, d_h) * d_h**-0.5  # (B, H, d_h)
    qk = torch.einsum("bhs,hsd->bhd", q, W[1])  # (B, H, d): the query moved to token space
    logits = qk @ x.transpose(1, 2)  # (B, H, d) x (B, d, L) -> (B, H, L)
    if allowed is not None:
        logits = logits.masked_fill(~allowed[:, None], float("-inf"))
    z = logits.softmax(-1) @ x  # (B, H, L) x (B, L, d) -> (B, H, d)
    return torch.einsum("bhd,hsd->bhs", z, W[2])  # (B, H, d_h)


# ---------------------------------------------------------------- module


class SelfAttention(nn.Module):
    """Self-attention over a set (or sequence) of tokens.

    Args:
        dim: token width d.
        heads: H. Linear: H full d x d matrices C_h whose outputs are summed.
            Softmax: H heads of width d_h = dim / heads.
        kind: "linear" (paper Eq. 1) or "softmax".
        causal: token i only sees tokens j <= i.
        out_dim: output width (default dim); 1 gives one scalar per token.
        rank: linear only. None: each C_h is a free d x d matrix (Theorem 3.1's model). An int r:
            C_h = W_Q,h W_K,h^T with W_Q,h, W_K,h of shape d x r (App. B.4's low-rank model;
            2 d r weights instead of d^2), the parameter count experiment 4 sweeps.

    `forward(x (B, L, dim), mask (B, L) bool | None, return_scores)` -> (B, L, out_dim),
    plus `AttentionScores` with scores (B, H, L, L) when `return_scores`.
    mask True marks real tokens; padded tokens never influence real ones and output zero.
    """

    def __init__(
        self,
        *,
        dim: int,
        heads: int = 1,
        kind: str = "softmax",
        causal: bool = False,
        out_dim: int | None = None,
        rank: int | None = None,
    ):
        super().__init__()
        check_choice("kind", kind, KINDS)
        self.dim, self.heads = check_int("dim", dim, 1), check_int("heads", heads, 1)
        self.out_dim = dim if out_dim is None else check_int("out_dim", out_dim, 1)
        self.kind, self.causal = kind, bool(causal)
        self.rank = check_rank(rank, kind)
        if kind == "linear":
            # Small init so (X C X^T) X W_V starts O(1) for unit-norm tokens; the paper uses N(0, 1).
            if rank is None:
                self.C = nn.Parameter(torch.randn(heads, dim, dim) / dim)
            else:
                self.W_Q = nn.Parameter(torch.randn(heads, dim, rank) / math.sqrt(dim))
                self.W_K = nn.Parameter(torch.randn(heads, dim, rank) / math.sqrt(dim * rank))
            self.W_V = nn.Parameter(torch.randn(heads, dim, self.out_dim) / math.sqrt(dim))
        else:
            self.head_dim = check_divisible(dim, heads, "heads")
            self.qkv = nn.Linear(dim, 3 * dim, bias=False)  # W_Q, W_K, W_V side by side
            self.proj = nn.Linear(dim, self.out_dim, bias=False)  # W_O

    def forward(self, x: Tensor, mask: Tensor | None = None, return_scores: bool = False):
        given = mask is not None
        mask = check_input(x, mask, self.dim)
        x = zero_padding(x, mask)
        if self.kind == "linear":
            C = self.interaction()
            if not return_scores:
                return linear_sa(x, C, self.W_V, self.causal)
            out, scores = linear_sa_reference(x, C, self.W_V, pair_mask(mask, self.causal))
            return out, AttentionScores("linear", scores)
        return self._softmax(x, mask, given, return_scores)

    def interaction(self) -> Tensor:
        """The linear model's C, (H, d, d): the free parameter, or W_Q W_K^T when low-rank."""
        return interaction(self)

    def tables(self, P: Tensor | None = None) -> list[Tensor]:
        """Linear only: [G], G[mu, nu, o] = sum_h p_mu^T C_h p_nu * (p_nu^T W_V,h)_o over a finite domain.

        P (M, d) holds the embedding of every domain element (None: the identity, i.e. one-hot,
        which skips two matmuls). Then y_i = sum_j G[t_i, t_j] (Predictor.forward_table).
        """
        S = domain_scores(self, P)  # (H, M, M)
        V = self.W_V if P is None else P @ self.W_V  # (H, M, o)
        return [(S[..., None] * V[:, None]).sum(0)]  # (M, M, o)

    def attend(self, x: Tensor, mask: Tensor | None, first_only: bool = False) -> Tensor:
        """`forward` without its input checks, for a caller that validated x once (AttentionExtractor).

        x (B, L, dim), real tokens finite; mask (B, L) bool, or None for no padding (then no masking
        work at all). first_only: the output of query 0 only, (B, 1, out_dim) (keys still span all L).
        """
        first_only = first_only and x.shape[1] > 0  # no token 0 when L = 0: the empty full pass
        x, out = attend_prelude(self, x, mask, first_only, linear_sa)
        if out is not None:
            return out
        B, L, d = x.shape
        H, d_h = self.heads, self.head_dim
        if first_only:
            allowed = None if mask is None else key_mask(mask, False)[:, 0]  # (B, L): query 0's row
            y = softmax_sa_first(x, self.qkv.weight.view(3, H, d_h, d), allowed)  # (B, H, d_h)
            out = self.proj(y.reshape(B, 1, d))  # (B, 1, out_dim)
            return out if mask is None else out * mask[:, :1, None]
        q, k, v = (t.view(B, L, H, d_h).transpose(1, 2) for t in self.qkv(x).split(d, -1))
        y = softmax_sa(q, k, v, None if mask is None else key_mask(mask, False), False)  # (B, H, L, d_h)
        out = self.proj(y.transpose(1, 2).reshape(B, L, d))  # (B, L, out_dim)
        return out if mask is None else out * mask[..., None]  # padded tokens output zero

    def _softmax(self, x: Tensor, mask: Tensor, given: bool, return_scores: bool):
        B, L, d = x.shape
        q, k, v = (t.view(B, L, self.heads, self.head_dim).transpose(1, 2) for t in self.qkv(x).split(d, -1))
        allowed = key_mask(mask, self.causal)  # (B, L, L)
        if return_scores:
            y, logits, att = softmax_sa_reference(q, k, v, allowed)
        else:
            y = softmax_sa(q, k, v, allowed if given else None, self.causal)  # (B, H, L, d_h)
        out = self.proj(y.transpose(1, 2).reshape(B, L, d)) * mask[..., None]  # padded tokens output zero
        if not return_scores:
            return out
        ok = pair_mask(mask, self.causal)[:, None]
        return out, AttentionScores("softmax", att * ok, logits=logits * ok)
