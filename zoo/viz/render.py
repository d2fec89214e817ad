"""What `zoo viz` does, as a library: the attention figures of a run, a checkpoint or a timm
model, alone or beside a second one, on its run's own images or on image files.

`render` returns the figures, so that anything that shows them (the CLI, a notebook, a web
page) calls the same code; `write_pngs` saves them as the CLI does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from zoo.data import load_images, model_input
from zoo.device import Dist, pick_device
from zoo.errors import ZooError, first_line
from zoo.io import atomic_write
from zoo.registry import discover
from zoo.runs import RunRef
from zoo.viz.figures import Shown, build_visualizers, draw, png_bytes
from zoo.viz.subjects import ALL, COMPARE, Subject, compare_figures, load_subject

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class Rendered:
    """The figures by name (`rollout`, `compare_rollout`, ...) and the folder their PNGs go
    to unless told otherwise: <run>/figures/viz, or viz/timm-<name> for a timm model."""

    figures: dict[str, Figure]
    folder: Path


def render(ref: RunRef, *, images: Sequence[str | Path] = (), visualizers: Sequence[Any] = (),
           compare: RunRef | None = None, weights: str | None = None,
           device: str = "auto") -> Rendered:
    """The figures of `ref` (a run dir, a checkpoint or `timm:NAME`, with `weights` for the
    latter), or of `ref` and `compare` side by side, drawn on `device`.

    `visualizers` are plugin specs; by default the run recipe's log.visualizers, else every
    built-in one (COMPARE with `compare`). `images` are files to look at; by default the
    run's first log.viz_images images of its first evaluated split.
    """
    dev = pick_device(device, Dist(), "--device")
    discover(ref.plugins)  # visualizer plugins, also for a timm model (which has no recipe)
    a = load_subject(ref, weights, need_images=not images)
    b = load_subject(compare, need_images=False) if compare is not None else None
    for subject in filter(None, (a, b)):
        subject.model.to(dev)
    chosen = list(visualizers) or (COMPARE if b else a.visualizers or ALL)
    built = build_visualizers(chosen, "--visualizer")
    shown = shown_to(a, ref, images)
    with torch.no_grad():
        if b is not None:
            figures = compare_figures(a, b, built, shown)
        else:
            x = model_input(a.model, shown.images, a.mean, a.std)
            figures = draw(built, a.model, shown, x)
    return Rendered(figures, a.out)


def shown_to(subject: Subject, ref: RunRef, images: Sequence[str | Path]) -> Shown:
    """The image files, read at the model's size and labelled with the predicted class (its
    run's class names), or else the subject's own images."""
    if images:
        pixels, files = load_images(images, subject.model.cfg.img_size)
        return Shown(pixels, files, classes=subject.classes)
    if subject.shown is None:
        raise ZooError(f"{ref.source} has no dataset to take images from; pass --image PATH")
    return subject.shown


def write_pngs(figures: dict[str, Figure], folder: Path) -> list[Path]:
    """Each figure as `<folder>/<name>.png`, written atomically; their paths, in order."""
    paths = []
    for key, fig in figures.items():
        path = folder / f"{key}.png"
        try:
            atomic_write(path, png_bytes(fig))
        except OSError as e:
            raise ZooError(f"{folder}: cannot write the figures ({first_line(e)}); "
                           "write them elsewhere with --out DIR") from e
        paths.append(path)
    return paths
