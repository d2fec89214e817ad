"""Differential attention: the difference of two softmax maps cancels attention noise."""

import math

import torch
import torch.nn.functional as F
from einops import rearrange
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

    Two paths, equal up to float rounding. Fused: two `F.scaled_dot_product_attention` calls,
    one per softmax map, used on GPUs. Explicit: one softmax over the 2h maps, their
    difference, one product with V; used for attention maps (`return_attn=True` adds attn,
    the differential map, attn1, attn2, the two softmax maps, and lam) and on CPU, where
    PyTorch has no fused kernel for values wider than keys and SDPA would run this same math
    less economically (see benchmarks/README.md). `sdpa_on_cpu = True` forces SDPA there.
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
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        # query/key head j = 2i + s is map s of differential head i: [B, h, 2, N, d]
        q, k = (rearrange(t, "b n (h s d) -> b h s n d", h=self.heads, s=2) for t in (q, k))
        v = rearrange(v, "b n (h e) -> b h n e", h=self.heads)  # [B, h, N, 2d]
        lam = self.lam()
        drop = self.attn_drop if self.training else 0.0
        maps = None
        if return_attn or (x.device.type == "cpu" and not self.sdpa_on_cpu):
            attn12 = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # [B, h, 2, N, N]
            attn1, attn2 = attn12.unbind(dim=2)
            attn = torch.addcmul(attn1, attn2, -lam)  # attn1 - lam * attn2
            if drop:  # dropout on each softmax map, as SDPA does it
                d1, d2 = F.dropout(attn12, drop).unbind(dim=2)
                o = torch.addcmul(d1, d2, -lam) @ v
            else:
                o = attn @ v  # [B, h, N, 2d]
            if return_attn:
                maps = {"attn": attn, "attn1": attn1, "attn2": attn2, "lam": lam}
        else:
            o1 = F.scaled_dot_product_attention(q[:, :, 0], k[:, :, 0], v, dropout_p=drop)
            o2 = F.scaled_dot_product_attention(q[:, :, 1], k[:, :, 1], v, dropout_p=drop)
            o = torch.addcmul(o1, o2, -lam)  # [B, h, N, 2d]
        # RMSNorm per head, with (1 - lambda_init) folded into its scale: one pass, not two
        scale = (self.subln.weight * (1 - self.lambda_init)).to(o.dtype)  # bf16 under autocast
        o = F.rms_norm(o, (o.shape[-1],), scale, self.subln.eps)
        out = self.proj(rearrange(o, "b h n e -> b n (h e)"))
        return out if maps is None else (out, maps)
