"""One rule for every Linear of a model, the plugins' layers included."""

from __future__ import annotations

from torch import nn


def init_linears(module: nn.Module, scheme: str = "trunc_normal") -> None:
    """Every nn.Linear inside `module`: weights from a truncated normal of std 0.02 (timm,
    DeiT) or Xavier-normal (`xavier`, Lee et al.'s models), biases zero."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            if scheme == "xavier":
                nn.init.xavier_normal_(m.weight)
            else:
                nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
