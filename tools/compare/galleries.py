"""Where each model wins: which images go to clip_better/ and resnet_better/, drawn as the
image beside both models' top-5."""

from __future__ import annotations

import re
from pathlib import Path

from zoo.io import open_rgb

from . import RANDOM_BANNER, TOPK
from .predict import Prediction

GALLERIES = ("clip_better", "resnet_better")


def gallery_of(p: Prediction) -> str | None:
    """Which gallery an image belongs to, if any.

    With a label: the model whose top-1 is right while the other's is wrong.
    Without one: the top-1 classes differ and the image goes to the model that is more
    confident in its own top-1. That is a pointer to where the models disagree, not a score:
    the two models' probabilities are calibrated differently (CLIP's depend on its logit scale).
    """
    if p.label is not None:
        clip_right, resnet_right = p.clip_top[0] == p.label, p.resnet_top[0] == p.label
        if clip_right != resnet_right:
            return "clip_better" if clip_right else "resnet_better"
        return None
    if p.clip_top[0] == p.resnet_top[0] or p.clip_prob[0] == p.resnet_prob[0]:
        return None
    return "clip_better" if p.clip_prob[0] > p.resnet_prob[0] else "resnet_better"


def split_galleries(preds: list[Prediction]) -> dict[str, list[Prediction]]:
    """Both galleries, most confident winner first."""
    out: dict[str, list[Prediction]] = {g: [] for g in GALLERIES}
    for p in preds:
        g = gallery_of(p)
        if g is not None:
            out[g].append(p)
    out["clip_better"].sort(key=lambda p: -p.clip_prob[0])
    out["resnet_better"].sort(key=lambda p: -p.resnet_prob[0])
    return out


def gallery_figure(p: Prediction, names: tuple[str, ...], resnet_tag: str, random_init: bool):
    """The image beside both models' top-5 bars; the true class, if known, in green."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.6))
    ax_img, *ax_bars = fig.subplots(1, 3, width_ratios=[1.1, 1, 1])
    image = open_rgb(p.path, exif=True)
    image.thumbnail((512, 512))  # a 12-megapixel photo would make a slow, heavy figure
    ax_img.imshow(image)
    ax_img.set_axis_off()
    ax_img.set_title(p.rel + (f"\nlabel: {names[p.label]}" if p.label is not None else "\n(no label)"),
                     fontsize=9)
    for ax, title, top, prob, color in ((ax_bars[0], "CLIP zero-shot", p.clip_top, p.clip_prob, "tab:blue"),
                                        (ax_bars[1], resnet_tag, p.resnet_top, p.resnet_prob, "tab:orange")):
        colors = ["tab:green" if i == p.label else color for i in top]
        ax.barh(range(TOPK), prob, color=colors)
        ax.set_yticks(range(TOPK), [names[i][:28] for i in top], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_title(f"{title} top-{TOPK}", fontsize=10)
        for y, v in enumerate(prob):
            ax.text(min(v, 0.8) + 0.01, y, f"{v:.3f}", va="center", fontsize=8)
    if random_init:
        fig.suptitle(RANDOM_BANNER, color="red", fontsize=11)
    fig.tight_layout()
    return fig


def write_galleries(galleries: dict[str, list[Prediction]], out: Path, names: tuple[str, ...],
                    resnet_tag: str, random_init: bool, limit: int) -> dict[str, list[str]]:
    """PNG per image (at most `limit` per gallery); returns the written paths relative to `out`."""
    written: dict[str, list[str]] = {}
    for gallery, preds in galleries.items():
        folder = out / gallery
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.png"):  # from an earlier run into the same OUT
            stale.unlink()
        written[gallery] = []
        for rank, p in enumerate(preds[:limit]):
            name = f"{rank:03d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', Path(p.rel).stem)}.png"
            gallery_figure(p, names, resnet_tag, random_init).savefig(folder / name, dpi=100)
            written[gallery].append(f"{gallery}/{name}")
    return written
