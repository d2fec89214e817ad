"""Multi-head self-attention, the attention of the original ViT."""

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from zoo.errors import ZooError
from zoo.registry import register


@register("attention", "mhsa")
class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention (Vaswani et al. 2017), as in ViT (Dosovitskiy et al. 2020).

    softmax(Q K^T / sqrt(d)) V per head. The forward uses the fused
    `F.scaled_dot_product_attention`; with `return_attn=True` it computes the same thing
    explicitly and also returns the probabilities as `{"attn": [B, heads, N, N]}`.
    """

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True, attn_drop: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ZooError(f"attention 'mhsa': heads {heads} does not divide dim {dim}")
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)  # one matmul for Q, K and V
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, return_attn: bool = False) -> Tensor | tuple[Tensor, dict]:
        """x: [B, N, C] -> [B, N, C] (and the attention maps if asked)."""
        # chunk, not one reshape + unbind: its backward writes the qkv gradient in one copy
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.heads) for t in self.qkv(x).chunk(3, -1))
        drop = self.attn_drop if self.training else 0.0
        if not return_attn:
            o = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)  # [B, h, N, d]
            return self.proj(rearrange(o, "b h n d -> b n (h d)"))
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # [B, h, N, N]
        o = F.dropout(attn, drop) @ v  # [B, h, N, d]
        return self.proj(rearrange(o, "b h n d -> b n (h d)")), {"attn": attn}
