"""randaugment: RandAugment (Cubuk et al., NeurIPS 2020) through torchvision, per chunk of images."""

from __future__ import annotations

from torch import Tensor

from zoo.data import per_chunk
from zoo.errors import ZooError
from zoo.registry import register


@register("augment", "randaugment")
class RandAugment:
    """RandAugment (Cubuk et al. 2020): num_ops random ops at one shared magnitude (0-30).

    Two numbers replace AutoAugment's search. As for autoaugment, torchvision draws the ops
    once per call, so each `chunk` images of the shuffled batch get their own draw.
    """

    def __init__(self, num_ops: int = 2, magnitude: int = 9, chunk: int = 16):
        from torchvision.transforms import v2

        if num_ops < 0 or not 0 <= magnitude <= 30 or chunk < 1:
            raise ZooError(f"augment 'randaugment': need num_ops >= 0, magnitude in [0, 30] and "
                           f"chunk >= 1, got {num_ops}, {magnitude}, {chunk}")
        self.transform = v2.RandAugment(num_ops=num_ops, magnitude=magnitude, num_magnitude_bins=31)
        self.chunk = chunk

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return per_chunk(self.transform, x, self.chunk), y
