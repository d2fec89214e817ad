"""Fixed sinusoidal positional embedding, 1D over the patch sequence or 2D over the grid."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.errors import ZooError
from zoo.registry import register


def sincos_1d(pos: Tensor, dim: int, temperature: float) -> Tensor:
    """Positions [N] -> [N, dim]: sin in the first half, cos in the second (Vaswani et al. 2017)."""
    omega = temperature ** -(torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))
    angle = pos.double()[:, None] * omega[None]  # [N, dim/2]
    return torch.cat([angle.sin(), angle.cos()], dim=1).float()


@register("posemb", "sinusoidal")
class SinusoidalPosEmb(nn.Module):
    """Fixed sin/cos positional embedding (Vaswani et al. 2017); `dims: 2` encodes row and column.

    dims 1: the patch index in raster order. dims 2: half the channels encode the row, half
    the column, as in MoCo v3 and MAE. Nothing is learned and any grid is computed exactly;
    prefix tokens ([CLS]) get no position.
    """

    def __init__(
        self,
        dim: int,
        grid_size: tuple[int, int],
        num_prefix_tokens: int,
        dims: int = 2,
        temperature: float = 10000.0,
    ):
        super().__init__()
        if dims not in (1, 2):
            raise ZooError(f"posemb 'sinusoidal': dims must be 1 or 2, got {dims}")
        if dim % (2 * dims):
            raise ZooError(f"posemb 'sinusoidal': dims {dims} needs dim divisible by {2 * dims}, got {dim}")
        self.dim, self.dims, self.temperature = dim, dims, temperature
        self.grid_size = tuple(grid_size)
        self.num_prefix_tokens = num_prefix_tokens
        table = F.pad(self._grid(self.grid_size), (0, 0, num_prefix_tokens, 0))
        self.register_buffer("table", table[None], persistent=False)  # [1, prefix + gh*gw, C]

    def _grid(self, grid: tuple[int, int]) -> Tensor:
        """[gh*gw, C] for any grid."""
        gh, gw = grid
        if self.dims == 1:
            return sincos_1d(torch.arange(gh * gw), self.dim, self.temperature)
        rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
        half = self.dim // 2
        return torch.cat(
            [sincos_1d(rows.flatten(), half, self.temperature),
             sincos_1d(cols.flatten(), half, self.temperature)], dim=1,
        )

    def forward(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        """x: [B, prefix + gh*gw, C] -> same, plus the position of each patch token."""
        if tuple(grid) == self.grid_size:
            return x + self.table
        table = F.pad(self._grid(grid).to(x), (0, 0, self.num_prefix_tokens, 0))
        return x + table

    def patch_embeddings(self) -> Tensor:
        """[gh*gw, C] for the trained grid."""
        return self.table[0, self.num_prefix_tokens :]
