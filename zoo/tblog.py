"""TensorBoard logging for a run: scalars, images, the recipe as text, and hparams."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams
from torchvision.utils import make_grid

from zoo.schema import Recipe


def open_writer(run_dir: Path, recipe: Recipe, step: int = 0) -> SummaryWriter:
    """A writer for the run; on resume, events logged after the checkpoint's step are hidden."""
    writer = SummaryWriter(log_dir=str(run_dir), purge_step=step or None)
    if step == 0:
        writer.add_text("recipe", "```yaml\n" + recipe.to_yaml() + "\n```", 0)
    return writer


def log_epoch(writer: SummaryWriter, metrics: dict[str, Any], lambdas: list[Any],
              figures: dict[str, torch.Tensor]) -> None:
    """One evaluation: its scalars, the Diff-ViT lambdas per layer, and the figures."""
    step = metrics["step"]
    for tag, key in [
        ("train/loss", "train_loss"), ("train/acc", "train_acc"), ("train/grad_norm", "grad_norm"),
        ("val/loss", "val_loss"), ("val/acc", "val_acc"),
        ("test/loss", "test_loss"), ("test/acc", "test_acc"), ("lr", "lr"),
        ("throughput/img_per_s", "img_per_s"),
    ]:
        if key in metrics:  # val and test only where data.eval_splits names them
            writer.add_scalar(tag, metrics[key], step)
    for i, lam in enumerate(lambdas, start=1):
        writer.add_scalar(f"lambda/layer_{i}", float(lam), step)
    for name, image in figures.items():
        writer.add_image(name, image, step)
    writer.flush()


def hparam_values(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested recipe -> {"model.dim": 192, ...}; values TensorBoard's HParams tab accepts."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(hparam_values(v, f"{key}."))
        elif isinstance(v, bool | int | float | str):
            out[key] = v
        else:
            out[key] = str(v)
    return out


def log_final(writer: SummaryWriter, recipe: Recipe, summary: dict[str, Any]) -> None:
    """Recipe + final metrics into the HParams tab, in the run's own event file."""
    final = {
        f"hparams/{k}": float(summary[k])
        for k in ("best_val_acc", "final_val_acc", "final_val_loss", "final_test_acc",
                  "final_test_loss", "img_per_s")
        if summary.get(k) is not None
    }
    exp, ssi, sei = hparams(hparam_values(recipe.to_dict()), final)
    for s in (exp, ssi, sei):
        writer.file_writer.add_summary(s)
    for k, v in final.items():
        writer.add_scalar(k, v, summary["steps"])
    writer.close()


def image_grid(images: torch.Tensor, nrow: int = 8) -> torch.Tensor:
    """uint8 or [0,1] float images [B, C, H, W] -> one [C, H', W'] float grid in [0,1]."""
    x = images.detach().float().cpu()
    if images.dtype == torch.uint8:
        x = x / 255
    return make_grid(x.clamp(0, 1), nrow=nrow, padding=1)
