"""Token embeddings: integer tokens (B, L) -> (B, L, d), each with its (N, d) table.

* `OneHotEmbedding`: d = N, x(n) = e_n. Orthonormal, so C is the interaction table itself.
* `SinusoidalEmbedding`: the paper's p(n) for even N (Eq. 6, typo fixed, see PAPER.md 1.4):
      p(n) = [1/sqrt2, sin(2 pi 1 n/N), cos(2 pi 1 n/N), ..., sin(2 pi (N/2-1) n/N),
              cos(2 pi (N/2-1) n/N), cos(pi n)/sqrt2],   p_i . p_j = (N/2) delta_ij.
  `normalized=True` scales by sqrt(2/N) so p_i . p_j = delta_ij: the unnormalised rows have
  norm sqrt(N/2) ~ 13 at N = 360, which makes (X C X^T) X W_V cubic in that size and stalls Adam.
* `LearnedEmbedding`: nn.Embedding.
* `FeatureProductEmbedding`: labelled agents, tokens (B, L, F) = (label_1, ..., label_{F-1}, position);
  kron(one_hot(label_1), ..., p(position)) as in App. B.1.3 / E.1, or their concatenation.

Every embedding has `num_tokens` (N, the domain size), `dim` (d), `index(tokens)` (validated
flat domain index, (B, L)) and `table()` (N, d), with forward(tokens) == table()[index(tokens)].
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from policies.base import check_choice, check_int


def check_tokens(tokens: Tensor, sizes: Sequence[int]) -> None:
    """Raise unless tokens is an integer (B, L) (one size) or (B, L, F) tensor, feature f in [0, sizes[f])."""
    F = len(sizes)
    shape = "(B, L)" if F == 1 else f"(B, L, F={F})"
    if (
        not isinstance(tokens, Tensor)
        or tokens.is_floating_point()
        or tokens.is_complex()
        or tokens.dtype == torch.bool
    ):
        raise TypeError(
            f"tokens must be an integer torch.Tensor of shape {shape}, got {type(tokens).__name__}"
            + (f" of dtype {tokens.dtype}" if isinstance(tokens, Tensor) else "")
        )
    if (F == 1 and tokens.dim() != 2) or (F > 1 and (tokens.dim() != 3 or tokens.shape[-1] != F)):
        raise ValueError(f"tokens must have shape {shape}, got {tuple(tokens.shape)}")
    feats = tokens[..., None] if F == 1 else tokens
    high = torch.tensor(sizes, device=tokens.device)
    bad = (feats < 0) | (feats >= high)
    if bad.any():
        f = int(bad.nonzero()[0, -1])
        raise ValueError(
            f"tokens feature {f} must lie in [0, {sizes[f]}), got values "
            f"{feats[..., f][bad[..., f]].unique()[:5].tolist()}"
        )


class TokenEmbedding(nn.Module):
    """Base class: a lookup into `table()` (N, d); subclasses set num_tokens and dim."""

    num_tokens: int
    dim: int

    def index(self, tokens: Tensor) -> Tensor:
        """Validated domain index (B, L) in [0, num_tokens)."""
        check_tokens(tokens, [self.num_tokens])
        return tokens

    def table(self) -> Tensor:
        raise NotImplementedError

    def forward(self, tokens: Tensor) -> Tensor:
        return self.table()[self.index(tokens)]  # (B, L, d)


class OneHotEmbedding(TokenEmbedding):
    """x(n) = e_n in R^N: d = N (Theorem 3.1's orthonormal embedding)."""

    def __init__(self, num_tokens: int):
        super().__init__()
        self.num_tokens = self.dim = check_int("num_tokens", num_tokens, 1)
        self.register_buffer("_table", torch.eye(num_tokens), persistent=False)

    def table(self) -> Tensor:
        return self._table


def sinusoidal_table(num_tokens: int, normalized: bool = False) -> Tensor:
    """(N, N) float64 rows p(n); rows orthogonal with norm^2 N/2 (1 if normalized). N must be even."""
    N = check_int("num_tokens", num_tokens, 2)
    if N % 2:
        raise ValueError(f"num_tokens must be even for the sinusoidal embedding, got {N}")
    n = torch.arange(N, dtype=torch.float64)[:, None]
    k = torch.arange(1, N // 2, dtype=torch.float64)[None, :]  # frequencies 1 .. N/2 - 1
    angle = 2 * math.pi * k * n / N  # (N, N/2 - 1)
    pairs = torch.stack([angle.sin(), angle.cos()], -1).flatten(1)  # sin, cos interleaved: slots 1 .. N-2
    first = torch.full((N, 1), 1 / math.sqrt(2), dtype=torch.float64)
    last = torch.cos(math.pi * n) / math.sqrt(2)  # slot N-1: the k = N/2 cosine
    P = torch.cat([first, pairs, last], 1)
    return P * math.sqrt(2 / N) if normalized else P


@functools.lru_cache(maxsize=8)
def _cached_sinusoidal(num_tokens: int, normalized: bool) -> Tensor:
    return sinusoidal_table(num_tokens, normalized)


class SinusoidalEmbedding(TokenEmbedding):
    """The paper's Fourier embedding p(n) in R^N (even N); `normalized` makes the rows orthonormal."""

    def __init__(self, num_tokens: int, normalized: bool = False):
        super().__init__()
        self.normalized = bool(normalized)
        self.num_tokens = self.dim = num_tokens
        sinusoidal_table(num_tokens)  # validates N early
        # An empty buffer that follows .to()/.double(): the table is rebuilt from a float64 master
        # in that dtype, so float64 runs stay exact (a stored float32 table would not be).
        self.register_buffer("_like", torch.zeros(0), persistent=False)

    def table(self) -> Tensor:
        return _cached_sinusoidal(self.num_tokens, self.normalized).to(self._like)


class LearnedEmbedding(TokenEmbedding):
    """A trainable (N, d) table (nn.Embedding)."""

    def __init__(self, num_tokens: int, dim: int):
        super().__init__()
        self.num_tokens, self.dim = check_int("num_tokens", num_tokens, 1), check_int("dim", dim, 1)
        self.embed = nn.Embedding(num_tokens, dim)

    def table(self) -> Tensor:
        return self.embed.weight


class FeatureProductEmbedding(TokenEmbedding):
    """Labelled agents: tokens (B, L, F) = (label_1, .., label_{F-1}, position) -> (B, L, d).

    Args:
        label_sizes: number of values of each label (e.g. [2, 2] for species x policy).
        position: embedding of the last feature (any TokenEmbedding).
        mode: "kron": one_hot(label_1) (x) ... (x) position(p), d = prod(label_sizes) * d_pos, so
            one C can couple labels and positions multiplicatively (App. B.1.3, E.1);
            "concat": [one_hot(label_1), ..., position(p)], d = sum(label_sizes) + d_pos (the
            feature-sum embedding HFA needs, App. E.2).

    Flat domain index (for `index`/`table`): mixed radix over (label_1, ..., position), position fastest.
    """

    def __init__(self, label_sizes: Sequence[int], position: TokenEmbedding, mode: str = "kron"):
        super().__init__()
        check_choice("mode", mode, ("kron", "concat"))
        if not isinstance(position, TokenEmbedding):
            raise TypeError(f"position must be a TokenEmbedding, got {type(position).__name__}")
        self.label_sizes = [check_int("label_sizes[i]", s, 1) for s in label_sizes]
        if not self.label_sizes:
            raise ValueError("label_sizes must name at least one label")
        self.position, self.mode = position, mode
        self.sizes = self.label_sizes + [position.num_tokens]
        self.num_tokens = math.prod(self.sizes)
        labels = math.prod(self.label_sizes) if mode == "kron" else sum(self.label_sizes)
        self.dim = labels * position.dim if mode == "kron" else labels + position.dim

    def index(self, tokens: Tensor) -> Tensor:
        check_tokens(tokens, self.sizes)
        flat = torch.zeros_like(tokens[..., 0])
        for f, size in enumerate(self.sizes):  # mixed radix, a loop over the F features
            flat = flat * size + tokens[..., f]
        return flat

    def forward(self, tokens: Tensor) -> Tensor:
        check_tokens(tokens, self.sizes)
        pos = self.position(tokens[..., -1])  # (B, L, d_pos)
        hots = [nn.functional.one_hot(tokens[..., f], s).to(pos) for f, s in enumerate(self.label_sizes)]
        if self.mode == "concat":
            return torch.cat(hots + [pos], -1)
        out = hots[0]
        for t in hots[1:] + [pos]:  # Kronecker product per token, label_1 slowest
            out = (out[..., :, None] * t[..., None, :]).flatten(-2)
        return out  # (B, L, prod(label_sizes) * d_pos)

    def table(self) -> Tensor:
        """(N, d) for every (labels, position) combination, in flat-index order."""
        grid = list(itertools.product(*(range(s) for s in self.sizes)))
        device = self.position.table().device
        return self(torch.tensor(grid, device=device)[None])[0]


EMBEDDINGS = ("onehot", "onehot_concat", "sinusoidal", "sinusoidal_normalized", "learned")


def make_embedding(name: str, domain: int | Sequence[int], dim: int | None = None) -> TokenEmbedding:
    """Embedding by name over `domain`: N, or (label sizes..., N) for labelled tokens (B, L, F).

    name: "onehot" | "sinusoidal" | "sinusoidal_normalized" (d = N) | "learned" (d = dim). With labels
    the position embedding is Kronecker-multiplied by the labels' one-hots (FeatureProductEmbedding),
    except "onehot_concat", which concatenates every column's one-hot (d = sum of the domain sizes,
    the feature-sum embedding of the paper's App. E.2, where SA can no longer multiply features).
    """
    check_choice("name", name, EMBEDDINGS)
    sizes = [domain] if isinstance(domain, int) else list(domain)
    N = sizes[-1]
    if name == "learned":
        position = LearnedEmbedding(N, check_int("dim", dim, 1) if dim is not None else N)
    elif name in ("onehot", "onehot_concat"):
        position = OneHotEmbedding(N)
    else:
        position = SinusoidalEmbedding(N, normalized=name == "sinusoidal_normalized")
    if len(sizes) == 1:
        return position
    return FeatureProductEmbedding(sizes[:-1], position, mode="concat" if name == "onehot_concat" else "kron")
