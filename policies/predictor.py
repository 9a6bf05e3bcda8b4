"""Predictor: a token set -> one value per token (the paper's regression setting, d2 = 1).

    tokens (B, L) [or (B, L, F)] --embedding--> (B, L, d) --attention--> (B, L, o) [--ReLU MLP-->] (B, L)

Any attention module with the common call works (SA, HFA, HA); any L, padding-aware.
For linear attention over a finite domain, `tables` reads off the learned interaction tables:
G[mu, nu] = x(mu)^T C x(nu) . x(nu)^T W_V for SA (the product C_mu,nu W_nu,0 the paper compares
with the devised one; `pair_table`), the Hadamard-product analogue for HFA, and the order-3
G[mu, nu, lambda] for HA. `forward_table` gathers them: the fast training path.
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
FAMILIES = tuple(ATTENTION)  # the attention families every model here is built from


def make_attention(name: str, *, dim: int, factors: int = 2, order: int = 3, **kwargs) -> nn.Module:
    """Attention module by name ("sa" | "hfa" | "ha" | "sa+ha"); `factors` goes to HFA, `order` to HA.

    "sa+ha" is AttentionSum(SA, HA): a pairwise and an order-n term. Other keyword arguments
    (heads, kind, causal, out_dim, rank, share_kv, ...) go to every constructor.
    """
    check_choice("name", name, (*FAMILIES, "sa+ha"))
    if name == "sa+ha":
        return AttentionSum(*(make_attention(n, dim=dim, order=order, **kwargs) for n in ("sa", "ha")))
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
        """True when `tables` / `forward_table` apply: linear attention (SA, HFA, HA or a sum of them)."""
        return getattr(self.attention, "kind", None) == "linear" and hasattr(self.attention, "tables")

    def tables(self) -> list[Tensor]:
        """The learned interaction tables over the token domain, one per attention term.

        Order 2 (SA, HFA): G[mu, nu] with y_i = sum_j G[t_i, t_j]; order n (HA): G[mu, nu_1..nu_m]
        with y_i = sum over key tuples. A trailing out_dim axis o is kept (squeezed when o = 1).
        """
        return [G[..., 0] if G.shape[-1] == 1 else G for G in self._tables()]

    def _tables(self) -> list[Tensor]:
        """The attention's tables with their out_dim axis: (M, .., M, o)."""
        if not self.has_table_path():
            raise TypeError("tables need linear attention (SA, HFA, HA or AttentionSum of them)")
        # P = I for one-hot: skip two M^3 matmuls per training step.
        return self.attention.tables(
            None if isinstance(self.embedding, OneHotEmbedding) else self.embedding.table()
        )

    def pair_table(self) -> Tensor:
        """G[mu, nu] = sum_h x(mu)^T C_h x(nu) * x(nu)^T W_V,h: (M, M), or (M, M, o) if out_dim o > 1.

        The sum of the order-2 tables: the product C_mu,nu W_nu the paper compares with the devised one.
        """
        pairs = [G for G in self._tables() if G.dim() == 3]
        if not pairs:
            raise TypeError("pair_table needs a pairwise (SA or HFA) term")
        G = sum(pairs)
        return G[..., 0] if G.shape[-1] == 1 else G

    def forward_table(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        """Same as forward for linear attention, by gathering the tables: O(M^n d) once + O(B L^n)."""
        tokens, mask = self._prepare(tokens, mask)
        idx = self.embedding.index(tokens)  # (B, L)
        ok = pair_mask(mask, self.attention.causal)  # (B, L, L)
        return self._head(sum(gather_table(G, idx, ok) for G in self._tables()), mask)


def gather_table(G: Tensor, idx: Tensor, ok: Tensor) -> Tensor:
    """sum over key tuples of G[t_i, t_j1, .., t_jm] where every (i, j_k) is allowed: (B, L, o).

    G (M, .., M, o) of order n = m + 1; idx (B, L) domain indices; ok (B, L, L) allowed pairs.
    One flat index_select: about 2x faster (forward + backward) than broadcast advanced indexing,
    which matters because this gather is the training step.
    """
    M, m, (B, L) = G.shape[0], G.dim() - 2, idx.shape
    flat, allowed = (
        idx.view(B, L, *([1] * m)),
        torch.ones((B, L) + (1,) * m, dtype=torch.bool, device=ok.device),
    )
    for a in range(m):  # j_a on axis 2 + a
        shape = [B, 1] + [1] * m
        shape[2 + a] = L
        flat = flat * M + idx.view(shape)
        allowed = allowed & ok.view(B, L, *[L if k == a else 1 for k in range(m)])
    g = G.reshape(M ** (m + 1), -1).index_select(0, flat.reshape(-1)).view(B, L, L**m, -1)
    return (g * allowed.reshape(B, L, L**m, 1)).sum(2)


class AttentionSum(nn.Module):
    """Terms of several attention modules added: e.g. SA + HA for values with pairwise and ternary parts.

    Order-3 HA sums over all key tuples, repeats included, so it cannot length-generalise a pure
    pairwise term on its own; `AttentionSum(sa, ha)` (orders 2 and 3) can, as in experiment 5.
    `forward(x, mask, return_scores)` -> (B, L, out_dim), plus a tuple of each term's AttentionScores.
    """

    def __init__(self, *modules: nn.Module):
        super().__init__()
        if not modules:
            raise ValueError("AttentionSum needs at least one attention module")
        dims = {(m.dim, m.out_dim, bool(m.causal)) for m in modules}
        if len(dims) != 1:
            raise ValueError(f"every term must share dim, out_dim and causal, got {sorted(dims)}")
        self.terms = nn.ModuleList(modules)
        self.dim, self.out_dim, self.causal = dims.pop()
        kinds = {m.kind for m in modules}
        self.kind = kinds.pop() if len(kinds) == 1 else "mixed"

    def forward(self, x: Tensor, mask: Tensor | None = None, return_scores: bool = False):
        outs = [m(x, mask, return_scores) for m in self.terms]
        if not return_scores:
            return sum(outs)
        return sum(o for o, _ in outs), tuple(sc for _, sc in outs)

    def tables(self, P: Tensor | None = None) -> list[Tensor]:
        return [G for m in self.terms for G in m.tables(P)]
