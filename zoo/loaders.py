"""Loaders: one split's batches in an epoch order that is a pure function of (seed, epoch,
rank, world_size), so a run resumes mid-epoch exactly (`start_step`) and DDP ranks read
disjoint shards of one permutation.

In-memory datasets (zoo.data.TensorData) are cut into batches on the training device
(`DeviceLoader`: no workers, no per-step host syncs); map-style datasets go through a torch
DataLoader with workers (`MapLoader`).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from zoo.data import Batch, TensorData
from zoo.errors import ZooError


def permutation(n: int, seed: int, key: int, shuffle: bool) -> Tensor:
    """A shuffle of range(n) that is a pure function of (seed, key); range(n) itself unshuffled."""
    if not shuffle:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + key))


def epoch_order(n: int, *, epoch: int, seed: int, shuffle: bool, rank: int = 0,
                world_size: int = 1, batch_size: int = 1, drop_last: bool = False,
                repeats: int = 1, passes: bool = False) -> Tensor:
    """This rank's sample indices for one epoch (CPU int64): a pure function of its args.

    Every rank draws the same permutation and takes every world_size-th index from `rank`.
    With drop_last each rank gets the same number of whole batches (DDP steps in lockstep);
    without it the shards are disjoint and together cover all n samples exactly once.
    `repeats` > 1 is repeated augmentation (Hoffer et al. 2020; DeiT's RASampler): each index
    appears that many times in a row, so its copies, augmented independently, fall into one
    batch or, under DDP, onto neighbouring ranks; the epoch is `repeats` times longer. With
    `passes` the epoch is instead `repeats` independent shuffles one after another (what
    Lee et al.'s RASampler with repetitions 1 and len_factor 3 does): no copies side by side.
    """
    if passes:
        order = torch.cat([permutation(n, seed, epoch * repeats + r, shuffle) for r in range(repeats)])
    else:
        order = permutation(n, seed, epoch, shuffle).repeat_interleave(repeats)
    if drop_last:
        order = order[: len(order) - len(order) % world_size]
    order = order[rank::world_size]
    if drop_last:
        order = order[: len(order) - len(order) % batch_size]
    return order


class _Loader:
    """What both loaders share: the epoch order and its length in steps."""

    def __init__(self, n: int, batch_size: int, device: torch.device | str, *, shuffle: bool,
                 drop_last: bool, seed: int, rank: int, world_size: int, repeats: int = 1,
                 passes: bool = False):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.n, self.batch_size, self.device = n, batch_size, torch.device(device)
        self.shuffle, self.drop_last, self.seed, self.repeats = shuffle, drop_last, seed, repeats
        self.passes = passes
        self.rank, self.world_size = rank, world_size
        self.num_samples = len(self._order(0))  # this rank's samples per epoch

    def _order(self, epoch: int) -> Tensor:
        return epoch_order(self.n, epoch=epoch, seed=self.seed, shuffle=self.shuffle,
                           rank=self.rank, world_size=self.world_size,
                           batch_size=self.batch_size, drop_last=self.drop_last,
                           repeats=self.repeats, passes=self.passes)

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
                 world_size: int = 1, on_device: bool = True, repeats: int = 1,
                 passes: bool = False):
        super().__init__(len(data), batch_size, device, shuffle=shuffle, drop_last=drop_last,
                         seed=seed, rank=rank, world_size=world_size, repeats=repeats,
                         passes=passes)
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
                 world_size: int = 1, num_workers: int = 2, repeats: int = 1,
                 passes: bool = False):
        super().__init__(len(data), batch_size, device, shuffle=shuffle, drop_last=drop_last,
                         seed=seed, rank=rank, world_size=world_size, repeats=repeats,
                         passes=passes)
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
                repeats: int = 1, passes: bool = False) -> DeviceLoader | MapLoader:
    """The loader for one split: training shuffles and drops the last partial batch, and
    may repeat each image `repeats` times per epoch (repeated augmentation: its copies side
    by side, or `passes`: that many shuffles in a row)."""
    kw = dict(shuffle=train, drop_last=train, seed=seed, rank=rank, world_size=world_size,
              repeats=repeats if train else 1, passes=passes)
    if isinstance(data, TensorData):
        return DeviceLoader(data, batch_size, device, on_device=on_device, **kw)
    return MapLoader(data, batch_size, device, num_workers=num_workers, **kw)


