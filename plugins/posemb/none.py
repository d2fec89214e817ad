"""No positional embedding: the tokens form a set; a baseline for what position buys."""

from torch import Tensor, nn

from zoo.registry import register


@register("posemb", "none")
class NoPosEmb(nn.Module):
    """No positional embedding (the ablation of Dosovitskiy et al. 2020, Table 8)."""

    def __init__(self):  # no parameters; the signature is the (empty) schema
        super().__init__()

    def forward(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        return x

    def patch_embeddings(self) -> None:
        return None
