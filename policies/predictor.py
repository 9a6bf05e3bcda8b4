"""Predictor: a token set -> one value per token (the paper's regression setting, d2 = 1).

    tokens (B, L) [or (B, L, F)] --embedding--> (B, L, d) --attention--> (B, L, o) [--ReLU MLP-->] (B, L)

Any attention module with the common call works (SA, HFA, HA); any L, padding-aware.
For a linear single-head SA over a finite domain, `pair_table` reads off the learned
interaction table G[mu, nu] = x(mu)^T C x(nu) . x(nu)^T W_V (the product C_mu,nu W_nu,0 the paper
compares with the devised one), and `forward_table` uses it as a fast training path.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from policies.base import check_choice, check_int, pair_mask
from policies.embeddings import OneHotEmbedding, TokenEmbedding
from policies.ha import HyperAttention
from policies.hfa import HyperFeatureAttention
from policies.sa import SelfAttention

ATTENTION = {"sa": SelfAttention, "hfa": HyperFeatureAttention, "ha": HyperAttention}


def make_attention(name: str, *, dim: int, factors: int = 2, order: int = 3, **kwargs) -> nn.Module:
    """Attention module by name ("sa" | "hfa" | "ha"); `factors` goes to HFA only, `order` to HA only.

    Other keyword arguments (heads, kind, causal, out_dim, share_kv, ...) go to the constructor.
    """
    check_choice("name", name, tuple(ATTENTION))
    extra = {"hfa": {"factors": factors}, "ha": {"order": order}}.get(name, {})
    return ATTENTION[name](dim=dim, **extra, **kwargs)


class Predictor(nn.Module):
    """Per-token value y_i from a set of tokens.

    Args:
        embedding: a TokenEmbedding (its `dim` must equal the attention's `dim`).
        attention: SelfAttention, HyperFeatureAttention or HyperAttention.
        mlp_hidden: if set, a Linear(o, mlp_hidden) -> ReLU -> Linear(mlp_hidden, 1) head after
            attention (the genotype task's "SA followed by a ReLU layer"); if None the attention's
            out_dim must be 1 and its output is the prediction.

    `forward(tokens, mask (B, L) bool | None)` -> (B, L); padded tokens (mask False) may hold any
    value, influence nothing and predict 0.
    """

    def __init__(self, embedding: TokenEmbedding, attention: nn.Module, mlp_hidden: int | None = None):
        super().__init__()
        if not isinstance(embedding, TokenEmbedding):
            raise TypeError(f"embedding must be a TokenEmbedding, got {type(embedding).__name__}")
        if getattr(attention, "dim", None) != embedding.dim:
            raise ValueError(
                f"attention.dim must equal embedding.dim={embedding.dim}, "
                f"got {getattr(attention, 'dim', None)}"
            )
        self.embedding, self.attention = embedding, attention
        out = attention.out_dim
        if mlp_hidden is None:
            if out != 1:
                raise ValueError(f"attention.out_dim must be 1 when mlp_hidden is None, got {out}")
            self.mlp = None
        else:
            hidden = check_int("mlp_hidden", mlp_hidden, 1)
            self.mlp = nn.Sequential(nn.Linear(out, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        tokens, mask = self._prepare(tokens, mask)
        return self._head(self.attention(self.embedding(tokens), mask), mask)

    def _prepare(self, tokens: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """Default the mask to all-real and put a valid token (0) at padded places."""
        if not isinstance(tokens, Tensor) or tokens.dim() < 2:
            raise TypeError(
                f"tokens must be an integer tensor (B, L) or (B, L, F), got {type(tokens).__name__}"
            )
        if mask is None:
            return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.shape != tokens.shape[:2]:
            raise ValueError(
                f"mask must be a bool tensor of shape (B, L) = {tuple(tokens.shape[:2])}, "
                f"got {getattr(mask, 'shape', mask)}"
            )
        pad = ~mask if tokens.dim() == 2 else ~mask[..., None]
        return tokens.masked_fill(pad, 0), mask

    def _head(self, y: Tensor, mask: Tensor) -> Tensor:
        if self.mlp is not None:
            y = self.mlp(y)
        return y[..., 0] * mask  # (B, L)

    def has_table_path(self) -> bool:
        """True when `pair_table` / `forward_table` apply (a linear SelfAttention)."""
        return isinstance(self.attention, SelfAttention) and self.attention.kind == "linear"

    def pair_table(self) -> Tensor:
        """G[mu, nu] = sum_h x(mu)^T C_h x(nu) * x(nu)^T W_V,h: (N, N), or (N, N, o) if out_dim o > 1.

        Needs a linear SelfAttention; y_i = sum_j G[t_i, t_j] (before the MLP head, if any).
        """
        att = self.attention
        if not self.has_table_path():
            raise TypeError("pair_table needs attention=SelfAttention(kind='linear')")
        if isinstance(self.embedding, OneHotEmbedding):  # P = I: skip two N^3 matmuls per training step
            scores, values = att.C, att.W_V  # (H, N, N), (H, N, o)
        else:
            P = self.embedding.table()  # (N, d)
            scores = P @ att.C @ P.T  # (N, d) x (H, d, d) x (d, N) -> (H, N, N)
            values = P @ att.W_V  # (H, N, o)
        G = (scores[..., None] * values[:, None]).sum(0)  # (N, N, o)
        return G[..., 0] if G.shape[-1] == 1 else G

    def forward_table(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        """Same as forward for a linear SA, by gathering G: O(N^2 d) once + O(B L^2), not O(B L^2 d)."""
        tokens, mask = self._prepare(tokens, mask)
        G = self.pair_table()
        G = G[..., None] if G.dim() == 2 else G  # (N, N, o)
        idx = self.embedding.index(tokens)  # (B, L)
        N, B, L = G.shape[0], *idx.shape
        # G[t_i, t_j] through one flat index_select: about 2x faster (forward + backward) than
        # broadcast advanced indexing, which matters because this gather is the training step.
        flat = (idx[:, :, None] * N + idx[:, None, :]).reshape(-1)  # (B*L*L,)
        g = G.reshape(N * N, -1).index_select(0, flat).view(B, L, L, -1)  # (B, L, L, o): G[t_i, t_j]
        ok = pair_mask(mask, self.attention.causal)[..., None]
        return self._head((g * ok).sum(2), mask)
