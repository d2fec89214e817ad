"""`zoo viz`: attention figures of a run, a checkpoint or a timm model."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import click

from zoo.cli.options import DEVICE_OPTION, PLUGINS_OPTION, TRUST_OPTION


@click.command("viz")
@click.argument("source")
@click.option("--image", "image_paths", multiple=True, type=click.Path(), metavar="PATH",
              help="An image to look at (repeatable). Default: the run's first log.viz_images "
                   "validation images.")
@click.option("--visualizer", "specs", multiple=True, metavar="SPEC",
              help="A visualizer name or YAML mapping, e.g. '{rollout: {fusion: max}}' "
                   "(repeatable). Default: the recipe's log.visualizers, else all of them.")
@click.option("--compare", metavar="SOURCE_B",
              help="Draw SOURCE and SOURCE_B side by side (default: rollout and cls_attention).")
@click.option("--out", type=click.Path(), help="Folder for the PNGs. Default: <run>/figures/viz, "
              "or viz/timm-<name> for a timm model.")
@click.option("--weights", type=click.Path(), metavar="FILE",
              help="Weights for a timm: SOURCE, for use offline: a state dict saved from timm "
                   "(.safetensors, .pth or .bin).")
@DEVICE_OPTION
@PLUGINS_OPTION
@TRUST_OPTION
def viz(source: str, image_paths: tuple[str, ...], specs: tuple[str, ...], compare: str | None,
        out: str | None, weights: str | None, device: str, plugin_paths: tuple[str, ...],
        trust_plugins: bool) -> None:
    """Draw attention maps of a run dir, a CHECKPOINT or timm:MODEL_NAME into PNGs.

    \b
    zoo viz runs/quickstart/<timestamp>      its log.visualizers, the run's val images
    zoo viz runs/quickstart/<timestamp> --visualizer rollout --image cat.jpg
    zoo viz RUN_VIT --compare RUN_DIFFVIT    the two side by side
    zoo viz timm:vit_small_patch16_224.dino --image cat.jpg  (offline: --weights FILE)
    zoo list visualizer                      what there is, with options
    """
    from zoo.recipe import parse_spec_text
    from zoo.runs import RunRef
    from zoo.viz.render import render, write_pngs

    run = partial(RunRef, plugins=plugin_paths, trust_plugins=trust_plugins)
    drawn = render(run(source), compare=run(compare) if compare else None, images=image_paths,
                   visualizers=[parse_spec_text(text, "--visualizer") for text in specs],
                   weights=weights, device=device)
    for path in write_pngs(drawn.figures, Path(out) if out else drawn.folder):
        click.echo(str(path))
