"""Talking-heads attention (Shazeer et al. 2020) as CaiT uses it (Touvron et al. 2021): over
the tokens, and from the [CLS] token alone (class attention, with or without head mixing).

The logits of the heads are mixed by a heads x heads linear map (proj_l) before the softmax,
the probabilities by another (proj_w) after it. The fused kernel cannot mix heads, so the
mixing runs as one batched matmul over the contiguous maps [B, heads, n * m] (no permutes),
with the temperature folded into proj_l's columns and LSA's mask into its bias term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Heads(nn.Module):
    """What both attentions share: the temperature (1/sqrt(d), or learned per head), talking
    heads (or none), a mask of each token's score with itself, and the core."""

    def __init__(self, heads: int, head_dim: int, talking: bool, talking_bias: bool,
                 learned_scale: bool, mask_self: bool):
        super().__init__()
        self.heads, self.mask_self = heads, mask_self
        temperature = torch.full((heads,), head_dim ** -0.5)
        self.scale = nn.Parameter(temperature) if learned_scale else head_dim ** -0.5
        self.proj_l = nn.Linear(heads, heads, bias=talking_bias) if talking else None
        self.proj_w = nn.Linear(heads, heads, bias=talking_bias) if talking else None

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """q [B, h, n, d], k, v [B, h, m, d] -> [B, h, n, d]."""
        n, m = q.shape[2], k.shape[2]
        tau = self.scale if isinstance(self.scale, float) else self.scale.to(q.dtype)
        if self.proj_l is None:  # no head mixing (timm's class attention): the fused kernel
            if not isinstance(tau, float):
                q, tau = q * tau.view(-1, 1, 1), 1.0
            return F.scaled_dot_product_attention(q, k, v, scale=tau)
        # proj_l(tau * q k^T): the temperature folds into proj_l's columns, the LSA mask (after
        # the mixing, so that no head's softmax sees the token itself) into proj_l's bias
        shift = None
        if self.mask_self:
            eye = torch.eye(n, m, dtype=torch.bool, device=q.device).flatten()
            shift = torch.zeros(n * m, dtype=q.dtype, device=q.device)
            shift = shift.masked_fill(eye, float("-inf"))
        attn = mix(self.proj_l, (q @ k.transpose(-2, -1)).flatten(2), tau, shift)
        attn = mix(self.proj_w, attn.view(q.shape[0], -1, n, m).softmax(-1).flatten(2))
        return attn.view(q.shape[0], -1, n, m) @ v


def mix(proj: nn.Linear, x: Tensor, tau: Tensor | float = 1.0,
        shift: Tensor | None = None) -> Tensor:
    """proj over the head axis of x [B, h, L]: out[g] = sum_h W[g, h] tau_h x[h] + b[g] + shift,
    one batched matmul on the contiguous maps (no permutes)."""
    w = proj.weight.to(x.dtype) * (tau if isinstance(tau, float) else tau.view(1, -1))
    bias = None if proj.bias is None else proj.bias.to(x.dtype).view(-1, 1)
    if shift is not None:
        bias = shift.view(1, -1) if bias is None else bias + shift.view(1, -1)
    w = w.expand(x.shape[0], -1, -1)
    return torch.bmm(w, x) if bias is None else torch.baddbmm(bias, w, x)


class TalkingHeadsAttention(Heads):
    """Self-attention over the patches with talking heads (timm's TalkingHeadAttn layout).
    `lsa`: Locality Self-Attention (Lee et al. 2021): a learned temperature per head, and
    each token's score with itself at -inf before the softmax."""

    def __init__(self, dim: int, heads: int, head_dim: int, qkv_bias: bool, talking_bias: bool,
                 lsa: bool):
        super().__init__(heads, head_dim, True, talking_bias, lsa, mask_self=lsa)
        self.qkv = nn.Linear(dim, 3 * heads * head_dim, bias=qkv_bias)
        self.proj = nn.Linear(heads * head_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """x [B, N, C] -> [B, N, C]."""
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        return self.proj(self.attend(q, k, v).transpose(1, 2).reshape(b, n, -1))


class ClassAttention(Heads):
    """The [CLS] query against a context (timm's ClassAttn layout: q, k, v projections),
    with talking heads if `talking`, a learned temperature per head if `learned_scale`."""

    def __init__(self, dim: int, heads: int, head_dim: int, qkv_bias: bool, talking: bool,
                 talking_bias: bool, learned_scale: bool):
        super().__init__(heads, head_dim, talking, talking_bias, learned_scale, mask_self=False)
        inner = heads * head_dim
        self.q, self.k, self.v = (nn.Linear(dim, inner, bias=qkv_bias) for _ in range(3))
        self.proj = nn.Linear(inner, dim)

    def forward(self, cls: Tensor, context: Tensor) -> Tensor:
        """cls [B, 1, C], context [B, M, C] -> [B, 1, C]."""
        b, m, _ = context.shape
        q = self.q(cls[:, 0]).view(b, self.heads, 1, -1)  # 2D rows: one addmm, even from a slice
        k, v = (f(context).view(b, m, self.heads, -1).transpose(1, 2) for f in (self.k, self.v))
        return self.proj(self.attend(q, k, v).transpose(1, 2).reshape(b, 1, -1))
