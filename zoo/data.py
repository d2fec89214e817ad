"""Datasets, loaders and the augmentation pipeline.

A training batch flows: uint8 images on the device -> `to_float` -> augment ops (recipe
order) -> `normalize` -> model. Datasets that fit in memory (CIFAR, shapes) come back as
`TensorData` and live on the training device as uint8, cut into batches there (as the
fastest CIFAR trainers do: no workers, no per-step host syncs); other datasets are
map-style (`FolderData`) and go through a torch DataLoader with workers. Both loaders order
an epoch by the same pure function of (seed, epoch, rank, world_size), so a run resumes
mid-epoch exactly (`start_step`) and DDP ranks read disjoint shards of one permutation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from zoo.errors import ZooError
from zoo.io import open_rgb
from zoo.registry import build, spec_name

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


def build_datasets(spec: Any, splits: Sequence[str], img_size: int, root: str,
                   path: str = "data.dataset") -> dict[str, TensorData | Dataset]:
    """Build the recipe's dataset plugin once per split: {split: TensorData or Dataset}."""
    out = {}
    for split in splits:
        data = build("dataset", spec, path=path, split=split, img_size=img_size, root=root)
        if not isinstance(data, TensorData | Dataset) or not hasattr(data, "classes"):
            raise ZooError(f"{path}: the dataset plugin returned {type(data).__name__}; "
                           "expected zoo.data.TensorData or a Dataset with classes/mean/std")
        out[split] = data
    return out


# ---------------------------------------------------------------------------------------
# Loaders


def epoch_order(n: int, *, epoch: int, seed: int, shuffle: bool, rank: int = 0,
                world_size: int = 1, batch_size: int = 1, drop_last: bool = False,
                repeats: int = 1) -> Tensor:
    """This rank's sample indices for one epoch (CPU int64): a pure function of its args.

    Every rank draws the same permutation and takes every world_size-th index from `rank`.
    With drop_last each rank gets the same number of whole batches (DDP steps in lockstep);
    without it the shards are disjoint and together cover all n samples exactly once.
    `repeats` > 1 is repeated augmentation (Hoffer et al. 2020; DeiT's RASampler): each index
    appears that many times in a row, so its copies, augmented independently, fall into one
    batch or, under DDP, onto neighbouring ranks; the epoch is `repeats` times longer.
    """
    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    else:
        order = torch.arange(n)
    order = order.repeat_interleave(repeats)
    if drop_last:
        order = order[: len(order) - len(order) % world_size]
    order = order[rank::world_size]
    if drop_last:
        order = order[: len(order) - len(order) % batch_size]
    return order


class _Loader:
    """What both loaders share: the epoch order and its length in steps."""

    def __init__(self, n: int, batch_size: int, device: torch.device | str, *, shuffle: bool,
                 drop_last: bool, seed: int, rank: int, world_size: int, repeats: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.n, self.batch_size, self.device = n, batch_size, torch.device(device)
        self.shuffle, self.drop_last, self.seed, self.repeats = shuffle, drop_last, seed, repeats
        self.rank, self.world_size = rank, world_size
        self.num_samples = len(self._order(0))  # this rank's samples per epoch

    def _order(self, epoch: int) -> Tensor:
        return epoch_order(self.n, epoch=epoch, seed=self.seed, shuffle=self.shuffle,
                           rank=self.rank, world_size=self.world_size,
                           batch_size=self.batch_size, drop_last=self.drop_last,
                           repeats=self.repeats)

    def order(self, epoch: int, start_step: int = 0) -> Tensor:
        """Indices this rank reads in `epoch`, from batch `start_step` on."""
        if not 0 <= start_step <= len(self):
            raise ValueError(f"start_step {start_step} is outside the epoch's {len(self)} steps")
        return self._order(epoch)[start_step * self.batch_size:]

    def __len__(self) -> int:
        """Steps per epoch on this rank."""
        return -(-self.num_samples // self.batch_size)


class DeviceLoader(_Loader):
    """Batches of a TensorData held on the device as uint8, gathered by index there.

    `epoch(e, start_step=k)` yields the batches of epoch e from step k on; the only host to
    device copy per epoch is the index order. With on_device=False the images stay in host
    memory (pinned when the device is CUDA) and each batch is copied over.
    """

    def __init__(self, data: TensorData, batch_size: int, device: torch.device | str, *,
                 shuffle: bool, drop_last: bool, seed: int = 0, rank: int = 0,
                 world_size: int = 1, on_device: bool = True, repeats: int = 1):
        super().__init__(len(data), batch_size, device, shuffle=shuffle, drop_last=drop_last,
                         seed=seed, rank=rank, world_size=world_size, repeats=repeats)
        self.data = data
        store = self.device if on_device else torch.device("cpu")
        self.images = data.images.to(store)
        self.labels = data.labels.to(store)
        self.pin = store.type == "cpu" and self.device.type == "cuda"

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        order = self.order(epoch, start_step).to(self.images.device)
        return self._batches(order)

    def _batches(self, order: Tensor) -> Iterator[Batch]:
        for i in range(0, len(order), self.batch_size):
            idx = order[i:i + self.batch_size]
            x, y = self.images[idx], self.labels[idx]
            if self.pin:
                x, y = x.pin_memory(), y.pin_memory()
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


class _OrderSampler(torch.utils.data.Sampler[int]):
    """Yields the indices set for the current epoch (workers stay alive between epochs)."""

    def __init__(self) -> None:
        self.indices: list[int] = []

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class MapLoader(_Loader):
    """A torch DataLoader over a map-style dataset, with DeviceLoader's epoch semantics."""

    def __init__(self, data: Dataset, batch_size: int, device: torch.device | str, *,
                 shuffle: bool, drop_last: bool, seed: int = 0, rank: int = 0,
                 world_size: int = 1, num_workers: int = 2, repeats: int = 1):
        super().__init__(len(data), batch_size, device, shuffle=shuffle, drop_last=drop_last,
                         seed=seed, rank=rank, world_size=world_size, repeats=repeats)
        self.data = data
        self.sampler = _OrderSampler()
        self.loader = DataLoader(
            data, batch_size=batch_size, sampler=self.sampler, num_workers=num_workers,
            pin_memory=self.device.type == "cuda", persistent_workers=num_workers > 0,
        )

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        return self._batches(self.order(epoch, start_step).tolist())

    def _batches(self, indices: list[int]) -> Iterator[Batch]:
        self.sampler.indices = indices
        try:
            for x, y in self.loader:
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        except ZooError as e:  # from a worker, with its traceback appended: keep one line
            line = str(e).strip().splitlines()[-1]
            raise ZooError(line.split("ZooError: ", 1)[-1]) from e


def make_loader(data: TensorData | Dataset, *, batch_size: int, device: torch.device | str,
                train: bool, seed: int = 0, rank: int = 0, world_size: int = 1,
                num_workers: int = 2, on_device: bool = True,
                repeats: int = 1) -> DeviceLoader | MapLoader:
    """The loader for one split: training shuffles and drops the last partial batch, and
    may repeat each image `repeats` times per epoch (repeated augmentation)."""
    kw = dict(shuffle=train, drop_last=train, seed=seed, rank=rank, world_size=world_size,
              repeats=repeats if train else 1)
    if isinstance(data, TensorData):
        return DeviceLoader(data, batch_size, device, on_device=on_device, **kw)
    return MapLoader(data, batch_size, device, num_workers=num_workers, **kw)


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
