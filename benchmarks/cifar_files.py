"""CIFAR-10 in its published on-disk format, generated: for runs and tests without a download.

`write_cifar10(root)` writes `root/cifar-10-batches-py/` as the official archive extracts it
(five pickled training batches, `test_batch`, `batches.meta`; protocol 2, numpy arrays, as
Krizhevsky's files hold). With `learnable=True` every class has its own smooth colour
pattern under noise, so a model trained on it must beat chance: a run that does not learn
is broken, not unlucky.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _images(rng: np.random.Generator, labels: np.ndarray, learnable: bool) -> np.ndarray:
    """uint8 [n, 3072] (CIFAR's row layout: 1024 red, 1024 green, 1024 blue values)."""
    n = len(labels)
    if not learnable:
        return rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    # one 4x4 colour pattern per class, upsampled to 32x32, plus per-image noise and shift
    patterns = np.random.default_rng(1234).uniform(40, 215, (10, 3, 4, 4))
    base = patterns[labels].repeat(8, axis=2).repeat(8, axis=3)  # [n, 3, 32, 32]
    shift = rng.uniform(-25, 25, (n, 3, 1, 1))
    noise = rng.normal(0, 30, (n, 3, 32, 32))
    return np.clip(base + shift + noise, 0, 255).astype(np.uint8).reshape(n, 3072)


def write_cifar10(root: Path, n_train: int = 50_000, n_test: int = 10_000, seed: int = 0,
                  learnable: bool = True) -> Path:
    """Write CIFAR-10's python layout under `root`; returns the batch folder.

    `n_train` is split evenly over the five training batches (n_train must be a multiple of 5).
    """
    if n_train % len(TRAIN_FILES):
        raise ValueError(f"n_train must be a multiple of {len(TRAIN_FILES)}, got {n_train}")
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per_file = n_train // len(TRAIN_FILES)
    for i, name in enumerate([*TRAIN_FILES, "test_batch"]):
        n = n_test if name == "test_batch" else per_file
        labels = rng.integers(0, 10, n)
        _dump(folder / name, {
            "batch_label": f"{'testing' if name == 'test_batch' else 'training'} batch {i + 1} of 6",
            "labels": [int(v) for v in labels],
            "data": _images(rng, labels, learnable),
            "filenames": [f"generated_{i}_{j}.png" for j in range(n)],
        })
    _dump(folder / "batches.meta", {"num_cases_per_batch": per_file, "label_names": CLASSES,
                                    "num_vis": 3072})
    return folder
