"""Position tables over a patch grid, resized when the grid changes (another image size)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor


def resize_grid(table: Tensor, size: tuple[int, int]) -> Tensor:
    """Bicubic resize of a [gh, gw, C] table to `size`, so learned positions follow the image size.

    As DINO's `interpolate_pos_encoding` (Caron et al. 2021); antialiased like timm's
    `resample_abs_pos_embed`, so a converted timm model gives timm's outputs at any size.
    """
    if tuple(table.shape[:2]) == tuple(size):
        return table
    if size[1] == 1 < size[0]:  # PyTorch's antialiased bicubic resize to width 1 repeats its
        # first output row (torch 2.x, CPU); height 1 is fine, so resize the transpose
        return resize_grid(table.transpose(0, 1), (1, size[0])).transpose(0, 1)
    t = rearrange(table.float(), "h w c -> 1 c h w")
    t = F.interpolate(t, size=size, mode="bicubic", align_corners=False, antialias=True)
    return rearrange(t, "1 c h w -> h w c").to(table.dtype)


def resize_table(table: Tensor, prefix: int, src: tuple[int, int], grid: tuple[int, int]) -> Tensor:
    """A position table [1, prefix + sh*sw, C] of grid `src` with its patch rows resized to
    `grid` (resize_grid) and its prefix rows ([CLS]) kept."""
    patches = rearrange(table[0, prefix:], "(h w) c -> h w c", h=src[0])
    patches = rearrange(resize_grid(patches, grid), "h w c -> 1 (h w) c")
    return torch.cat([table[:, :prefix], patches], dim=1)
