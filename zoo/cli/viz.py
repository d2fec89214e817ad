"""`zoo viz`: attention figures of a run, a checkpoint or a timm model."""

from __future__ import annotations

from pathlib import Path

import click

from zoo.cli.options import DEVICE_OPTION, PLUGINS_OPTION, TRUST_OPTION
from zoo.errors import ZooError


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
    import torch

    from zoo.data import load_images, model_input
    from zoo.device import Dist, pick_device
    from zoo.recipe import parse_spec_text
    from zoo.registry import discover
    from zoo.runs import RunRef
    from zoo.viz.figures import ImageNames, build_visualizers, draw, save_png
    from zoo.viz.subjects import ALL, COMPARE, compare_figures, load_subject

    dev = pick_device(device, Dist(), "--device")
    discover(plugin_paths)
    a = load_subject(RunRef(source, plugins=plugin_paths, trust_plugins=trust_plugins), weights,
                     not image_paths)
    b = load_subject(RunRef(compare, plugins=plugin_paths, trust_plugins=trust_plugins), None,
                     False) if compare else None
    for subject in filter(None, (a, b)):
        subject.model.to(dev)
    chosen = [parse_spec_text(t, '--visualizer') for t in specs] or (COMPARE if b else a.visualizers or ALL)
    visualizers = build_visualizers(chosen, "--visualizer")
    if image_paths:
        images, files = load_images(image_paths, a.model.cfg.img_size)
        names = ImageNames(files, classes=a.classes)  # labelled with the predicted class
    elif a.images is not None:
        images, names = a.images, a.names
    else:
        raise ZooError(f"{source} has no dataset to take images from; pass --image PATH")
    with torch.no_grad():
        if b is not None:
            figures = compare_figures(a, b, visualizers, images, names)
        else:
            figures = draw(visualizers, a.model, images, model_input(a.model, images, a.mean, a.std), names)
    folder = Path(out) if out else a.out
    folder.mkdir(parents=True, exist_ok=True)
    for key, fig in figures.items():
        path = folder / f"{key}.png"
        save_png(fig, path)
        click.echo(str(path))
