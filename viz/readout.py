"""Model read-out: the interaction strengths a trained predictor assigns to every pair of agents.

For each ordered pair (i, j) of live agents, S[i, j] is "how much agent j moves agent i's value":

- linear SA / HFA without an MLP head, over one token column: j's exact share of y_i (value
  units), read off the learned pair table G[t_i, t_j] = (C.W)[t_i, t_j] (HFA: the product of
  its factor tables times its values);
- linear SA / HFA on labelled tokens: score x value, again j's exact share of y_i;
- a linear ``AttentionSum`` (e.g. SA + order-3 HA): its pair and triple domain tables;
- softmax models and HA: the attention score, mean over heads (score units).

HFA models also keep their per-factor scores; HA models keep triple strengths. Everything is
computed for a whole configuration at once with tensor ops, with no Python loop over pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from envs.scenarios import SCENARIOS as _SCENARIO_CLASSES

SCENARIOS = tuple(_SCENARIO_CLASSES)  # the scenarios with a world to draw


@dataclass
class Strengths:
    """Interaction strengths of one configuration of L live agents.

    Attributes:
        pairs: (L, L) float64, [i, j] = strength of j acting on i; zero diagonal.
        units: "value" (comparable with the truth) or "score" (attention scores).
        factors: HFA only: (A, L, L) per-factor scores, mean over heads.
        triples: HA / alliances truth: (L, L, L), [i, j, k] with i, j, k distinct; else None.
        source: a few words for the HUD.
    """

    pairs: Tensor
    units: str
    factors: Tensor | None = None
    triples: Tensor | None = None
    source: str = ""


def tokens_for(scenario: str, positions: Tensor, labels: Tensor) -> Tensor:
    """The predictor's tokens (1, L) or (1, L, F) for live agents, as ``envs.datasets`` builds them.

    Args:
        positions: (L, 2) long cells [x, y]. labels: (L, F) long scenario labels.
    """
    if scenario == "pairwise":
        return positions[None, :, 1]
    if scenario == "alliances":
        return torch.cat([labels, positions[:, 1:]], -1)[None]
    if scenario == "predator_prey":
        return torch.cat([labels, positions], -1)[None]
    raise ValueError(f"the overlay draws worlds of scenarios {SCENARIOS}, got {scenario!r}")


def off_diagonal(m: Tensor) -> Tensor:
    """``m`` with its (i, i) entries zeroed: an agent does not interact with itself."""
    eye = torch.eye(m.shape[-1], dtype=torch.bool, device=m.device)
    return m.masked_fill(eye, 0.0)


def distinct_triples(t: Tensor) -> Tensor:
    """Zero every [i, j, k] with a repeated index."""
    L = t.shape[-1]
    r = torch.arange(L)
    distinct = (r[:, None, None] != r[None, :, None]) & (r[:, None, None] != r[None, None, :])
    return t * (distinct & (r[None, :, None] != r[None, None, :]))


@torch.no_grad()
def learned_strengths(model, tokens: Tensor, cache: dict | None = None) -> Strengths:
    """What a trained ``policies.predictor.Predictor`` thinks about every pair of these tokens.

    ``cache`` (a dict owned by the caller) keeps the model's domain tables between calls; pass
    a fresh one whenever the model's parameters change.
    """
    L = tokens.shape[1]
    cache = {} if cache is None else cache
    if _is_linear(model, "SelfAttention") and model.mlp is None and tokens.dim() == 2:
        idx = model.embedding.index(tokens)[0]  # (L,)
        if "pair" not in cache:
            cache["pair"] = model.pair_table().double()  # (domain, domain): C.W, y_i = sum_j G[t_i, t_j]
        G = cache["pair"]
        return Strengths(
            off_diagonal(G[idx[:, None], idx[None, :]]), "value", source="learned pair table C.W"
        )
    if _is_linear_hfa(model) and model.mlp is None and tokens.dim() == 2:
        idx = model.embedding.index(tokens)[0]  # (L,)
        if "hfa" not in cache:
            cache["hfa"] = hfa_factor_tables(model)
        tables, product = cache["hfa"]
        at = (idx[:, None], idx[None, :])
        return Strengths(
            off_diagonal(product[at]),
            "value",
            factors=off_diagonal(tables[(slice(None), *at)]),
            source="learned HFA table: prod of factors x values",
        )
    if hasattr(model.attention, "terms") and model.has_table_path() and model.mlp is None:
        return _sum_strengths(model, tokens, cache)
    x = model.embedding(tokens)
    dtype = next(model.parameters()).dtype
    _, sc = model.attention(x.to(dtype), torch.ones(1, L, dtype=torch.bool), return_scores=True)
    values = _linear_values(model, x.to(dtype))
    if values is not None:  # linear SA / HFA on labelled tokens: exact per-pair contributions
        pairs = (sc.scores[0] * values[:, None, :]).sum(0).double()  # (H, L, L) x (H, 1, L) -> (L, L)
        factors = None if sc.factors is None else off_diagonal(sc.factors[0].double().mean(0))
        return Strengths(off_diagonal(pairs), "value", factors=factors, source="learned score x value")
    s = sc.scores[0].double().mean(0)  # heads averaged: (L, L) or (L, L, L)
    heads = sc.scores.shape[1]
    what = f"{sc.kind} attention score, mean of {heads} head{'s' * (heads > 1)}"
    if s.dim() == 3:
        triples = distinct_triples(s)
        return Strengths(
            off_diagonal(triples.sum(-1)), "score", triples=triples, source=what + " (summed over k)"
        )
    factors = None if sc.factors is None else sc.factors[0].double().mean(0)  # (A, L, L)
    if factors is not None:
        factors = factors * ~torch.eye(L, dtype=torch.bool)
    return Strengths(off_diagonal(s), "score", factors=factors, source=what)


def _sum_strengths(model, tokens: Tensor, cache: dict) -> Strengths:
    """A linear AttentionSum (e.g. SA + order-3 HA) read off its domain tables: pair and triple values."""
    idx = model.embedding.index(tokens)[0]  # (L,)
    if "tables" not in cache:
        cache["tables"] = [G.double() for G in model.tables()]  # [(M, M), (M, M, M), ...]
    pairs = sum(G[idx[:, None], idx[None, :]] for G in cache["tables"] if G.dim() == 2)
    cubes = [
        G[idx[:, None, None], idx[None, :, None], idx[None, None, :]] for G in cache["tables"] if G.dim() == 3
    ]
    triples = distinct_triples(sum(cubes)) if cubes else None
    pairs = torch.zeros(len(idx), len(idx), dtype=torch.float64) if isinstance(pairs, int) else pairs
    return Strengths(off_diagonal(pairs), "value", triples=triples, source="learned tables: pairs + triples")


def _linear_values(model, x: Tensor) -> Tensor | None:
    """(H, L) values x_j W_V (SA) or prod_a x_j W_V,a (HFA) of a linear predictor without MLP, else None.

    y_i = sum_h sum_j score[h, i, j] * value[h, j], so score x value is j's exact share of y_i.
    """
    from policies.sa import SelfAttention

    att = model.attention
    if model.mlp is not None or getattr(att, "kind", None) != "linear":
        return None
    if isinstance(att, SelfAttention):
        return torch.einsum("bjd,hdo->bhjo", x, att.W_V)[0, ..., 0]
    if _is_linear_hfa(model):
        return torch.einsum("bjd,hado->bhajo", x, att.W_V)[0, ..., 0].prod(1)
    return None


def _is_linear(model, family: str) -> bool:
    """The predictor's attention is a linear module of the class named `family`."""
    return type(model.attention).__name__ == family and model.attention.kind == "linear"


def _is_linear_hfa(model) -> bool:
    return _is_linear(model, "HyperFeatureAttention")


@torch.no_grad()
def hfa_factor_tables(model) -> tuple[Tensor, Tensor]:
    """A linear HFA predictor over one token column as domain tables, summed over heads.

    Returns (factors (A, n, n) = P C_a P^T, product (n, n) = sum_h prod_a (P C_ha P^T)[mu, nu] *
    prod_a (P W_V,ha)[nu]): the HFA counterpart of ``Predictor.pair_table``, with y_i = sum_j
    product[t_i, t_j]. P is the embedding table (n, d).
    """
    att = model.attention
    if not _is_linear_hfa(model):
        raise TypeError("hfa_factor_tables needs a HyperFeatureAttention(kind='linear') predictor")
    P = model.embedding.table().to(att.W_V.dtype)  # (n, d)
    tables = torch.einsum("md,hade,ne->hamn", P, att.interaction(), P)  # (H, A, n, n)
    values = torch.einsum("nd,hado->hano", P, att.W_V)[..., 0].prod(1)  # (H, n)
    product = (tables.prod(1) * values[:, None, :]).sum(0)  # (n, n)
    return tables.mean(0).double(), product.double()


@torch.no_grad()
def sinusoidal_diagonal(model, normalized: bool = False) -> tuple[Tensor | None, float, str]:
    """The learned pairwise interaction as the paper's Figure 1 draws the devised one: a diagonal C
    in the sinusoidal basis p(n), whatever the model's own embedding.

    The devised model has y_i = sum_j p(t_i)^T C p(t_j) * (p(t_j) . W_V) with p . W_V = -1, so its
    pair table is G = -P C P^T. Any model with a pair table G (linear SA or HFA, or a sum with a
    pairwise term, and no MLP head) therefore has C = -P^+ G P^+^T in that basis, a C comparable
    entry by entry with the devised one; its learned W_V scale is already inside G.

    Returns (diagonal (n,) float64, off-diagonal share ||C - diag C|| / ||C||, "") when defined,
    else (None, nan, why not).
    """
    from policies.embeddings import sinusoidal_table

    if getattr(model, "mlp", None) is not None:
        return None, float("nan"), "a ReLU layer after attention has no pair table"
    if not model.has_table_path():
        kind = getattr(model.attention, "kind", "this")
        return None, float("nan"), f"{kind} attention has no fixed C"
    try:
        G = model.pair_table()
    except TypeError:
        return None, float("nan"), "the model has no pairwise term"
    n = G.shape[0]
    if G.dim() != 2 or n % 2:
        return None, float("nan"), "needs one output and an even domain size"
    P = sinusoidal_table(n, normalized)
    P_pinv = torch.linalg.pinv(P)
    C = -(P_pinv @ G.double() @ P_pinv.T)
    diag = C.diagonal()
    total = float(C.norm())
    off = float((C - torch.diag(diag)).norm()) / total if total > 0 else 0.0
    return diag.clone(), off, ""
