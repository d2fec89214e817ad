"""Learned 1D positional embedding: one vector per token, the original ViT's choice."""

import torch
from torch import Tensor, nn

from zoo.layers import resize_table
from zoo.registry import register


@register("posemb", "learned_1d")
class LearnedPosEmb1d(nn.Module):
    """Learned 1D positional embedding, one vector per token incl. [CLS] (Dosovitskiy et al. 2020).

    The table `pos_embed` [1, prefix + gh*gw, C] has timm's layout, so timm weights convert
    as they are. For another image size the patch part is resized bicubically on its grid.
    It starts from N(0, std^2): 0.02 as timm; Lee et al. draw it with std 1, CCT with 0.2.
    """

    def __init__(self, dim: int, grid_size: tuple[int, int], num_prefix_tokens: int,
                 std: float = 0.02):
        super().__init__()
        self.grid_size = tuple(grid_size)
        self.num_prefix_tokens = num_prefix_tokens
        n = num_prefix_tokens + grid_size[0] * grid_size[1]
        self.pos_embed = nn.Parameter(torch.randn(1, n, dim) * std)

    def forward(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        """x: [B, prefix + gh*gw, C] -> same, plus the position of each token."""
        if tuple(grid) == self.grid_size:
            return x + self.pos_embed
        return x + resize_table(self.pos_embed, self.num_prefix_tokens, self.grid_size, grid)

    def patch_embeddings(self) -> Tensor:
        """[gh*gw, C] for the trained grid."""
        return self.pos_embed[0, self.num_prefix_tokens :]
