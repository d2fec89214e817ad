"""`zoo predict`: a trained run's most probable classes for image files.

Everything the model needs besides its weights comes from the run: class names, mean and
std from its data.json (zoo.runs.trained_on), so no dataset has to be on disk. Images are
read as `zoo viz` reads them (zoo.data.load_image: RGB, shorter side resized,
centre cropped, as FolderData) and normalised as in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from zoo.data import load_images, model_input
from zoo.device import Dist, pick_device
from zoo.errors import ZooError, clip, first_line
from zoo.io import regular_stat
from zoo.runs import load_checkpoint, trained_on


@dataclass
class Prediction:
    """One image's k most probable classes, most probable first."""

    image: str
    classes: list[str]
    probs: list[float]


def check_images(paths: Sequence[str | Path]) -> None:
    """Refuse a missing path, a folder or a FIFO before the model loads: a typo should not
    cost a checkpoint read, and a FIFO would block the decoder."""
    for p in paths:
        try:
            regular_stat(Path(p))
        except FileNotFoundError:
            raise ZooError(f"{clip(str(p))}: no such file") from None
        except OSError as e:
            raise ZooError(f"{clip(str(p))}: cannot read ({first_line(e)})") from e


@torch.no_grad()
def predict(
    source: str | Path, images: Sequence[str | Path], top_k: int = 5, device: str = "auto",
    which: str = "last", plugins: Sequence[str | Path] = (), trust_plugins: bool = False,
) -> tuple[Path, list[Prediction]]:
    """The checkpoint read and each image's `top_k` classes (at most all of them).

    Images are decoded one batch (the run's data.eval_batch_size) at a time, so a long list
    of files never sits in memory at once.
    """
    if top_k < 1:
        raise ZooError(f"--top-k {top_k}: must be 1 or more")
    check_images(images)
    model, recipe, run, ckpt = load_checkpoint(source, None, which, plugins, trust_plugins)
    stats = trained_on(run, recipe)
    classes, cfg = list(stats["classes"]), recipe.model
    if cfg.in_chans != 3:
        raise ZooError(f"{source}: the model reads {cfg.in_chans}-channel images; "
                       "zoo predict gives it RGB image files")
    if len(classes) != cfg.num_classes:
        raise ZooError(f"{source}: the model has {cfg.num_classes} outputs but the run's data "
                       f"names {len(classes)} classes; predict needs a classifier")
    dev = pick_device(device, Dist(), "--device")
    model.to(dev)
    k, batch = min(top_k, len(classes)), recipe.data.eval_batch_size
    found = []
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        pixels, _ = load_images(chunk, cfg.img_size)
        logits = model(model_input(model, pixels, stats["mean"], stats["std"]))
        top = logits.float().softmax(-1).topk(k, dim=-1)
        for path, probs, ids in zip(chunk, top.values.tolist(), top.indices.tolist(), strict=True):
            found.append(Prediction(str(path), [classes[i] for i in ids], probs))
    return ckpt, found
