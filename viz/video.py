"""GIF / MP4 export of rendered frames (imageio)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def save_video(frames: Sequence[np.ndarray], path: str | os.PathLike, fps: int = 20) -> Path:
    """Write (H, W, 3) uint8 frames to ``path`` (.gif, or .mp4 with imageio-ffmpeg installed).

    The file is written next to its final name and renamed into place, so an interrupted run never
    leaves a truncated video behind.
    """
    import imageio.v3 as iio

    path = Path(path)
    if not frames:
        raise ValueError("frames must hold at least one frame")
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise ValueError(f"path must end in .gif or .mp4, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{suffix}")
    stack = np.stack([np.asarray(f, dtype=np.uint8) for f in frames])
    if suffix == ".gif":
        iio.imwrite(tmp, stack, duration=1000 / fps, loop=0)
    else:
        try:
            iio.imwrite(tmp, stack, fps=fps, codec="libx264", macro_block_size=1)
        except Exception as err:  # imageio raises various errors when no ffmpeg backend is present
            raise RuntimeError("writing .mp4 needs imageio-ffmpeg: pip install 'hyperagents[video]'") from err
    os.replace(tmp, path)
    return path
