"""Labels: what users write (a WordNet id, a class index, a class name) as an ImageNet-1k
index, and the images to classify with their labels from the folder layout or a CSV."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from zoo.errors import ZooError, first_line, suggest

from ..clip_common.images import list_images
from ..clip_common.zeroshot import imagenet_classnames, imagenet_descriptions, imagenet_wnids


def _norm(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


class ImageNetClasses:
    """Maps what users write as a label (wnid, index, class name) to an ImageNet-1k index."""

    def __init__(self) -> None:
        self.wnids = imagenet_wnids()
        self.names = imagenet_classnames()  # CLIP's curated names, what reports show
        self._by_wnid = {w: i for i, w in enumerate(self.wnids)}
        lemmas = [[_norm(s) for s in d.split(",")] for d in imagenet_descriptions()]
        # Tried in order; the first table with exactly one match wins. CLIP's names are not
        # unique ('missile', 'sunglasses' appear twice), WordNet's first lemmas break those ties.
        self._tables: list[dict[str, list[int]]] = []
        for keys in ([[_norm(n)] for n in self.names], [ls[:1] for ls in lemmas], lemmas):
            table: dict[str, list[int]] = {}
            for i, ks in enumerate(keys):
                for k in ks:
                    table.setdefault(k, []).append(i)
            self._tables.append(table)

    def index(self, label: str) -> int:
        text = label.strip()
        if re.fullmatch(r"n\d{8}", text):
            if text not in self._by_wnid:
                raise ZooError(f"'{text}' is not one of the 1000 ImageNet-1k WordNet ids")
            return self._by_wnid[text]
        if text.isdigit():
            if int(text) >= len(self.wnids):
                raise ZooError(f"class index {text} is out of range 0..{len(self.wnids) - 1}")
            return int(text)
        key = _norm(text)
        ambiguous: list[int] = []
        for table in self._tables:
            hits = table.get(key, [])
            if len(hits) == 1:
                return hits[0]
            ambiguous = ambiguous or hits
        if ambiguous:
            raise ZooError(f"class name '{text}' is ambiguous ({', '.join(self.wnids[i] for i in ambiguous)}); "
                           "use the WordNet id")
        raise ZooError(f"'{text}' is not an ImageNet class name or WordNet id{suggest(key, self._tables[0])}")


@dataclass
class Sample:
    path: Path
    rel: str  # path relative to the image folder, as written in predictions.csv
    label: int | None


def collect_samples(root: Path, classes: ImageNetClasses, labels_csv: Path | None = None,
                    unlabelled: bool = False) -> list[Sample]:
    """The images to classify, with labels from the layout or the CSV (see the module doc)."""
    if not root.is_dir():
        raise ZooError(f"{root}: not a folder of images")
    if labels_csv is not None:
        return read_labels_csv(labels_csv, root, classes)
    paths = list_images(root)
    if not paths:
        raise ZooError(f"{root}: no images found (looked for files PIL opens: .jpg, .png, .webp, ...)")
    samples = []
    for path in paths:
        parts = path.relative_to(root).parts
        label = None
        if len(parts) > 1 and not unlabelled:
            try:
                label = classes.index(parts[0])
            except ZooError as e:
                raise ZooError(f"{root / parts[0]}: folder name is not an ImageNet class ({e}); "
                               "pass --unlabelled to ignore folder names") from e
        samples.append(Sample(path, path.relative_to(root).as_posix(), label))
    return samples


def read_labels_csv(csv_path: Path, root: Path, classes: ImageNetClasses) -> list[Sample]:
    """Rows `path,label` (optional header; empty label = unlabelled), paths relative to `root`."""
    if not csv_path.is_file():
        raise ZooError(f"--labels {csv_path}: no such file")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:  # Excel writes a BOM
            rows = list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise ZooError(f"{csv_path}: not a readable CSV file ({first_line(e)})") from e
    samples = []
    for lineno, row in enumerate(rows, 1):
        if not any(cell.strip() for cell in row):
            continue
        if not samples and [c.strip().lower() for c in row] == ["path", "label"]:
            continue
        if len(row) != 2:
            raise ZooError(f"{csv_path}:{lineno}: expected 'path,label', got {len(row)} fields")
        rel, label = row[0].strip(), row[1].strip()
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise ZooError(f"{csv_path}:{lineno}: path '{rel}' points outside {root}; write "
                           "paths relative to the image folder, without '..' or a leading '/'")
        path = root / rel
        if not path.is_file():
            raise ZooError(f"{csv_path}:{lineno}: no such image {path}")
        try:
            index = classes.index(label) if label else None
        except ZooError as e:
            raise ZooError(f"{csv_path}:{lineno}: {e}") from e
        samples.append(Sample(path, Path(rel).as_posix(), index))
    if not samples:
        raise ZooError(f"{csv_path}: no rows (expected lines 'path,label')")
    return samples
