"""torchrun / DistributedDataParallel helpers shared by ``hyperagents fit`` and ``hyperagents lm``.

Launched with ``torchrun --nproc-per-node K -m training.cli fit ...`` (``WORLD_SIZE`` > 1 in the
environment), a command joins one process group: gloo on CPU, NCCL on CUDA. Every rank draws the
same global batch from the same seeded generator and trains on its contiguous shard of it, so the
all-reduced gradient is the single-process one (up to float summation order), and a checkpoint
holds nothing that depends on the world size: it resumes at any number of processes. Only rank 0
opens the run folder, prints and writes; the other ranks get a :class:`WorkerRun`, which touches
no file. Without ``WORLD_SIZE`` > 1 every helper is a no-op and a command runs as it always did.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def requested() -> bool:
    """True when launched by torchrun (or by hand) with WORLD_SIZE > 1."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """The rank that owns the run folder and the console."""
    return rank() == 0


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def rank_device(device: torch.device) -> torch.device:
    """One GPU per local rank under torchrun; CPU (and a single process) keep ``device``."""
    if device.type == "cuda" and requested():
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    return device


@contextlib.contextmanager
def session(device: torch.device):
    """Join the process group for the block when WORLD_SIZE > 1 (env:// rendezvous); leave it after."""
    if not requested() or active():
        yield
        return
    dist.init_process_group(backend_for(device))
    try:
        yield
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


def shard(n: int) -> slice:
    """This rank's contiguous part of n items (sizes differ by at most one; all of them in one process)."""
    k, w = rank(), world_size()
    return slice(k * n // w, (k + 1) * n // w)


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sum over ranks, as float64 on the CPU (gloo) or the rank's GPU (NCCL)."""
    if not active():
        return list(values)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (any picklable object, tensors included)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class _Forward(nn.Module):
    """Routes DDP's forward to one of the model's methods, so DDP prepares its gradient hooks for it."""

    def __init__(self, model: nn.Module, method: str):
        super().__init__()
        self.model, self.method = model, method

    def forward(self, *args, **kwargs):
        return getattr(self.model, self.method)(*args, **kwargs)


def wrap(model: nn.Module, device: torch.device, method: str = "forward") -> nn.Module:
    """``model.<method>`` behind DistributedDataParallel in a group, else the bound method itself.

    The caller keeps ``model`` (unwrapped) for checkpoints and evaluation.
    """
    if not active():
        return getattr(model, method)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(_Forward(model, method), device_ids=ids)


class WorkerRun:
    """Stands in for :class:`training.runs.Run` on ranks other than 0: same polling API, no files."""

    path = None
    resumed = False

    def __init__(self):
        self.stop_requested: str | None = None
        self._handlers = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def _on_signal(self, signum, frame) -> None:
        if self.stop_requested:
            raise KeyboardInterrupt
        self.stop_requested = signal.Signals(signum).name

    def save_torch(self, obj: Any, step: int, state: dict | None = None) -> None:
        return None

    def update_metrics(self, updates: Any) -> dict:
        return {}

    def exit_interrupted(self, step: int) -> None:
        raise SystemExit(130)  # rank 0 reports the stop and where its checkpoint is

    def close(self) -> None:
        for sig, handler in self._handlers.items():
            signal.signal(sig, handler)

    def __enter__(self) -> WorkerRun:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


ABORT = "__rank0_could_not_open_the_run__"


@contextlib.contextmanager
def open_on_rank0(open_run):
    """``open_run()`` on rank 0, a :class:`WorkerRun` elsewhere; if rank 0 fails, every rank stops."""
    if not active():
        with open_run() as run:
            yield run
        return
    if is_main():
        try:
            ctx = open_run()
            run = ctx.__enter__()
        except BaseException:
            broadcast(ABORT)
            raise
        broadcast("ok")
        with contextlib.ExitStack() as stack:
            stack.push(ctx.__exit__)
            yield run
        return
    if broadcast(None) == ABORT:
        sys.exit(1)  # rank 0 printed why
    with WorkerRun() as run:
        yield run


def stop_everywhere(local_stop: Any, extra: list[float] | None = None) -> tuple[bool, list[float]]:
    """One all-reduce: (did any rank get a stop signal, the element-wise sums of ``extra``)."""
    sums = all_sum([float(bool(local_stop)), *(extra or [])])
    return sums[0] > 0, sums[1:]
