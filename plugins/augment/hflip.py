"""hflip: mirror images left to right, each with its own coin."""

from __future__ import annotations

import torch
from torch import Tensor

from zoo.errors import ZooError
from zoo.registry import register


@register("augment", "hflip")
class HFlip:
    """Flip each image horizontally with probability p."""

    capturable = True  # device-side randomness, no host sync: fit for a CUDA graph

    def __init__(self, p: float = 0.5):
        if not 0 <= p <= 1:
            raise ZooError(f"augment 'hflip': p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        flip = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < self.p
        return torch.where(flip, x.flip(3), x), y
