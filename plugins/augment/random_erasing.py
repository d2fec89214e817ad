"""random_erasing: Random Erasing (Zhong et al., AAAI 2020), a random box per image."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from zoo.errors import ZooError
from zoo.image_ops import box_mask
from zoo.registry import register


@register("augment", "random_erasing")
class RandomErasing:
    """Random Erasing (Zhong et al. 2020): blank out a random box of each image with prob. p.

    The box covers min_area to max_area of the image, its aspect ratio log-uniform within
    1/max_aspect to max_aspect (the paper's 0.3 to 3.3), and it is filled with uniform noise
    (value: random, as in the paper) or black (zero), or with the constant colour `fill`
    (one value per channel in [0, 1]; Lee et al. fill with the dataset mean written into
    the normalised image, which is mean + mean * std here, before normalisation). A box
    taller or wider than the image is clipped to it rather than redrawn.
    """

    capturable = True  # device-side randomness, no host sync: fit for a CUDA graph

    def __init__(self, p: float = 0.5, min_area: float = 0.02, max_area: float = 0.33,
                 max_aspect: float = 3.3, value: str = "random", fill: list[float] | None = None):
        if not (0 <= p <= 1 and 0 < min_area <= max_area <= 1 and max_aspect >= 1):
            raise ZooError("augment 'random_erasing': need p in [0, 1], 0 < min_area <= max_area "
                           f"<= 1 and max_aspect >= 1, got {p}, {min_area}, {max_area}, "
                           f"{max_aspect}")
        if value not in ("random", "zero"):
            raise ZooError(f"augment 'random_erasing': value must be random or zero, got '{value}'")
        self.p, self.min_area, self.max_area = p, min_area, max_area
        if fill is not None and not all(0 <= v <= 1 for v in fill):
            raise ZooError(f"augment 'random_erasing': fill must be values in [0, 1], got {fill}")
        self.max_aspect, self.value, self.fill = max_aspect, value, fill

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        B, C, H, W = x.shape
        u = torch.rand(B, 6, device=x.device)
        area = H * W * (self.min_area + (self.max_area - self.min_area) * u[:, 0])
        aspect = torch.exp((2 * u[:, 1] - 1) * math.log(self.max_aspect))
        h = (area * aspect).sqrt().round().clamp(1, H)
        w = (area / aspect).sqrt().round().clamp(1, W)
        top = (u[:, 2] * (H - h + 1)).floor()
        left = (u[:, 3] * (W - w + 1)).floor()
        box = box_mask(top, top + h, left, left + w, H, W) & (u[:, 4] < self.p).view(B, 1, 1)
        if self.fill is not None:
            fill = torch.tensor(self.fill, device=x.device, dtype=x.dtype).view(1, -1, 1, 1).expand_as(x)
        else:
            fill = torch.rand_like(x) if self.value == "random" else torch.zeros_like(x)
        return torch.where(box.unsqueeze(1), fill, x), y
