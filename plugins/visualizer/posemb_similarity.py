"""posemb_similarity: how alike the positional embeddings of the patches are."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from zoo.registry import register, spec_name
from zoo.viz.figures import DPI, mosaic, note_figure
from zoo.viz.maps import cosine_similarity

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from zoo.model import ViT


@register("visualizer", "posemb_similarity")
class PosembSimilarity:
    """Cosine similarity of each patch's positional embedding with every other one.

    As Dosovitskiy et al. 2020, Fig. 7: tile (i, j) of the grid shows how similar the
    embedding of the patch in row i, column j is to each patch's. A learned embedding that
    found the 2D layout shows a bright spot at (i, j) and bright rows and columns through
    it. The colours span the similarities shown (min to max, not -1 to 1): a sinusoidal
    table's span 0.77-1 on the quickstart's 4x4 grid and would look flat on the full scale.
    The same for every image; a model with `posemb: none` gets a note instead.
    """

    needs = ("position_table",)

    def __call__(self, model: ViT, images: Tensor, x: Tensor, names: list[str]) -> dict[str, Figure]:
        from matplotlib.figure import Figure

        posemb = spec_name(model.cfg.posemb)
        title = f"Position embedding similarity ({posemb})"
        emb = model.patch_posemb()
        if emb is None:
            text = f"this model has no positional embedding (posemb: {posemb}): nothing to compare"
            return {"posemb_similarity": note_figure(title, text)}
        gh, gw = model.grid_size
        with torch.no_grad():
            sim = cosine_similarity(emb.detach().cpu()).reshape(gh, gw, gh, gw).numpy()
        fig = Figure(figsize=(6.5, 6), dpi=DPI, layout="constrained")
        ax = fig.add_subplot()
        low, high = float(sim.min()), float(sim.max())
        artist = ax.imshow(mosaic(sim, 1, float("nan")), cmap="viridis", vmin=low, vmax=high,
                           interpolation="nearest")
        step = -(-max(gh, gw) // 16)  # label at most 16 rows and columns
        rows, cols = range(0, gh, step), range(0, gw, step)
        ax.set_xticks([j * (gw + 1) + (gw - 1) / 2 for j in cols], [str(j + 1) for j in cols], fontsize=7)
        ax.set_yticks([i * (gh + 1) + (gh - 1) / 2 for i in rows], [str(i + 1) for i in rows], fontsize=7)
        ax.tick_params(length=0)
        ax.set_xlabel("input patch column")
        ax.set_ylabel("input patch row")
        ax.set_title(title)
        fig.colorbar(artist, ax=ax, shrink=0.8,
                     label=f"cosine similarity (colours: min to max shown, {low:.2f} to {high:.2f})")
        return {"posemb_similarity": fig}
