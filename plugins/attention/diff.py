"""Differential attention: the difference of two softmax maps cancels attention noise."""

import math

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from zoo.errors import ZooError
from zoo.registry import register


@register("attention", "diff")
class DifferentialAttention(nn.Module):
    """Differential attention (Ye et al. 2025, "Differential Transformer", ICLR).

    Q and K are split into 2h heads of width d, V into h heads of width 2d; head i pairs the
    query/key heads 2i and 2i+1:

        (softmax(Q1 K1^T / sqrt(d)) - lambda * softmax(Q2 K2^T / sqrt(d))) V
        lambda = exp(lq1 . lk1) - exp(lq2 . lk2) + lambda_init

    then RMSNorm over each head's 2d channels and a factor (1 - lambda_init). `heads` is h,
    the number of differential heads: half the heads of an equally sized ViT.
    `lambda_init` defaults to the paper's 0.8 - 0.6 exp(-0.3 (l - 1)) for layer l (1-based).

    Two paths, equal up to float rounding (tests/test_model.py). Fused: one
    `F.scaled_dot_product_attention` call over 4h heads of width d (`_fused`), so Q, K and V
    have one width and every fused kernel, FlashAttention included, applies; used on GPUs.
    Explicit: one softmax over the 2h maps, their difference, one product with V; used for
    attention maps (`return_attn=True` adds attn, the differential map, attn1, attn2, the two
    softmax maps, and lam) and on CPU. The fused call computes each softmax map twice (once
    per half of V), which the CPU pays for in full: with `sdpa_on_cpu = True` (which forces
    SDPA there) a CIFAR-size Diff-ViT (batch 128, drop path 0.1) trained at 0.76-0.79x the
    explicit path's img/s and inferred at 0.80-0.84x (2-core x86_64 VM, torch 2.14.1, one
    and two threads; benchmarks/README.md), so the explicit path is the CPU default.
    """

    sdpa_on_cpu = False

    def __init__(
        self,
        dim: int,
        heads: int,
        layer: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        lambda_init: float | None = None,
    ):
        super().__init__()
        if dim % (2 * heads):
            raise ZooError(f"attention 'diff': dim {dim} is not divisible by 2 * heads = {2 * heads}")
        self.heads = heads
        self.head_dim = d = dim // heads // 2  # d: width of a query/key head
        self.scale = d**-0.5
        self.attn_drop = attn_drop
        if lambda_init is None:
            lambda_init = 0.8 - 0.6 * math.exp(-0.3 * (layer - 1))
        self.lambda_init = float(lambda_init)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.lambda_q1 = nn.Parameter(torch.randn(d) * 0.1)
        self.lambda_k1 = nn.Parameter(torch.randn(d) * 0.1)
        self.lambda_q2 = nn.Parameter(torch.randn(d) * 0.1)
        self.lambda_k2 = nn.Parameter(torch.randn(d) * 0.1)
        self.subln = nn.RMSNorm(2 * d, eps=1e-5)  # per head; one learnable scale for all heads
        self.proj = nn.Linear(dim, dim)

    def lam(self) -> Tensor:
        """lambda, a scalar shared by the layer's heads (float32)."""
        l1 = torch.exp(torch.dot(self.lambda_q1.float(), self.lambda_k1.float()))
        l2 = torch.exp(torch.dot(self.lambda_q2.float(), self.lambda_k2.float()))
        return l1 - l2 + self.lambda_init

    def forward(self, x: Tensor, return_attn: bool = False) -> Tensor | tuple[Tensor, dict]:
        """x: [B, N, C] -> [B, N, C] (and the attention maps if asked)."""
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # [B, N, C] each
        lam = self.lam()
        drop = self.attn_drop if self.training else 0.0
        if return_attn or (x.device.type == "cpu" and not self.sdpa_on_cpu):
            o, maps = self._explicit(q, k, v, lam, drop)
        else:
            o, maps = self._fused(q, k, v, lam, drop), {}
        # RMSNorm per head, with (1 - lambda_init) folded into its scale: one pass, not two
        scale = (self.subln.weight * (1 - self.lambda_init)).to(o.dtype)  # bf16 under autocast
        o = F.rms_norm(o, (o.shape[-1],), scale, self.subln.eps)
        out = self.proj(rearrange(o, "b n h e -> b n (h e)"))
        return (out, maps) if return_attn else out

    def _fused(self, q: Tensor, k: Tensor, v: Tensor, lam: Tensor, drop: float) -> Tensor:
        """One SDPA call over 4h heads of width d -> o [B, N, h, 2d].

        Head (i, s, t) attends with query/key head 2i + s (map s of differential head i) over
        half t of head i's values: the four products of width d of the official code's
        FlashAttention variant (microsoft/unilm, Diff-Transformer/multihead_flashdiff_2.py),
        folded into one call, so Q, K and V have one width and every fused kernel applies.
        With dropout, each of the four products draws its own mask.
        """
        h = self.heads
        q, k = (repeat(z, "b n (h s d) -> b (h s t) n d", h=h, s=2, t=2) for z in (q, k))
        v = repeat(v, "b n (h t d) -> b (h s t) n d", h=h, s=2, t=2)
        o = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)  # [B, 4h, N, d]
        o1, o2 = rearrange(o, "b (h s t) n d -> s b n h (t d)", s=2, t=2).unbind(0)
        return torch.addcmul(o1, o2, -lam)  # o1 - lam * o2

    def _explicit(self, q: Tensor, k: Tensor, v: Tensor, lam: Tensor,
                  drop: float) -> tuple[Tensor, dict[str, Tensor]]:
        """Written out: one softmax over the 2h maps, their difference, one product with V.

        Returns o [B, N, h, 2d] and the maps: attn (the differential map), attn1, attn2 (the
        two softmax maps) [B, h, N, N] and lam.
        """
        # query/key head j = 2i + s is map s of differential head i: [B, h, 2, N, d]
        q, k = (rearrange(z, "b n (h s d) -> b h s n d", h=self.heads, s=2) for z in (q, k))
        v = rearrange(v, "b n (h e) -> b h n e", h=self.heads)  # [B, h, N, 2d]
        attn12 = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # [B, h, 2, N, N]
        attn1, attn2 = attn12.unbind(dim=2)
        attn = torch.addcmul(attn1, attn2, -lam)  # attn1 - lam * attn2
        if drop:  # dropout on each softmax map, as SDPA does it
            d1, d2 = F.dropout(attn12, drop).unbind(dim=2)
            o = torch.addcmul(d1, d2, -lam) @ v
        else:
            o = attn @ v  # [B, h, N, 2d]
        maps = {"attn": attn, "attn1": attn1, "attn2": attn2, "lam": lam}
        return rearrange(o, "b h n e -> b n h e"), maps
