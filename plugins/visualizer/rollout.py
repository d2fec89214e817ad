"""rollout: what the classifier's token draws from each patch through all layers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from zoo.errors import ZooError
from zoo.registry import register, spec_name
from zoo.viz.figures import heat_figure
from zoo.viz.maps import rollout_map

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from zoo.model import ViT


@register("visualizer", "rollout")
class Rollout:
    """Attention rollout (Abnar & Zuidema 2020) of the classifier's token, on the image.

    Attention of one layer says little about the input, since tokens mix from layer to
    layer; rollout multiplies the layers' maps, each with the residual added as the identity
    and rows renormalised, so the [CLS] row of the product traces the output back to the
    patches (for `pool: mean`, the mean of the patch rows). `fusion` (mean, max or min)
    joins the heads of a layer; `discard` zeroes that fraction of each row's weakest entries
    first. Diff-ViT: each head's positive part, renormalised (zoo.viz.maps.as_distribution).
    """

    needs = ("attention_maps",)

    def __init__(self, fusion: str = "mean", discard: float = 0.0):
        if fusion not in ("mean", "max", "min"):
            raise ZooError(f"visualizer 'rollout': fusion must be mean, max or min, got {fusion!r}")
        if not 0 <= discard < 1:
            raise ZooError(f"visualizer 'rollout': discard must be in [0, 1), got {discard}")
        self.fusion, self.discard = fusion, discard

    def heatmap(self, model: ViT, x: Tensor) -> Tensor:
        """[B, gh, gw]: the rollout over the patches."""
        return rollout_map(model, x, self.fusion, self.discard)

    def __call__(self, model: ViT, images: Tensor, x: Tensor, names: list[str]) -> dict[str, Figure]:
        title = (f"Attention rollout ({spec_name(model.cfg.attention)}, heads fused by "
                 f"{self.fusion}, discard {self.discard:g})")
        return {"rollout": heat_figure(title, images, names, [("rollout", self.heatmap(model, x))])}
