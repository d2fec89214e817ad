"""The whole profile: load CLIP, time every mode at every batch size, compare predictions,
write OUT; a Ctrl-C keeps what was measured before it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from zoo.io import atomic_write, write_json

from ..clip_common.models import choose_device, load_clip
from ..clip_common.settings import ClipOptions
from ..clip_common.zeroshot import resolve_prompts, zero_shot_head
from . import RANDOM_BANNER
from .environment import environment
from .impact import evaluation_images, prediction_impact
from .measure import profile
from .report import figure_files, jsonable, plot, render_markdown
from .settings import MODES, parse_modes, run_sizes


@dataclass(frozen=True)
class Profile:
    """What `zoo fp16-profile` is asked to measure; None: the device's default."""

    out: Path
    clip: ClipOptions = field(default_factory=ClipOptions)
    modes: str = ",".join(MODES)
    batch_sizes: str | None = None
    warmup: int | None = None
    repeats: int | None = None
    images: Path | None = None  # for the prediction comparison; None: scikit-image's photos
    command: str = ""  # as the user typed it, for the report


def profile_clip(job: Profile) -> dict:
    """Measure, write results.json, results.md and the figures, and return the results."""
    opts = job.clip
    modes = parse_modes(job.modes)
    # also the current CUDA device, which events and peak counters follow
    device = choose_device(opts.device)
    batch_sizes, warmup, repeats = run_sizes(device.type, job.batch_sizes, job.warmup, job.repeats)
    prompts = resolve_prompts(opts.prompts, opts.random_init)
    loaded = load_clip(opts.model, weights=opts.weights, random_init=opts.random_init, device=device,
                       seed=opts.seed)
    visual = loaded.model.visual
    resolution = visual.input_resolution
    images, images_note = evaluation_images(job.images, loaded.preprocess, resolution)
    head = zero_shot_head(loaded, prompts, cache_dir=opts.cache_dir, progress=opts.progress)
    logit_scale = float(loaded.model.logit_scale.detach().exp())
    env = environment(device)
    rows: list[dict] = []
    impact: dict[str, dict] = {}
    interrupted = False
    try:
        for row in profile(visual, modes, batch_sizes, resolution=resolution, device=device, warmup=warmup,
                           repeats=repeats, progress=opts.progress):
            rows.append(row)
        for name, metrics in prediction_impact(visual, modes, images, head.cpu(), logit_scale, device):
            impact[name] = metrics
    except KeyboardInterrupt:  # Ctrl-C: write what was measured before it
        interrupted = True
    results = {
        "config": {
            "clip_model": opts.model, "weights": loaded.source, "random_init": opts.random_init,
            "resolution": resolution, "batch_sizes": batch_sizes, "warmup": warmup, "repeats": repeats,
            "timing": "CUDA events" if device.type == "cuda" else "time.perf_counter (wall clock)",
            "prompts": prompts, "command": job.command,
        },
        "note": RANDOM_BANNER if opts.random_init else None,
        "interrupted": interrupted,
        "environment": env,
        "modes": {m.name: m.description for m in modes},
        "latency": rows,
        "images": images_note,
        "prediction_impact": impact,
        "figures": figure_files(device),
    }
    write_json(job.out / "results.json", jsonable(results))
    atomic_write(job.out / "results.md", render_markdown(results))
    plot(rows, job.out, device, opts.random_init)
    return results
