"""cls_attention: where the [CLS] token looks, head by head, in one layer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from zoo.registry import register, spec_name
from zoo.viz.figures import check_scale, heat_figure
from zoo.viz.maps import cls_attention_maps

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from zoo.model import ViT


@register("visualizer", "cls_attention")
class ClsAttention:
    """[CLS] attention over the patches, per head and head-mean, on the image.

    The class token's row of one layer's attention (`layer`: 0-based, negative from the end;
    the last by default) shows which patches feed the token the classifier reads
    (Dosovitskiy et al. 2020, Fig. 6; Caron et al. 2021, Fig. 1). Each panel is scaled to
    its maximum (`scale: image`: all panels of an image over their largest value, so a
    near-uniform head looks dim beside a sharp one). Diff-ViT: the positive part of the differential map, renormalised
    (zoo.viz.maps.as_distribution). In a `pool: mean` model the head never reads [CLS], so its
    map says little there; use rollout.
    """

    needs = ("attention_maps", "cls_token")

    def __init__(self, layer: int = -1, scale: str = "panel"):
        check_scale(scale, "cls_attention")
        self.layer, self.scale = layer, scale

    def heatmap(self, model: ViT, x: Tensor) -> Tensor:
        """[B, gh, gw]: the head-mean map."""
        return cls_attention_maps(model, x, self.layer).mean(1)

    def __call__(self, model: ViT, images: Tensor, x: Tensor, names: list[str]) -> dict[str, Figure]:
        maps = cls_attention_maps(model, x, self.layer)  # [B, heads, gh, gw]
        columns = [("mean of heads", maps.mean(1))]
        columns += [(f"head {h + 1}", maps[:, h]) for h in range(maps.shape[1])]
        depth = len(model.blocks)
        title = (f"[CLS] attention, layer {self.layer % depth + 1} of {depth} "
                 f"({spec_name(model.cfg.attention)})")
        return {"cls_attention": heat_figure(title, images, names, columns, self.scale)}
