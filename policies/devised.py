"""The paper's exact ("devised") parameters for single-head linear SA, and the targets they realise.

Colliding agents (PAPER.md 1.4): with f(a, b) = 1{circular |a - b| <= 2R} and w = -1,
    V_i = sum_j f(y_i, y_j) w = -#{j, i included : circular |y_i - y_j| <= 2R}   for every L.
* one-hot: C = the circulant band f itself, W_V = -1.
* sinusoidal p(n): C diagonal (Lemmas B.7-B.8: the DTFS of the window), W_V = [-sqrt2, 0, ...].
* any other full-rank embedding: `change_embedding` (Corollary B.3 and its non-orthogonal version).

Genotype-phenotype (PAPER.md 5.1): `genotype_parameters` and `genotype_target`.
All tables are float64 torch tensors; C is (N, d) x (d, N) in embedding coordinates, W_V (d, 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from policies.base import check_int
from policies.embeddings import check_tokens
from policies.sa import SelfAttention


def circular_window(num_positions: int, radius: int) -> Tensor:
    """(N, N) float64 f[a, b] = 1 if min(|a - b|, N - |a - b|) <= 2R else 0."""
    N, R = check_int("num_positions", num_positions, 1), check_int("radius", radius, 0)
    n = torch.arange(N)
    gap = (n[:, None] - n[None, :]).abs()
    return (torch.minimum(gap, N - gap) <= 2 * R).double()


def one_hot_band(num_positions: int, radius: int) -> tuple[Tensor, Tensor]:
    """One-hot devised parameters: C (N, N) = the circulant band of width 4R + 1, W_V (N, 1) = -1."""
    return circular_window(num_positions, radius), -torch.ones(num_positions, 1, dtype=torch.float64)


def sinusoidal_diagonal(num_positions: int, radius: int, normalized: bool = False) -> tuple[Tensor, Tensor]:
    """Sinusoidal devised parameters: diagonal C (N, N) and W_V (N, 1) (Lemma B.8, Thm B.9).

    Slot mu of p(n) carries frequency k: 0 for mu = 0, (mu + 1) / 2 for odd mu (sin slots, and
    the last slot mu = N - 1, the cos(pi n) / sqrt2 one, where this gives k = N / 2), mu / 2 for
    even mu > 0 (cos slots). The window's DTFS gives
        C_00 = (4/N)(2R + 1/2),   C_mumu = (2/N) sin[(2 pi/N)(2R + 1/2) k] / sin[(2 pi/N)(1/2) k],
    the last slot included (its 1/sqrt2 in p(n) matches the factor 2 of C_00). W_V = [-sqrt2, 0, ...]
    so p(n) . W_V = -1. With `normalized` (p * sqrt(2/N)): C * N/2 and W_V * sqrt(N/2).
    """
    N, R = check_int("num_positions", num_positions, 2), check_int("radius", radius, 0)
    if N % 2:
        raise ValueError(f"num_positions must be even for the sinusoidal embedding, got {N}")
    mu = torch.arange(N, dtype=torch.float64)
    k = torch.where(mu % 2 == 1, (mu + 1) / 2, mu / 2)
    a = 2 * math.pi / N
    diag = (2 / N) * torch.sin(a * (2 * R + 0.5) * k) / torch.sin(a * 0.5 * k).where(k > 0, 1.0)
    diag[0] = (4 / N) * (2 * R + 0.5)
    W_V = torch.zeros(N, 1, dtype=torch.float64)
    W_V[0, 0] = -math.sqrt(2)
    if normalized:
        return torch.diag(diag) * (N / 2), W_V * math.sqrt(N / 2)
    return torch.diag(diag), W_V


def change_embedding(C: Tensor, W_V: Tensor, old_table: Tensor, new_table: Tensor) -> tuple[Tensor, Tensor]:
    """Parameters for `new_table` (N, d') that give the same outputs as (C, W_V) under `old_table` (N, d).

    C' = T^+ P C P^T T^+^T and W_V' = T^+ P W_V with P = old_table, T = new_table (full row rank, d' >= N),
    so T C' T^T = P C P^T and T W_V' = P W_V. For T = P Q^T with Q orthogonal this is Corollary B.3.
    """
    P, T = old_table.double(), new_table.double()
    T_pinv = torch.linalg.pinv(T)  # (d', N)
    return T_pinv @ P @ C.double() @ P.T @ T_pinv.T, T_pinv @ P @ W_V.double()


def load_linear_sa(module: SelfAttention, C: Tensor, W_V: Tensor) -> SelfAttention:
    """Copy (C (d, d), W_V (d, o)) into a single-head linear SelfAttention, in its dtype; returns it."""
    if not isinstance(module, SelfAttention) or module.kind != "linear" or module.heads != 1:
        raise ValueError("module must be a SelfAttention(kind='linear', heads=1)")
    if module.C.shape[1:] != C.shape or module.W_V.shape[1:] != W_V.shape:
        raise ValueError(
            f"C, W_V must have shapes {tuple(module.C.shape[1:])}, {tuple(module.W_V.shape[1:])}, "
            f"got {tuple(C.shape)}, {tuple(W_V.shape)}"
        )
    with torch.no_grad():
        module.C.copy_(C[None])
        module.W_V.copy_(W_V[None])
    return module


# ---------------------------------------------------------------- genotype-phenotype


def _activation_table(activators: Mapping[int, Sequence[int]], num_alleles: int) -> tuple[Tensor, Tensor]:
    """(N, N) act[mu, nu] = 1/m if nu is one of mu's m activators; (N,) bool always-active."""
    N = check_int("num_alleles", num_alleles, 1)
    act = torch.zeros(N, N, dtype=torch.float64)
    always = torch.zeros(N, dtype=torch.bool)
    for mu, nus in activators.items():  # a loop over the dictionary, not over tokens
        nus = sorted(set(nus))
        if not 0 <= mu < N or any(not 0 <= nu < N for nu in nus):
            raise ValueError(
                f"activators must map alleles in [0, {N}) to lists of alleles in [0, {N}), got {mu}: {nus}"
            )
        if nus:
            act[mu, nus] = 1 / len(nus)
        else:
            always[mu] = True
    return act, always


def genotype_parameters(
    activators: Mapping[int, Sequence[int]], num_alleles: int, train_length: int
) -> tuple[Tensor, Tensor]:
    """The paper's one-hot construction (App. B.2): C (N, N) and W_V (N, 1) = 1.

    activators: {mu: [nu_1, .., nu_m]} means allele mu is activated by any of the nu's; mu: [] means
    always active; alleles missing from the dictionary are junk. Row mu of C is 1/m at its m
    activators, 1/L* everywhere for always-active alleles (L* = train_length), 0 for junk.
    """
    act, always = _activation_table(activators, num_alleles)
    act[always] = 1 / check_int("train_length", train_length, 1)
    return act, torch.ones(num_alleles, 1, dtype=torch.float64)


def genotype_target(
    tokens: Tensor, activators: Mapping[int, Sequence[int]], num_alleles: int, mask: Tensor | None = None
) -> Tensor:
    """Gene activity (B, L) float64 for allele tokens (B, L), zero at padding.

        P_i = 1{s(i) always active} + (1/m_i) #{j : s(j) activates s(i)},   m_i = #activators of s(i),

    i.e. the paper's 1{always} + sum_j 1{s(i) activated by s(j)} w with w = 1/m_i: the fraction
    of s(i)'s activators present. It is exactly what `genotype_parameters` outputs on
    sequences of length L* (the always-active row gives L/L*, = 1 only at L = L*: the paper's
    length-generalisation failure). Alleles are meant to appear at most once per sequence.
    """
    if mask is not None:
        tokens = tokens.masked_fill(~mask, 0)  # padding may hold any value
    check_tokens(tokens, [num_alleles])
    act, always = _activation_table(activators, num_alleles)
    act, always = act.to(tokens.device), always.to(tokens.device)
    real = torch.ones_like(tokens, dtype=torch.bool) if mask is None else mask
    counts = torch.zeros(tokens.shape[0], num_alleles, dtype=torch.float64, device=tokens.device)
    counts.scatter_add_(1, tokens, real.double())  # (B, N): how often each allele is present
    present = counts @ act.T  # (B, N): activity of every allele given the sequence
    return (torch.gather(present, 1, tokens) + always[tokens].double()) * real
