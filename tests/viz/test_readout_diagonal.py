"""The Figure-1 diagonal read out of any linear pairwise predictor, in the devised sinusoidal basis."""

import pytest
import torch

from policies import devised
from policies.embeddings import make_embedding
from policies.predictor import Predictor, make_attention
from viz.readout import sinusoidal_diagonal

N, R = 20, 2


@pytest.mark.parametrize("embedding", ["onehot", "sinusoidal", "sinusoidal_normalized"])
def test_devised_models_give_the_devised_staircase_in_every_embedding(embedding):
    normalized = embedding == "sinusoidal_normalized"
    model = Predictor(make_embedding(embedding, N), make_attention("sa", dim=N, kind="linear", out_dim=1))
    model = model.double()
    onehot = embedding == "onehot"
    C, W = devised.one_hot_band(N, R) if onehot else devised.sinusoidal_diagonal(N, R, normalized)
    devised.load_linear_sa(model.attention, C, W)
    diag, off, why = sinusoidal_diagonal(model, normalized)
    expected = devised.sinusoidal_diagonal(N, R, normalized)[0].diagonal()
    assert why == "" and off < 1e-12
    torch.testing.assert_close(diag, expected, rtol=0, atol=1e-12)


def test_undefined_diagonals_say_why():
    emb = make_embedding("onehot", N)
    softmax = Predictor(emb, make_attention("sa", dim=N, kind="softmax", out_dim=1))
    assert sinusoidal_diagonal(softmax)[0] is None and "softmax" in sinusoidal_diagonal(softmax)[2]
    head = Predictor(emb, make_attention("sa", dim=N, kind="linear", out_dim=4), mlp_hidden=3)
    assert "ReLU" in sinusoidal_diagonal(head)[2]
    ha = Predictor(emb, make_attention("ha", dim=N, kind="linear", out_dim=1))
    assert sinusoidal_diagonal(ha)[2] == "the model has no pairwise term"
    hfa = Predictor(emb, make_attention("hfa", dim=N, kind="linear", out_dim=1))
    diag, off, why = sinusoidal_diagonal(hfa)
    assert diag.shape == (N,) and 0 <= off <= 1 and why == ""
