"""cifar10 / cifar100: the CIFAR sets (Krizhevsky 2009), held whole in memory as uint8.

torchvision downloads and extracts the archive (its URL and checksum); we read the pickled
batches ourselves, straight into [N, 3, 32, 32] tensors. Reading them through
torchvision's dataset class would also re-hash every file on each load and turn the images
into HWC arrays for PIL, which a GPU-resident pipeline does not want.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from zoo.data import TensorData, check_split, resize_images
from zoo.errors import ZooError
from zoo.registry import register

# Per-channel statistics of the training sets' pixels scaled to [0, 1].
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))


def find_or_fetch(cls: type, root: Path, download: bool, name: str) -> Path:
    """The extracted batch folder, extracting a local archive or downloading when needed."""
    folder = root / cls.base_folder
    files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    if all((folder / f).is_file() for f in files):
        return folder
    from torchvision.datasets.utils import download_and_extract_archive, extract_archive

    archive = root / cls.filename
    where = (f"put {cls.filename} (from {cls.url}) or its extracted {cls.base_folder}/ "
             f"folder in {root}/ (data.root)")
    if archive.is_file():
        try:
            extract_archive(str(archive), str(root))
        except Exception as e:  # tarfile/gzip raise many types for a damaged archive
            raise ZooError(f"{name}: cannot extract {archive} ({e}); delete it and "
                           f"download it again, or {where}") from e
    elif download:
        try:
            download_and_extract_archive(cls.url, str(root), filename=cls.filename,
                                         md5=cls.tgz_md5)
        except (OSError, RuntimeError) as e:
            raise ZooError(f"{name}: download failed ({e}); {where}") from e
    else:
        raise ZooError(f"{name}: not found in {root}/ and download is false; {where}")
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise ZooError(f"{name}: {folder} lacks {', '.join(missing)}; {where}")
    return folder


def read_batches(folder: Path, files: list[str], label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Pickled CIFAR batches -> uint8 images [N, 3, 32, 32], int64 labels [N]."""
    images, labels = [], []
    for f in files:
        try:
            with open(folder / f, "rb") as fh:
                entry = pickle.load(fh, encoding="latin1")
            images.append(torch.from_numpy(entry["data"]).view(-1, 3, 32, 32))
            labels.append(torch.tensor(entry[label_key], dtype=torch.int64))
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError,
                RuntimeError) as e:
            raise ZooError(f"{folder / f}: not a readable CIFAR batch ({type(e).__name__}: "
                           f"{e}); delete {folder} and download it again") from e
    return torch.cat(images), torch.cat(labels)


def load_cifar(tv_name: str, name: str, label_key: str, stats: tuple, split: str,
               img_size: int, root: str, download: bool, val_size: int) -> TensorData:
    import torchvision.datasets

    check_split(split, name)
    cls = getattr(torchvision.datasets, tv_name)
    folder = find_or_fetch(cls, Path(root).expanduser(), download, name)
    with open(folder / cls.meta["filename"], "rb") as fh:
        classes = list(pickle.load(fh, encoding="latin1")[cls.meta["key"]])
    if split == "test" or (split == "val" and val_size == 0):
        images, labels = read_batches(folder, [f for f, _ in cls.test_list], label_key)
    else:
        images, labels = read_batches(folder, [f for f, _ in cls.train_list], label_key)
        if not 0 <= val_size < len(labels):
            raise ZooError(f"{name}: val_size must be in [0, {len(labels)}), got {val_size}")
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
        cut = len(labels) - val_size
        keep = (order[cut:] if split == "val" else order[:cut]).sort().values
        images, labels = images[keep], labels[keep]
    return TensorData(resize_images(images, img_size), labels, classes, *stats)


@register("dataset", "cifar10")
def cifar10(split: str, img_size: int, root: str, download: bool = True,
            val_size: int = 5000) -> TensorData:
    """CIFAR-10: 50,000 training and 10,000 test images of 10 classes at 32x32.

    Splits: `train` is the official training set less a held-out `val` of `val_size`
    images (the same ones every time: a fixed permutation); `test` is the official test
    set. With val_size 0, `train` is the whole training set and `val` the test set.
    Offline, put cifar-10-python.tar.gz or cifar-10-batches-py/ in `root` (data.root).
    """
    return load_cifar("CIFAR10", "cifar10", "labels", CIFAR10_STATS, split, img_size, root,
                      download, val_size)


@register("dataset", "cifar100")
def cifar100(split: str, img_size: int, root: str, download: bool = True,
             val_size: int = 5000) -> TensorData:
    """CIFAR-100: 50,000 training and 10,000 test images of 100 classes at 32x32.

    Splits as for cifar10 (fine labels). Offline, put cifar-100-python.tar.gz or
    cifar-100-python/ in `root` (data.root).
    """
    return load_cifar("CIFAR100", "cifar100", "fine_labels", CIFAR100_STATS, split, img_size,
                      root, download, val_size)
