"""Reusable block buffers for the blockwise attention kernels (hfa.py, ha_pairs.py).

A kernel that loops over blocks of scores would otherwise allocate a fresh multi-MiB tensor for
every intermediate of every block. On Linux such allocations are mapped and unmapped by the C
allocator each time, so every first write page-faults: measured on a 2-core CPU, an elementwise
product into a fresh 2 MiB block took 2 ns per float against 0.3 ns into reused memory.
"""

from __future__ import annotations

import math

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
