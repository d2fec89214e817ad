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
from torch import Tensor

from zoo.data import load_image, model_input
from zoo.device import Dist, pick_device
from zoo.errors import ZooError, clip, first_line
from zoo.io import regular_stat
from zoo.runs import RunRef, load_checkpoint, trained_on


@dataclass
class Prediction:
    """One image's k most probable classes, most probable first."""

    image: str
    classes: list[str]
    probs: list[float]


def refused(paths: Sequence[str | Path]) -> dict[str, str]:
    """Why each missing path, folder or FIFO is refused, checked before the model loads: a
    typo should not cost a checkpoint read, and a FIFO would block the decoder."""
    why = {}
    for p in paths:
        try:
            regular_stat(Path(p))
        except FileNotFoundError:
            why[str(p)] = f"{clip(str(p))}: no such file"
        except ZooError as e:
            why[str(p)] = str(e)
        except OSError as e:
            why[str(p)] = f"{clip(str(p))}: cannot read ({first_line(e)})"
    return why


def decode(paths: Sequence[str | Path], size: int, why: dict[str, str],
           failed: list[str]) -> tuple[list[str], Tensor | None]:
    """The files of `paths` that decode, and their pixels (uint8 [n, 3, size, size]); the
    reason each other file does not is appended to `failed`, in order."""
    good, pixels = [], []
    for p in paths:
        if str(p) in why:
            failed.append(why[str(p)])
            continue
        try:
            pixels.append(load_image(p, size))
            good.append(str(p))
        except ZooError as e:
            failed.append(str(e))
    return good, torch.stack(pixels) if pixels else None


@torch.no_grad()
def predict(ref: RunRef, images: Sequence[str | Path], top_k: int = 5,
            device: str = "auto") -> tuple[Path | None, list[Prediction], list[str]]:
    """The checkpoint read, each readable image's `top_k` classes (at most all of them), and
    one line for each file that cannot be read: one bad file among many does not stop the
    rest. With no file there at all, no checkpoint is read (None).

    Images are decoded one batch (the run's data.eval_batch_size) at a time, so a long list
    of files never sits in memory at once.
    """
    if top_k < 1:
        raise ZooError(f"--top-k {top_k}: must be 1 or more")
    why = refused(images)
    if all(str(p) in why for p in images):
        return None, [], [why[str(p)] for p in images]
    model, recipe, run, ckpt = load_checkpoint(ref)
    stats = trained_on(run, recipe)
    classes, cfg = list(stats["classes"]), recipe.model
    if cfg.in_chans != 3:
        raise ZooError(f"{ref.source}: the model reads {cfg.in_chans}-channel images; "
                       "zoo predict gives it RGB image files")
    if len(classes) != cfg.num_classes:
        raise ZooError(f"{ref.source}: the model has {cfg.num_classes} outputs but the run's data "
                       f"names {len(classes)} classes; predict needs a classifier")
    dev = pick_device(device, Dist(), "--device")
    model.to(dev)
    k, batch = min(top_k, len(classes)), recipe.data.eval_batch_size
    found: list[Prediction] = []
    failed: list[str] = []
    for start in range(0, len(images), batch):
        good, pixels = decode(images[start:start + batch], cfg.img_size, why, failed)
        if pixels is None:
            continue
        logits = model(model_input(model, pixels, stats["mean"], stats["std"]))
        top = logits.float().softmax(-1).topk(k, dim=-1)
        for path, probs, ids in zip(good, top.values.tolist(), top.indices.tolist(), strict=True):
            found.append(Prediction(path, [classes[i] for i in ids], probs))
    return ckpt, found, failed
