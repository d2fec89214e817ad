"""Datasets, loaders and the augmentation pipeline.

A training batch flows: uint8 images on the device -> `to_float` -> augment ops (recipe
order) -> `normalize` -> model. Datasets that fit in memory (CIFAR, shapes) come back as
`TensorData` and live on the training device as uint8, cut into batches there (as the
fastest CIFAR trainers do: no workers, no per-step host syncs); other datasets are
map-style (`FolderData`) and go through a torch DataLoader with workers (zoo.loaders).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from zoo.errors import ZooError
from zoo.io import open_rgb
from zoo.registry import build, parse_spec, registry, spec_name

SPLITS = ("train", "val", "test")
DATA_FILE = "data.json"  # in a run dir: the classes and normalisation the model trained with
Batch = tuple[Tensor, Tensor]  # uint8 images [B, C, H, W], int64 labels [B], on the device

def check_split(split: str, name: str) -> None:
    if split not in SPLITS:
        raise ZooError(f"dataset '{name}': unknown split '{split}'; splits: {', '.join(SPLITS)}")


@dataclass
class TensorData:
    """A whole split in memory: uint8 images, labels, class names, normalisation stats."""

    images: Tensor  # [N, C, H, W] uint8
    labels: Tensor  # [N] int64
    classes: list[str]
    mean: tuple[float, ...]  # per channel, of images scaled to [0, 1]
    std: tuple[float, ...]
    masks: Tensor | None = None  # [N, H, W] bool: where the object is (shapes)
    missing: str | None = None  # a stand-in of the known size for absent files (DataMissing)

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ZooError(f"TensorData.images: expected uint8 [N, C, H, W], got "
                           f"{self.images.dtype} {list(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (n,):
            raise ZooError(f"TensorData.labels: expected int64 [{n}], got "
                           f"{self.labels.dtype} {list(self.labels.shape)}")
        if self.masks is not None and (self.masks.dtype != torch.bool or self.masks.shape
                                       != (n, *self.images.shape[2:])):
            raise ZooError("TensorData.masks: expected bool [N, H, W] matching the images")

    def __len__(self) -> int:
        return len(self.labels)


class FolderData(Dataset):
    """Image files with labels, decoded (PIL, RGB) and resized when read.

    The shorter side is resized to `img_size` and the centre cropped, so aspect ratios
    survive. A file that cannot be decoded raises a ZooError naming it: skipping it would
    silently change the dataset, and with it every number measured on it.
    """

    def __init__(self, samples: list[tuple[Path, int]], classes: list[str], img_size: int,
                 mean: Sequence[float], std: Sequence[float]):
        self.samples = samples
        self.classes = classes
        self.img_size = img_size
        self.mean = tuple(mean)
        self.std = tuple(std)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        from PIL import Image

        path, label = self.samples[i]
        img = open_rgb(path)
        s = self.img_size
        scale = s / min(img.size)
        w, h = max(s, round(img.width * scale)), max(s, round(img.height * scale))
        img = img.resize((w, h), Image.BICUBIC)
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s))
        return torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous(), label


def resize_images(images: Tensor, size: int, chunk: int = 1024) -> Tensor:
    """uint8 [N, C, H, W] -> uint8 [N, C, size, size], antialiased bilinear, in chunks."""
    if images.shape[-2:] == (size, size):
        return images
    out = [
        F.interpolate(c.float(), size=(size, size), mode="bilinear", antialias=True,
                      align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
        for c in images.split(chunk)
    ]
    return torch.cat(out)


class DataMissing(ZooError):
    """A dataset's files are absent and it may not download them; says how to get them, and
    what the data would be (images per split, classes, normalisation) so that a dry run can
    still size the run."""

    def __init__(self, message: str, *, sizes: dict[str, int], classes: int,
                 mean: tuple[float, ...], std: tuple[float, ...], chans: int = 3):
        super().__init__(message)
        self.sizes, self.classes, self.mean, self.std, self.chans = sizes, classes, mean, std, chans

    def stand_in(self, split: str, img_size: int) -> TensorData:
        """The split at its known size: one black image repeated (a view: no memory)."""
        n = self.sizes.get(split, 0)
        images = torch.zeros(1, self.chans, img_size, img_size, dtype=torch.uint8)
        return TensorData(images.expand(n, -1, -1, -1), torch.zeros(1, dtype=torch.int64).expand(n),
                          [f"class {i}" for i in range(self.classes)], self.mean, self.std,
                          missing=str(self))


def build_datasets(spec: Any, splits: Sequence[str], img_size: int, root: str,
                   path: str = "data.dataset",
                   offline: bool = False) -> dict[str, TensorData | Dataset]:
    """Build the recipe's dataset plugin once per split: {split: TensorData or Dataset}.
    `offline` (a dry run): a plugin with a `download` parameter downloads nothing, and one
    whose files are absent gives stand-ins of its known size (DataMissing)."""
    if offline:
        name, params = parse_spec(spec, path)
        if "download" in registry("dataset").get(name, path).signature.parameters:
            spec = {name: {**params, "download": False}}
    out = {}
    for split in splits:
        try:
            data = build("dataset", spec, path=path, split=split, img_size=img_size, root=root)
        except DataMissing as e:
            if not offline:
                raise
            data = e.stand_in(split, img_size)
        if not isinstance(data, TensorData | Dataset) or not hasattr(data, "classes"):
            raise ZooError(f"{path}: the dataset plugin returned {type(data).__name__}; "
                           "expected zoo.data.TensorData or a Dataset with classes/mean/std")
        out[split] = data
    return out


# ---------------------------------------------------------------------------------------
# Per-batch transforms


def to_float(x: Tensor) -> Tensor:
    """uint8 [B, C, H, W] -> float32 in [0, 1], the range every augment op expects."""
    return x.float().div_(255)


@functools.lru_cache(maxsize=32)
def _stats(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device,
           dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    # Built once per device, so normalising a batch copies nothing from the host.
    m = torch.tensor(mean, device=device, dtype=dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device, dtype=dtype).view(1, -1, 1, 1)
    return m, s


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """(x - mean) / std per channel, for x in [0, 1]."""
    m, s = _stats(tuple(mean), tuple(std), x.device, x.dtype)
    return (x - m) / s


def model_input(model: torch.nn.Module, images: Tensor, mean: Sequence[float],
                std: Sequence[float]) -> Tensor:
    """uint8 images -> what a zoo ViT reads: resized to its cfg.img_size, in [0, 1],
    normalised, on the model's device."""
    device = next(model.parameters()).device
    images = resize_images(images, model.cfg.img_size).to(device)
    return normalize(to_float(images), mean, std)


def load_image(path: str | Path, size: int) -> Tensor:
    """One image file as uint8 [3, size, size]: RGB (zoo.io.open_rgb), shorter side
    resized to `size`, centre cropped (as FolderData reads images)."""
    from PIL import Image, ImageOps

    img = ImageOps.fit(open_rgb(path, draft=size), (size, size), Image.BICUBIC)
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()


def load_images(paths: Sequence[str | Path], size: int) -> tuple[Tensor, list[str]]:
    """Image files -> uint8 [B, 3, size, size] and their file names."""
    return torch.stack([load_image(p, size) for p in paths]), [Path(p).name for p in paths]


class Augment:
    """The recipe's augment ops in order: (x [B, C, H, W] in [0, 1], soft targets [B, K])."""

    def __init__(self, ops: list[Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]],
                 names: list[str]):
        self.ops, self.names = ops, names

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        for op in self.ops:
            x, y = op(x, y)
        return x, y

    def __repr__(self) -> str:
        return f"Augment({', '.join(self.names)})"


def describe(dataset: TensorData | FolderData) -> dict[str, Any]:
    """What a trained model needs to know of its training data, without the data: class
    names and the mean/std its inputs were normalised with (a run keeps it in DATA_FILE)."""
    return {"classes": list(dataset.classes), "mean": list(dataset.mean),
            "std": list(dataset.std)}


def build_augment(specs: Sequence[Any], num_classes: int, img_size: int,
                  path: str = "data.augment") -> Augment:
    """Build each `data.augment` entry through the registry, in recipe order."""
    ops = [build("augment", s, path=f"{path}[{i}]", num_classes=num_classes, img_size=img_size)
           for i, s in enumerate(specs)]
    names = [spec_name(s) for s in specs]
    return Augment(ops, names)
