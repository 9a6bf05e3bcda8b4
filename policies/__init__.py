"""Attention models whose learned parameters are agent interactions (arXiv 2506.06179).

Shape legend (code, comments and docs use these letters):

| letter | meaning |
|---|---|
| B | batch: worlds, or sequences |
| L | agents in a world = tokens in a sequence |
| N | grid size; also the number of distinct positions = domain size |
| d | embedding width (`dim`); d = N makes linear SA exact |
| H | heads |
| A | HFA factors per head |
| n | HA order (3 = one query, two keys) |
| d_h | head width (for HA also the CP rank; never called R, which is the agent radius) |
| o | output width (`out_dim`) |
| M | size of a finite token domain (N for positions alone; 2 x 2 x N x N for predator-prey tokens) |
| r | rank of a low-rank linear C = W_Q W_K^T (`rank`); HA's counterpart is d_h |

Every attention module is called the same way:
`forward(x (B, L, d), mask (B, L) bool | None = None, return_scores=False)` -> (B, L, o),
or (out, AttentionScores) when `return_scores`. mask True marks real tokens.

This package never imports envs, training or viz.
"""

from policies.base import AttentionScores
from policies.devised import (
    change_embedding,
    circular_window,
    genotype_parameters,
    genotype_target,
    load_linear_sa,
    one_hot_band,
    sinusoidal_diagonal,
)
from policies.embeddings import (
    FeatureProductEmbedding,
    LearnedEmbedding,
    OneHotEmbedding,
    SinusoidalEmbedding,
    TokenEmbedding,
    make_embedding,
)
from policies.ha import HyperAttention
from policies.hfa import HyperFeatureAttention
from policies.predictor import ATTENTION, AttentionSum, Predictor, make_attention
from policies.sa import SelfAttention

__all__ = [
    "ATTENTION",
    "AttentionScores",
    "FeatureProductEmbedding",
    "HyperAttention",
    "HyperFeatureAttention",
    "LearnedEmbedding",
    "OneHotEmbedding",
    "AttentionSum",
    "Predictor",
    "SelfAttention",
    "SinusoidalEmbedding",
    "TokenEmbedding",
    "change_embedding",
    "circular_window",
    "genotype_parameters",
    "genotype_target",
    "load_linear_sa",
    "make_attention",
    "make_embedding",
    "one_hot_band",
    "sinusoidal_diagonal",
]
