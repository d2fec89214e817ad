"""spt: Shifted Patch Tokenization, patches that also see their neighbours."""

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from zoo.errors import ZooError
from zoo.registry import register


@register("tokenizer", "spt")
class ShiftedPatchTokenizer(nn.Module):
    """Shifted Patch Tokenization (Lee et al. 2021, "Vision Transformer for Small-Size
    Datasets", Eq. 2-3): the image and its four diagonal shifts by half a patch, stacked on
    the channels, cut into patches, each flattened, layer-normalised and projected.

    As their code (SPT_LSA_ViT models/SPT.py) does it: shift s = patch // 2, zero padding
    (of the normalised image), shifts in the order left-up, right-up, left-down, right-down
    after the image itself; a patch flattens as (row, column, channel) with the 5C channels
    fastest; LayerNorm over the whole 5 C p^2 vector (eps 1e-5), then Linear to `dim`.
    """

    def __init__(self, in_chans: int, dim: int, patch_size: int, img_size: int):
        super().__init__()
        if img_size % patch_size:
            raise ZooError(f"model.patch_size: {patch_size} does not divide img_size {img_size}")
        self.patch_size, self.shift = patch_size, patch_size // 2
        patch_dim = 5 * in_chans * patch_size**2
        self.norm = nn.LayerNorm(patch_dim)
        self.proj = nn.Linear(patch_dim, dim)

    def grid(self, h: int, w: int) -> tuple[int, int]:
        return h // self.patch_size, w // self.patch_size

    def shifted(self, img: Tensor) -> Tensor:
        """[B, C, H, W] -> [B, 5C, H, W]: the image, then it seen from (-s, -s), (-s, +s),
        (+s, -s), (+s, +s): out[i, j] = img[i - s, j - s] and so on, zero outside."""
        s, (h, w) = self.shift, img.shape[-2:]
        pad = F.pad(img, (s, s, s, s))
        views = [pad[..., dy:dy + h, dx:dx + w] for dy, dx in ((0, 0), (0, 2 * s), (2 * s, 0), (2 * s, 2 * s))]
        return torch.cat([img, *views], dim=1)

    def forward(self, img: Tensor) -> Tensor:
        """[B, C, H, W] -> [B, H/p, W/p, dim]."""
        p = self.patch_size
        if img.shape[-2] % p or img.shape[-1] % p:
            raise ZooError(f"image size {tuple(img.shape[-2:])} is not a multiple of the patch size {p}")
        x = rearrange(self.shifted(img), "b c (h p1) (w p2) -> b h w (p1 p2 c)", p1=p, p2=p)
        return self.proj(self.norm(x))
