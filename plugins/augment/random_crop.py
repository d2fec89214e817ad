"""random_crop: pad, then crop back to size at a random offset, per image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.errors import ZooError
from zoo.registry import register


@register("augment", "random_crop")
class RandomCrop:
    """Pad each image by `padding` pixels and crop it back at its own random offset.

    The classic CIFAR augmentation (padding 4). `mode` fills the border by mirroring the
    image (reflect) or with black (zero).
    """

    capturable = True  # device-side randomness, no host sync: fit for a CUDA graph

    def __init__(self, img_size: int, padding: int = 4, mode: str = "reflect"):
        if mode not in ("reflect", "zero"):
            raise ZooError(f"augment 'random_crop': mode must be reflect or zero, got '{mode}'")
        if padding < 0 or (mode == "reflect" and padding >= img_size):
            raise ZooError(f"augment 'random_crop': padding must be >= 0 (and below img_size "
                           f"{img_size} to reflect), got {padding}")
        self.padding, self.mode = padding, mode

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        p = self.padding
        if p == 0:
            return x, y
        B, C, H, W = x.shape
        padded = F.pad(x, (p, p, p, p), mode="reflect" if self.mode == "reflect" else "constant")
        Wp = W + 2 * p
        top = torch.randint(0, 2 * p + 1, (B, 1, 1), device=x.device)
        left = torch.randint(0, 2 * p + 1, (B, 1, 1), device=x.device)
        rows = top + torch.arange(H, device=x.device).view(1, H, 1)
        cols = left + torch.arange(W, device=x.device).view(1, 1, W)
        idx = (rows * Wp + cols).view(B, 1, H * W).expand(B, C, H * W)  # into the padded plane
        out = padded.flatten(2).gather(2, idx).view(B, C, H, W)
        return out, y
