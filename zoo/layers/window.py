"""Shifted-window attention (Liu et al. 2021, "Swin Transformer: Hierarchical Vision Transformer
using Shifted Windows", Sec. 3.2): self-attention inside non-overlapping windows of a token
grid, with a learned bias per relative position, and every other block on windows shifted
by half a window (a cyclic roll of the grid, with a mask keeping apart the tokens the roll
brought together).

    grid [B, H, W, C] -> roll(-s) -> windows [B, nW, w*w, C] -> attention per window
      (+ relative position bias, + shift mask) -> back to the grid -> roll(+s)

Windows run row-major over the grid, tokens row-major inside a window.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SHIFT_MASK = -100.0  # added to the scores of token pairs from different regions (the paper's)


def window_partition(x: Tensor, w: int) -> Tensor:
    """[B, H, W, C] -> [B, nW, w*w, C], nW = (H / w) (W / w)."""
    b, h, wd, c = x.shape
    x = x.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // w) * (wd // w), w * w, c)


def window_reverse(x: Tensor, w: int, h: int, wd: int) -> Tensor:
    """[B, nW, w*w, C] -> [B, H, W, C], the inverse of window_partition."""
    b, c = x.shape[0], x.shape[-1]
    x = x.view(b, h // w, wd // w, w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, wd, c)


def relative_position_index(w: int) -> Tensor:
    """[w*w, w*w]: for tokens a, b of a window, the row of the bias table of their offset,
    (ya - yb + w - 1) (2w - 1) + (xa - xb + w - 1), one of (2w - 1)^2."""
    ys, xs = torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy, dx = ys[:, None] - ys[None, :] + w - 1, xs[:, None] - xs[None, :] + w - 1
    return dy * (2 * w - 1) + dx


def shift_mask(res: int, w: int, s: int) -> Tensor:
    """[nW, w*w, w*w]: 0 for token pairs that were neighbours before the roll by s, SHIFT_MASK
    for pairs the roll brought together from opposite edges of the (res x res) grid.

    The rolled grid has three bands per axis, [0, res - w), [res - w, res - s), [res - s, res):
    nine regions; two tokens may attend to each other only inside one region."""
    band = torch.zeros(res, dtype=torch.long)
    band[res - w:] = 1
    band[res - s:] = 2
    region = (band[:, None] * 3 + band[None, :])[None, :, :, None]  # [1, res, res, 1]
    region = window_partition(region, w)[0, :, :, 0]  # [nW, w*w]
    differ = region[:, :, None] != region[:, None, :]
    return differ.float() * SHIFT_MASK


class WindowAttention(nn.Module):
    """Multi-head self-attention in (shifted) windows over a [B, H, W, C] grid, with a
    relative position bias per head (a table of (2w - 1)^2 rows, trunc_normal 0.02).

    `lsa`: Lee et al.'s Locality Self-Attention inside windows, as their swin.py does it: a
    learned temperature per head (init head_dim^-0.5) multiplies q, the bias and the shift
    mask are added unscaled, and each token's own score is -inf. A window of one token
    keeps its own score (it has no other to look at).

    One fused `F.scaled_dot_product_attention` call over the windows of the batch
    [B nW, heads, w*w, head_dim] (4D, as ONNX takes it), the bias and masks its attn_mask:
    [heads, w*w, w*w] broadcast where every window has the same, else one per window of the
    batch. No loop over windows.
    """

    def __init__(self, dim: int, heads: int, res: int, window: int, shift: int,
                 qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 lsa: bool = False):
        super().__init__()
        self.heads, self.res, self.window, self.shift = heads, res, window, shift
        self.attn_drop = attn_drop
        n = window * window
        self.relative_position_bias_table = nn.Parameter(torch.empty((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window).flatten(),
                             persistent=False)
        mask = shift_mask(res, window, shift) if shift else torch.zeros(1, n, n)
        if lsa and n > 1:
            mask = mask.masked_fill(torch.eye(n, dtype=torch.bool), float("-inf"))
        has_mask = bool(shift) or (lsa and n > 1)
        self.register_buffer("mask", mask[:, None] if has_mask else None, persistent=False)
        self.scale = nn.Parameter(torch.full((heads,), (dim // heads) ** -0.5)) if lsa else None
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def bias(self) -> Tensor:
        """The relative position bias [heads, w*w, w*w] (plus the masks, if any)."""
        n = self.window * self.window
        bias = self.relative_position_bias_table[self.relative_position_index]
        bias = bias.view(n, n, self.heads).permute(2, 0, 1)
        return bias if self.mask is None else bias + self.mask  # [nW, heads, n, n] with a mask

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, H, W, C] (H = W = res) -> [B, H, W, C]."""
        w, s, res, c = self.window, self.shift, self.res, x.shape[-1]
        if s:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
        x = window_partition(x, w)  # [B, nW, n, C]
        b, nw, n = x.shape[:3]
        # chunk, not reshape + unbind: its backward writes the qkv gradient in one copy
        q, k, v = (t.view(b * nw, n, self.heads, c // self.heads).transpose(1, 2)
                   for t in self.qkv(x).chunk(3, -1))  # each [B nW, heads, n, d]
        scale = None
        if self.scale is not None:
            q, scale = q * self.scale.view(-1, 1, 1).to(q.dtype), 1.0
        mask = self.bias().to(q.dtype)  # [heads, n, n], or [nW or 1, heads, n, n]
        if mask.dim() == 4 and mask.shape[0] > 1:  # one per window: the batch's windows get theirs
            mask = mask.expand(b, -1, -1, -1, -1).reshape(b * nw, self.heads, n, n)
        drop = self.attn_drop if self.training else 0.0
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop, scale=scale)
        o = self.proj_drop(self.proj(o.transpose(1, 2).reshape(b, nw, n, c)))
        x = window_reverse(o, w, res, res)
        return torch.roll(x, shifts=(s, s), dims=(1, 2)) if s else x
