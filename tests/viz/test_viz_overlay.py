"""viz.overlay and viz.viewer, headless: edges between the right agents, mode toggles, videos, errors."""

import os

import numpy as np
import pytest
import torch

from policies import devised
from training import fit, runs
from training import view as tv
from viz import overlay as ov
from viz import readout
from viz import viewer as vw

N, R = 16, 1
TINY = dict(
    grid_size=N,
    radius=R,
    train_agents=6,
    num_train=50,
    num_test=10,
    eval_agents=(6,),
    steps=1,
    progress=False,
    figures=False,
)


def write_run(folder, cfg, load_exact=False):
    """A run folder as `hyperagents fit` leaves it (manifest, checkpoint), without training."""
    domain = (cfg.num_alleles,) if cfg.scenario == "genotype" else fit.draw(cfg, 1, 2, 0).domain
    model = fit.build_model(cfg, domain)
    if load_exact:
        devised.load_linear_sa(model.attention, *devised.one_hot_band(N, R))
    with runs.open_run(folder.parent, folder.name, runs.make_manifest("fit", cfg)) as run:
        run.save_torch({"model": model.state_dict()}, cfg.steps)
    return folder


@pytest.fixture(scope="module")
def exact_run(tmp_path_factory):
    """A pairwise fit run folder whose checkpoint holds the paper's exact one-hot parameters."""
    return write_run(tmp_path_factory.mktemp("runs") / "exact", fit.FitConfig(**TINY), load_exact=True)


def viewer_at(run, positions, mode="learned"):
    cfg, model = tv.open_view_run(run)
    v = vw.Viewer(cfg, model, len(positions))
    v.start, v.start_labels = np.asarray(positions), np.zeros((len(positions), 0), np.int64)
    v.restart()
    v.overlay.mode = mode
    return v


def pixel_on(v, frame, a, b, t):
    """The frame's pixel at fraction t along the screen segment from cell a to cell b."""
    pa, pb = v.renderer.view.world_to_screen(*a), v.renderer.view.world_to_screen(*b)
    col, row = (round(pa[k] + t * (pb[k] - pa[k])) for k in range(2))
    return frame[row, col]


def is_edge(px, color=ov.NEGATIVE, tol=12):
    return bool(np.abs(px.astype(int) - np.asarray(color)).max() <= tol)


# A and B interact (|dy| = 1 <= 2R) without touching (x 10 apart); C interacts with neither.
A, B, C = (2, 5), (12, 6), (7, 12)


def test_exact_model_learned_strengths_equal_the_truth(exact_run):
    v = viewer_at(exact_run, [A, B, C])
    assert v.overlay.learned.units == "value"
    torch.testing.assert_close(v.overlay.learned.pairs, v.overlay.truth.pairs)
    assert v.overlay.learned.pairs[0, 1] == -1 and v.overlay.learned.pairs[0, 2] == 0


def test_edges_appear_between_interacting_agents_only(exact_run):
    v = viewer_at(exact_run, [A, B, C])
    frame = v.frame()
    for t in (0.3, 0.5, 0.7):  # between the discs, on both halves of the edge
        assert is_edge(pixel_on(v, frame, A, B, t)), t
    for a, b in ((A, C), (B, C)):
        assert not is_edge(pixel_on(v, frame, a, b, 0.5)), (a, b)


def test_toggle_changes_what_is_drawn_and_exact_difference_is_empty(exact_run):
    v = viewer_at(exact_run, [A, B, C])
    w, h = v.renderer.view.size
    worlds = {}
    for mode in ov.MODES:
        assert v.overlay.mode == mode
        worlds[mode] = v.frame()[:h, :w]
        v.overlay.cycle_mode()
    assert np.array_equal(worlds["learned"], worlds["truth"])  # the exact model is the truth
    assert not is_edge(pixel_on(v, worlds["difference"], A, B, 0.5))
    edge_px = lambda f: int((np.abs(f.astype(int) - np.asarray(ov.NEGATIVE)).max(-1) <= 12).sum())  # noqa: E731
    assert edge_px(worlds["learned"]) > 100 and edge_px(worlds["difference"]) == 0


def test_edges_cross_the_seam_the_short_way(exact_run):
    a, b = (2, 0), (12, 15)  # |dy| = 1 around the cylinder, 15 the long way
    v = viewer_at(exact_run, [a, b])
    frame = v.frame()
    assert not is_edge(pixel_on(v, frame, a, b, 0.5))  # nothing through the middle of the view
    assert is_edge(pixel_on(v, frame, a, (7, -0.5), 0.8))  # the half from a leaves through the seam
    assert is_edge(pixel_on(v, frame, b, (7, 15.5), 0.8))


def test_record_overlay_writes_the_requested_frames(exact_run, tmp_path):
    import imageio.v3 as iio

    path = tv.record_overlay(exact_run, tmp_path / "o.gif", steps=5, num_agents=8, seed=1)
    frames = iio.imread(path, index=None)
    assert frames.shape[0] == 5 and frames.shape[-1] in (3, 4)


def test_resize_keeps_start_cells_and_updates_strengths(exact_run):
    v = viewer_at(exact_run, [A, B, C])
    v.resize(+2)
    assert v.num_agents == 5 and v.overlay.learned.pairs.shape == (5, 5)
    assert np.array_equal(v.start[:3], np.asarray([A, B, C]))
    v.resize(-4)
    assert v.num_agents == 1
    v.frame()  # one agent: nothing to draw, no error


def test_clear_errors(exact_run, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tv.main(tv.ViewConfig(run=str(tmp_path / "missing"), record=str(tmp_path / "x.gif")))
    with pytest.raises(ValueError, match=r"\.gif or \.mp4"):
        tv.main(tv.ViewConfig(run=str(exact_run), record=str(tmp_path / "x.avi")))
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(SystemExit, match="no display.*--record"):
        tv.main(tv.ViewConfig(run=str(exact_run)))
    with pytest.raises(ValueError, match="scenarios"):
        ov.InteractionOverlay(None, "genotype", N, R)
    write_run(tmp_path / "geno", fit.FitConfig(**TINY, scenario="genotype", num_alleles=8))
    with pytest.raises(ValueError, match="genotype"):
        tv.main(tv.ViewConfig(run=str(tmp_path / "geno"), record=str(tmp_path / "g.gif")))
    assert os.environ.get("SDL_VIDEODRIVER") == "dummy"


def _model(attention, scenario, **kw):
    from envs.scenarios import make_scenario
    from policies.embeddings import make_embedding
    from policies.predictor import Predictor, make_attention

    sizes = {"predator_prey": (2, 2, N, N), "alliances": (3, N)}[scenario]
    assert make_scenario(scenario).label_sizes == sizes[: len(make_scenario(scenario).label_sizes)]
    torch.manual_seed(0)
    emb = make_embedding("learned", sizes, 8)
    return Predictor(emb, make_attention(attention, dim=emb.dim, out_dim=1, **kw)).double()


def test_hfa_factors_and_ha_triangles_draw():
    pos = torch.tensor([[1, 2], [5, 3], [9, 4], [3, 12]])
    hfa = ov.InteractionOverlay(
        _model("hfa", "predator_prey", heads=2, kind="softmax", factors=2), "predator_prey", N, R
    )
    hfa.update(pos, torch.tensor([[0, 0], [1, 1], [0, 1], [1, 0]]))
    assert hfa.learned.factors.shape == (2, 4, 4) and hfa.truth.units == "value"
    assert [hfa.cycle_factor() for _ in range(3)] == [0, 1, None]
    ha = ov.InteractionOverlay(_model("ha", "alliances", kind="linear"), "alliances", N, R)
    ha.update(pos, torch.tensor([[0], [0], [0], [1]]))
    assert ha.learned.triples.shape == (4, 4, 4) and ha.truth.triples is not None
    import pygame

    from envs.render import View

    surf = pygame.Surface(View(N).size)
    for o in (hfa, ha):
        for mode in ov.MODES:
            o.mode = mode
            o(surf, View(N), pos, torch.ones(4, dtype=torch.bool))


def test_interactive_keys_under_the_dummy_driver(exact_run, tmp_path):
    import pygame

    v = viewer_at(exact_run, [A, B, C])
    pygame.display.init()
    keys = [
        pygame.K_t,
        pygame.K_f,
        pygame.K_PLUS,
        pygame.K_RIGHT,
        pygame.K_MINUS,
        pygame.K_s,
        pygame.K_e,
        pygame.K_q,
    ]
    for key in keys:
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=key))
    vw.interactive(v, fps=1000, screenshot_dir=tmp_path / "shots")
    assert v.overlay.mode == "truth" and v.num_agents == 3 and not v.show_edges
    assert len(list((tmp_path / "shots").glob("view_truth_L3_*.png"))) == 1


def test_linear_hfa_tables_sum_to_the_prediction():
    from policies.embeddings import make_embedding
    from policies.predictor import Predictor, make_attention

    torch.manual_seed(0)
    model = Predictor(
        make_embedding("onehot", (N,)), make_attention("hfa", dim=N, kind="linear", out_dim=1)
    ).double()
    tokens = torch.randint(0, N, (1, 7))
    s = ov.learned_strengths(model, tokens)
    _, product = ov.hfa_factor_tables(model)
    self_term = product[tokens[0], tokens[0]]
    assert s.units == "value" and s.factors.shape == (2, 7, 7)
    torch.testing.assert_close(s.pairs.sum(1) + self_term, model(tokens)[0].detach())


@pytest.mark.parametrize("attention", ["sa", "hfa"])
def test_linear_labelled_contributions_sum_to_the_prediction(attention):
    model = _model(attention, "alliances", kind="linear")
    pos, labels = (
        torch.tensor([[1, 2], [5, 3], [9, 4], [3, 12], [4, 2]]),
        torch.tensor([[0], [0], [1], [2], [0]]),
    )
    tokens = ov.tokens_for("alliances", pos, labels)
    s = ov.learned_strengths(model, tokens)
    x = model.embedding(tokens)
    _, sc = model.attention(x, return_scores=True)
    self_term = (sc.scores[0] * readout._linear_values(model, x)[:, None, :]).sum(0).diagonal()
    assert s.units == "value"
    torch.testing.assert_close(s.pairs.sum(1) + self_term.double(), model(tokens)[0].detach())


def test_small_errors_draw_nothing_when_no_agents_interact(exact_run):
    v = viewer_at(exact_run, [A, C])  # |dy| = 7 > 2R: no interaction
    with torch.no_grad():
        v.overlay.model.attention.C.add_(0.02)  # a trained model's small error everywhere
    v.overlay._tables.clear()
    v.restart()
    assert float(v.overlay.learned.pairs.abs().max()) > 0.01
    for mode in ov.MODES:
        v.overlay.mode = mode
        assert not is_edge(pixel_on(v, v.frame(), A, C, 0.5), tol=60), mode


def test_sa_plus_ha_strengths_are_its_pair_and_triple_table_entries():
    model = _model("sa+ha", "alliances", kind="linear", rank=5)
    pos, labels = torch.tensor([[1, 2], [5, 3], [9, 4], [3, 12]]), torch.tensor([[0], [0], [1], [2]])
    tokens = ov.tokens_for("alliances", pos, labels)
    s = ov.learned_strengths(model, tokens)
    idx = model.embedding.index(tokens)[0]
    G2, G3 = (G.detach().double() for G in model.tables())
    assert s.units == "value" and s.triples.shape == (4, 4, 4)
    torch.testing.assert_close(s.pairs[0, 1], G2[idx[0], idx[1]])
    torch.testing.assert_close(s.triples[0, 1, 2], G3[idx[0], idx[1], idx[2]])
    assert s.pairs[2, 2] == 0 and s.triples[0, 1, 1] == 0 and s.triples[1, 1, 2] == 0
    overlay = ov.InteractionOverlay(model, "alliances", N, R)
    overlay.update(pos, labels)  # draws without error through the cached tables
    assert overlay.learned.triples is not None


def test_one_way_pairs_get_an_arrow_towards_the_agent_that_feels_them():
    import pygame

    from envs.render import View

    view = View(N)
    pos = torch.tensor([[2, 2], [10, 2], [2, 8]])
    pairs = torch.zeros(3, 3, dtype=torch.float64)
    pairs[0, 1] = pairs[1, 0] = -1.0  # both ways: a plain edge, no mark
    pairs[2, 0] = 0.8  # 0 acts on 2 only
    marks = ov.one_way_marks(pos, pairs, 1.0, view)
    assert len(marks) == 1
    a, mid, b, color = marks[0]
    assert a == list(view.world_to_screen(2, 8)) and b == list(view.world_to_screen(2, 2))
    assert color == tuple(ov.strength_colors(torch.tensor([0.8], dtype=torch.float64), 1.0)[0][0])
    surf = pygame.Surface(view.size)
    surf.fill((255, 255, 255))
    ov.draw_one_way_mark(surf, pygame, a, mid, b, color)
    frame = pygame.surfarray.pixels3d(surf).transpose(1, 0, 2)
    towards_a = mid[1] - ov.ARROW_LENGTH // 2 + 1  # the tip half of the arrowhead, on a's side
    assert tuple(frame[towards_a, mid[0]]) == color
    dotted = frame[mid[1] + ov.ARROW_LENGTH : b[1], mid[0]]
    assert (dotted == ov.SILENT).all(-1).any() and (dotted == 255).all(-1).any()  # dashes and gaps
