"""matplotlib figures: learned vs devised interaction matrices, the Figure-1 diagonal, OOD curves.

Every function writes one PNG (atomically: temp file, then rename) and returns its path. The
Agg backend is selected so figures work on machines without a display.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def matrix_panels(
    panels: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    title: str = "",
    symmetric: bool = True,
    cols: int | None = None,
    xlabel: str = "nu (key)",
    ylabel: str = "mu (query)",
) -> Path:
    """Heatmaps side by side, each with its own colour bar (the paper's Figures 2-4).

    ``symmetric`` centres each colour map on zero (blue negative, red positive).
    """
    n = len(panels)
    cols = cols or min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
    for ax, (name, m) in zip(axes.flat, panels.items(), strict=False):
        m = np.asarray(m, dtype=float)
        lim = float(np.abs(m).max()) or 1.0
        kw = dict(cmap="RdBu_r", vmin=-lim, vmax=lim) if symmetric else dict(cmap="viridis")
        im = ax.imshow(m, interpolation="nearest", **kw)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def diagonal_plot(diagonals: Mapping[str, np.ndarray], path: str | os.PathLike, title: str = "") -> Path:
    """C_mumu against mu (the paper's Figure 1 staircase), several curves on one axis.

    The first curve is the reference (the devised one): drawn wide and light, so a learned curve
    drawn thin on top of it stays visible where the two agree.
    """
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for k, (name, d) in enumerate(diagonals.items()):
        d = np.asarray(d, dtype=float)
        style = dict(lw=4.0, alpha=0.45) if k == 0 else dict(lw=1.3, ls="--")
        ax.plot(np.arange(len(d)), d, drawstyle="steps-mid", label=name, **style)
    ax.axhline(0.0, color="grey", lw=0.6)
    ax.set_xlabel("embedding index mu")
    ax.set_ylabel("C[mu, mu]")
    ax.set_title(title or "diagonal of the interaction matrix C")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def ood_curve(
    curves: Mapping[str, Mapping[int, float]],
    path: str | os.PathLike,
    train_agents=None,
    ylabel: str = "test MSE",
    log: bool = True,
    title: str = "",
) -> Path:
    """A metric against agent count L, one line per model; the training L marked."""
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    for name, pts in curves.items():
        ls = sorted((int(k), float(v)) for k, v in pts.items())
        ax.plot([p[0] for p in ls], [max(p[1], 1e-300) if log else p[1] for p in ls], "o-", label=name)
    if train_agents is not None:
        ax.axvline(train_agents, color="grey", ls="--", lw=0.8, label=f"trained at L = {train_agents}")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("agents L (tokens)")
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"{ylabel} against agent count")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def loss_curve(history: Mapping[int, float], path: str | os.PathLike, title: str = "training MSE") -> Path:
    """Training loss against step on a log scale."""
    fig, ax = plt.subplots(figsize=(6.0, 3.4))
    steps = sorted(history)
    ax.semilogy(steps, [max(history[s], 1e-300) for s in steps])
    ax.set_xlabel("step")
    ax.set_ylabel("MSE")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)
