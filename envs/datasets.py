"""(tokens, targets) sets for interaction predictors, and the paper's versatility check.

A sample is one world: L agents' integer tokens (B, L, F) and each agent's value (B, L), the
return of the scenario's scripted policy (every agent MOVE_RIGHT for ``pairwise``). Tokens are
what the predictor embeds:

| scenario | token columns | domain sizes |
|---|---|---|
| ``pairwise`` | ``y`` (the value depends only on y, paper section 7) | (N,) |
| ``alliances`` | ``alliance, y`` | (K, N) |
| ``predator_prey`` | ``species, policy, x, y`` | (2, 2, N, N) |

Targets come from the closed form where the scenario has one, cross-checked against the
simulation (``envs.scenarios.rollout_returns``) on a subsample every time a set is drawn;
scenarios without a closed form are simulated. ``self_term=True`` adds the scenario's
``self_value`` for j = i: the paper's -1 (its Eq. 9) for ``pairwise``, which is what linear
self-attention realises exactly (the sum over j in SA includes the token itself); 0 for
``predator_prey`` and -(1 + bonus) for ``alliances``, the values that keep their targets exactly
representable when two agents share a token (see ``Scenario.self_value``).

Positions are i.i.d. uniform by default (repeats allowed, as Training Data Versatility needs);
``unique=True`` draws y without repeats inside a sequence: the paper's Remark D.3 negative control.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from envs.scenarios import make_scenario, rollout_returns
from envs.world import check_world_args

CROSS_CHECK = 256  # sequences simulated to confirm the closed form on every draw


@dataclass
class Dataset:
    """A set of worlds as predictor inputs.

    Attributes:
        tokens: (B, L, F) long token features (columns as in the module docstring).
        targets: (B, L) float64 values.
        mask: (B, L) bool, True for real agents (all True for fixed-L sets).
        domain: size of each token column's domain, e.g. (N,) for pairwise.
        positions: (B, L, 2) long start cells [x, y], kept for rendering and checks.
    """

    tokens: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    domain: tuple[int, ...]
    positions: torch.Tensor

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @staticmethod
    def concat(parts: list[Dataset]) -> Dataset:
        """Sets of different agent counts as one, padded to the largest L (mask False on padding).

        Tokens may be (B, L) or (B, L, F); padding is token 0, target 0, position (0, 0).
        """
        if not parts or len({p.domain for p in parts}) != 1:
            raise ValueError("concat needs at least one Dataset, all over the same domain")
        L = max(p.tokens.shape[1] for p in parts)

        def pad(t: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.pad(t, (0, 0) * (t.dim() - 2) + (0, L - t.shape[1]))

        return Dataset(
            *(torch.cat([pad(getattr(p, f)) for p in parts]) for f in ("tokens", "targets", "mask")),
            parts[0].domain,
            torch.cat([pad(p.positions) for p in parts]),
        )


def sample_positions(
    gen: torch.Generator, num: int, num_agents: int, grid_size: int, unique: bool = False
) -> torch.Tensor:
    """(B, L, 2) uniform start cells; with ``unique`` no two agents of a world share a y."""
    x = torch.randint(0, grid_size, (num, num_agents), generator=gen)
    if unique:
        if num_agents > grid_size:
            raise ValueError(f"unique positions need num_agents <= grid_size={grid_size}, got {num_agents}")
        y = torch.rand(num, grid_size, generator=gen).argsort(-1)[:, :num_agents]  # random subsets
    else:
        y = torch.randint(0, grid_size, (num, num_agents), generator=gen)
    return torch.stack([x, y], -1)


def _tokens(scenario: str, positions: torch.Tensor, labels: torch.Tensor, grid_size: int, label_sizes):
    if scenario == "pairwise":
        return positions[..., 1:], (grid_size,)
    if scenario == "alliances":
        return torch.cat([labels, positions[..., 1:]], -1), (*label_sizes, grid_size)
    return torch.cat([labels, positions], -1), (*label_sizes, grid_size, grid_size)


def make_dataset(
    scenario: str,
    num: int,
    num_agents: int,
    grid_size: int = 360,
    radius: int = 5,
    *,
    seed: int = 0,
    unique: bool = False,
    self_term: bool = True,
) -> Dataset:
    """Draw ``num`` worlds of ``num_agents`` agents and their exact values.

    Raises:
        ValueError: unknown scenario, num < 1, or a closed form that disagrees with simulation.
    """
    sc = make_scenario(scenario)
    check_world_args(num_agents, grid_size, radius)
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    gen = torch.Generator().manual_seed(seed)
    positions = sample_positions(gen, num, num_agents, grid_size, unique)
    labels = sc.sample_labels(gen, num, num_agents)
    mask = torch.ones(num, num_agents, dtype=torch.bool)
    targets = sc.closed_form(positions, labels, mask, grid_size, radius)
    if targets is None:
        targets = torch.cat(
            [
                rollout_returns(
                    sc, positions[i : i + 4096], labels[i : i + 4096], grid_size=grid_size, radius=radius
                )
                for i in range(0, num, 4096)
            ]
        )
    else:
        k = min(num, CROSS_CHECK)
        sim = rollout_returns(sc, positions[:k], labels[:k], grid_size=grid_size, radius=radius)
        if not torch.equal(sim, targets[:k]):
            raise ValueError(f"closed form of {sc.name!r} disagrees with the simulation")  # a bug, loudly
    if self_term:
        targets = targets + sc.self_value
    tokens, domain = _tokens(sc.name, positions, labels, grid_size, sc.label_sizes)
    return Dataset(tokens=tokens, targets=targets.double(), mask=mask, domain=domain, positions=positions)


def exact_pair_table(scenario: str, grid_size: int, radius: int, chunk: int = 65536) -> torch.Tensor:
    """(M, M) float64 G[mu, nu]: what an agent with token mu gets from one with token nu.

    Simulated in two-agent worlds, one per ordered token pair, so it is exact for scenarios whose
    value is a sum over partners (``pairwise``, ``predator_prey``); the diagonal G[mu, mu] is what
    a twin contributes, which equals the scenario's ``self_value``. Flat token order as in
    ``policies.embeddings.FeatureProductEmbedding.index`` (last column fastest). M^2 worlds: for
    small domains (predator_prey at N = 24 is 5.3M worlds, about 35 s on one core).
    """
    sc = make_scenario(scenario)
    if sc.name == "alliances":
        raise ValueError("alliances has a ternary term: its value is not a pair table")
    check_world_args(2, grid_size, radius)
    cols = (*sc.label_sizes, grid_size, grid_size) if sc.name == "predator_prey" else (grid_size,)
    M = math.prod(cols)
    digits, rest = [], torch.arange(M)
    for c in reversed(cols):  # mixed radix, last column fastest
        digits.append(rest % c)
        rest = rest // c
    feats = torch.stack(digits[::-1], -1)  # (M, F): labels..., then position columns
    nlab = len(sc.label_sizes)
    I, J = (t.reshape(-1) for t in torch.meshgrid(torch.arange(M), torch.arange(M), indexing="ij"))
    out = []
    for k in range(0, M * M, chunk):
        i, j = I[k : k + chunk], J[k : k + chunk]
        pos = torch.stack([feats[i, nlab:], feats[j, nlab:]], 1)  # (b, 2, 1 or 2)
        if pos.shape[-1] == 1:  # pairwise tokens are y only; x does not change the value (start at 0)
            pos = torch.cat([torch.zeros_like(pos), pos], -1)
        lab = torch.stack([feats[i, :nlab], feats[j, :nlab]], 1)
        out.append(rollout_returns(sc, pos, lab if nlab else None, grid_size=grid_size, radius=radius)[:, 0])
    return torch.cat(out).double().view(M, M)


def count_vectors(tokens: torch.Tensor, domain_size: int) -> torch.Tensor:
    """(B, N) counts s^(n)_mu of each domain element in each sequence (paper Def. 4.1); tokens (B, L)."""
    counts = torch.zeros(tokens.shape[0], domain_size, dtype=torch.float64)
    return counts.scatter_add_(1, tokens, torch.ones_like(tokens, dtype=torch.float64))


def versatility_ranks(
    tokens: torch.Tensor, domain_size: int, max_rows: int | None = None, chunk: int = 40, confirm: int = 32
) -> torch.Tensor:
    """rank(S_{B_mu}) for every domain element mu (paper Assumption 4.2), (N,) long.

    S_{B_mu} stacks the count vectors of the sequences containing mu. To keep the check cheap each
    rank is taken over the first ``max_rows`` (default 3N/2) of those sequences: fewer rows can
    only lower a rank, so full rank there proves full rank. Up to ``confirm`` elements found
    deficient on the subsample are re-checked on all their rows (the rest keep the subsample's
    rank, a lower bound). Ranks come from Gram-matrix eigenvalues, a chunk of mu at a time.
    """
    N = domain_size
    S = count_vectors(tokens, N).float()  # (B, N); integer counts, so float32 Gram entries are exact
    max_rows = 3 * N // 2 if max_rows is None else max_rows
    mu, seq = torch.nonzero(S.T > 0, as_tuple=True)  # sorted by mu
    per_mu = torch.bincount(mu, minlength=N)
    rank_in_mu = torch.arange(len(mu)) - (torch.cumsum(per_mu, 0) - per_mu)[mu]
    keep = rank_in_mu < max_rows
    ranks = torch.empty(N, dtype=torch.long)
    for start in range(0, N, chunk):  # chunks of the domain bound the (c, rows, N) buffer
        sel = keep & (mu >= start) & (mu < start + chunk)
        rows = torch.zeros(min(chunk, N - start), max_rows, N)  # (c, rows, N), zero-padded
        rows[mu[sel] - start, rank_in_mu[sel]] = S[seq[sel]]
        ranks[start : start + len(rows)] = _rank((rows.transpose(1, 2) @ rows).double())  # (c, N, N) Grams
    for m in torch.nonzero(ranks < N)[:confirm, 0].tolist():
        rows = S[seq[mu == m]]  # every sequence containing m
        ranks[m] = _rank((rows.T @ rows).double()[None])[0]
    return ranks


def _rank(gram: torch.Tensor) -> torch.Tensor:
    """Ranks of symmetric PSD matrices (c, N, N): a Cholesky proof of full rank, else eigenvalues."""
    N = gram.shape[-1]
    # Cholesky of G - delta*I succeeds iff lambda_min > delta: a cheap proof of full rank.
    _, info = torch.linalg.cholesky_ex(gram - 1e-6 * torch.eye(N, dtype=gram.dtype))
    r = torch.full((len(gram),), N, dtype=torch.long)
    bad = info != 0
    if bad.any():  # only these pay for an eigendecomposition
        eig = torch.linalg.eigvalsh(gram[bad])  # ascending
        r[bad] = (eig > eig[:, -1:].clamp(min=1.0) * N * 1e-12).sum(-1)
    return r


def versatility_report(tokens: torch.Tensor, domain_size: int) -> dict:
    """Whether every S_{B_mu} has full column rank N; the few worst elements if not."""
    ranks = versatility_ranks(tokens, domain_size)
    worst = torch.argsort(ranks)[:5]
    return {
        "ok": bool((ranks == domain_size).all()),
        "min_rank": int(ranks.min()),
        "domain_size": domain_size,
        "deficient_elements": int((ranks < domain_size).sum()),
        "worst": {int(m): int(ranks[m]) for m in worst},
    }
