"""color_jitter: random brightness, contrast, saturation and hue, per image."""

from __future__ import annotations

import torch
from torch import Tensor

from zoo.errors import ZooError
from zoo.registry import register

# RGB -> YIQ (NTSC): Y is luma, I and Q span the chroma plane that a hue shift rotates.
YIQ = [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]]


@register("augment", "color_jitter")
class ColorJitter:
    """Scale brightness, contrast and saturation by 1 +- their amount; turn hue by +- hue.

    Each image draws its own factors (uniform), applied in that fixed order. hue is a
    fraction of a full turn (at most 0.5), done as a rotation of the YIQ chroma plane.
    """

    capturable = True  # device-side randomness, no host sync: fit for a CUDA graph

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4,
                 saturation: float = 0.4, hue: float = 0.0):
        if min(brightness, contrast, saturation) < 0 or not 0 <= hue <= 0.5:
            raise ZooError("augment 'color_jitter': brightness, contrast and saturation must be "
                           f">= 0 and hue in [0, 0.5], got {brightness}, {contrast}, "
                           f"{saturation}, {hue}")
        self.brightness, self.contrast, self.saturation, self.hue = (
            brightness, contrast, saturation, hue)
        self.yiq = torch.tensor(YIQ)
        self.rgb = torch.linalg.inv(self.yiq)

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        B = x.shape[0]

        def factor(amount: float) -> Tensor:  # [B, 1, 1, 1], uniform in [1 - a, 1 + a], >= 0
            u = torch.rand(B, 1, 1, 1, device=x.device, dtype=x.dtype)
            return (1 + amount * (2 * u - 1)).clamp_(min=0)

        def gray(x: Tensor) -> Tensor:  # [B, 1, H, W] luma (a 1-channel image is its own)
            if x.shape[1] != 3:
                return x
            return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]

        if self.brightness:
            x = (x * factor(self.brightness)).clamp_(0, 1)
        if self.contrast:
            mean = gray(x).mean((1, 2, 3), keepdim=True)
            x = torch.lerp(mean, x, factor(self.contrast)).clamp_(0, 1)
        if x.shape[1] != 3:
            return x, y
        if self.saturation:
            x = torch.lerp(gray(x), x, factor(self.saturation)).clamp_(0, 1)
        if self.hue:
            if self.yiq.device != x.device:  # moved once, not per batch
                self.yiq, self.rgb = self.yiq.to(x.device), self.rgb.to(x.device)
            angle = (2 * torch.rand(B, 1, 1, device=x.device) - 1) * (2 * torch.pi * self.hue)
            c, s = angle.cos(), angle.sin()
            luma, i, q = torch.einsum("ij,bjhw->bihw", self.yiq.to(x.dtype), x).unbind(1)
            yiq = torch.stack([luma, c * i - s * q, s * i + c * q], 1)
            x = torch.einsum("ij,bjhw->bihw", self.rgb.to(x.dtype), yiq).clamp_(0, 1)
        return x, y
