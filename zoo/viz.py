"""Attention visualization: the shared numerics, figure drawing, TensorBoard images, `zoo viz`.

A visualizer is a plugin of kind `visualizer`, one file in plugins/visualizer/: a class whose
constructor takes its options (its signature is its schema, as for every plugin) and whose
instances are called as

    vis(model, images, x, names) -> {figure name: matplotlib Figure}

    model   a zoo ViT, in eval mode
    images  uint8 [B, 3, H, W] on the CPU: what the figures show
    x       the same images as the model reads them: float, normalised, on the model's device
    names   one label per image

A visualizer that draws one heat map per image also has `heatmap(model, x) -> [B, gh, gw]`
(float, over the patch grid); `zoo viz --compare` puts two models' heat maps side by side.

Diff-ViT maps (A1 - lambda A2) have negative entries and rows summing to 1 - lambda; every
visualizer reads attention through `as_distribution`, which says why. Figures use
matplotlib's object API drawn by Agg, never pyplot: nothing global changes, nothing leaks.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from zoo.data import TensorData, build_datasets, normalize, resize_images, to_float
from zoo.errors import ZooError, suggest
from zoo.io import open_rgb, quiet_hub_retries, read_state_dict
from zoo.registry import build, spec_name

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from zoo.model import ViT

ALL = ["cls_attention", "rollout", "dino", "posemb_similarity"]  # `zoo viz` without --visualizer
COMPARE = ["rollout", "cls_attention"]  # `zoo viz --compare` without --visualizer
PANEL = 1.6  # inches per image panel
DPI = 100
HEAT = "inferno"
ALPHA = 0.6  # weight of the heat map over the image
RELATIVE = "attention / its maximum in the panel"

# ---------------------------------------------------------------------------------------
# Numerics: plain functions of tensors, checked by the tests on known inputs.


def as_distribution(attn: Tensor) -> Tensor:
    """Rows made non-negative and summing to 1 ([..., T, T]); softmax attention is unchanged.

    Diff-ViT's map A1 - lambda * A2 is negative where a head cancels attention (the "noise"
    the second map subtracts) and its rows sum to 1 - lambda. Rollout, mass thresholds and
    mass shares read a row as a distribution over the tokens a token draws from, so we keep
    the positive part, the attention left after cancellation, and renormalise it. |A| would
    count what the head cancels as attention, the opposite of what the head does.
    """
    a = attn.clamp_min(0)
    return a / a.sum(-1, keepdim=True).clamp_min(1e-12)


def cls_maps(attn: Tensor, grid: tuple[int, int], prefix: int = 1) -> Tensor:
    """[B, heads, T, T] -> [B, heads, gh, gw]: the [CLS] token's (token 0) attention to each patch."""
    return rearrange(attn[:, :, 0, prefix:], "b h (gh gw) -> b h gh gw", gh=grid[0], gw=grid[1])


def fuse_heads(attn: Tensor, fusion: str) -> Tensor:
    """[B, heads, T, T] -> [B, T, T]: the mean, max or min over heads."""
    if fusion == "mean":
        return attn.mean(1)
    if fusion == "max":
        return attn.amax(1)
    if fusion == "min":
        return attn.amin(1)
    raise ZooError(f"fusion '{fusion}' is not one of mean, max, min{suggest(fusion, ['mean', 'max', 'min'])}")


def rollout(maps: Sequence[Tensor], fusion: str = "mean", discard: float = 0.0) -> Tensor:
    """Attention rollout (Abnar & Zuidema 2020): [B, T, T], row i = how much token i after the
    last layer draws from each input token, through every layer and residual.

    Per layer: heads fused, the weakest `discard` fraction of each row zeroed (less noise in
    the product), the residual added as the identity and rows renormalised, A' = norm(A + I)
    (the paper's 0.5 A + 0.5 I when rows sum to 1); then R = A'_L ... A'_1.
    """
    b, _, t, _ = maps[0].shape
    eye = torch.eye(t, dtype=maps[0].dtype, device=maps[0].device)
    r = eye.expand(b, t, t)
    for attn in maps:
        a = fuse_heads(as_distribution(attn), fusion)
        weakest = a.topk(int(discard * t), dim=-1, largest=False).indices
        a = a.scatter(-1, weakest, 0.0) + eye
        r = (a / a.sum(-1, keepdim=True)) @ r
    return r


def mass_mask(maps: Tensor, threshold: float = 0.6) -> Tensor:
    """The smallest set of patches holding `threshold` of each map's mass (Caron et al. 2021).

    maps [..., gh, gw] (non-negative) -> bool, same shape: the largest entries, taken in
    order until their sum reaches `threshold` of the total.
    """
    flat = maps.flatten(-2)
    vals, order = flat.sort(-1, descending=True)
    before = (vals.cumsum(-1) - vals) / flat.sum(-1, keepdim=True).clamp_min(1e-12)
    keep = torch.zeros_like(flat, dtype=torch.bool).scatter(-1, order, before < threshold)
    return keep.view(maps.shape)


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """[..., gh, gw] -> float [..., H, W], nearest: each patch one block, no made-up detail."""
    m = maps.float().reshape(-1, 1, *maps.shape[-2:])
    return F.interpolate(m, size=tuple(size), mode="nearest").reshape(*maps.shape[:-2], *size)


def cosine_similarity(emb: Tensor) -> Tensor:
    """[N, C] -> [N, N]: the cosine similarity of every pair of rows."""
    e = F.normalize(emb.float(), dim=-1)
    return e @ e.T


def scaled(maps: Tensor) -> Tensor:
    """Each [gh, gw] map divided by its maximum, so every panel spans the colour scale."""
    return maps / maps.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)


# ---------------------------------------------------------------------------------------
# Maps of a model


def grid_of(model: ViT, x: Tensor) -> tuple[int, int]:
    return x.shape[-2] // model.patch_size, x.shape[-1] // model.patch_size


def attention_maps(model: ViT, x: Tensor) -> list[Tensor]:
    """Each layer's attention [B, heads, T, T], float32 on the CPU, without autograd."""
    with torch.no_grad():
        return [a.float().cpu() for a in model.attention_maps(x)]


def cls_attention_maps(model: ViT, x: Tensor, layer: int = -1) -> Tensor:
    """[B, heads, gh, gw]: [CLS] attention to the patches in `layer` (negative: from the end)."""
    maps = attention_maps(model, x)
    if not -len(maps) <= layer < len(maps):
        raise ZooError(
            f"layer {layer} is out of range for a {len(maps)}-layer model "
            f"(0 to {len(maps) - 1}, or -1 to -{len(maps)} from the end)"
        )
    return cls_maps(as_distribution(maps[layer]), grid_of(model, x), model.num_prefix_tokens)


def rollout_map(model: ViT, x: Tensor, fusion: str = "mean", discard: float = 0.0) -> Tensor:
    """[B, gh, gw]: the rollout of the tokens the classifier reads, over the patches.

    That is the [CLS] row for `pool: cls`, and the mean of the patch rows for `pool: mean`.
    """
    r = rollout(attention_maps(model, x), fusion, discard)
    p = model.num_prefix_tokens
    rows = r[:, :1] if model.pool == "cls" else r[:, p:]
    grid = grid_of(model, x)
    return rearrange(rows.mean(1)[:, p:], "b (gh gw) -> b gh gw", gh=grid[0], gw=grid[1])


# ---------------------------------------------------------------------------------------
# Drawing


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


def heat_figure(title: str, images: Tensor, names: list[str],
                columns: list[tuple[str, Tensor]]) -> Figure:
    """Rows = images; columns = the input, then one heat map [B, gh, gw] per column over the
    image, each scaled to its maximum."""
    tiles = [rgb01(images)] + [overlay(images, scaled(maps.cpu())) for _, maps in columns]
    return grid_figure(title, np.stack(tiles, 1), names, ["input"] + [c for c, _ in columns])[0]


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


def figure_array(fig: Figure) -> Tensor:
    """The figure's PNG as a [3, H, W] float image in [0, 1] (what TensorBoard takes)."""
    from PIL import Image

    buf = io.BytesIO()
    save_png(fig, buf)
    rgb = np.array(Image.open(buf).convert("RGB"))
    return torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255)


# ---------------------------------------------------------------------------------------
# Images


def load_image(path: str | Path, size: int) -> Tensor:
    """One image file as uint8 [3, size, size]: RGB (zoo.data.open_rgb), shorter side
    resized to `size`, centre cropped (as FolderData reads images)."""
    from PIL import Image, ImageOps

    img = ImageOps.fit(open_rgb(path, draft=size), (size, size), Image.BICUBIC)
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()


def load_images(paths: Sequence[str | Path], size: int) -> tuple[Tensor, list[str]]:
    """Image files -> uint8 [B, 3, size, size] and their file names."""
    return torch.stack([load_image(p, size) for p in paths]), [Path(p).name for p in paths]


def first_images(dataset: Any, n: int) -> tuple[Tensor, list[str]]:
    """The first n images of a split (uint8 [n, 3, H, W]) and names `index: class`: the fixed
    images every evaluation shows, so maps can be compared across epochs."""
    n = min(n, len(dataset))
    if isinstance(dataset, TensorData):
        images, labels = dataset.images[:n], dataset.labels[:n].tolist()
    else:
        pairs = [dataset[i] for i in range(n)]
        images, labels = torch.stack([p[0] for p in pairs]), [int(p[1]) for p in pairs]
    return images.cpu(), [f"{i}: {dataset.classes[y]}" for i, y in enumerate(labels)]


# ---------------------------------------------------------------------------------------
# Running visualizers


def build_visualizers(specs: Sequence[Any], path: str) -> list[tuple[str, Any]]:
    """(name, visualizer) for each spec, built through the registry (errors name `path[i]`)."""
    return [(spec_name(s), build("visualizer", s, path=f"{path}[{i}]")) for i, s in enumerate(specs)]


def model_input(model: ViT, images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 images -> what the model reads: resized to its img_size, in [0, 1], normalised."""
    device = next(model.parameters()).device
    images = resize_images(images, model.cfg.img_size).to(device)
    return normalize(to_float(images), mean, std)


def draw(visualizers: list[tuple[str, Any]], model: ViT, images: Tensor, x: Tensor,
         names: list[str]) -> dict[str, Figure]:
    """Every visualizer's figures, names made unique."""
    figures: dict[str, Figure] = {}
    for _, vis in visualizers:
        for key, fig in vis(model, images.cpu(), x, names).items():
            figures[key if key not in figures else f"{key}_{len(figures)}"] = fig
    return figures


@torch.no_grad()
def tensorboard_images(model: ViT, images: Tensor, mean: Sequence[float], std: Sequence[float],
                       specs: Sequence[Any], names: list[str] | None = None) -> dict[str, Tensor]:
    """The recipe's `log.visualizers` on fixed images, as {`viz/<figure>`: [3, H, W] in [0, 1]}.

    What Trainer.figures logs to TensorBoard at each evaluation; the caller puts the model
    in eval mode. images: uint8 [B, 3, H, W] at the model's size.
    """
    names = names or [str(i) for i in range(len(images))]
    x = model_input(model, images, mean, std)
    figures = draw(build_visualizers(specs, "log.visualizers"), model, images, x, names)
    return {f"viz/{k}": figure_array(f) for k, f in figures.items()}


def compare_figures(a: Subject, b: Subject, visualizers: list[tuple[str, Any]], images: Tensor,
                    names: list[str]) -> dict[str, Figure]:
    """For each visualizer with a `heatmap`: rows = images; columns = input, A's map, B's map."""
    figures = {}
    for name, vis in visualizers:
        if not hasattr(vis, "heatmap"):
            raise ZooError(
                f"--compare: visualizer '{name}' draws no single map per image; "
                f"compare with one of: {', '.join(COMPARE)}"
            )
        cols = [(s.label, vis.heatmap(s.model, model_input(s.model, images, s.mean, s.std)))
                for s in (a, b)]
        figures[f"compare_{name}"] = heat_figure(f"{name}: {a.label} vs {b.label}", images, names, cols)
    return figures


# ---------------------------------------------------------------------------------------
# What `zoo viz` looks at: a run, a checkpoint, or a timm model


@dataclass
class Subject:
    """A model to look at and how to feed it; `images` are its run's fixed validation images."""

    model: ViT
    label: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    out: Path  # where its PNGs go by default
    images: Tensor | None = None
    names: list[str] = field(default_factory=list)
    visualizers: list[Any] = field(default_factory=list)  # the recipe's log.visualizers


def load_subject(source: str, weights: str | None = None, need_images: bool = True,
                 plugins: Sequence[str] = (), trust_plugins: bool = False) -> Subject:
    """A run dir, a checkpoint (folder or .safetensors in a run) or `timm:MODEL_NAME`.

    A run's own images are the first images of its first evaluated split (as training
    showed them); without `need_images` (the user brings images) no dataset is read.
    """
    if source.startswith("timm:"):
        return load_timm(source.removeprefix("timm:"), weights)
    if weights is not None:
        raise ZooError("--weights is for timm:MODEL sources; a run or checkpoint has its own weights")
    from zoo.runs import load_trained, trained_on

    model, recipe, run = load_trained(source, plugins=plugins, trust_plugins=trust_plugins)
    stats = trained_on(run, recipe)
    images, names = None, []
    if need_images:
        split = recipe.data.eval_splits[0]
        shown = build_datasets(recipe.data.dataset, [split], recipe.model.img_size,
                               recipe.data.root)[split]
        images, names = first_images(shown, recipe.log.viz_images)
    label = f"{recipe.name} ({spec_name(recipe.model.attention)})"
    return Subject(model, label, tuple(stats["mean"]), tuple(stats["std"]),
                   run / "figures" / "viz", images, names, list(recipe.log.visualizers))


def load_timm(name: str, weights: str | None = None) -> Subject:
    """A timm ViT, pretrained or with the state dict in `weights`, converted by `from_timm`;
    images are normalised with its pretrained config's mean and std."""
    import timm

    from zoo.convert import from_timm

    if not timm.is_model(name):
        arch = name.split(".")[0]
        raise ZooError(f"timm:{name}: unknown timm model{suggest(arch, timm.list_models())}")
    if "." in name and not timm.list_pretrained(name):
        known = ", ".join(timm.list_pretrained(name.split(".")[0] + ".*")) or "none"
        raise ZooError(f"timm:{name}: unknown pretrained tag; there are: {known}")
    try:
        with quiet_hub_retries():
            tm = timm.create_model(name, pretrained=weights is None)
    except Exception as e:  # no network, no cache: hub, HTTP and file errors alike
        file = name.replace("/", "_") + ".pth"
        raise ZooError(
            f"timm:{name}: cannot get pretrained weights ({type(e).__name__}); where there is a "
            f"network run `python -c \"import timm, torch; torch.save(timm.create_model('{name}', "
            f"pretrained=True).state_dict(), '{file}')\"` and pass --weights {file}"
        ) from e
    if weights is not None:
        try:
            missing, unexpected = tm.load_state_dict(read_state_dict(weights), strict=False)
        except RuntimeError as e:  # shapes that do not fit
            raise ZooError(f"--weights {weights}: does not fit timm:{name} "
                           f"({str(e).strip().splitlines()[-1].strip()})") from e
        if missing or unexpected:
            raise ZooError(f"--weights {weights}: does not fit timm:{name} (missing "
                           f"{missing[:3]}..., unexpected {unexpected[:3]}...)")
    cfg = tm.pretrained_cfg
    mean, std = tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))
    return Subject(from_timm(tm.eval()).eval(), f"timm:{name}", mean, std,
                   Path("viz") / f"timm-{name.replace('/', '_')}")
