"""`zoo fp16-profile`: the click command (its library is imported when it runs)."""

from __future__ import annotations

from pathlib import Path

import click

from ..clip_common.cli import ToolCommand, clip_options, typed_command
from ..clip_common.settings import ClipOptions
from .settings import DEFAULTS, MODES

CUDA_BATCHES, CUDA_WARMUP, CUDA_REPEATS = DEFAULTS["cuda"]
CPU_BATCHES, CPU_WARMUP, CPU_REPEATS = DEFAULTS["cpu"]


@click.command("fp16-profile", cls=ToolCommand)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default="fp16_profile",
              show_default=True, help="Output folder.")
@click.option("--batch-sizes", metavar="N,N,...",
              help=f"Batch sizes (default {CUDA_BATCHES} on CUDA, {CPU_BATCHES} on CPU).")
@click.option("--modes", default=",".join(MODES), show_default=True,
              help="A subset of these modes.")
@click.option("--warmup", type=click.IntRange(min=0), help="Untimed calls per batch size "
              f"(default {CUDA_WARMUP} on CUDA, {CPU_WARMUP} on CPU).")
@click.option("--repeats", type=click.IntRange(min=1), help="Timed calls per batch size "
              f"(default {CUDA_REPEATS} on CUDA, {CPU_REPEATS} on CPU).")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Images for the prediction comparison (default: scikit-image's sample photos).")
@clip_options(random_init_help="Random weights (timing only).")
@click.pass_context
def command(ctx: click.Context, out: Path, batch_sizes: str | None, modes: str, warmup: int | None,
            repeats: int | None, images: Path | None, clip: ClipOptions) -> None:
    """CLIP in FP32, FP16 and AMP: speed, memory, predictions.

    Writes results.json, results.md, latency.png and, on CUDA, memory.png into OUT, and prints
    the latency table. Ctrl-C writes what was measured so far and exits with 130.
    See docs/fp16.md for every column.

    \b
    zoo fp16-profile --out runs/fp16_rn50
    zoo fp16-profile --random-init --device cpu --out /tmp/fp16_cpu
    """
    from .report import latency_table
    from .run import Profile, profile_clip

    results = profile_clip(Profile(out, clip, modes=modes, batch_sizes=batch_sizes, warmup=warmup,
                                   repeats=repeats, images=images, command=typed_command(ctx)))
    click.echo("\n".join(latency_table(results["latency"])))
    click.echo(f"written: {out / 'results.md'}, results.json, {', '.join(results['figures'])}")
    if results["interrupted"]:
        n_modes, n_batches = len(results["modes"]), len(results["config"]["batch_sizes"])
        click.echo(f"interrupted: wrote what was measured before Ctrl-C ({len(results['latency'])} "
                   f"of {n_modes * n_batches} latency rows, {len(results['prediction_impact'])} of "
                   f"{n_modes} prediction-impact rows) to {out}", err=True)
        ctx.exit(130)
