"""seqpool: a learned softmax weighting of the tokens (CCT's sequence pooling)."""

import torch
from torch import Tensor, nn

from zoo.registry import register


@register("pool", "seqpool")
class SeqPool(nn.Module):
    """Sequence pooling (Hassani et al. 2021, "Escaping the Big Data Paradigm with Compact
    Transformers", Eq. 2-3): the normalised tokens x_L, one score each from a Linear(dim, 1),
    softmax over the tokens, and the weighted sum: softmax(g(x_L))^T x_L. No [CLS] token."""

    cls_token = False

    def __init__(self, dim: int):
        super().__init__()
        self.attention = nn.Linear(dim, 1)

    def forward(self, x: Tensor, prefix: int, norm: nn.Module) -> Tensor:
        x = norm(x[:, prefix:])  # [B, N, C]
        weights = self.attention(x).softmax(dim=1)  # [B, N, 1]
        return torch.einsum("bnk,bnc->bc", weights, x)
