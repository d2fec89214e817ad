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
    """RandAugment (Cubuk et al. 2020): num_ops random ops at one shared magnitude out of scale.

    Two numbers replace AutoAugment's search. Each image draws its own ops (uniformly, with
    repeats) and signs, as torchvision's v2.RandAugment draws for one image; whole-batch ops
    on the device (zoo.image_ops), no host sync.

    An op runs at magnitude / scale of its full strength (bins 0..scale). scale 30 is
    torchvision's v2.RandAugment (num_magnitude_bins 31; magnitude 9 is 30%); scale 10 is
    timm's (timm.data.auto_augment, _LEVEL_DENOM 10), so timm's `rand-m9` as DeiT and CCT
    use it (90%) is {magnitude: 9, scale: 10}, the same as magnitude 27 on scale 30. The
    ops and full strengths stay torchvision's (closest to timm's `inc1` ops; no `mstd`).
    """

    capturable = True  # device-side randomness, no host sync: fit for a CUDA graph

    def __init__(self, num_ops: int = 2, magnitude: int = 9, scale: int = 30):
        if num_ops < 0 or scale < 1 or not 0 <= magnitude <= scale:
            raise ZooError(f"augment 'randaugment': need num_ops >= 0, scale >= 1 and magnitude "
                           f"in [0, {scale}] (timm's scale is 10, torchvision's 30), got num_ops "
                           f"{num_ops}, magnitude {magnitude}, scale {scale}")
        self.num_ops = num_ops
        self.step = OpSlot([(op, magnitude, scale + 1, 1.0) for op in RAND_OPS])

    def draw(self, n: int, device: torch.device) -> list[Tensor]:
        """Each op's entry index [n] (see OpSlot) for n images."""
        return [self.step.draw(torch.randint(len(RAND_OPS), (n,), device=device))
                for _ in range(self.num_ops)]

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        for entry in self.draw(len(x), x.device):
            x = self.step.apply(x, entry)
        return x, y
