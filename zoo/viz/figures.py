"""Attention figures: matplotlib drawing, and running the visualizers for PNGs and TensorBoard.

A visualizer is a plugin of kind `visualizer`, one file in plugins/visualizer/: a class whose
constructor takes its options (its signature is its schema, as for every plugin) and whose
instances are called as

    vis(model, images, x, names) -> {figure name: matplotlib Figure}

    model   a zoo ViT, in eval mode
    images  uint8 [B, 3, H, W] on the CPU: what the figures show
    x       the same images as the model reads them: float, normalised, on the model's device
    names   one label per image: its name, true class and the model's prediction (`draw`
            adds them once for every visualizer, see `class_labels`)

A visualizer that draws one heat map per image also has `heatmap(model, x) -> [B, gh, gw]`
(float, over the patch grid); `zoo viz --compare` puts two models' heat maps side by side.

Figures use matplotlib's object API drawn by Agg, never pyplot: nothing global changes,
nothing leaks. matplotlib is imported inside the functions that draw, so importing this
module (the trainer does) costs nothing until a figure is made.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from zoo.errors import ZooError
from zoo.registry import build, spec_name
from zoo.viz.maps import scaled, upsample

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from zoo.model import ViT


PANEL = 1.6  # inches per image panel
DPI = 100
HEAT = "inferno"
ALPHA = 0.6  # weight of the heat map over the image
RELATIVE = "attention / its maximum in the panel"
SHARED = "attention / its maximum over the image's panels"
SCALES = ("panel", "image")  # a heat map visualizer's `scale`: what each panel is divided by


@dataclass
class Shown:
    """The images a figure shows and what their labels need: a name each, the true class of
    each where known (none for image files), and the class names the model's outputs stand
    for (none: a timm model, whose outputs are labelled `class i`)."""

    images: Tensor  # uint8 [B, 3, H, W]
    names: list[str]
    truth: list[str | None] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)


def predicted(model: ViT, x: Tensor, classes: Sequence[str]) -> list[str] | None:
    """The class the model predicts for each image (argmax of its logits), by name where
    `classes` has one; None for a model without a classifier head (num_classes 0)."""
    if not model.num_classes:
        return None
    return [classes[i] if i < len(classes) else f"class {i}" for i in model(x).argmax(-1).tolist()]


def class_labels(shown: Shown, predictions: Sequence[tuple[str, list[str]]]) -> list[str]:
    """Each image's label, so a map is read knowing what the model made of the image: its
    name and true class where known, then a line per (tag, predicted classes) with ✓ or ✗
    against the truth, e.g. `0  true: circle` / `pred: square ✗`, or `cat.jpg` / `pred:
    class 3` for a file. Lines, not one long label, keep the panels their width."""
    truth = shown.truth or [None] * len(shown.names)
    out = []
    for i, (name, true) in enumerate(zip(shown.names, truth, strict=True)):
        lines = [name if true is None else f"{name}  true: {true}"]
        for tag, pred in predictions:
            mark = "" if true is None else " ✓" if pred[i] == true else " ✗"
            lines.append(f"{tag}: {pred[i]}{mark}")
        out.append("\n".join(lines))
    return out


def mosaic(tiles: np.ndarray, gap: int, fill: float) -> np.ndarray:
    """[rows, cols, H, W, ...] -> one [rows*(H+gap)-gap, cols*(W+gap)-gap, ...] array,
    tiles separated by `gap` lines of `fill`."""
    rows, cols, h, w = tiles.shape[:4]
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, *tiles.shape[4:]), fill)
    for i in range(rows):
        for j in range(cols):
            out[i * (h + gap): i * (h + gap) + h, j * (w + gap): j * (w + gap) + w] = tiles[i, j]
    return out


def gap_of(size: int) -> int:
    return max(1, size // 16)


def rgb01(images: Tensor) -> np.ndarray:
    """uint8 [B, 3, H, W] -> float [B, H, W, 3] in [0, 1]."""
    return images.permute(0, 2, 3, 1).cpu().numpy() / 255.0


def overlay(images: Tensor, heat: Tensor) -> np.ndarray:
    """The images under heat maps [B, gh, gw] in [0, 1], upsampled: float [B, H, W, 3]."""
    from matplotlib import colormaps

    colour = colormaps[HEAT](upsample(heat.float().cpu(), images.shape[-2:]).numpy())[..., :3]
    return (1 - ALPHA) * rgb01(images) + ALPHA * colour


def grid_figure(title: str, tiles: np.ndarray, rows: list[str], cols: list[str],
                colorbar: str | None = RELATIVE) -> tuple[Figure, Axes]:
    """Tiles [rows, cols, H, W, 3] as one labelled image (one axes: fast to draw), with a
    colour bar of the heat map scale."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    r, c, h, w = tiles.shape[:4]
    gap = gap_of(h)
    fig = Figure(figsize=(PANEL * c + 2.2, PANEL * r + 0.9), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(mosaic(tiles, gap, 1.0))
    ax.set_xticks([j * (w + gap) + (w - 1) / 2 for j in range(c)], cols, fontsize=8)
    ax.set_yticks([i * (h + gap) + (h - 1) / 2 for i in range(r)], rows, fontsize=8)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=10)
    if colorbar:
        fig.colorbar(ScalarMappable(Normalize(0, 1), HEAT), ax=ax, shrink=0.6, label=colorbar)
    return fig, ax


def check_scale(scale: str, visualizer: str) -> None:
    if scale not in SCALES:
        raise ZooError(f"visualizer '{visualizer}': scale must be panel (each map to its own "
                       f"maximum) or image (one maximum per image), got {scale!r}")


def scale_maps(maps: Tensor, scale: str) -> tuple[Tensor, str]:
    """Heat maps [B, panels, gh, gw] in [0, 1] and the colour bar's label: each panel over its
    own maximum (`panel`: every map spans the colours, a near-uniform head looks as hot as a
    sharp one) or over the largest value of the image's panels (`image`: heads compare)."""
    if scale == "panel":
        return scaled(maps), RELATIVE
    return maps / maps.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12), SHARED


def heat_figure(title: str, images: Tensor, names: list[str],
                columns: list[tuple[str, Tensor]], scale: str = "panel") -> Figure:
    """Rows = images; columns = the input, then one heat map [B, gh, gw] per column over the
    image, scaled as `scale` says (scale_maps)."""
    maps, label = scale_maps(torch.stack([m.float().cpu() for _, m in columns], 1), scale)
    tiles = [rgb01(images)] + [overlay(images, maps[:, i]) for i in range(len(columns))]
    return grid_figure(title, np.stack(tiles, 1), names, ["input"] + [c for c, _ in columns],
                       colorbar=label)[0]


def note_figure(title: str, text: str) -> Figure:
    """A figure that says why there is nothing to draw."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 2), dpi=DPI)
    fig.suptitle(title)
    fig.text(0.5, 0.45, text, ha="center", va="center")
    return fig


def save_png(fig: Figure, file: Any) -> None:
    """PNG of the figure, cropped to what it draws (long row labels included)."""
    fig.savefig(file, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.1)


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG file contents (save_png)."""
    buf = io.BytesIO()
    save_png(fig, buf)
    return buf.getvalue()


def figure_array(png: bytes) -> Tensor:
    """A PNG (png_bytes) as a [3, H, W] float image in [0, 1] (what TensorBoard takes)."""
    from PIL import Image

    rgb = np.array(Image.open(io.BytesIO(png)).convert("RGB"))
    return torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255)


def build_visualizers(specs: Sequence[Any], path: str) -> list[tuple[str, Any]]:
    """(name, visualizer) for each spec, built through the registry (errors name `path[i]`)."""
    return [(spec_name(s), build("visualizer", s, path=f"{path}[{i}]")) for i, s in enumerate(specs)]


def unmet(vis: Any, model: ViT) -> str | None:
    """Why `vis` cannot draw `model`: the first of the visualizer's `needs` the model lacks."""
    return next(filter(None, (model.lacks(n) for n in getattr(vis, "needs", ()))), None)


def drawable(visualizers: list[tuple[str, Any]], model: ViT,
             warn: Any) -> list[tuple[str, Any]]:
    """The visualizers that can draw `model`; `warn(line)` is told of each that cannot, once."""
    out = []
    for name, vis in visualizers:
        if why := unmet(vis, model):
            warn(f"visualizer '{name}' skipped: {why}")
        else:
            out.append((name, vis))
    return out


def draw(visualizers: list[tuple[str, Any]], model: ViT, shown: Shown,
         x: Tensor) -> dict[str, Figure]:
    """Every visualizer's figures of `shown` (`x`: its images as the model reads them), names
    made unique; images labelled with the model's prediction, computed once for all of them.
    A visualizer the model cannot serve is a one-line error naming another to use."""
    for name, vis in visualizers:
        if why := unmet(vis, model):
            raise ZooError(f"visualizer '{name}': {why}; choose one that needs no attention "
                           "maps, such as posemb_similarity (zoo list visualizer)")
    pred = predicted(model, x, shown.classes)
    labels = class_labels(shown, [("pred", pred)] if pred is not None else [])
    figures: dict[str, Figure] = {}
    for _, vis in visualizers:
        for key, fig in vis(model, shown.images.cpu(), x, labels).items():
            figures[key if key not in figures else f"{key}_{len(figures)}"] = fig
    return figures
