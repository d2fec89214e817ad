"""What a run trains on: datasets, augmentations and loaders from a recipe, checked against
the model before any step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from zoo import data
from zoo.device import Dist
from zoo.errors import ZooError
from zoo.loaders import make_loader
from zoo.schema import Recipe


@dataclass
class RunData:
    train: Any  # TensorData or FolderData
    evals: dict[str, Any]  # split -> data, in the recipe's order (data.eval_splits)
    augment: data.Augment
    train_loader: Any
    eval_loaders: dict[str, Any]


def build_data(recipe: Recipe, device: torch.device, d: Dist, offline: bool = False) -> RunData:
    """The training split and data.eval_splits, each rank reading its shard of the global
    batch (`offline`: see data.build_datasets)."""
    r, seed = recipe.data, recipe.train.seed
    if r.batch_size % d.world:
        raise ZooError(f"data.batch_size: {r.batch_size} is not divisible by the {d.world} "
                       "processes; the batch size is global")
    sets = data.build_datasets(r.dataset, ["train", *r.eval_splits], recipe.model.img_size, r.root,
                               offline=offline)
    train = sets.pop("train")
    check_fits(recipe, train)
    common = dict(device=device, seed=seed, rank=d.rank, world_size=d.world,
                  num_workers=r.num_workers, on_device=r.on_device)
    train_loader = make_loader(train, batch_size=r.batch_size // d.world, train=True,
                               repeats=r.repeats, passes=r.repeat_mode == "passes", **common)
    if len(train_loader) == 0:
        raise ZooError(f"data.batch_size: {r.batch_size} is larger than the training set "
                       f"({len(train)} images); lower it")
    return RunData(
        train=train, evals=sets,
        augment=data.build_augment(r.augment, len(train.classes), recipe.model.img_size),
        train_loader=train_loader,
        eval_loaders={split: make_loader(ds, batch_size=r.eval_batch_size, train=False, **common)
                      for split, ds in sets.items()},
    )


def check_fits(recipe: Recipe, train: Any) -> None:
    """The model's input channels and classes are the dataset's."""
    m = recipe.model
    chans = len(train.mean)  # one mean per channel, for every dataset kind
    if chans != m.in_chans:
        raise ZooError(f"model.in_chans: {m.in_chans}, but the dataset's images have {chans} "
                       f"channels; set --set model.in_chans={chans}")
    n_cls = len(train.classes)
    if n_cls != m.num_classes:
        raise ZooError(f"model.num_classes: {m.num_classes}, but the dataset has {n_cls} "
                       f"classes; set --set model.num_classes={n_cls}")
