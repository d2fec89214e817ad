"""The whole comparison: images and labels, both models, predictions, galleries, the
architecture tables, and every file of OUT."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from zoo.errors import ZooError
from zoo.io import atomic_write, write_json

from ..clip_common.models import choose_device, load_clip
from ..clip_common.settings import ClipOptions
from ..clip_common.zeroshot import prompt_templates, resolve_prompts, zero_shot_head
from . import RANDOM_BANNER
from .architecture import architecture
from .evaluation import accuracy
from .galleries import split_galleries, write_galleries
from .labels import ImageNetClasses, collect_samples
from .predict import predict
from .report import render_report, write_predictions
from .resnet import load_resnet


@dataclass(frozen=True)
class Comparison:
    """What `zoo clip-vs-resnet` is asked to compare, and how."""

    images: Path
    out: Path
    resnet: str
    clip: ClipOptions = field(default_factory=ClipOptions)
    resnet_weights: Path | None = None
    labels: Path | None = None  # a CSV of path,label rows
    unlabelled: bool = False  # ignore subfolder names
    batch_size: int = 32
    workers: int = 2
    gallery_max: int = 50
    report_thumbs: int = 8
    command: str = ""  # as the user typed it, for the report


def compare(job: Comparison) -> dict:
    """Classify every image of `job.images` with both models, write `job.out`, and return
    summary.json's data."""
    start = time.perf_counter()
    opts = job.clip
    device = choose_device(opts.device)
    classes = ImageNetClasses()
    samples = collect_samples(job.images, classes, job.labels, job.unlabelled)
    prompts = resolve_prompts(opts.prompts, opts.random_init)
    clip_ = load_clip(opts.model, weights=opts.weights, random_init=opts.random_init, device=device,
                      seed=opts.seed)
    resnet = load_resnet(job.resnet, weights=job.resnet_weights, random_init=opts.random_init,
                         device=device, seed=opts.seed)
    head = zero_shot_head(clip_, prompts, cache_dir=opts.cache_dir, progress=opts.progress)
    preds, skipped, seconds = predict(samples, clip_, head, resnet, batch_size=job.batch_size,
                                      workers=job.workers, device=device, progress=opts.progress)
    if not preds:
        raise ZooError(f"{job.images}: none of the {len(samples)} images could be read")
    job.out.mkdir(parents=True, exist_ok=True)
    galleries = split_galleries(preds)
    written = write_galleries(galleries, job.out, classes.names, resnet.tag, opts.random_init,
                              job.gallery_max)
    summary = {
        "config": {
            "images": str(job.images), "labels": str(job.labels) if job.labels else None,
            "clip_model": opts.model, "clip_source": clip_.source, "resnet": resnet.tag,
            "resnet_source": resnet.source, "prompts": prompts, "n_templates": len(prompt_templates(prompts)),
            "random_init": opts.random_init, "device": str(device), "batch_size": job.batch_size,
            "command": job.command, "torch": torch.__version__,
        },
        "note": RANDOM_BANNER if opts.random_init else None,
        "n_images": len(preds),
        "skipped": skipped,
        "accuracy": accuracy(preds, classes),
        "top1_agreement": sum(p.clip_top[0] == p.resnet_top[0] for p in preds) / len(preds),
        "galleries": {g: len(v) for g, v in galleries.items()},
        "gallery_files": written,
        "architecture": architecture(clip_, resnet, device),
        "seconds": {**seconds, "total": time.perf_counter() - start},
    }
    write_predictions(preds, job.out / "predictions.csv", classes)
    write_json(job.out / "summary.json", summary)
    atomic_write(job.out / "report.md", render_report(summary, written, job.report_thumbs))
    return summary
