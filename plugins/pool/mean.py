"""mean: the mean of the patch tokens is the image's vector."""

from torch import Tensor, nn

from zoo.registry import register


@register("pool", "mean")
class MeanPool(nn.Module):
    """Global average pooling of the patch tokens, then the final norm (timm's 'avg' with
    fc_norm; Zhai et al. 2022's GAP head). `cls_token: true` (the default) keeps a [CLS]
    token in the sequence, which the pool leaves out, as timm's ViTs with global_pool 'avg'
    and class_token do."""

    def __init__(self, cls_token: bool = True):
        super().__init__()
        self.cls_token = cls_token

    def forward(self, x: Tensor, prefix: int, norm: nn.Module) -> Tensor:
        return norm(x[:, prefix:].mean(dim=1))
