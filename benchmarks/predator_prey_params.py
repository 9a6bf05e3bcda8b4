"""Experiment 4 (paper App. E.1): how many parameters SA and HFA need for predator-prey.

    python benchmarks/predator_prey_params.py                      # N = 6 .. 20, about 3 minutes
    python benchmarks/predator_prey_params.py --grid-sizes 6 8     # a quick look

The paper states that about 1e6 parameters suffice for HyperFeatureAttention at N = 360 where
self-attention needs about 2e7: a claim about *representation*. This script measures both sides
on the exact value table G[mu, nu] (``envs.datasets.exact_pair_table``, tokens = species, policy,
x, y; M = 4 N^2), with a test MSE of at most ``target`` at every evaluated agent count as the bar:

- SA (one-hot Kronecker embedding, d = M, the only one on which SA can multiply features): the
  best rank-r C is the truncated SVD of G (Eckart-Young, the paper's Theorem B.4); the smallest r
  that meets the bar gives 2 M r + M weights (W_Q, W_K, W_V), or M^2 + M for a full C if smaller.
- Matched parameters: the best SA with HFA's parameter count (rank (count - M) / 2M, truncated SVD).
- HFA (one-hot *concatenated* features, d = 2N + 4, A = 4 factors: species, policy, x, y):
  G = species factor * sum over policy pairs (p, q) of [policy] * c_pq(x, y, x', y'), and each
  c_pq splits into separable terms a_k(x, x') b_k(y, y') by an SVD across the (x, x') and (y, y')
  axes (the operator-Schmidt decomposition). One head per kept term, every factor exact: the
  HFA module is built with these weights and *its own forward* is scored on the test sets.

Results go to benchmarks/results/predator_prey.json; the README's experiment-4 table quotes them.
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro

from envs.datasets import exact_pair_table, make_dataset
from policies.embeddings import make_embedding
from policies.hfa import HyperFeatureAttention
from policies.predictor import Predictor, gather_table

RESULTS = Path(__file__).parent / "results" / "predator_prey.json"


@dataclass
class Config:
    grid_sizes: tuple[int, ...] = (6, 8, 10, 12, 16, 20)
    """N values (R = radius for all)"""
    radius: int = 1
    """R"""
    eval_agents: tuple[int, ...] = (2, 6, 16)
    """test agent counts; the bar must hold at every one"""
    num_test: int = 500
    """test worlds per agent count"""
    target: float = 1e-4
    """test MSE bar"""
    seed: int = 0
    out: str = str(RESULTS)
    """JSON output ('' to skip)"""
    figure: str = "docs/figures/predator_prey_params.png"
    """log-log plot of both parameter counts against N ('' to skip)"""


def test_sets(cfg: Config, N: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(flat token index (B, L), targets (B, L)) per evaluated agent count."""
    emb = make_embedding("onehot", (2, 2, N, N))
    out = []
    for L in cfg.eval_agents:
        d = make_dataset("predator_prey", cfg.num_test, L, N, cfg.radius, seed=cfg.seed + 1000 + L)
        out.append((emb.index(d.tokens), d.targets))
    return out


def table_mse(G: torch.Tensor, tests) -> float:
    """Worst test MSE over the agent counts of the predictor y_i = sum_j G[t_i, t_j]."""
    worst = 0.0
    for idx, y in tests:
        ok = torch.ones(idx.shape + idx.shape[1:], dtype=torch.bool)
        pred = gather_table(G[..., None], idx, ok)[..., 0]
        worst = max(worst, float(((pred - y) ** 2).mean()))
    return worst


def smallest(count: int, ok) -> int:
    """Smallest k in [1, count] with ok(k) True (ok monotone), or count + 1 when none is."""
    lo, hi = 1, count + 1
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid + 1, hi)
    return lo


def sa_side(G: torch.Tensor, tests, target: float, budget: int) -> dict:
    """SA's smallest rank for the bar, and the best SA with at most `budget` weights (HFA's count)."""
    M = G.shape[0]
    U, S, Vh = torch.linalg.svd(G)
    rank = int((S > 1e-9 * S[0]).sum())

    def truncated(r: int) -> torch.Tensor:
        return (U[:, :r] * S[:r]) @ Vh[:r]

    r = smallest(rank, lambda r: table_mse(truncated(r), tests) <= target)
    r_budget = max((budget - M) // (2 * M), 0)  # 2 M r + M <= budget
    return {
        "rank_at_hfa_budget": r_budget,
        "best_mse_at_hfa_budget": table_mse(truncated(r_budget), tests),
        "table_rank": rank,
        "rank_needed": r,
        "mse_at_rank": table_mse(truncated(r), tests),
        "mse_at_rank_minus_1": table_mse(truncated(r - 1), tests) if r > 1 else None,
        "params": min(2 * M * r + M, M * M + M),
        "params_full_C": M * M + M,
    }


def schmidt_terms(G: torch.Tensor, N: int) -> list[tuple[float, int, int, torch.Tensor, torch.Tensor]]:
    """Every separable term sigma * a(x, x') b(y, y') of every policy pair's collision table."""
    G6 = G.view(2, 2, N, N, 2, 2, N, N)  # species, policy, x, y of mu, then of nu
    H_, P_ = 0, 1
    c = G6[H_, :, :, :, P_]  # (p, x, y, q, x', y'): a hunter's gain from a prey = collision indicator
    # The value must be species factor x collision: prey lose what hunters gain, same species give 0.
    if not (
        torch.equal(G6[P_, :, :, :, H_], -c)
        and not G6[H_, :, :, :, H_].any()
        and not G6[P_, :, :, :, P_].any()
    ):
        raise ValueError("predator_prey table is not species factor x collision table")
    terms = []
    for p in range(2):
        for q in range(2):
            T = c[p, :, :, q].permute(0, 2, 1, 3).reshape(N * N, N * N)  # ((x, x'), (y, y'))
            U, S, Vh = torch.linalg.svd(T)
            for k in range(int((S > 1e-9 * S[0]).sum()) if S[0] > 0 else 0):
                terms.append((float(S[k]), p, q, U[:, k].view(N, N) * S[k], Vh[k].view(N, N)))
    return sorted(terms, key=lambda t: -t[0])


def terms_table(terms, N: int) -> torch.Tensor:
    G6 = torch.zeros(2, 2, N, N, 2, 2, N, N, dtype=torch.float64)
    for _, p, q, a, b in terms:
        cxy = a[:, None, :, None] * b[None, :, None, :]  # (x, y, x', y')
        G6[0, p, :, :, 1, q] += cxy
        G6[1, p, :, :, 0, q] -= cxy
    return G6.reshape(4 * N * N, 4 * N * N)


def hfa_module(terms, N: int) -> Predictor:
    """The HFA predictor with one head per term: factors species, policy, x, y, each exact."""
    d, H = 2 + 2 + N + N, len(terms)
    att = HyperFeatureAttention(dim=d, heads=H, factors=4, kind="linear", out_dim=1, rank=N).double()
    Wq, Wk, Wv = (torch.zeros_like(w) for w in (att.W_Q, att.W_K, att.W_V))
    x0, y0 = 4, 4 + N  # concatenated blocks: species 0:2, policy 2:4, x, y
    for h, (_, p, q, a, b) in enumerate(terms):
        Wq[h, 0, 0, 0], Wq[h, 0, 1, 1] = 1.0, 1.0  # hunter -> e0, prey -> e1
        Wk[h, 0, 1, 0], Wk[h, 0, 0, 1] = 1.0, -1.0  # prey -> e0, hunter -> -e1: +1 H.P, -1 P.H, 0 same
        Wq[h, 1, 2 + p, 0], Wk[h, 1, 2 + q, 0] = 1.0, 1.0  # policy pair (p, q)
        for f, (mat, at) in enumerate(((a, x0), (b, y0)), start=2):
            U, S, Vh = torch.linalg.svd(mat)
            Wq[h, f, at : at + N] = U * S.sqrt()
            Wk[h, f, at : at + N] = Vh.T * S.sqrt()
        Wv[h, :, 0:2, 0] = 1.0  # every token has one species: each value factor is 1
    with torch.no_grad():
        att.W_Q.copy_(Wq), att.W_K.copy_(Wk), att.W_V.copy_(Wv)
    return Predictor(make_embedding("onehot_concat", (2, 2, N, N)), att).double()


def hfa_side(G: torch.Tensor, N: int, cfg: Config, tests) -> dict:
    terms = schmidt_terms(G, N)
    k = smallest(len(terms), lambda k: table_mse(terms_table(terms[:k], N), tests) <= cfg.target)
    model = hfa_module(terms[:k], N)
    worst = 0.0
    with torch.no_grad():
        for L in cfg.eval_agents:  # the module's own forward, on the same test worlds
            dset = make_dataset("predator_prey", cfg.num_test, L, N, cfg.radius, seed=cfg.seed + 1000 + L)
            worst = max(worst, float(((model(dset.tokens) - dset.targets) ** 2).mean()))
    return {
        "separable_terms": len(terms),
        "heads_needed": k,
        "module_test_mse": worst,
        "params": sum(p.numel() for p in model.attention.parameters()),
        "dim": model.embedding.dim,
    }


def main(cfg: Config) -> dict:
    torch.set_num_threads(1)
    rows = []
    for N in cfg.grid_sizes:
        t0 = time.perf_counter()
        G = exact_pair_table("predator_prey", N, cfg.radius)
        tests = test_sets(cfg, N)
        hfa = hfa_side(G, N, cfg, tests)
        sa = sa_side(G, tests, cfg.target, budget=hfa["params"])
        rows.append({"N": N, "M": 4 * N * N, "sa": sa, "hfa": hfa, "ratio": sa["params"] / hfa["params"]})
        print(
            f"N={N:>3}  SA: rank {sa['rank_needed']}/{sa['table_rank']} -> {sa['params']:,} params"
            f"  HFA: {hfa['heads_needed']} heads -> {hfa['params']:,} params (module MSE "
            f"{hfa['module_test_mse']:.1e})  SA/HFA {rows[-1]['ratio']:.1f}x; best SA with HFA's count:"
            f" MSE {sa['best_mse_at_hfa_budget']:.2f}"
            f"  ({time.perf_counter() - t0:.0f}s)",
            flush=True,
        )
    slope = None
    if len(rows) > 1:  # power-law exponents of each side's parameter count in N
        logN = torch.tensor([math.log(r["N"]) for r in rows])
        slope = {
            side: float(
                torch.linalg.lstsq(
                    torch.stack([logN, torch.ones_like(logN)], 1),
                    torch.tensor([math.log(r[side]["params"]) for r in rows])[:, None],
                ).solution[0, 0]
            )
            for side in ("sa", "hfa")
        }
        print(f"params ~ N^{slope['sa']:.2f} (SA) and N^{slope['hfa']:.2f} (HFA)")
    out = {
        "command": "python benchmarks/predator_prey_params.py",
        "config": {k: getattr(cfg, k) for k in ("grid_sizes", "radius", "eval_agents", "num_test", "target")},
        "machine": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d"),
        },
        "rows": rows,
        "exponent": slope,
    }
    if cfg.figure:
        plot(rows, Path(cfg.figure), cfg.target)
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(cfg.out).with_suffix(".tmp")
        tmp.write_text(json.dumps(out, indent=2))
        tmp.replace(cfg.out)
    return out


def plot(rows: list[dict], path: Path, target: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    Ns = [r["N"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.loglog(Ns, [r["sa"]["params"] for r in rows], "o-", label="SA (Kronecker one-hot, d = 4N^2)")
    ax.loglog(Ns, [r["hfa"]["params"] for r in rows], "s-", label="HFA (concatenated one-hot, A = 4)")
    for r in rows:
        ax.annotate(
            f"{r['ratio']:.1f}x", (r["N"], r["hfa"]["params"]), textcoords="offset points", xytext=(4, -12)
        )
    ax.set_xticks(Ns, [str(n) for n in Ns])
    ax.minorticks_off()
    ax.set_xlabel("grid size N")
    ax.set_ylabel(f"parameters for test MSE <= {target:g}")
    ax.set_title("predator-prey: weights each model needs")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main(tyro.cli(Config))
