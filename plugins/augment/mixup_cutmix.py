"""mixup_cutmix: mixup or CutMix, one of the two per batch, never both (timm's Mixup switch)."""

from __future__ import annotations

import torch
from torch import Tensor

from zoo.errors import ZooError
from zoo.registry import register, registry


@register("augment", "mixup_cutmix")
class MixupCutMix:
    """mixup or CutMix per batch, as timm's Mixup (mode 'batch') switches them for DeiT and CCT.

    Independent `mixup` and `cutmix` entries (p 0.5 each) mix a quarter of the images twice;
    DeiT (Touvron et al. 2021: mixup_alpha 0.8, cutmix_alpha 1.0, switch_prob 0.5) and CCT
    (Hassani et al. 2021) apply exactly one. Per batch, with probability p: CutMix with probability
    switch_prob, else mixup, with lam ~ Beta(alpha, alpha) of the chosen one; the batch mixes
    with its reverse x.flip(0); CutMix's lam becomes the box's true share (timm's correct_lam)
    and the targets mix with the same lam as the pixels (timm.data.mixup: Mixup, mixup_target).
    """

    capturable = True  # device-side randomness, no host sync: fit for a CUDA graph

    def __init__(self, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0,
                 switch_prob: float = 0.5, p: float = 1.0):
        if min(mixup_alpha, cutmix_alpha) <= 0 or not (0 <= switch_prob <= 1 and 0 <= p <= 1):
            raise ZooError(f"augment 'mixup_cutmix': need alphas > 0 and switch_prob, p in "
                           f"[0, 1], got {mixup_alpha}, {cutmix_alpha}, {switch_prob}, {p}")
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.switch_prob, self.p = switch_prob, p
        # CutMix's box, shared rather than copied (plugin files do not import each other)
        self.box = registry("augment").get("cutmix", "augment 'mixup_cutmix'").obj.box

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        H, W = x.shape[-2:]
        u = torch.rand(2, device=x.device)
        cut = u[0] < self.switch_prob  # this batch's op, on the device: True is CutMix
        alpha = torch.where(cut, self.cutmix_alpha, self.mixup_alpha).view(1)
        lam = torch.distributions.Beta(alpha, alpha, validate_args=False).sample()  # [1]
        lam = torch.where(u[1] < self.p, lam, 1.0)  # 1: the batch stays as it is
        box = self.box(lam, H, W)  # [1, H, W], empty at lam 1
        own = torch.where(cut, (~box).float(), lam.view(1, 1, 1))  # each pixel's own share
        lam = torch.where(cut, own.mean(), lam)  # CutMix: the box's true area
        x = torch.lerp(x.flip(0), x, own.unsqueeze(1).to(x.dtype))  # shares 0 and 1 are exact
        y = torch.lerp(y.flip(0), y, lam.to(y.dtype))
        return x, y
