"""patch: the ViT's tokenizer, one linear embedding per non-overlapping patch."""

from torch import Tensor, nn

from zoo.errors import ZooError
from zoo.registry import register


@register("tokenizer", "patch")
class PatchEmbed(nn.Conv2d):
    """Non-overlapping `patch_size` patches, each linearly embedded (Dosovitskiy et al. 2020,
    Eq. 1): a convolution with stride = kernel = patch. Its weights are the `patch_embed.*`
    tensors of every zoo ViT checkpoint and of timm's ViTs (`patch_embed.proj.*`)."""

    def __init__(self, in_chans: int, dim: int, patch_size: int, img_size: int):
        if img_size % patch_size:
            raise ZooError(f"model.patch_size: {patch_size} does not divide img_size {img_size}")
        super().__init__(in_chans, dim, patch_size, stride=patch_size)
        self.patch_size = patch_size

    def grid(self, h: int, w: int) -> tuple[int, int]:
        return h // self.patch_size, w // self.patch_size

    def forward(self, img: Tensor) -> Tensor:
        """[B, C, H, W] -> [B, H/p, W/p, dim]; H and W multiples of the patch size."""
        p = self.patch_size
        if img.shape[-2] % p or img.shape[-1] % p:
            raise ZooError(f"image size {tuple(img.shape[-2:])} is not a multiple of the patch size {p}")
        return super().forward(img).permute(0, 2, 3, 1)
