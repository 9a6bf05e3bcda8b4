"""A small causal language model whose attention is SA, HFA or HA: the whole model in one file.

token ids (B, L) -> token embedding + learned positions (B, L, d) -> n_layer pre-LayerNorm blocks
(x + attn(ln(x)), then x + mlp(ln(x))) -> final LayerNorm -> head tied to the token embedding.

Only the attention differs between families, and the families' attention layers differ in size:
per block, SA has 4 d^2 weights, HFA 3 d^2 + d^2 / A (its W_O reads H d_h = d / A features),
order-3 HA 4 d^2 + d^2 / H with shared key/value factors and 6 d^2 + d^2 / H without. With
`match_params` each block's MLP hidden width absorbs the difference (`mlp_hidden`), so every
family has the parameter count of the SA model with a 4 d MLP and perplexities compare at
matched size.

Shapes: B batch, L tokens (L <= block_size), d width (n_embd), H heads, V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from policies.base import check_choice
from policies.predictor import FAMILIES, make_attention


@dataclass
class LMConfig:
    """Size and attention family of an `LM`; every field has a small CPU-sized default."""

    vocab_size: int = 256  # one token per byte: no tokenizer to train or download
    block_size: int = 64  # longest context; order-3 HA costs O(L^3) per head, so keep it short
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128  # d
    family: str = "sa"  # "sa" | "hfa" | "ha"
    factors: int = 2  # HFA: score factors per head, A (d must divide by H * A)
    order: int = 3  # HA: order n (3 = one query, two keys)
    share_kv: bool = True  # HA: one key and one value projection for all n - 1 key slots
    # HA: None trains the exact softmax (O(L^n)); "taylor" or an int r of random features trains
    # HyperAttention's feature-map estimate, linear in L (see policies/ha.py `approx_features`).
    ha_approx: int | str | None = None
    ha_max_seconds: float | None = 30.0  # HA: the exact kernel's size guard per call (None: off)
    match_params: bool = True  # size each MLP so the model has the SA model's parameter count
    dropout: float = 0.0  # a few hundred steps on megabytes of text do not overfit


def attention_layer(config: LMConfig) -> nn.Module:
    """The causal softmax attention layer of `config.family`, built by `policies.predictor.make_attention`."""
    check_choice("family", config.family, FAMILIES)
    # HA's options mean nothing to SA and HFA, whose constructors would reject them.
    ha = (
        dict(share_kv=config.share_kv, approx_features=config.ha_approx, max_seconds=config.ha_max_seconds)
        if config.family == "ha"
        else {}
    )
    # For HA, causal masks every key slot: all of j_1 .. j_{n-1} <= i.
    return make_attention(
        config.family,
        dim=config.n_embd,
        heads=config.n_head,
        kind="softmax",
        causal=True,
        factors=config.factors,
        order=config.order,
        **ha,
    )


def mlp_hidden(config: LMConfig, attention: nn.Module) -> int:
    """MLP hidden width: 4 d, or with `match_params` the width that makes attention + MLP hold
    as many weights as an SA block with a 4 d MLP (4 d^2 + 8 d^2; the MLP has 2 d weights per unit)."""
    d = config.n_embd
    if not config.match_params:
        return 4 * d
    own = sum(p.numel() for p in attention.parameters())
    hidden = round((12 * d * d - own) / (2 * d))
    if hidden < 1:
        raise ValueError(
            f"{config.family} attention has {own} weights, more than an SA block's 12 d^2: "
            "cannot match parameters by shrinking the MLP (set match_params=False)"
        )
    return hidden


class MLP(nn.Module):
    def __init__(self, d: int, hidden: int, dropout: float):
        super().__init__()
        self.c_fc = nn.Linear(d, hidden, bias=False)
        self.c_proj = nn.Linear(hidden, d, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))  # (B, L, d) -> (B, L, hidden) -> (B, L, d)


class Block(nn.Module):
    def __init__(self, config: LMConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = attention_layer(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config.n_embd, mlp_hidden(config, self.attn), config.dropout)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.dropout(self.attn(self.ln_1(x)))  # no mask: every sequence is full length
        return x + self.mlp(self.ln_2(x))


class LM(nn.Module):
    """Causal decoder. `forward(idx (B, L), targets (B, L) | None) -> (logits (B, L, V), loss | None)`."""

    def __init__(self, config: LMConfig):
        super().__init__()
        check_choice("family", config.family, FAMILIES)
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying (Press & Wolf 2017): one V x d matrix
        # GPT-2 init for the model's own layers; the attention layers keep their modules' init,
        # which is the same nn.Linear default for every family.
        for module in (self.wte, self.wpe, *(b.mlp for b in self.h)):
            for p in module.parameters():
                nn.init.normal_(p, std=0.02)
        for block in self.h:  # scaled init of the residual projection, per GPT-2
            nn.init.normal_(block.mlp.c_proj.weight, std=0.02 / math.sqrt(2 * config.n_layer))

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (the tied head counted once); `non_embedding` leaves out positions."""
        n = sum(p.numel() for p in self.parameters())  # parameters() yields the tied matrix once
        return n - self.wpe.weight.numel() if non_embedding else n

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        B, L = idx.shape
        if L > self.config.block_size:
            raise ValueError(
                f"sequence length {L} exceeds the context length block_size={self.config.block_size}"
            )
        pos = torch.arange(L, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, L, d) + (L, d)
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))  # (B, L, d) x (d, V) -> (B, L, V), every position
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(B * L, -1), targets.reshape(B * L))
        return logits, loss

    @torch.no_grad()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Sample `max_new_tokens` tokens after `idx` (B, L0); the context is cropped to block_size."""
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -self.config.block_size :])
            probs = (logits[:, -1] / temperature).softmax(-1)  # (B, V)
            idx = torch.cat([idx, torch.multinomial(probs, 1, generator=generator)], 1)
        return idx
