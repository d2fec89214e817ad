"""dino: per-head [CLS] maps with the patches that hold most of the attention outlined."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from torch import Tensor

from zoo.errors import ZooError
from zoo.registry import register, spec_name
from zoo.viz.figures import (
    check_scale,
    gap_of,
    grid_figure,
    mosaic,
    overlay,
    rgb01,
    scale_maps,
)
from zoo.viz.maps import cls_attention_maps, mass_mask, upsample

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from zoo.model import ViT


@register("visualizer", "dino")
class Dino:
    """DINO-style per-head maps: the patches holding `threshold` of [CLS] attention, outlined.

    As in Caron et al. 2021 (Fig. 3 and 4): for each head of `layer` (the last by default),
    keep the smallest set of patches that holds `threshold` (60%) of the [CLS] token's
    attention over the patches and draw it as a mask with its contour; the second column
    shows every head's mask in the head's colour. Column labels give each head's mask size
    (`mask 9%`: the share of the patches it keeps, averaged over the images): a head that
    looks at the object keeps few patches. Heat maps are scaled per panel, or per image
    with `scale: image` (scale_maps); the colour bar says which. Diff-ViT:
    the positive part of the differential map, renormalised (zoo.viz.maps.as_distribution).
    """

    needs = ("attention_maps", "cls_token")

    def __init__(self, threshold: float = 0.6, layer: int = -1, scale: str = "panel"):
        if not 0 < threshold <= 1:
            raise ZooError(f"visualizer 'dino': threshold must be in (0, 1], got {threshold}")
        check_scale(scale, "dino")
        self.threshold, self.layer, self.scale = threshold, layer, scale

    def __call__(self, model: ViT, images: Tensor, x: Tensor, names: list[str]) -> dict[str, Figure]:
        from matplotlib import colormaps

        maps = cls_attention_maps(model, x, self.layer)  # [B, heads, gh, gw]
        masks = mass_mask(maps, self.threshold)
        b, heads = maps.shape[:2]
        img = rgb01(images)
        heat, label = scale_maps(maps, self.scale)
        tiles = [img, img] + [overlay(images, heat[:, h]) for h in range(heads)]
        depth = len(model.blocks)
        title = (f"DINO-style maps: patches holding {self.threshold:.0%} of [CLS] attention, "
                 f"layer {self.layer % depth + 1} of {depth} ({spec_name(model.cfg.attention)})"
                 "\nmask %: share of the patches a head's mask keeps (mean over the images)")
        share = masks.float().mean(dim=(0, 2, 3))
        cols = ["input", "all heads"] + [f"head {h + 1}: mask {share[h]:.0%}" for h in range(heads)]
        fig, ax = grid_figure(title, np.stack(tiles, 1), names, cols, colorbar=label)
        up = upsample(masks, images.shape[-2:]).numpy()  # [B, heads, H, W]
        colours = colormaps["tab10"].colors
        gap = gap_of(images.shape[-2])
        for h in range(heads):
            c = colours[h % len(colours)]
            on = np.zeros((b, 2 + heads, *up.shape[-2:]))
            on[:, 1] = up[:, h]  # the "all heads" column: filled
            ax.contourf(mosaic(on, gap, 0.0), levels=[0.5, 1.5], colors=[c], alpha=0.35)
            on[:, 2 + h] = up[:, h]  # and its own column: outlined
            ax.contour(mosaic(on, gap, 0.0), levels=[0.5], colors=[c], linewidths=1.2)
            ax.get_xticklabels()[2 + h].set_color(c)
        return {"dino": fig}
