"""Accuracy of both models where labels exist: top-1/top-5, the 2x2 agreement matrix, and
per class."""

from __future__ import annotations

from .labels import ImageNetClasses
from .predict import Prediction


def accuracy(preds: list[Prediction], classes: ImageNetClasses) -> dict | None:
    """Top-1/top-5 per model, the 2x2 agreement matrix and a per-class breakdown (labelled only)."""
    labelled = [p for p in preds if p.label is not None]
    if not labelled:
        return None
    n = len(labelled)

    def rate(hits: list[bool]) -> float:
        return sum(hits) / len(hits)

    c1 = [p.clip_top[0] == p.label for p in labelled]
    r1 = [p.resnet_top[0] == p.label for p in labelled]
    per_class = []
    for label in sorted({p.label for p in labelled}):
        group = [p for p in labelled if p.label == label]
        per_class.append({
            "wnid": classes.wnids[label], "name": classes.names[label], "n": len(group),
            "clip_top1": rate([p.clip_top[0] == label for p in group]),
            "resnet_top1": rate([p.resnet_top[0] == label for p in group]),
            "clip_top5": rate([label in p.clip_top for p in group]),
            "resnet_top5": rate([label in p.resnet_top for p in group]),
        })
    return {
        "n_labelled": n,
        "clip": {"top1": rate(c1), "top5": rate([p.label in p.clip_top for p in labelled])},
        "resnet": {"top1": rate(r1), "top5": rate([p.label in p.resnet_top for p in labelled])},
        "agreement": {
            "both_right": sum(c and r for c, r in zip(c1, r1, strict=True)),
            "only_clip": sum(c and not r for c, r in zip(c1, r1, strict=True)),
            "only_resnet": sum(r and not c for c, r in zip(c1, r1, strict=True)),
            "both_wrong": sum(not c and not r for c, r in zip(c1, r1, strict=True)),
        },
        "per_class": per_class,
    }
