"""Shared test set-up: headless pygame and one CPU thread (the suite runs on 2-core machines)."""

import os

import torch

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
torch.set_num_threads(1)
