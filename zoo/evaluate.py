"""`zoo eval`: accuracy, per-class accuracy and a confusion matrix for a trained run."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo import data
from zoo.device import Dist, pick_device
from zoo.errors import ZooError, first_line
from zoo.io import atomic_write, write_json
from zoo.loaders import make_loader
from zoo.model import ViT
from zoo.recipe import parse_spec_text, yaml_value
from zoo.runs import RunRef, load_checkpoint, trained_on
from zoo.schema import Recipe


def logits_of(model: nn.Module, loader: Any, mean: Sequence[float], std: Sequence[float],
              autocast: Callable[[], AbstractContextManager] = nullcontext,
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(logits, labels) for each batch of one pass over `loader`, inputs normalised as in
    training: the one evaluation loop of training and `zoo eval`. Call under no_grad."""
    for images, labels in loader.epoch(0, 0):
        x = data.normalize(data.to_float(images), mean, std)
        with autocast():
            logits = model(x)
        yield logits, labels


@torch.no_grad()
def loss_sums(model: nn.Module, loader: Any, mean: Sequence[float], std: Sequence[float],
              autocast: Callable[[], AbstractContextManager] = nullcontext) -> torch.Tensor:
    """[summed cross-entropy, correct, images] over one pass of `loader`, on its device."""
    model.eval()
    sums = torch.zeros(3, device=next(model.parameters()).device)
    for logits, labels in logits_of(model, loader, mean, std, autocast):
        sums[0] += F.cross_entropy(logits.float(), labels, reduction="sum")
        sums[1] += (logits.argmax(-1) == labels).sum()
        sums[2] += labels.shape[0]
    return sums


@torch.no_grad()
def confusion(model: ViT, dataset: Any, recipe: Recipe, device: torch.device,
              mean: Any, std: Any) -> torch.Tensor:
    """[true, predicted] counts over a whole split, inputs normalised as in training."""
    n = len(dataset.classes)
    loader = make_loader(
        dataset, batch_size=recipe.data.eval_batch_size, device=device, train=False,
        num_workers=recipe.data.num_workers, on_device=recipe.data.on_device,
    )
    counts = torch.zeros(n * n, dtype=torch.long, device=device)
    for logits, labels in logits_of(model, loader, mean, std):
        counts += torch.bincount(labels * n + logits.argmax(-1), minlength=n * n)
    return counts.view(n, n).cpu()


def plot_confusion(cm: torch.Tensor, classes: list[str], title: str, path: Path) -> None:
    """The confusion matrix as rates of each true class, counts written in where they fit;
    drawn on a bare Figure (Agg, never pyplot, as every zoo figure) and written atomically."""
    from matplotlib.figure import Figure

    n = len(classes)
    rates = (cm.float() / cm.sum(1, keepdim=True).clamp(min=1)).numpy()
    size = max(5.0, 0.45 * n)
    fig = Figure(figsize=(size + 1, size), layout="tight")
    ax = fig.add_subplot()
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    if n <= 20:
        ax.set_xticks(range(n), classes, rotation=60, ha="right")
        ax.set_yticks(range(n), classes)
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    atomic_write(path, png.getvalue())


def evaluate(ref: RunRef, split: str = "test", dataset: str | None = None,
             device: str = "auto", out: str | Path | None = None) -> dict[str, Any]:
    """Evaluate a run or checkpoint on `split`, or on another `dataset` (a spec's text, as
    --data gives it); write eval_<split>.json and a figure into the run dir, or into `out`
    (a run dir may be read-only, or someone else's)."""
    if dataset is not None:
        spec = yaml_value(parse_spec_text(dataset, "--data"))
        ref = replace(ref, overrides=(*ref.overrides, f"data.dataset={spec}"))
    model, recipe, run, ckpt = load_checkpoint(ref)
    dev = pick_device(device, Dist(), "--device")
    ds = data.build_datasets(recipe.data.dataset, [split], recipe.model.img_size, recipe.data.root)[split]
    if len(ds.classes) != recipe.model.num_classes:
        raise ZooError(
            f"--data: the dataset has {len(ds.classes)} classes, the model {recipe.model.num_classes}"
        )
    stats = trained_on(run, recipe)  # as it trained, also on --data of other statistics
    cm = confusion(model.to(dev), ds, recipe, dev, tuple(stats["mean"]), tuple(stats["std"]))
    per_class = (cm.diag().float() / cm.sum(1).clamp(min=1)).tolist()
    result = {
        "split": split,
        "dataset": recipe.data.dataset,
        "source": str(ref.source),
        "checkpoint": str(ckpt),
        "images": int(cm.sum()),
        "acc": float(cm.diag().sum() / cm.sum().clamp(min=1)),
        "per_class_acc": dict(zip(ds.classes, per_class, strict=True)),
        "confusion": cm.tolist(),
    }
    folder = Path(out) if out is not None else run
    try:
        write_json(folder / f"eval_{split}.json", result)
        plot_confusion(cm, ds.classes, f"{recipe.name} — {split} acc {result['acc']:.4f}",
                       folder / "figures" / f"confusion_{split}.png")
    except OSError as e:
        raise ZooError(f"{folder}: cannot write the evaluation ({first_line(e)}); "
                       "write it elsewhere with --out DIR") from e
    return result
