"""Genotype-phenotype task (paper Example 2, App. B.2): a dataset, not an environment.

A "DNA sequence" is L distinct alleles drawn from a domain of N (no allele twice in a sequence,
as in the paper). A random activation dictionary says, for each allele mu, one of:

- ``always``: mu is always active;
- ``activators``: a list of m alleles that activate mu;
- ``junk``: mu is never active (alleles missing from the paper's dictionary).

The phenotype of position i is the paper's P_i with w = 1/m:

    P_i = 1                                  if s(i) is always active
    P_i = #{j : s(j) activates s(i)} / m     if s(i) has m activators
    P_i = 0                                  if s(i) is junk

The paper's exact single-layer linear SA (``policies.devised.genotype_parameters``) sets row mu of
C to 1/m on mu's activators and to 1/L* everywhere for an always-active mu, with W_V = 1. At the
training length L* it is exact; at any other L the always-active rows give L/L* instead of 1, and
because no allele repeats, training data are not versatile (Remark D.3): linear SA cannot length
generalise here. A ReLU layer after the attention can clip the always-active channel and can.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ALWAYS, ACTIVATED, JUNK = 0, 1, 2


@dataclass
class ActivationRules:
    """A sampled activation dictionary over a domain of N alleles.

    Attributes:
        kind: (N,) long, ALWAYS / ACTIVATED / JUNK per allele.
        activates: (N, N) bool, ``activates[mu, nu]`` True when allele nu activates allele mu.
    """

    kind: torch.Tensor
    activates: torch.Tensor

    @property
    def num_alleles(self) -> int:
        return self.kind.shape[0]

    def as_dict(self) -> dict[int, list[int]]:
        """The paper's dictionary form ``{mu: [activators]}``, ``[]`` for always active, junk left out."""
        out = {}
        for mu in range(self.num_alleles):  # a printing helper, not a hot path
            if self.kind[mu] == ALWAYS:
                out[mu] = []
            elif self.kind[mu] == ACTIVATED:
                out[mu] = torch.nonzero(self.activates[mu]).flatten().tolist()
        return out


def sample_rules(
    num_alleles: int, seed: int = 0, p_always: float = 0.2, p_junk: float = 0.2, max_activators: int = 3
) -> ActivationRules:
    """Random dictionary: each allele is always active, junk, or activated by 1..max_activators others."""
    if num_alleles < 2:
        raise ValueError(f"num_alleles must be >= 2, got {num_alleles}")
    if not (0 <= p_always and 0 <= p_junk and p_always + p_junk <= 1):
        raise ValueError(f"need p_always, p_junk >= 0 and p_always + p_junk <= 1, got {p_always}, {p_junk}")
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(num_alleles, generator=gen)
    kind = torch.where(u < p_always, ALWAYS, torch.where(u < p_always + p_junk, JUNK, ACTIVATED))
    m = torch.randint(1, max_activators + 1, (num_alleles,), generator=gen)
    scores = torch.rand(num_alleles, num_alleles, generator=gen)
    scores.fill_diagonal_(2.0)  # an allele never activates itself
    ranks = scores.argsort(-1).argsort(-1)  # rank of each candidate activator per row
    activates = (ranks < m[:, None]) & (kind == ACTIVATED)[:, None]
    return ActivationRules(kind=kind, activates=activates)


def phenotype(rules: ActivationRules, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """P_i for alleles ``tokens`` (B, L) long (distinct per row); returns (B, L) float64, 0 at padding."""
    if mask is None:
        mask = torch.ones(tokens.shape, dtype=torch.bool)
    act = rules.activates[tokens.unsqueeze(2), tokens.unsqueeze(1)] & mask.unsqueeze(
        1
    )  # (B, L, L): j activates i
    m = rules.activates.sum(-1).clamp(min=1)[tokens]  # (B, L)
    kind = rules.kind[tokens]
    value = torch.where(kind == ALWAYS, 1.0, act.sum(-1).double() / m)
    return torch.where(kind == JUNK, 0.0, value) * mask


def make_genotype_dataset(rules: ActivationRules, num: int, length: int, seed: int = 0):
    """``num`` sequences of ``length`` distinct alleles and their phenotypes.

    Returns (tokens (B, L, 1) long, targets (B, L) float64).
    """
    N = rules.num_alleles
    if not 1 <= length <= N:
        raise ValueError(f"length must lie in [1, num_alleles={N}] (alleles do not repeat), got {length}")
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.rand(num, N, generator=gen).argsort(-1)[:, :length]  # (B, L) distinct alleles
    return tokens.unsqueeze(-1), phenotype(rules, tokens)
