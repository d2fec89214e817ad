"""cifar10 / cifar100: the CIFAR sets (Krizhevsky 2009), held whole in memory as uint8.

torchvision downloads the archive (its URL); we check its published MD5, extract it with
every member checked, and read the pickled batches ourselves, straight into
[N, 3, 32, 32] tensors. Reading them through torchvision's dataset class would also re-hash
every file on each load and turn the images into HWC arrays for PIL, which a GPU-resident
pipeline does not want.

The archive and the batches are data, and data never runs code: a member that
could write outside `data.root` (absolute, `..`, a link or a device) is refused before
anything is written, and the batches are unpickled by `BatchUnpickler`, which refuses every
global except numpy's array rebuilding, so a crafted `__reduce__` cannot call anything.
"""

from __future__ import annotations

import codecs
import hashlib
import pickle
import tarfile
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
import torch

from zoo.data import DataMissing, TensorData, check_split, resize_images
from zoo.errors import ZooError, first_line
from zoo.registry import register

# Per-channel statistics of the training sets' pixels scaled to [0, 1].
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
TRAIN_SIZE, TEST_SIZE = 50_000, 10_000  # images in the official training and test sets

# MD5 of the official archives, as published on https://www.cs.toronto.edu/~kriz/cifar.html
# (and checked by torchvision's CIFAR10/CIFAR100 `tgz_md5` on download). A local archive is
# checked against it before extraction, as a download is.
ARCHIVE_MD5 = {
    "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
    "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85",
}

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct

# The only globals a CIFAR pickle needs: numpy's array rebuilding, under its numpy 1.x name
# (the official files) and 2.x name (files written today), and `_codecs.encode`, which
# Python 3 uses for bytes in pickles of protocol < 3 (benchmarks/cifar_files.py writes
# protocol 2). None of them can run code or touch files.
SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class BatchUnpickler(pickle.Unpickler):
    """An unpickler that resolves only SAFE_GLOBALS: a pickle naming `os.system`, `exec` or
    any other callable fails before it is looked up, let alone called."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused global {module}.{name} (CIFAR files hold only numpy arrays, "
                "lists and strings)") from None


def load_pickle(path: Path, what: str) -> Any:
    """One CIFAR pickle through BatchUnpickler (latin1: the official files are Python 2's)."""
    try:
        with open(path, "rb") as fh:
            return BatchUnpickler(fh, encoding="latin1").load()
    except Exception as e:  # unpickling arbitrary bytes can raise almost any type
        raise ZooError(f"{path}: not a readable CIFAR {what} ({first_line(e)}); delete "
                       f"{path.parent} and download it again") from e


def check_md5(archive: Path, name: str) -> None:
    """Refuse an archive that is not the published one, before anything is extracted."""
    expected = ARCHIVE_MD5[archive.name]
    try:
        with open(archive, "rb") as fh:
            got = hashlib.file_digest(fh, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()
    except OSError as e:
        raise ZooError(f"{name}: cannot read {archive} ({first_line(e)}); delete it and "
                       "download it again") from e
    if got != expected:
        raise ZooError(f"{name}: {archive} has MD5 {got}, not the published {expected}: it is "
                       "damaged or not the official archive; delete it and download it again "
                       "(download: true, or from https://www.cs.toronto.edu/~kriz/cifar.html)")


def member_problem(member: tarfile.TarInfo, dest: Path) -> str | None:
    """Why extracting `member` into `dest` (resolved) could write elsewhere, or None."""
    if member.issym() or member.islnk():
        return f"is a link to {member.linkname!r} (only files and folders are extracted)"
    if not (member.isreg() or member.isdir()):
        return "is not a regular file or folder"
    name = member.name.replace("\\", "/")
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).anchor:  # /x, C:x, //host/x
        return "is an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "climbs out with '..'"
    if not (dest / name).resolve().is_relative_to(dest):
        return f"resolves outside {dest}"
    return None


def extract_tar(archive: Path, dest: Path, name: str) -> None:
    """Extract `archive` into `dest`, refusing it whole if any member could write outside.

    Every member is checked before the first is written; tarfile's own "data" filter
    (PEP 706, Python 3.11.4+) is applied on top where it exists.
    """
    dest = dest.resolve()
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                problem = member_problem(m, dest)
                if problem:
                    raise ZooError(f"{name}: {archive} member {m.name!r} {problem}; nothing "
                                   "was extracted: delete the archive and download the "
                                   "official one")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:
                tar.extractall(dest, members=members)
    except ZooError:
        raise
    except Exception as e:  # tarfile/gzip raise many types for a damaged archive
        raise ZooError(f"{name}: cannot extract {archive} ({first_line(e)}); delete it and "
                       "download it again") from e


def find_or_fetch(cls: type, root: Path, download: bool, name: str, known: dict[str, Any]) -> Path:
    """The extracted batch folder, downloading and/or extracting the archive when needed;
    absent and not to be downloaded, DataMissing with what the data would be (`known`)."""
    folder = root / cls.base_folder
    files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    if all((folder / f).is_file() for f in files):
        return folder
    archive = root / cls.filename
    where = (f"put {cls.filename} (from {cls.url}) or its extracted {cls.base_folder}/ "
             f"folder in {root}/ (data.root)")
    if not archive.is_file():
        if not download:
            raise DataMissing(f"{name}: not found in {root}/ and download is false; {where}",
                              **known)
        from torchvision.datasets.utils import download_url

        try:  # checked below like a local archive, so one check covers both
            download_url(cls.url, str(root), filename=cls.filename)
        except (OSError, RuntimeError) as e:
            raise ZooError(f"{name}: download failed ({first_line(e)}); {where}") from e
    check_md5(archive, name)
    extract_tar(archive, root, name)
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise ZooError(f"{name}: {folder} lacks {', '.join(missing)}; {where}")
    return folder


def read_batches(folder: Path, files: list[str], label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Pickled CIFAR batches -> uint8 images [N, 3, 32, 32], int64 labels [N]."""
    images, labels = [], []
    for f in files:
        entry = load_pickle(folder / f, "batch")
        data = entry.get("data") if isinstance(entry, dict) else None
        targets = entry.get(label_key) if isinstance(entry, dict) else None
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
                and data.shape[1] == 3 * 32 * 32 and isinstance(targets, list | np.ndarray)
                and len(targets) == len(data)):
            raise ZooError(f"{folder / f}: not a CIFAR batch (expected a dict with uint8 'data' "
                           f"[N, 3072] and N '{label_key}'); delete {folder} and download it "
                           "again")
        try:
            labels.append(torch.tensor(targets, dtype=torch.int64))
        except (TypeError, ValueError, RuntimeError, OverflowError) as e:
            raise ZooError(f"{folder / f}: '{label_key}' are not integers ({first_line(e)}); "
                           f"delete {folder} and download it again") from e
        images.append(torch.from_numpy(data).view(-1, 3, 32, 32))
    return torch.cat(images), torch.cat(labels)


def read_classes(path: Path, key: str) -> list[str]:
    """The class names in a CIFAR meta file."""
    meta = load_pickle(path, "meta file")
    names = meta.get(key) if isinstance(meta, dict) else None
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise ZooError(f"{path}: not a CIFAR meta file (expected a dict with a list of "
                       f"'{key}' strings); delete {path.parent} and download it again")
    return names


def load_cifar(tv_name: str, name: str, label_key: str, stats: tuple, classes: int, split: str,
               img_size: int, root: str, download: bool, val_size: int) -> TensorData:
    import torchvision.datasets

    check_split(split, name)
    if split == "val" and val_size == 0:
        raise ZooError(f"{name}: no val split, as val_size is 0 (all training images train); "
                       f"report the test set with data.eval_splits=[test], or hold images out "
                       f"with data.dataset={{{name}: {{val_size: 5000}}}}")
    cls = getattr(torchvision.datasets, tv_name)
    known = dict(sizes={"train": max(0, TRAIN_SIZE - val_size), "val": val_size, "test": TEST_SIZE},
                 classes=classes, mean=stats[0], std=stats[1])
    folder = find_or_fetch(cls, Path(root).expanduser(), download, name, known)
    class_names = read_classes(folder / cls.meta["filename"], cls.meta["key"])
    if split == "test":
        images, labels = read_batches(folder, [f for f, _ in cls.test_list], label_key)
    else:
        images, labels = read_batches(folder, [f for f, _ in cls.train_list], label_key)
        if not 0 <= val_size < len(labels):
            raise ZooError(f"{name}: val_size must be in [0, {len(labels)}), got {val_size}")
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
        cut = len(labels) - val_size
        keep = (order[cut:] if split == "val" else order[:cut]).sort().values
        images, labels = images[keep], labels[keep]
    return TensorData(resize_images(images, img_size), labels, class_names, *stats)


@register("dataset", "cifar10")
def cifar10(split: str, img_size: int, root: str, download: bool = True,
            val_size: int = 0) -> TensorData:
    """CIFAR-10: 50,000 training and 10,000 test images of 10 classes at 32x32.

    Splits: `train` is the official training set, as every published result trains on it,
    and `test` the official test set. For tuning, `val_size` > 0 holds that many training
    images out as `val` (the same ones every time: a fixed permutation) and trains on the
    rest; with val_size 0 (the default) there is no `val`.
    Offline, put cifar-10-python.tar.gz or cifar-10-batches-py/ in `root` (data.root).
    """
    return load_cifar("CIFAR10", "cifar10", "labels", CIFAR10_STATS, 10, split, img_size, root,
                      download, val_size)


@register("dataset", "cifar100")
def cifar100(split: str, img_size: int, root: str, download: bool = True,
             val_size: int = 0) -> TensorData:
    """CIFAR-100: 50,000 training and 10,000 test images of 100 classes at 32x32.

    Splits as for cifar10 (fine labels). Offline, put cifar-100-python.tar.gz or
    cifar-100-python/ in `root` (data.root).
    """
    return load_cifar("CIFAR100", "cifar100", "fine_labels", CIFAR100_STATS, 100, split,
                      img_size, root, download, val_size)
