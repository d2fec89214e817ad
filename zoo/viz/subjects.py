"""What `zoo viz` looks at: a run, a checkpoint or a timm model, and the images shown to it.

A run brings its model, the mean and std it was trained with and its fixed validation
images; a timm ViT is converted by `zoo.convert.from_timm`; image files are read through
`zoo.io.open_rgb`, the one size-capped decoder. `compare_figures` draws two subjects side by
side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from zoo.data import TensorData, build_datasets, model_input
from zoo.errors import ZooError
from zoo.registry import spec_name
from zoo.runs import RunRef, load_checkpoint, trained_on
from zoo.viz.figures import Shown, class_labels, heat_figure, predicted

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from zoo.model import ViT


ALL = ["cls_attention", "rollout", "dino", "posemb_similarity"]  # `zoo viz` without --visualizer
COMPARE = ["rollout", "cls_attention"]  # `zoo viz --compare` without --visualizer


def first_images(dataset: Any, n: int) -> Shown:
    """The first n images of a split (uint8 [n, 3, H, W] on the CPU), named by index, with
    their classes: the fixed images every evaluation shows, so maps compare across epochs."""
    n = min(n, len(dataset))
    if isinstance(dataset, TensorData):
        images, labels = dataset.images[:n], dataset.labels[:n].tolist()
    else:
        pairs = [dataset[i] for i in range(n)]
        images, labels = torch.stack([p[0] for p in pairs]), [int(p[1]) for p in pairs]
    return Shown(images.cpu(), [str(i) for i in range(n)], [dataset.classes[y] for y in labels],
                 list(dataset.classes))


@dataclass
class Subject:
    """A model to look at and how to feed it; `shown` are its run's fixed validation images,
    `classes` what its outputs stand for (empty where unknown: a timm model)."""

    model: ViT
    label: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    out: Path  # where its PNGs go by default
    shown: Shown | None = None
    classes: list[str] = field(default_factory=list)
    visualizers: list[Any] = field(default_factory=list)  # the recipe's log.visualizers
    run: Path | None = None  # the run dir and checkpoint folder it came from (not for timm)
    checkpoint: Path | None = None


def load_subject(ref: RunRef, weights: str | None = None, need_images: bool = True) -> Subject:
    """A run dir, a checkpoint (folder or .safetensors in a run) or `timm:MODEL_NAME`.

    A run's own images are the first images of its first evaluated split (as training
    showed them); without `need_images` (the user brings images) no dataset is read.
    """
    source = str(ref.source)
    if source.startswith("timm:"):
        return load_timm(source.removeprefix("timm:"), weights)
    if weights is not None:
        raise ZooError("--weights is for timm:MODEL sources; a run or checkpoint has its own weights")
    model, recipe, run, ckpt = load_checkpoint(ref)
    stats = trained_on(run, recipe)
    shown = None
    if need_images:
        split = recipe.data.eval_splits[0]
        dataset = build_datasets(recipe.data.dataset, [split], recipe.model.img_size,
                                 recipe.data.root)[split]
        shown = first_images(dataset, recipe.log.viz_images)
    label = f"{recipe.name} ({spec_name(recipe.model.attention)})"
    return Subject(model, label, tuple(stats["mean"]), tuple(stats["std"]),
                   run / "figures" / "viz", shown, list(stats["classes"]),
                   list(recipe.log.visualizers), run.resolve(), ckpt)


def load_timm(name: str, weights: str | None = None) -> Subject:
    """A timm ViT, pretrained or with the state dict in `weights`, converted by `from_timm`;
    images are normalised with its pretrained config's mean and std."""
    from zoo.convert import from_timm, timm_vit

    tm = timm_vit(name, weights, "--weights")
    cfg = tm.pretrained_cfg
    mean, std = tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))
    return Subject(from_timm(tm.eval()).eval(), f"timm:{name}", mean, std,
                   Path("viz") / f"timm-{name.replace('/', '_')}")


def tails(p: Path, q: Path) -> tuple[str, str]:
    """The shortest ends of two different paths that differ: `p4` and `p8` for two cells of a
    sweep, `sweep/p4` and `other/p4` for two folders of one name."""
    for k in range(1, max(len(p.parts), len(q.parts)) + 1):
        if p.parts[-k:] != q.parts[-k:]:
            return str(Path(*p.parts[-k:])), str(Path(*q.parts[-k:]))
    return str(p), str(q)


def compare_labels(a: Subject, b: Subject) -> tuple[str, str]:
    """A's and B's labels, told apart where they are equal (two runs of one recipe, two
    cells of a sweep): each with the end of its run dir's path that differs, or, for two
    checkpoints of one run, its checkpoint's name."""
    if a.label != b.label or a.run is None or b.run is None:
        return a.label, b.label
    paths = (a.run, b.run) if a.run != b.run else (a.checkpoint, b.checkpoint)
    if paths[0] == paths[1]:  # one model twice
        return a.label, b.label
    ta, tb = tails(*paths)
    return f"{a.label}, {ta}", f"{b.label}, {tb}"


def compare_figures(a: Subject, b: Subject, visualizers: list[tuple[str, Any]],
                    shown: Shown) -> dict[str, Figure]:
    """For each visualizer with a `heatmap`: rows = images, labelled with A's and B's
    predictions; columns = input, A's map, B's map."""
    xs = [model_input(s.model, shown.images, s.mean, s.std) for s in (a, b)]
    preds = [(f"pred {tag}", p) for tag, s, x in zip("AB", (a, b), xs, strict=True)
             if (p := predicted(s.model, x, s.classes)) is not None]
    labels = class_labels(shown, preds)
    titles = compare_labels(a, b)
    figures = {}
    for name, vis in visualizers:
        if not hasattr(vis, "heatmap"):
            raise ZooError(
                f"--compare: visualizer '{name}' draws no single map per image; "
                f"compare with one of: {', '.join(COMPARE)}"
            )
        cols = [(f"{tag}: {title}", vis.heatmap(s.model, x))
                for tag, title, s, x in zip("AB", titles, (a, b), xs, strict=True)]
        title = f"{name}: {titles[0]} vs {titles[1]}"
        figures[f"compare_{name}"] = heat_figure(title, shown.images, labels, cols)
    return figures
