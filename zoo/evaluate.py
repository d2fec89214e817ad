"""`zoo eval`: accuracy, per-class accuracy and a confusion matrix for a trained run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from zoo import checkpoint, data
from zoo.errors import ZooError
from zoo.model import ViT, build_model
from zoo.recipe import Recipe, check_plugins, load_recipe
from zoo.registry import discover
from zoo.rundir import RECIPE_FILE, write_json
from zoo.trainer import Dist, pick_device


def run_of(ckpt: Path) -> Path:
    """The run dir a checkpoint folder belongs to (the folder holding recipe.yaml)."""
    for parent in (ckpt, *ckpt.resolve().parents):
        if (parent / RECIPE_FILE).exists():
            return parent
    raise ZooError(f"{ckpt}: no {RECIPE_FILE} found above this checkpoint; evaluate a run dir")


def load_trained(
    source: str | Path, overrides: list[str] | None = None
) -> tuple[ViT, Recipe, Path]:
    """Model (EMA weights when the run kept them), its recipe, and its run dir."""
    ckpt = checkpoint.resolve(source)
    run = run_of(ckpt)
    recipe_path = run / RECIPE_FILE
    recipe = load_recipe(recipe_path, overrides)
    discover(recipe.plugins)
    check_plugins(recipe, str(recipe_path))
    model = build_model(recipe.model)
    ema = ckpt / checkpoint.EMA_FILE
    weights = checkpoint.load_weights(ema if ema.exists() else ckpt / checkpoint.MODEL_FILE)
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise ZooError(f"{ckpt}: weights do not fit the run's recipe ({str(e).splitlines()[0]})") from e
    return model.eval(), recipe, run


@torch.no_grad()
def confusion(model: ViT, dataset: Any, recipe: Recipe, device: torch.device) -> torch.Tensor:
    """[true, predicted] counts over a whole split."""
    n = len(dataset.classes)
    loader = data.make_loader(
        dataset, batch_size=recipe.data.eval_batch_size, device=device, train=False,
        num_workers=recipe.data.num_workers, on_device=recipe.data.on_device,
    )
    counts = torch.zeros(n * n, dtype=torch.long, device=device)
    for images, labels in loader.epoch(0, 0):
        pred = model(data.normalize(data.to_float(images), dataset.mean, dataset.std)).argmax(-1)
        counts += torch.bincount(labels * n + pred, minlength=n * n)
    return counts.view(n, n).cpu()


def plot_confusion(cm: torch.Tensor, classes: list[str], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    rates = (cm.float() / cm.sum(1, keepdim=True).clamp(min=1)).numpy()
    size = max(5.0, 0.45 * n)
    fig, ax = plt.subplots(figsize=(size + 1, size))
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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def evaluate(
    source: str | Path, split: str = "test", dataset: str | None = None,
    overrides: list[str] | None = None, device: str = "auto",
) -> dict[str, Any]:
    """Evaluate a run or checkpoint on `split`; write eval_<split>.json and a figure."""
    overrides = list(overrides or [])
    if dataset is not None:
        try:
            spec = yaml.safe_load(dataset)
        except yaml.YAMLError as e:
            raise ZooError(f"--data {dataset}: not a dataset name or YAML mapping") from e
        overrides.append(f"data.dataset={yaml.safe_dump(spec, default_flow_style=True).strip()}")
    model, recipe, run = load_trained(source, overrides)
    dev = pick_device(device, Dist())
    ds = data.build_datasets(recipe.data.dataset, [split], recipe.model.img_size, recipe.data.root)[split]
    if len(ds.classes) != recipe.model.num_classes:
        raise ZooError(
            f"--data: the dataset has {len(ds.classes)} classes, the model {recipe.model.num_classes}"
        )
    cm = confusion(model.to(dev), ds, recipe, dev)
    per_class = (cm.diag().float() / cm.sum(1).clamp(min=1)).tolist()
    result = {
        "split": split,
        "dataset": recipe.data.dataset,
        "source": str(source),
        "images": int(cm.sum()),
        "acc": float(cm.diag().sum() / cm.sum().clamp(min=1)),
        "per_class_acc": dict(zip(ds.classes, per_class, strict=True)),
        "confusion": cm.tolist(),
    }
    write_json(run / f"eval_{split}.json", result)
    plot_confusion(cm, ds.classes, f"{recipe.name} — {split} acc {result['acc']:.4f}",
                   run / "figures" / f"confusion_{split}.png")
    return result
