"""imagefolder: any folder of class subfolders of images, decoded when read."""

from __future__ import annotations

from pathlib import Path

import torch

from zoo.data import SPLITS, FolderData, check_split
from zoo.errors import ZooError
from zoo.registry import register

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
              ".pgm"}
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def scan(folder: Path, classes: list[str] | None = None) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names (sorted subfolder names, unless given) and (file, label) pairs."""
    if not folder.is_dir():
        raise ZooError(f"imagefolder: {folder} is not a folder (set data.root or path)")
    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None:
        classes = found
    elif set(found) - set(classes):
        raise ZooError(f"imagefolder: {folder} has classes that train/ lacks: "
                       f"{', '.join(sorted(set(found) - set(classes)))}")
    if not classes:
        raise ZooError(f"imagefolder: {folder} has no class subfolders (expected "
                       f"{folder}/<class>/<image>.png)")
    samples = []
    for label, name in enumerate(classes):
        files = sorted(p for p in (folder / name).rglob("*") if p.suffix.lower() in EXTENSIONS)
        samples += [(p, label) for p in files]
    if not samples:
        raise ZooError(f"imagefolder: no images ({', '.join(sorted(EXTENSIONS))}) in the class "
                       f"subfolders of {folder}")
    return classes, samples


@register("dataset", "imagefolder")
def imagefolder(split: str, img_size: int, root: str, path: str = "",
                val_fraction: float = 0.1, mean: list[float] | None = None,
                std: list[float] | None = None) -> FolderData:
    """Images in class subfolders (PATH/<class>/*.png), resized to img_size when read.

    `path` (default: data.root) holds either train/, val/ and test/ folders, each with the
    class subfolders, or the class subfolders themselves; then a fixed `val_fraction` of
    them is held out as `val` and there is no `test`. Images are decoded with PIL as RGB,
    the shorter side resized to img_size and the centre cropped; an unreadable file stops
    the run with its name. Normalisation defaults to ImageNet's mean and std.
    """
    check_split(split, "imagefolder")
    folder = Path(path or root).expanduser()
    stats = (mean or IMAGENET_STATS[0], std or IMAGENET_STATS[1])
    if any((folder / s).is_dir() for s in SPLITS):
        if not (folder / split).is_dir():
            raise ZooError(f"imagefolder: {folder} has split folders but no {split}/")
        train = folder / "train"
        names = scan(train)[0] if train.is_dir() else None  # every split uses train's labels
        classes, samples = scan(folder / split, names)
        return FolderData(samples, classes, img_size, *stats)
    if split == "test":
        raise ZooError(f"imagefolder: {folder} has no test/ folder; put train/, val/ and "
                       "test/ folders there, or evaluate on val")
    if not 0 <= val_fraction < 1:
        raise ZooError(f"imagefolder: val_fraction must be in [0, 1), got {val_fraction}")
    classes, samples = scan(folder)
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(0)).tolist()
    cut = len(samples) - round(val_fraction * len(samples))
    keep = sorted(order[cut:] if split == "val" else order[:cut])
    if not keep:
        raise ZooError(f"imagefolder: the {split} split of {folder} is empty; "
                       f"adjust val_fraction ({val_fraction})")
    return FolderData([samples[i] for i in keep], classes, img_size, *stats)
