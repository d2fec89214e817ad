"""Locality Self-Attention: self-attention that looks away from itself, with a learned temperature."""

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from zoo.errors import ZooError
from zoo.registry import register


@register("attention", "lsa")
class LocalitySelfAttention(nn.Module):
    """Locality Self-Attention (Lee et al. 2021, "Vision Transformer for Small-Size Datasets").

    Multi-head self-attention with two changes that sharpen its maps on small datasets:
    each token's score with itself is masked out before the softmax (diagonal masking, so
    attention goes to the other tokens), and the softmax temperature is learned, one per
    head, starting at the usual 1/sqrt(d) (the paper's learnable tau):

        softmax(tau_h * Q K^T, with the diagonal at -inf) V

    The fused path scales Q by tau_h and calls `F.scaled_dot_product_attention` with a mask
    of the diagonal; `return_attn=True` computes the same explicitly and returns the maps.
    """

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True, attn_drop: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ZooError(f"attention 'lsa': heads {heads} does not divide dim {dim}")
        self.heads = heads
        self.attn_drop = attn_drop
        self.scale = nn.Parameter(torch.full((heads,), (dim // heads) ** -0.5))  # tau per head
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, return_attn: bool = False) -> Tensor | tuple[Tensor, dict]:
        """x: [B, N, C] -> [B, N, C] (and the attention maps if asked)."""
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.heads) for t in self.qkv(x).chunk(3, -1))
        q = q * self.scale.view(1, -1, 1, 1).to(q.dtype)
        n = x.shape[1]
        others = ~torch.eye(n, dtype=torch.bool, device=x.device)  # True: may attend
        drop = self.attn_drop if self.training else 0.0
        if not return_attn:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=others, dropout_p=drop, scale=1.0)
            return self.proj(rearrange(o, "b h n d -> b n (h d)"))
        scores = (q @ k.transpose(-2, -1)).masked_fill(~others, float("-inf"))
        attn = scores.softmax(dim=-1)  # [B, h, N, N], zero on the diagonal
        o = F.dropout(attn, drop) @ v
        return self.proj(rearrange(o, "b h n d -> b n (h d)")), {"attn": attn}
