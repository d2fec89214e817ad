"""cutmix: CutMix (Yun et al., ICCV 2019), a random box pasted from a partner per image."""

from __future__ import annotations

import torch
from torch import Tensor

from zoo.errors import ZooError
from zoo.image_ops import box_mask
from zoo.registry import register


@register("augment", "cutmix")
class CutMix:
    """CutMix (Yun et al. 2019): paste a box from a random partner into each image.

    Each image (with probability p) draws lam ~ Beta(alpha, alpha) and a box of area
    (1 - lam) with the image's aspect ratio, centred anywhere and clipped to the image;
    targets mix by the box's true area, so rows still sum to 1.
    """

    capturable = True  # device-side randomness, no host sync: fit for a CUDA graph

    def __init__(self, alpha: float = 1.0, p: float = 1.0):
        if alpha <= 0 or not 0 <= p <= 1:
            raise ZooError(f"augment 'cutmix': need alpha > 0 and p in [0, 1], got {alpha}, {p}")
        self.alpha, self.p = alpha, p

    @staticmethod
    def box(lam: Tensor, height: int, width: int) -> Tensor:
        """bool [n, H, W]: for each lam [n], a box of area about (1 - lam), clipped to the image.

        Its sides are sqrt(1 - lam) times the image's, its centre uniform over the image;
        lam 1 gives no box. Shared with mixup_cutmix, which draws one box per batch.
        """
        n = lam.shape[0]
        cut = (1 - lam).sqrt()  # side / image side
        u = torch.rand(n, 2, device=lam.device)
        cy, cx = u[:, 0] * height, u[:, 1] * width
        top, bottom = (cy - cut * height / 2).round(), (cy + cut * height / 2).round()
        left, right = (cx - cut * width / 2).round(), (cx + cut * width / 2).round()
        return box_mask(top, bottom, left, right, height, width)

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        B, C, H, W = x.shape
        a = torch.full((B,), self.alpha, device=x.device)  # no validation: it would sync
        lam = torch.distributions.Beta(a, a, validate_args=False).sample()
        lam = torch.where(torch.rand(B, device=x.device) < self.p, lam, 1.0)
        box = self.box(lam, H, W)  # [B, H, W]
        partner = torch.randperm(B, device=x.device)
        x = torch.where(box.unsqueeze(1), x[partner], x)
        kept = 1 - box.flatten(1).float().mean(1, keepdim=True)  # true share of own image
        y = torch.lerp(y[partner], y, kept.to(y.dtype))
        return x, y
