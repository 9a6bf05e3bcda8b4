"""The self terms make every scenario's targets exactly representable by attention tables.

Targets are sums over all j (and all key pairs j, k for order 3), repeats and j = i included,
so duplicated tokens are the hard case: the devised tables below must reproduce every target
exactly on i.i.d. draws, which repeat tokens often in these small domains.
"""

import torch

from envs.datasets import make_dataset
from policies.predictor import gather_table


def _near(y, N, R):
    """(M, M) float: circular |y_mu - y_nu| <= 2R."""
    gap = torch.remainder(y[:, None] - y[None, :], N)
    return (gap.minimum(N - gap) <= 2 * R).double()


def _pairs(idx):
    B, L = idx.shape
    return torch.ones(B, L, L, dtype=torch.bool)


def test_pairwise_table_is_exact():
    N, R = 20, 2
    d = make_dataset("pairwise", 500, 9, grid_size=N, radius=R, seed=0)
    G2 = -_near(torch.arange(N), N, R)  # the diagonal -1 is both the self term and a twin's collision
    tokens = d.tokens[..., 0] if d.tokens.dim() == 3 else d.tokens
    pred = gather_table(G2[..., None], tokens, _pairs(tokens))[..., 0]
    assert torch.equal(pred, d.targets)


def test_alliances_sa_plus_order3_tables_are_exact():
    """y_i = sum_j g2 + sum_jk g3 with g3 = bonus/2 on allied, mutually near triples (paper F.2)."""
    N, R, K, bonus = 16, 1, 3, 1.0
    d = make_dataset("alliances", 600, 10, grid_size=N, radius=R, seed=1)
    assert d.domain == (K, N)
    a, y = torch.arange(K * N) // N, torch.arange(K * N) % N
    near = (
        torch.remainder(y[:, None] - y[None, :], N).minimum(torch.remainder(y[None, :] - y[:, None], N))
        <= 2 * R
    )
    near = near.double()
    allied = (a[:, None] == a[None, :]).double()
    g3 = 0.5 * bonus * torch.einsum("ij,ik,jk,ij,ik->ijk", near, near, near, allied, allied)
    g2 = -near * (1 + 1.5 * bonus * allied)
    flat = d.tokens[..., 0] * N + d.tokens[..., 1]
    ok = _pairs(flat)
    pred = gather_table(g2[..., None], flat, ok) + gather_table(g3[..., None], flat, ok)
    assert (flat[:, :, None] == flat[:, None, :]).sum() > flat.numel()  # repeats do occur
    torch.testing.assert_close(pred[..., 0], d.targets, rtol=0, atol=1e-12)
