"""Reusable block buffers for the blockwise attention kernels (hfa.py, ha_pairs.py).

A kernel that loops over blocks of scores would otherwise allocate a fresh multi-MiB tensor for
every intermediate of every block. On Linux such allocations are mapped and unmapped by the C
allocator each time, so every first write page-faults: measured on a 2-core CPU, an elementwise
product into a fresh 2 MiB block took 2 ns per float against 0.3 ns into reused memory.
`kept` goes further for kernels called again and again (a training step calls one per layer,
forward and backward): its buffers outlive the call, so only the first call pays those faults.
"""

from __future__ import annotations

import math
import threading

import torch
from torch import Tensor


class Scratch:
    """Named flat buffers, grown on demand; `get` views the first elements, contiguous."""

    def __init__(self, dtype: torch.dtype, device: torch.device):
        self.dtype, self.device = dtype, device
        self.buffers: dict[str, Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...]) -> Tensor:
        """A contiguous tensor of `shape` over buffer `name`; earlier views of `name` alias it."""
        n = math.prod(shape)
        buf = self.buffers.get(name)
        if buf is None or buf.numel() < n:
            buf = torch.empty(n, dtype=self.dtype, device=self.device)
            self.buffers[name] = buf
        return buf[:n].view(shape)


_KEPT = threading.local()  # per thread: two threads running kernels at once must not share buffers


def kept(dtype: torch.dtype, device: torch.device) -> Scratch:
    """A `Scratch` that lives on between calls in this thread, on the CPU; a fresh one elsewhere
    (a GPU's caching allocator already reuses memory, and kept buffers would pin device memory).

    A caller must not return views of it: the next call overwrites them.
    """
    if device.type != "cpu":
        return Scratch(dtype, device)
    pool = getattr(_KEPT, "pool", None)
    if pool is None:
        pool = _KEPT.pool = {}
    key = (dtype, str(device))
    if key not in pool:
        pool[key] = Scratch(dtype, device)
    return pool[key]
