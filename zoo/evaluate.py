"""`zoo eval`: accuracy, per-class accuracy and a confusion matrix for a trained run."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from zoo import checkpoint, data
from zoo.device import Dist, pick_device
from zoo.errors import ZooError, first_line
from zoo.model import ViT, build_model
from zoo.recipe import Recipe, load_plugins, load_recipe
from zoo.rundir import RECIPE_FILE, write_json


def run_of(ckpt: Path) -> Path:
    """The run dir a checkpoint folder belongs to (the folder holding recipe.yaml)."""
    for parent in (ckpt, *ckpt.resolve().parents):
        if (parent / RECIPE_FILE).exists():
            return parent
    raise ZooError(f"{ckpt}: no {RECIPE_FILE} found above this checkpoint; evaluate a run dir")


def pick_checkpoint(source: str | Path, which: str = "last") -> Path:
    """The checkpoint folder of `source`: for a run dir, its `last` or `best` link (or a
    checkpoint PATH given as `which`); otherwise `source` itself names a checkpoint."""
    if which not in ("last", "best"):
        return checkpoint.resolve(which)
    link = Path(source) / "checkpoints" / which
    if (Path(source) / RECIPE_FILE).exists() and which == "best" and not link.exists():
        raise ZooError(f"{source}: no best checkpoint (runs that report the test set keep only "
                       "last; best follows val accuracy); use --checkpoint last")
    return checkpoint.resolve(link if link.exists() else source)


def load_trained(
    source: str | Path, overrides: list[str] | None = None, which: str = "last",
    plugins: Sequence[str | Path] = (), trust_plugins: bool = False,
) -> tuple[ViT, Recipe, Path]:
    """Model (EMA weights when the run kept them), its recipe, and its run dir.

    The plugin files the run's recipe names are code: imported only with `trust_plugins`
    (see zoo.recipe.load_plugins); `plugins` are files the user gives.
    """
    model, recipe, run, _ = load_checkpoint(source, overrides, which, plugins, trust_plugins)
    return model, recipe, run


def load_checkpoint(
    source: str | Path, overrides: list[str] | None = None, which: str = "last",
    plugins: Sequence[str | Path] = (), trust_plugins: bool = False,
) -> tuple[ViT, Recipe, Path, Path]:
    """load_trained, and the checkpoint folder it read (a step-XXXXXXXX folder)."""
    ckpt = pick_checkpoint(source, which)
    run = run_of(ckpt)
    recipe_path = run / RECIPE_FILE
    recipe = load_recipe(recipe_path, overrides)
    load_plugins(recipe, str(recipe_path), plugins, trust_plugins)
    model = build_model(recipe.model)
    ema = ckpt / checkpoint.EMA_FILE
    checkpoint.load_model(model, ema if ema.exists() else ckpt / checkpoint.MODEL_FILE, recipe_path)
    return model.eval(), recipe, run, ckpt.resolve()


def trained_on(run: Path, recipe: Recipe) -> dict[str, Any]:
    """Class names and normalisation of the run's training data (data.describe): from the
    run's DATA_FILE, so that images need no dataset on disk; runs made before it existed
    read their training split instead."""
    path = run / data.DATA_FILE
    if not path.exists():
        train = data.build_datasets(recipe.data.dataset, ["train"], recipe.model.img_size,
                                    recipe.data.root)["train"]
        return data.describe(train)
    try:
        info = json.loads(path.read_text())
        ok = (isinstance(info, dict) and all(isinstance(info.get(k), list) for k in
                                             ("classes", "mean", "std"))
              and len(info["mean"]) == len(info["std"]) == recipe.model.in_chans
              and all(isinstance(v, int | float) for v in info["mean"] + info["std"]))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        ok = False
    if not ok:
        raise ZooError(f"{path}: not a valid {data.DATA_FILE} (classes, mean, std); delete it "
                       "and the run's training data will be read instead")
    return info


@torch.no_grad()
def confusion(model: ViT, dataset: Any, recipe: Recipe, device: torch.device,
              mean: Any, std: Any) -> torch.Tensor:
    """[true, predicted] counts over a whole split, inputs normalised as in training."""
    n = len(dataset.classes)
    loader = data.make_loader(
        dataset, batch_size=recipe.data.eval_batch_size, device=device, train=False,
        num_workers=recipe.data.num_workers, on_device=recipe.data.on_device,
    )
    counts = torch.zeros(n * n, dtype=torch.long, device=device)
    for images, labels in loader.epoch(0, 0):
        pred = model(data.normalize(data.to_float(images), mean, std)).argmax(-1)
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
    overrides: list[str] | None = None, device: str = "auto", which: str = "last",
    plugins: Sequence[str | Path] = (), trust_plugins: bool = False, out: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate a run or checkpoint on `split`; write eval_<split>.json and a figure into the
    run dir, or into `out` (a run dir may be read-only, or someone else's)."""
    overrides = list(overrides or [])
    if dataset is not None:
        try:
            spec = yaml.safe_load(dataset)
        except yaml.YAMLError as e:
            raise ZooError(f"--data {dataset}: not a dataset name or YAML mapping") from e
        overrides.append(f"data.dataset={yaml.safe_dump(spec, default_flow_style=True).strip()}")
    model, recipe, run, ckpt = load_checkpoint(source, overrides, which, plugins, trust_plugins)
    dev = pick_device(device, Dist())
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
        "source": str(source),
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
