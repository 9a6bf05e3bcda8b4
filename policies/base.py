"""Shared pieces of the attention modules: the scores record, argument checks, masks.

Shapes use the legend of `policies/__init__.py`: B batch, L tokens, d width, H heads,
A HFA factors, n HA order, d_h head width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

KINDS = ("linear", "softmax")


@dataclass(frozen=True)
class AttentionScores:
    """The interaction strengths a module used for one forward pass.

    Attributes:
        kind: "linear" or "softmax", the kind of the module that made them.
        scores: SA and HFA (B, H, L, L); HA (B, H, L, *[L] * (n - 1)), one key axis per key.
            Post-softmax weights for softmax modules, raw multilinear scores for linear ones.
        logits: softmax modules only: the pre-softmax scores, same shape as `scores`.
        factors: HFA only: the per-factor raw scores (B, H, A, L, L) whose product forms the logits.

    Entries that involve a padded token, or a key after its query when causal, are zero.
    """

    kind: str
    scores: Tensor
    logits: Tensor | None = None
    factors: Tensor | None = None


# ---------------------------------------------------------------- argument checks


def check_choice(name: str, value: object, allowed: tuple) -> None:
    """Raise ValueError unless `value` is one of `allowed`."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def check_int(name: str, value: object, minimum: int) -> int:
    """Return `value` if it is an int >= minimum; raise TypeError/ValueError naming `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value


def check_rank(rank: object, kind: str) -> int | None:
    """`rank` of a low-rank linear model: None (full) or an int >= 1, and only with kind='linear'."""
    if rank is None:
        return None
    if kind != "linear":
        raise ValueError(
            f"rank needs kind='linear' (softmax attention sets its width by heads), got kind={kind!r}"
        )
    return check_int("rank", rank, 1)


def interaction(module) -> Tensor:
    """A linear SA / HFA module's C, (H, [A,] d, d): its free parameter, or W_Q W_K^T when low-rank."""
    return module.C if module.rank is None else module.W_Q @ module.W_K.transpose(-1, -2)


def domain_scores(module, P: Tensor | None) -> Tensor:
    """p_mu^T C p_nu for every pair of domain elements, (H, [A,] M, M), never forming C when low-rank.

    P (M, d): every domain element's embedding; None means one-hot (P = I), which skips the matmuls.
    """
    if module.kind != "linear":
        raise TypeError("domain tables need kind='linear'")
    if module.rank is None:
        return module.C if P is None else P @ module.C @ P.T
    Q, K = (W if P is None else P @ W for W in (module.W_Q, module.W_K))  # (H, [A,] M, r)
    return Q @ K.transpose(-1, -2)  # O(M^2 r)


def check_divisible(dim: int, by: int, what: str) -> int:
    """Return dim // by, raising ValueError when `by` does not divide `dim`."""
    if dim % by:
        raise ValueError(f"dim={dim} must be divisible by {what}={by}")
    return dim // by


def check_input(x: Tensor, mask: Tensor | None, dim: int) -> Tensor:
    """Validate `x: (B, L, dim)` and `mask: (B, L) bool | None`; return the mask (all True if None).

    NaN or inf in a real (unmasked) token is an error; padding may hold anything.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point torch.Tensor of shape (B, L, dim={dim}), got {_desc(x)}")
    if x.dim() != 3 or x.shape[-1] != dim:
        raise ValueError(f"x must have shape (B, L, dim={dim}), got {tuple(x.shape)}")
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    elif not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool torch.Tensor of shape (B, L) or None, got {_desc(mask)}")
    elif mask.shape != x.shape[:2]:
        raise ValueError(
            f"mask must have shape (B, L) = {tuple(x.shape[:2])} like x, got {tuple(mask.shape)}"
        )
    if not torch.isfinite(x[mask]).all():
        raise ValueError("x must be finite at unmasked tokens, got NaN or inf")
    return mask


def _desc(obj: object) -> str:
    if isinstance(obj, Tensor):
        return f"Tensor(dtype={obj.dtype}, shape={tuple(obj.shape)})"
    return type(obj).__name__


def attend_prelude(module, x: Tensor, mask: Tensor | None, first_only: bool, linear_kernel):
    """Shared start of SA's and HFA's unchecked ``attend``: zero the padding, then run the paths
    that need no special query-0 kernel (linear, causal softmax) and slice token 0 if asked.

    Returns (x with padding zeroed, out), out None when the caller's non-causal softmax runs.
    """
    if mask is not None:
        x = zero_padding(x, mask)
    if module.kind == "linear":
        out = linear_kernel(x, module.interaction(), module.W_V, module.causal)
    elif module.causal:  # not used by the extractor: the full pass, then slice
        full = x.new_ones(x.shape[:2], dtype=torch.bool) if mask is None else mask
        out = module._softmax(x, full, mask is not None, False)
    else:
        return x, None
    return x, out[:, :1] if first_only else out


# ---------------------------------------------------------------- memory budgets

# Elements of one block of scores in the blockwise softmax kernels. On the CPU a block should stay
# in the per-core L2 cache through the several elementwise passes that follow its matmul; on a GPU
# it should be big enough to fill the device and amortise launches, yet a small share of free memory.
CPU_BLOCK_ELEMENTS = 2**17
CUDA_BLOCK_ELEMENTS = 2**23  # H200, HFA A = 2, L = 4096, B = 8, forward + backward: 2^22 scores per
# block 34 ms and 481 MiB, 2^23 30 ms and 641 MiB, 2^24 26 ms and 961 MiB; from 2^21 down launches dominate


def free_bytes(device: torch.device) -> int:
    """Bytes a new tensor on `device` may take: CUDA's free plus cached-but-unused memory, or the
    host's MemAvailable (8 GiB if unreadable)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 8 * 2**30


def block_elements(device: torch.device, itemsize: int, live: int, scale: int = 1) -> int:
    """Scores per block: `scale` times the device's cache- or occupancy-sized target, capped so that
    `live` block-sized tensors of `itemsize` bytes take at most a quarter of the free memory."""
    target = scale * (CUDA_BLOCK_ELEMENTS if device.type == "cuda" else CPU_BLOCK_ELEMENTS)
    if live * itemsize * target <= 2**26:  # 64 MiB fits anywhere: skip asking the device
        return target
    return max(1, min(target, free_bytes(device) // (4 * live * itemsize)))


EXP_FLOOR = -60.0  # shifted scores below this get probability exactly 0 (see exp_shifted)


def exp_shifted(t: Tensor, inplace: bool = True) -> Tensor:
    """exp(t) for t <= 0, with t <= EXP_FLOOR sent to exactly 0.

    Such terms weigh under e^-60 ~ 1e-26 against the row's max, far below float32 resolution, but
    left alone they become subnormal floats, which make every later multiply on the CPU tens of
    times slower (measured: a block's elementwise product went from 30 us to 1 ms).
    """
    if inplace:
        return F.threshold_(t, EXP_FLOOR, -math.inf).exp_()
    return F.threshold(t, EXP_FLOOR, -math.inf).exp()


# ---------------------------------------------------------------- masks


def zero_padding(x: Tensor, mask: Tensor) -> Tensor:
    """(B, L, d) with padded tokens set to zero, so multilinear scores and values vanish there."""
    return x.masked_fill(~mask[..., None], 0.0)


def pair_mask(mask: Tensor, causal: bool) -> Tensor:
    """(B, L, L) bool: True where query i and key j are both real (and j <= i if causal)."""
    L = mask.shape[1]
    ok = mask[:, :, None] & mask[:, None, :]
    if causal:
        ok = ok & torch.ones(L, L, dtype=torch.bool, device=mask.device).tril()
    return ok


def key_mask(mask: Tensor, causal: bool) -> Tensor:
    """(B, L, L) bool: which keys j a query i may attend to under softmax.

    Same as `pair_mask`, except that padded queries may attend everywhere: their rows then
    never are empty (no NaN from softmax), and their outputs are zeroed afterwards anyway.
    """
    return pair_mask(mask, causal) | ~mask[:, :, None]
