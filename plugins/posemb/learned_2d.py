"""Learned 2D positional embedding: a row table plus a column table."""

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from zoo.layers import resize_grid
from zoo.registry import register


@register("posemb", "learned_2d")
class LearnedPosEmb2d(nn.Module):
    """Learned 2D positional embedding: row[i] + col[j] for the patch at (i, j).

    The "2-D aware" variant of Dosovitskiy et al. 2020 (Appendix D.4), with the two
    halves summed rather than concatenated: gh + gw vectors instead of gh * gw. Prefix
    tokens ([CLS]) get no position. The tables are resized bicubically for other sizes.
    """

    def __init__(self, dim: int, grid_size: tuple[int, int], num_prefix_tokens: int):
        super().__init__()
        self.grid_size = tuple(grid_size)
        self.num_prefix_tokens = num_prefix_tokens
        self.row = nn.Parameter(torch.randn(grid_size[0], dim) * 0.02)
        self.col = nn.Parameter(torch.randn(grid_size[1], dim) * 0.02)

    def _grid(self, grid: tuple[int, int]) -> Tensor:
        """[gh*gw, C] for any grid: the resize of the full row + col grid, computed per table
        (bicubic resizing is linear and separable, and each output's weights sum to 1)."""
        gh, gw = grid
        row = resize_grid(self.row[:, None], (gh, 1))  # [gh, 1, C]
        col = resize_grid(self.col[None], (1, gw))  # [1, gw, C]
        return rearrange(row + col, "h w c -> (h w) c")

    def forward(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        """x: [B, prefix + gh*gw, C] -> same, plus the position of each patch token."""
        return x + F.pad(self._grid(grid), (0, 0, self.num_prefix_tokens, 0))

    def patch_embeddings(self) -> Tensor:
        """[gh*gw, C] for the trained grid."""
        return self._grid(self.grid_size)
