"""Attention maps as numbers: what each visualizer computes before anything is drawn.

Plain functions of tensors (no matplotlib, no files), so the tests check them on known
inputs: [CLS] maps, attention rollout (Abnar & Zuidema 2020), the patches holding most of a
map's mass (Caron et al. 2021, DINO), and a model's maps over its patch grid.

Diff-ViT maps (A1 - lambda A2) have negative entries and rows summing to 1 - lambda; every
visualizer reads attention through `as_distribution`, which says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from zoo.errors import ZooError, suggest
from zoo.registry import spec_name

if TYPE_CHECKING:
    from zoo.model import ViT


def as_distribution(attn: Tensor) -> Tensor:
    """Rows made non-negative and summing to 1 ([..., T, T]); softmax attention is unchanged.

    Diff-ViT's map A1 - lambda * A2 is negative where a head cancels attention (the "noise"
    the second map subtracts) and its rows sum to 1 - lambda. Rollout, mass thresholds and
    mass shares read a row as a distribution over the tokens a token draws from, so we keep
    the positive part, the attention left after cancellation, and renormalise it. |A| would
    count what the head cancels as attention, the opposite of what the head does.
    """
    a = attn.clamp_min(0)
    return a / a.sum(-1, keepdim=True).clamp_min(1e-12)


def cls_maps(attn: Tensor, grid: tuple[int, int], prefix: int = 1) -> Tensor:
    """[B, heads, T, T] -> [B, heads, gh, gw]: the [CLS] token's (token 0) attention to each patch."""
    return rearrange(attn[:, :, 0, prefix:], "b h (gh gw) -> b h gh gw", gh=grid[0], gw=grid[1])


def fuse_heads(attn: Tensor, fusion: str) -> Tensor:
    """[B, heads, T, T] -> [B, T, T]: the mean, max or min over heads."""
    if fusion == "mean":
        return attn.mean(1)
    if fusion == "max":
        return attn.amax(1)
    if fusion == "min":
        return attn.amin(1)
    raise ZooError(f"fusion '{fusion}' is not one of mean, max, min{suggest(fusion, ['mean', 'max', 'min'])}")


def rollout(maps: Sequence[Tensor], fusion: str = "mean", discard: float = 0.0) -> Tensor:
    """Attention rollout (Abnar & Zuidema 2020): [B, T, T], row i = how much token i after the
    last layer draws from each input token, through every layer and residual.

    Per layer: heads fused, the weakest `discard` fraction of each row zeroed (less noise in
    the product), the residual added as the identity and rows renormalised, A' = norm(A + I)
    (the paper's 0.5 A + 0.5 I when rows sum to 1); then R = A'_L ... A'_1.
    """
    b, _, t, _ = maps[0].shape
    eye = torch.eye(t, dtype=maps[0].dtype, device=maps[0].device)
    r = eye.expand(b, t, t)
    for attn in maps:
        a = fuse_heads(as_distribution(attn), fusion)
        weakest = a.topk(int(discard * t), dim=-1, largest=False).indices
        a = a.scatter(-1, weakest, 0.0) + eye
        r = (a / a.sum(-1, keepdim=True)) @ r
    return r


def mass_mask(maps: Tensor, threshold: float = 0.6) -> Tensor:
    """The smallest set of patches holding `threshold` of each map's mass (Caron et al. 2021).

    maps [..., gh, gw] (non-negative) -> bool, same shape: the largest entries, taken in
    order until their sum reaches `threshold` of the total.
    """
    flat = maps.flatten(-2)
    vals, order = flat.sort(-1, descending=True)
    before = (vals.cumsum(-1) - vals) / flat.sum(-1, keepdim=True).clamp_min(1e-12)
    keep = torch.zeros_like(flat, dtype=torch.bool).scatter(-1, order, before < threshold)
    return keep.view(maps.shape)


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """[..., gh, gw] -> float [..., H, W], nearest: each patch one block, no made-up detail."""
    m = maps.float().reshape(-1, 1, *maps.shape[-2:])
    return F.interpolate(m, size=tuple(size), mode="nearest").reshape(*maps.shape[:-2], *size)


def cosine_similarity(emb: Tensor) -> Tensor:
    """[N, C] -> [N, N]: the cosine similarity of every pair of rows."""
    e = F.normalize(emb.float(), dim=-1)
    return e @ e.T


def scaled(maps: Tensor) -> Tensor:
    """Each [gh, gw] map divided by its maximum, so every panel spans the colour scale."""
    return maps / maps.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)


def grid_of(model: ViT, x: Tensor) -> tuple[int, int]:
    return tuple(model.patch_embed.grid(x.shape[-2], x.shape[-1]))


def attention_maps(model: ViT, x: Tensor) -> list[Tensor]:
    """Each layer's attention [B, heads, T, T], float32 on the CPU, without autograd."""
    with torch.no_grad():
        return [a.float().cpu() for a in model.attention_maps(x)]


def cls_attention_maps(model: ViT, x: Tensor, layer: int = -1) -> Tensor:
    """[B, heads, gh, gw]: [CLS] attention to the patches in `layer` (negative: from the end)."""
    maps = attention_maps(model, x)
    if not -len(maps) <= layer < len(maps):
        raise ZooError(
            f"layer {layer} is out of range for a {len(maps)}-layer model "
            f"(0 to {len(maps) - 1}, or -1 to -{len(maps)} from the end)"
        )
    return cls_maps(as_distribution(maps[layer]), grid_of(model, x), model.num_prefix_tokens)


def rollout_map(model: ViT, x: Tensor, fusion: str = "mean", discard: float = 0.0) -> Tensor:
    """[B, gh, gw]: the rollout of the tokens the classifier reads, over the patches.

    That is the [CLS] row for `pool: cls`, and the mean of the patch rows for other pools
    (`mean`; for `seqpool`, whose weights depend on the image, their plain mean).
    """
    r = rollout(attention_maps(model, x), fusion, discard)
    p = model.num_prefix_tokens
    rows = r[:, :1] if spec_name(model.cfg.pool) == "cls" else r[:, p:]
    grid = grid_of(model, x)
    return rearrange(rows.mean(1)[:, p:], "b (gh gw) -> b gh gw", gh=grid[0], gw=grid[1])
