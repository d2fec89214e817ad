"""`zoo clip-vs-resnet`: the click command (its library is imported when it runs)."""

from __future__ import annotations

from pathlib import Path

import click

from ..clip_common.cli import ToolCommand, clip_options, typed_command
from ..clip_common.settings import ClipOptions

DEFAULT_RESNET = "resnet50.a1_in1k"
POSITIVE = click.IntRange(min=1)
COUNT = click.IntRange(min=0)


@click.command("clip-vs-resnet", cls=ToolCommand)
@click.argument("images", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder.")
@click.option("--labels", type=click.Path(dir_okay=False, path_type=Path), metavar="CSV",
              help="Rows path,label (paths relative to IMAGES).")
@click.option("--unlabelled", is_flag=True, help="Ignore subfolder names.")
@click.option("--resnet", default=DEFAULT_RESNET, show_default=True, help="timm model tag.")
@click.option("--resnet-weights", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Local timm weights (.safetensors/.pth) instead of downloading.")
@click.option("--batch-size", type=POSITIVE, default=32, show_default=True)
@click.option("--workers", type=COUNT, default=2, show_default=True,
              help="DataLoader worker processes.")
@click.option("--gallery-max", type=POSITIVE, default=50, show_default=True,
              help="PNGs per gallery at most.")
@click.option("--report-thumbs", type=COUNT, default=8, show_default=True,
              help="Gallery PNGs shown in report.md.")
@clip_options(random_init_help="Random weights: smoke tests and profiling only.")
@click.pass_context
def command(ctx: click.Context, images: Path, out: Path, labels: Path | None, unlabelled: bool,
            resnet: str, resnet_weights: Path | None, batch_size: int, workers: int,
            gallery_max: int, report_thumbs: int, clip: ClipOptions) -> None:
    """CLIP zero-shot vs an ImageNet ResNet-50 on your images.

    IMAGES is a flat folder, one subfolder per class (a WordNet id like n01440764 or a class
    name), or any folder with --labels. OUT gets predictions.csv, summary.json, the galleries
    clip_better/ and resnet_better/, and report.md.

    \b
    zoo clip-vs-resnet photos/ --out runs/clip_vs_resnet
    zoo clip-vs-resnet photos/ --out /tmp/smoke --random-init --device cpu
    """
    from .run import Comparison, compare

    summary = compare(Comparison(
        images, out, resnet, clip, resnet_weights=resnet_weights, labels=labels,
        unlabelled=unlabelled, batch_size=batch_size, workers=workers, gallery_max=gallery_max,
        report_thumbs=report_thumbs, command=typed_command(ctx)))
    click.echo(f"{summary['n_images']} images, {len(summary['skipped'])} skipped; "
               f"report: {out / 'report.md'}")
