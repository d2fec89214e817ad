"""Stochastic depth."""

from __future__ import annotations

from torch import Tensor, nn


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drop a sample's whole residual branch with prob p.

    Kept samples are scaled by 1/(1 - p), so the expectation is unchanged. The scale goes
    into the [B, 1, ...] mask first, so x is read once (as timm's `drop_path`); in bf16 the
    factor 1/(1 - p) is rounded to bf16 like x.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty(x.shape[0], *(1,) * (x.ndim - 1)).bernoulli_(keep).div_(keep)
        return x * mask  # [B, 1, ...] broadcast: one pass over x

    def extra_repr(self) -> str:
        return f"p={self.p:.3f}"
