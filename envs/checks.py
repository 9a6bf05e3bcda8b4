"""Argument checks the envs share: a TypeError for a value of the wrong type, a ValueError for one
out of range, each naming the argument and what it accepts.

``policies/base.py`` keeps its own ``check_int`` with the same contract for the models: envs and
policies may not import each other (DESIGN.md), and a third package for two small functions would
cost more than it saves. These accept numpy integers too, since the PettingZoo face hands numpy
values around.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch


def is_int(value: object) -> bool:
    """True for a Python or numpy integer, False for a bool (which Python counts as an int)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_int(name: str, value: object, minimum: int | None = None) -> int:
    """``value`` as an int; TypeError unless it is an integer, ValueError if it is below ``minimum``."""
    wanted = "an int" if minimum is None else f"an int >= {minimum}"
    if not is_int(value):
        raise TypeError(f"{name} must be {wanted}, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
    return int(value)


def check_real(
    name: str, value: object, low: float = 0.0, high: float = math.inf, *, open_low: bool = False
) -> float:
    """``value`` as a float in [low, high], or (low, high] with ``open_low``; TypeError unless it is a
    real number, ValueError outside the range. NaN is always refused, and so is infinity when
    ``high`` is (a finite number is asked for)."""
    if high == math.inf:
        wanted = f"a finite number {'>' if open_low else '>='} {low:g}"
    else:
        wanted = f"a number in {'(' if open_low else '['}{low:g}, {high:g}]"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {wanted}, got {type(value).__name__} {value!r}")
    above = low < value if open_low else low <= value
    below = value < high if high == math.inf else value <= high
    if not (above and below):  # a NaN fails every comparison
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
    return float(value)


def parse_count(num_agents: object, name: str = "num_agents") -> tuple[int, int]:
    """An agent count, an int or a (low, high) pair, as (low, high) with 1 <= low <= high.

    TypeError for anything but an int or a pair of ints; ValueError for a count below 1 or
    low > high.
    """
    if is_int(num_agents):
        low = high = int(num_agents)
    elif isinstance(num_agents, (tuple, list)) and len(num_agents) == 2 and all(map(is_int, num_agents)):
        low, high = int(num_agents[0]), int(num_agents[1])
    else:
        raise TypeError(f"{name} must be an int or a (low, high) pair of ints, got {num_agents!r}")
    if low < 1 or high < low:
        raise ValueError(f"{name} must satisfy 1 <= low <= high, got {num_agents!r}")
    return low, high


def check_device(device: object, accepted: str = "'cpu', 'cuda' or 'cuda:<index>'") -> torch.device:
    """``device`` as a torch.device; ValueError naming ``device`` (and the ``accepted`` names) for a
    name torch does not know or a GPU this machine does not have (torch itself would fail later,
    with an AssertionError)."""
    try:
        dev = torch.device(device)  # type: ignore[arg-type]
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be {accepted}, got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(dev)!r} asked for, but this torch sees no CUDA GPU; use --device cpu")
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {str(dev)!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {str(dev)!r} asked for, but MPS is not available; use --device cpu")
    return dev
