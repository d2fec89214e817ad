"""cutmix: CutMix (Yun et al., ICCV 2019), a random box pasted from a partner per image."""

from __future__ import annotations

import torch
from torch import Tensor

from zoo.errors import ZooError
from zoo.registry import register


@register("augment", "cutmix")
class CutMix:
    """CutMix (Yun et al. 2019): paste a box from a random partner into each image.

    Each image (with probability p) draws lam ~ Beta(alpha, alpha) and a box of area
    (1 - lam) with the image's aspect ratio, centred anywhere and clipped to the image;
    targets mix by the box's true area, so rows still sum to 1.
    """

    def __init__(self, alpha: float = 1.0, p: float = 1.0):
        if alpha <= 0 or not 0 <= p <= 1:
            raise ZooError(f"augment 'cutmix': need alpha > 0 and p in [0, 1], got {alpha}, {p}")
        self.alpha, self.p = alpha, p

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        B, C, H, W = x.shape
        a = torch.full((B,), self.alpha, device=x.device)  # no validation: it would sync
        lam = torch.distributions.Beta(a, a, validate_args=False).sample()
        cut = (1 - lam).sqrt() * (torch.rand(B, device=x.device) < self.p)  # side / image side
        u = torch.rand(B, 2, device=x.device)
        cy, cx = u[:, 0] * H, u[:, 1] * W
        top, bottom = (cy - cut * H / 2).round(), (cy + cut * H / 2).round()
        left, right = (cx - cut * W / 2).round(), (cx + cut * W / 2).round()
        r = torch.arange(H, device=x.device).view(1, H, 1)
        c = torch.arange(W, device=x.device).view(1, 1, W)
        box = ((r >= top.view(B, 1, 1)) & (r < bottom.view(B, 1, 1))
               & (c >= left.view(B, 1, 1)) & (c < right.view(B, 1, 1)))  # [B, H, W]
        partner = torch.randperm(B, device=x.device)
        x = torch.where(box.unsqueeze(1), x[partner], x)
        kept = 1 - box.flatten(1).float().mean(1, keepdim=True)  # true share of own image
        y = torch.lerp(y[partner], y, kept.to(y.dtype))
        return x, y
