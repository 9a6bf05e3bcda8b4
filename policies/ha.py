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
  * softmax, exact: queries in chunks, so only chunk * L^(n-1) scores exist at once.
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
    check_choice,
    check_divisible,
    check_input,
    check_int,
    check_rank,
    key_mask,
    pair_mask,
    zero_padding,
)

CHUNK_ELEMENTS = 2**22  # exact softmax HA keeps about this many scores per chunk of queries
_KEY_LETTERS = "jklmnpqruvwxyz"  # einsum letters of the key axes (b h i s t o are taken)


def tuple_mask(ok: Tensor, m: int) -> Tensor:
    """Pair mask ok[b, i, j] (B, L_q, L) -> (B, 1, L_q, L, ..., L) with m key axes: every j_m ok for i."""
    B, Lq, L = ok.shape
    out = torch.ones((B, 1, Lq) + (1,) * m, dtype=torch.bool, device=ok.device)
    for a in range(m):
        out = out & ok.view((B, 1, Lq) + (1,) * a + (L,) + (1,) * (m - 1 - a))
    return out


def _outer(ts: list[Tensor], like: Tensor) -> Tensor:
    """Row-wise product over tuples: list of (B, H, L, X) -> (B, H, L^len, X), j_1 slowest."""
    out = torch.ones_like(like[:, :, :1])  # (B, H, 1, X): the empty product
    for t in ts:
        out = (out[:, :, :, None] * t[:, :, None]).flatten(2, 3)
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
    allowed: Tensor | None,
    chunk: int | None = None,
    causal: bool = False,
) -> Tensor:
    """Exact softmax HA, `chunk` queries at a time: peak memory O(chunk * L^(n-1)), not O(L^n).

    Shapes as in `softmax_ha_reference`; allowed None means every tuple is allowed. With `causal`
    (allowed must then hold the causal mask) chunk i0:i1 only builds tuples of keys < i1, which
    skips about (n-1)/n of the work. Returns (B, H, L, d_h). When not causal, q may hold fewer
    queries than the keys: q (B, H, L_q, d_h) and allowed (B, L_q, L) give (B, H, L_q, d_h).
    """
    B, H, L, d_h = q.shape
    m, Lk = len(ks), ks[-1].shape[2]  # Lk keys: L, or more when only some queries are asked for
    chunk = chunk or max(1, CHUNK_ELEMENTS // (B * H * Lk**m))
    q = q / math.sqrt(d_h)
    log_ok = None  # 0 where a key is allowed, -inf where not: added to the scores of every tuple
    if allowed is not None:
        log_ok = torch.zeros_like(allowed, dtype=q.dtype).masked_fill(~allowed, -math.inf)
    # Products over the first m-1 keys/values do not depend on the query: (B, H, P, d_h), P = L^(m-1).
    full = None if causal else (_outer(ks[:-1], q), _outer(vs[:-1], q))
    outs = []
    for i0 in range(0, L, chunk):  # a loop over query chunks, not over tokens
        i1 = min(L, i0 + chunk)
        K = i1 if causal else Lk  # keys this chunk may see
        kk, vv = full or (
            _outer([k[:, :, :K] for k in ks[:-1]], q),
            _outer([v[:, :, :K] for v in vs[:-1]], q),
        )
        k_last = ks[-1][:, :, None, :K].transpose(-1, -2)  # (B, H, 1, d_h, K)
        v_last = vs[-1][:, :, None, :K]  # (B, H, 1, K, d_h)
        logits = (q[:, :, i0:i1, None] * kk[:, :, None]) @ k_last  # (B, H, c, P, d_h) x (B, H, 1, d_h, K)
        if log_ok is not None:
            logits = logits + _tuple_bias(log_ok[:, i0:i1, :K], m)  # (B, H, c, P, K)
        att = logits.flatten(3).softmax(-1).view_as(logits)
        u = ((att @ v_last) * vv[:, :, None]).sum(3)  # (B, H, c, P, d_h) summed over P -> (B, H, c, d_h)
        outs.append(u)
    return torch.cat(outs, 2) @ w_vn.transpose(-1, -2)  # (B, H, L, d_h)


def _tuple_bias(log_ok: Tensor, m: int) -> Tensor:
    """(B, c, L) with 0 / -inf entries -> (B, 1, c, L^(m-1), L): sum over key axes, j_1 slowest."""
    prefix = torch.zeros_like(log_ok[:, :, :1])  # (B, c, 1)
    for _ in range(m - 1):
        prefix = (prefix[:, :, :, None] + log_ok[:, :, None]).flatten(2)
    return (prefix[:, :, :, None] + log_ok[:, :, None])[:, None]


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
    phks = [(lk - lk.amax((-2, -1), keepdim=True)).exp() for lk in lks]
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
    ):
        super().__init__()
        check_choice("kind", kind, KINDS)
        self.dim, self.heads = check_int("dim", dim, 1), check_int("heads", heads, 1)
        self.order = check_int("order", order, 2)
        self.out_dim = dim if out_dim is None else check_int("out_dim", out_dim, 1)
        self.rank = check_rank(rank, kind)
        self.head_dim = d_h = check_divisible(dim, heads, "heads") if rank is None else rank
        self.kind, self.causal, self.share_kv = kind, bool(causal), bool(share_kv)
        slots = 1 if share_kv else order - 1
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
        full = x.new_ones(x.shape[:2], dtype=torch.bool) if mask is None else mask
        one = first_only and self.kind == "softmax" and self.approx_features is None and not self.causal
        if not one:
            out = self._forward(x, full, mask is not None, False)
            return out[:, :1] if first_only else out
        x = zero_padding(x, full)
        B, L, d = x.shape
        H, d_h, m = self.heads, self.head_dim, self.order - 1
        q = self.q(x[:, :1]).view(B, 1, H, d_h).transpose(1, 2)  # (B, H, 1, d_h): token 0 only
        ks, vs = (list(p(x).view(B, L, -1, H, d_h).permute(2, 0, 3, 1, 4)) for p in (self.k, self.v))
        if self.share_kv:
            ks, vs = ks * m, vs * m
        allowed = None if mask is None else key_mask(mask, False)[:, :1]  # (B, 1, L)
        y = softmax_ha(q, ks, vs, self.W_Vn, allowed)  # (B, H, 1, d_h)
        return self.proj(y.transpose(1, 2).reshape(B, 1, d)) * full[:, :1, None]

    def _forward(self, x: Tensor, mask: Tensor, given: bool, return_scores: bool):
        """`forward` after its checks; mask (B, L) bool, given False when the caller passed None."""
        x = zero_padding(x, mask)
        B, L, d = x.shape
        H, d_h, m = self.heads, self.head_dim, self.order - 1
        q = self.q(x).view(B, L, H, d_h).transpose(1, 2)  # (B, H, L, d_h)
        ks, vs = (list(p(x).view(B, L, -1, H, d_h).permute(2, 0, 3, 1, 4)) for p in (self.k, self.v))
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
        ks, vs = (list(p(P).view(M, -1, H, d_h).unbind(1)) for p in (self.k, self.v))
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
            allowed = key_mask(mask, self.causal) if (given or self.causal) else None
            return softmax_ha(q, ks, vs, self.W_Vn, allowed, causal=self.causal), None, None
        y, logits, att = softmax_ha_reference(q, ks, vs, self.W_Vn, key_mask(mask, self.causal))
        ok = tuple_mask(pair_mask(mask, self.causal), m)
        return y, att * ok, logits * ok
