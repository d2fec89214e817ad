"""cls: the [CLS] token is the image's vector."""

from torch import Tensor, nn

from zoo.registry import register


@register("pool", "cls")
class ClsPool(nn.Module):
    """The [CLS] token after the final norm (Dosovitskiy et al. 2020; timm's 'token')."""

    cls_token = True

    def __init__(self) -> None:  # no parameters (nn.Module's would take any)
        super().__init__()

    def forward(self, x: Tensor, prefix: int, norm: nn.Module) -> Tensor:
        return norm(x[:, 0])
