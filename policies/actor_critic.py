"""Agent-count-agnostic actor-critic features for SB3: attention over an agent's token set.

SB3 hands a features extractor flat observations (B, L*F). :class:`AttentionExtractor` reshapes
them to (B, L, F) with L = obs_width // F, so L is read from each batch and never stored: a model
trained with L_max = 8 runs unchanged on L_max = 64 observations. It embeds the tokens with a
small MLP, applies ``blocks`` attention blocks (SA, HFA or HA; each ``x = LN(x + attn(x))``,
``x = LN(x + ff(x))``), and returns the self token's feature (slot 0), shape (B, d).

Evaluating at another L: SB3's ``policy.predict`` checks observations against the training
observation space, so evaluate through the torch policy instead, which does not:
``policy.get_distribution(torch.as_tensor(obs)).get_actions(deterministic=True)`` with obs of
shape (B, L*F) for any L (``training/ood.py`` does this).

:class:`NearestMLPExtractor` is the baseline a user would try first: an MLP over a fixed-size
observation, the self token plus the k nearest real agents' tokens (zero-padded when fewer).

Token layout read here (the caller states it through arguments, this module knows no env):
``tokens[..., present_feature] > 0.5`` marks real agents; ``position_features`` are the (dx, dy)
offsets used to rank neighbours. Shapes: B batch (agents), L tokens, F features, d width, H heads.
"""

from __future__ import annotations

import gymnasium as gym
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import Tensor, nn

from policies.base import check_choice, check_input, check_int
from policies.predictor import FAMILIES, make_attention  # FAMILIES re-exported for the trainers


def split_tokens(obs: Tensor, num_features: int) -> Tensor:
    """(B, L*F) -> (B, L, F), checking that F divides the width."""
    if obs.dim() != 2 or obs.shape[1] % num_features or obs.shape[1] == 0:
        raise ValueError(
            f"observations must have shape (B, L*F) with F = num_features = {num_features}, "
            f"got {tuple(obs.shape)}"
        )
    return obs.reshape(obs.shape[0], obs.shape[1] // num_features, num_features)


def real_mask(tokens: Tensor, present_feature: int) -> Tensor:
    """(B, L) bool of real tokens; slot 0 (self) always counts, so no row is empty."""
    mask = tokens[..., present_feature] > 0.5
    mask[:, 0] = True
    return mask


def nearest_order(
    tokens: Tensor, mask: Tensor, position_features: tuple[int, int], dx_weight: float = 1.0
) -> Tensor:
    """(B, L) token indices: self first, then real tokens by distance, then padded ones.

    The distance is sqrt((dx_weight * dx)^2 + dy^2) with (dx, dy) the two position features;
    dx_weight < 1 ranks agents in nearby lanes (small |dy|) before agents far ahead or behind.
    """
    offsets = tokens[..., list(position_features)]  # (B, L, 2)
    dist = (offsets[..., 0] * dx_weight).pow(2) + offsets[..., 1].pow(2)  # (B, L)
    dist = dist.masked_fill(~mask, float("inf"))
    dist[:, 0] = -1.0
    return dist.argsort(dim=-1, stable=True)


class Block(nn.Module):
    """Post-norm transformer block: x = LN(x + attn(x, mask)); x = LN(x + ff(x)). (B, L, d)."""

    def __init__(self, attention: nn.Module, width: int):
        super().__init__()
        self.attention = attention
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.ff = nn.Sequential(nn.Linear(width, 2 * width), nn.ReLU(), nn.Linear(2 * width, width))

    def forward(self, x: Tensor, mask: Tensor, first_only: bool = False) -> Tensor:
        """(B, L, d) -> (B, L, d), or (B, 1, d) for token 0 only (ff and norms are per token).

        ``mask`` None means every token is real (the attention then skips its masking work). The
        input must be validated already (the attention's ``attend`` skips ``forward``'s checks).
        """
        a = self.attention.attend(x, mask, first_only)  # (B, L, d), or (B, 1, d): query 0 only
        x = self.norm1((x[:, :1] if first_only else x) + a)
        return self.norm2(x + self.ff(x))


class AttentionExtractor(BaseFeaturesExtractor):
    """Self token's feature after attention over the agent's token set. (B, L*F) -> (B, d).

    :param observation_space: flat Box (L*F,); only used by SB3 (L may differ at evaluation).
    :param num_features: F, features per token.
    :param family: "sa", "hfa" or "ha".
    :param width: d, embedding and output width.
    :param blocks: number of attention blocks.
    :param heads: H.
    :param kind: "softmax" or "linear" attention.
    :param factors: HFA factors per head (A).
    :param order: HA order (n).
    :param neighbours: keep only self + this many nearest real tokens (None: all). Bounds the
        cost at large L (softmax HA is O(L^3)) and the attention's input distribution.
    :param present_feature: index of the ``present`` flag in a token.
    :param position_features: indices of the (dx, dy) offsets in a token.
    :param dx_weight: weight of dx in the neighbour ranking (see :func:`nearest_order`).
    :param lane_tokens: with a neighbour cap, also keep this many more real tokens whose
        ``flag_feature`` is set, nearest in dy wherever they are in dx (the crossing task's
        parked agents: who blocks which lane at the far wall, which a view of the nearest agents
        does not reach). Every token is kept when L <= neighbours + 1 + lane_tokens.
    :param flag_feature: index of the flag that marks the tokens ``lane_tokens`` may pick.
    """

    def __init__(
        self,
        observation_space: gym.spaces.Box,
        num_features: int = 10,
        family: str = "sa",
        width: int = 32,
        blocks: int = 2,
        heads: int = 2,
        kind: str = "softmax",
        factors: int = 2,
        order: int = 3,
        neighbours: int | None = None,
        present_feature: int = 0,
        position_features: tuple[int, int] = (1, 2),
        dx_weight: float = 1.0,
        lane_tokens: int = 0,
        flag_feature: int = 5,
    ):
        check_choice("family", family, FAMILIES)
        check_int("lane_tokens", lane_tokens, 0)
        for name, value in (("num_features", num_features), ("width", width), ("blocks", blocks)):
            check_int(name, value, 1)
        if neighbours is not None and (not isinstance(neighbours, int) or neighbours < 1):
            raise ValueError(f"neighbours must be None or an int >= 1, got {neighbours!r}")
        super().__init__(observation_space, features_dim=width)
        if isinstance(dx_weight, bool) or not isinstance(dx_weight, (int, float)) or not dx_weight > 0:
            raise ValueError(f"dx_weight must be a number > 0, got {dx_weight!r}")
        self.num_features, self.neighbours, self.dx_weight = num_features, neighbours, float(dx_weight)
        self.present_feature, self.position_features = present_feature, tuple(position_features)
        self.lane_tokens, self.flag_feature = lane_tokens, flag_feature
        self.embed = nn.Sequential(nn.Linear(num_features, width), nn.ReLU(), nn.Linear(width, width))
        attention = dict(dim=width, heads=heads, kind=kind, factors=factors, order=order)
        self.blocks = nn.ModuleList(Block(make_attention(family, **attention), width) for _ in range(blocks))

    def nearest(self, tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Self + the ``neighbours`` nearest real tokens: (B, L, F), (B, L) -> (B, k+1, F), (B, k+1);
        unchanged when there is no cap or L <= k + 1."""
        lanes = getattr(self, "lane_tokens", 0)
        if self.neighbours is None or tokens.shape[1] <= self.neighbours + 1 + lanes:
            return tokens, mask
        order = nearest_order(tokens, mask, self.position_features, getattr(self, "dx_weight", 1.0))
        keep = order[:, : self.neighbours + 1]  # (B, k+1)
        if not lanes:
            tokens = torch.gather(tokens, 1, keep[..., None].expand(-1, -1, tokens.shape[-1]))
            return tokens, torch.gather(mask, 1, keep)
        keep, kept = self._add_lane_tokens(tokens, mask, keep, lanes)  # (B, k+1+lanes) twice
        tokens = torch.gather(tokens, 1, keep[..., None].expand(-1, -1, tokens.shape[-1]))
        return tokens * kept[..., None], kept  # a slot nothing flagged filled reads as padding

    def _add_lane_tokens(self, tokens: Tensor, mask: Tensor, keep: Tensor, lanes: int) -> tuple[Tensor, ...]:
        """``keep`` (B, k+1) plus the ``lanes`` flagged real tokens not in it with the smallest
        |dy|: (B, k+1+lanes) indices and their mask (False where fewer are flagged)."""
        dy = tokens[..., self.position_features[1]].abs()  # (B, L)
        ok = mask & (tokens[..., self.flag_feature] > 0.5)
        ok = ok.scatter(1, keep, False)  # not twice
        dist = dy.masked_fill(~ok, float("inf"))
        extra = dist.argsort(dim=-1, stable=True)[:, :lanes]  # (B, lanes)
        found = torch.gather(ok, 1, extra)
        return torch.cat([keep, extra], 1), torch.cat([torch.gather(mask, 1, keep), found], 1)

    def forward(self, observations: Tensor, return_tokens: bool = False, checked: bool = True) -> Tensor:
        """``checked=False`` is for observations already checked (a trainer re-reading its rollout):
        then no value is read back from the device, so a GPU never waits for the host here."""
        tokens = split_tokens(observations, self.num_features)  # (B, L, F)
        mask = real_mask(tokens, self.present_feature)  # (B, L)
        tokens, mask = self.nearest(tokens, mask)  # (B, k+1, F), (B, k+1) when capped
        x = self.embed(tokens)  # (B, L, d)
        # no padding (e.g. a fixed count): unmasked kernels; testing for it reads the device
        att_mask = None if checked and bool(mask.all()) else mask
        if att_mask is not None:
            x = x * mask[..., None]
        # Validate once here, not in every block: a finite sum means every entry is finite; only
        # otherwise run the attention's exact check (NaN or inf in a real token raises, padding may).
        if checked and not torch.isfinite(x.detach().sum()):
            check_input(x, mask, x.shape[-1])
        last = len(self.blocks) - 1
        for k, block in enumerate(self.blocks):
            x = block(x, att_mask, first_only=k == last and not return_tokens)  # only the self token leaves
        return x if return_tokens else x[:, 0]  # self token, (B, d)


class NearestMLPExtractor(BaseFeaturesExtractor):
    """MLP over a fixed-size view: self + the k nearest real tokens, zero-padded. (B, L*F) -> (B, d).

    :param observation_space: flat Box (L*F,).
    :param num_features: F.
    :param k: neighbours kept (fixed input width (k+1)*F, whatever L is).
    :param width: d, hidden and output width.
    :param present_feature: index of the ``present`` flag.
    :param position_features: indices of the (dx, dy) offsets.
    """

    def __init__(
        self,
        observation_space: gym.spaces.Box,
        num_features: int = 10,
        k: int = 6,
        width: int = 64,
        present_feature: int = 0,
        position_features: tuple[int, int] = (1, 2),
    ):
        for name, value in (("num_features", num_features), ("k", k), ("width", width)):
            check_int(name, value, 1)
        super().__init__(observation_space, features_dim=width)
        self.num_features, self.k = num_features, k
        self.present_feature, self.position_features = present_feature, tuple(position_features)
        self.net = nn.Sequential(
            nn.Linear((k + 1) * num_features, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU()
        )

    def forward(self, observations: Tensor, checked: bool = True) -> Tensor:
        """``checked`` as in AttentionExtractor; this encoder reads nothing back either way."""
        tokens = split_tokens(observations, self.num_features)  # (B, L, F)
        mask = real_mask(tokens, self.present_feature)
        B, L, F = tokens.shape
        if L < self.k + 1:  # pad with empty tokens up to k + 1
            tokens = torch.cat([tokens, tokens.new_zeros(B, self.k + 1 - L, F)], 1)
            mask = torch.cat([mask, mask.new_zeros(B, self.k + 1 - L)], 1)
        keep = nearest_order(tokens, mask, self.position_features)[:, : self.k + 1]  # (B, k+1)
        view = torch.gather(tokens * mask[..., None], 1, keep[..., None].expand(-1, -1, F))
        return self.net(view.reshape(B, -1))


def token_encoder(num_features: int, family: str = "sa", mlp_k: int = 6, **kwargs) -> BaseFeaturesExtractor:
    """A token-set encoder outside SB3: tokens (M, L*F) -> (M, d) for any L.

    ``family`` "mlp" gives :class:`NearestMLPExtractor` (width ``2 * width``, as in SB3 runs),
    anything else :class:`AttentionExtractor`. The extractors only store SB3's observation space,
    so a one-token placeholder stands in for it: L is read from every batch.
    """
    space = gym.spaces.Box(-1.0, 1.0, (num_features,))
    if family == "mlp":
        keep = ("present_feature", "position_features")
        extra = {k: v for k, v in kwargs.items() if k in keep}
        return NearestMLPExtractor(space, num_features, k=mlp_k, width=2 * kwargs.get("width", 32), **extra)
    return AttentionExtractor(space, num_features, family=family, **kwargs)


class TokenActorCritic(nn.Module):
    """Shared actor and critic over token sets, for batched trainers (TorchRL): any leading dims.

    ``actor(tokens (..., L, F)) -> logits (..., num_actions)`` and ``critic(tokens) -> (..., 1)``.
    The actor reads ``actor_kwargs`` (e.g. ``neighbours=7``: self + the 7 nearest agents, a local
    view). The critic has its own encoder (``critic_kwargs``; ``neighbours=None`` sees every agent,
    the centralised critic of MAPPO), or, with ``critic_kwargs=None``, shares the actor's (SB3's
    default): then one ``encode`` pass feeds both heads, a third of the encoder work of a central
    critic over twice the tokens. Heads are MLPs with ``net_arch`` hidden layers.
    """

    def __init__(
        self,
        num_features: int,
        num_actions: int,
        actor_kwargs: dict,
        critic_kwargs: dict | None,
        net_arch: tuple[int, ...] = (64,),
    ):
        super().__init__()
        self.num_features = num_features
        self.actor_encoder = token_encoder(num_features, **actor_kwargs)
        self.shared = critic_kwargs is None
        self.critic_encoder = (
            self.actor_encoder if self.shared else token_encoder(num_features, **critic_kwargs)
        )
        self.actor_head = _mlp(self.actor_encoder.features_dim, net_arch, num_actions)
        self.critic_head = _mlp(self.critic_encoder.features_dim, net_arch, 1)
        # Encoders run under autocast to this dtype when set (bf16: half the memory traffic of
        # the attention blocks); their outputs, the heads and so logits and values stay float32,
        # so PPO's probability ratios are not rounded.
        self.compute_dtype: torch.dtype | None = None

    def _encode(
        self, encoder: nn.Module, tokens: Tensor, checked: bool = True
    ) -> tuple[Tensor, tuple[int, ...]]:
        lead, (L, F) = tokens.shape[:-2], tokens.shape[-2:]
        if F != self.num_features:
            raise ValueError(
                f"tokens must have F = {self.num_features} features, got shape {tuple(tokens.shape)}"
            )
        dtype = self.compute_dtype
        # No cast cache: each weight is cast once per pass anyway, and a CUDA graph capture must
        # not keep casts made outside it.
        cast = dict(dtype=dtype or torch.bfloat16, enabled=dtype is not None, cache_enabled=False)
        with torch.autocast(tokens.device.type, **cast):
            x = encoder(tokens.reshape(-1, L * F), checked=checked)  # (M, d)
        return (x if dtype is None else x.float()), lead

    def encode(self, tokens: Tensor, checked: bool = True) -> Tensor:
        """The actor encoder's feature: (..., L, F) -> (..., d). Both heads read it when shared.
        ``checked=False``: tokens already checked, nothing read back from the device."""
        x, lead = self._encode(self.actor_encoder, tokens, checked)
        return x.reshape(*lead, -1)

    def actor(self, tokens: Tensor) -> Tensor:
        """(..., L, F) -> action logits (..., num_actions)."""
        return self.actor_head(self.encode(tokens))

    def critic(self, tokens: Tensor) -> Tensor:
        """(..., L, F) -> state value (..., 1)."""
        x, lead = self._encode(self.critic_encoder, tokens)
        return self.critic_head(x).reshape(*lead, 1)

    def local_view(self, tokens: Tensor) -> Tensor:
        """The tokens the actor reads: (..., L, F) -> (..., k + 1, F), self + the k = ``neighbours``
        nearest (padded slots last), or ``tokens`` itself when the actor sees every agent. The
        encoder's own selection keeps the same set, so ``actor(local_view(t)) == actor(t)``."""
        enc = self.actor_encoder
        if not isinstance(enc, AttentionExtractor):  # the nearest-k MLP selects inside its forward
            return tokens
        lead, (L, F) = tokens.shape[:-2], tokens.shape[-2:]
        flat = tokens.reshape(-1, L, F)  # (M, L, F)
        view, _ = enc.nearest(flat, real_mask(flat, enc.present_feature))  # (M, k+1 or L, F)
        return view.reshape(*lead, *view.shape[1:])


def _mlp(width: int, hidden: tuple[int, ...], out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(width, h), nn.Tanh()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, out))
