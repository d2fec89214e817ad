"""randaugment: RandAugment (Cubuk et al., NeurIPS 2020), every image its own ops."""

from __future__ import annotations

import torch
from torch import Tensor

from zoo.errors import ZooError
from zoo.image_ops import OPS, OpSlot
from zoo.registry import register

# The paper's 14 ops as torchvision's v2.RandAugment lists them: AutoAugment's without Invert.
RAND_OPS = tuple(op for op in OPS if op != "Invert")


@register("augment", "randaugment")
class RandAugment:
    """RandAugment (Cubuk et al. 2020): num_ops random ops at one shared magnitude (0-30).

    Two numbers replace AutoAugment's search. Each image draws its own ops (uniformly, with
    repeats) and signs, as torchvision's v2.RandAugment (31 magnitude bins) draws for one
    image; whole-batch ops on the device (zoo.image_ops), no host sync.
    """

    capturable = True  # device-side randomness, no host sync: fit for a CUDA graph

    def __init__(self, num_ops: int = 2, magnitude: int = 9):
        if num_ops < 0 or not 0 <= magnitude <= 30:
            raise ZooError(f"augment 'randaugment': need num_ops >= 0 and magnitude in [0, 30], "
                           f"got {num_ops}, {magnitude}")
        self.num_ops = num_ops
        self.step = OpSlot([(op, magnitude, 31, 1.0) for op in RAND_OPS])

    def draw(self, n: int, device: torch.device) -> list[Tensor]:
        """Each op's entry index [n] (see OpSlot) for n images."""
        return [self.step.draw(torch.randint(len(RAND_OPS), (n,), device=device))
                for _ in range(self.num_ops)]

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        for entry in self.draw(len(x), x.device):
            x = self.step.apply(x, entry)
        return x, y
