"""The small-data ViT parts, each against a by-the-paper computation on fixed inputs."""

from __future__ import annotations

import torch

from zoo.registry import build, discover


def lsa_by_the_paper(x: torch.Tensor, qkv: torch.nn.Linear, proj: torch.nn.Linear,
                     tau: torch.Tensor) -> torch.Tensor:
    """Lee et al. 2021, Eq. 4-6, written out: R = tau * Q K^T per head, R_ii = -inf, softmax, @ V."""
    b, n, c = x.shape
    h = tau.numel()
    q, k, v = qkv(x).reshape(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
    scores = torch.einsum("bhid,bhjd->bhij", q, k) * tau.view(1, h, 1, 1)
    scores[:, :, torch.arange(n), torch.arange(n)] = float("-inf")
    out = torch.einsum("bhij,bhjd->bhid", scores.softmax(-1), v)
    return proj(out.permute(0, 2, 1, 3).reshape(b, n, c))


def test_lsa_masks_the_diagonal_and_learns_one_temperature_per_head():
    discover()
    torch.manual_seed(0)
    attn = build("attention", "lsa", dim=16, heads=4).eval()
    assert torch.allclose(attn.scale, torch.full((4,), 4 ** -0.5))  # 1/sqrt(d), d = 16 / 4
    with torch.no_grad():
        attn.scale.copy_(torch.tensor([0.1, 0.5, 1.0, 2.0]))  # tau as training would move it
    x = torch.randn(2, 7, 16)
    ref = lsa_by_the_paper(x, attn.qkv, attn.proj, attn.scale.detach())
    fused = attn(x)
    explicit, maps = attn(x, return_attn=True)
    assert torch.allclose(fused, ref, atol=1e-5) and torch.allclose(explicit, ref, atol=1e-5)
    assert torch.all(maps["attn"].diagonal(dim1=-2, dim2=-1) == 0)
    assert torch.allclose(maps["attn"].sum(-1), torch.ones(2, 4, 7))
    attn(x).sum().backward()
    assert attn.scale.grad is not None and attn.scale.grad.abs().min() > 0
