"""Images for the tools: the files of a folder, and a fixed set of real photos that needs
no download."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

SAMPLE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")  # photos bundled with scikit-image


@functools.cache
def image_extensions() -> frozenset[str]:
    """Every file extension PIL can open in this install."""
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def list_images(root: Path) -> list[Path]:
    """Image files under `root` (recursive, sorted, hidden files and folders skipped)."""
    exts = image_extensions()
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() in exts and path.is_file():
            found.append(path)
    return found


def sample_photos() -> Iterator[tuple[str, Image.Image]]:
    """scikit-image's bundled sample photos (no download): a fixed, real set of images."""
    import skimage.data

    for name in SAMPLE_PHOTOS:
        yield name, Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
