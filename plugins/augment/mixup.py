"""mixup: mixup (Zhang et al., ICLR 2018), per-image mixing weights."""

from __future__ import annotations

import torch
from torch import Tensor

from zoo.errors import ZooError
from zoo.registry import register


@register("augment", "mixup")
class Mixup:
    """mixup (Zhang et al. 2018): blend each image and its target with a random partner's.

    Each image (with probability p) takes weight lam ~ Beta(alpha, alpha) against another
    image of the batch; targets mix with the same weights, so rows still sum to 1. The
    default alpha 0.8 is DeiT's (Touvron et al. 2021) for ViTs trained from scratch.
    """

    capturable = True  # device-side randomness, no host sync: fit for a CUDA graph

    def __init__(self, alpha: float = 0.8, p: float = 1.0):
        if alpha <= 0 or not 0 <= p <= 1:
            raise ZooError(f"augment 'mixup': need alpha > 0 and p in [0, 1], got {alpha}, {p}")
        self.alpha, self.p = alpha, p

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        B = x.shape[0]
        a = torch.full((B,), self.alpha, device=x.device)  # no validation: it would sync
        lam = torch.distributions.Beta(a, a, validate_args=False).sample()
        lam = torch.where(torch.rand(B, device=x.device) < self.p, lam, 1.0).to(x.dtype)
        partner = torch.randperm(B, device=x.device)
        x = torch.lerp(x[partner], x, lam.view(B, 1, 1, 1))
        y = torch.lerp(y[partner], y, lam.view(B, 1).to(y.dtype))
        return x, y
