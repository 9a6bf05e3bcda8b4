"""Atomic checkpoints and run folders shared by the training entry points.

A checkpoint is written to a temporary file beside its final name and moved into place with
``os.replace``, so a run killed mid-write keeps its previous checkpoint intact.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save ``obj`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def load(path: str | os.PathLike) -> Any:
    """Load a checkpoint written by :func:`save_atomic` (our own files: full unpickling is fine)."""
    return torch.load(path, map_location="cpu", weights_only=False)


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write JSON atomically (dataclasses are converted)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)
    return path
