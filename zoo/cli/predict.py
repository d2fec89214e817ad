"""`zoo predict` and `zoo export`: a trained model put to use outside training."""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING

import click

from zoo.cli.options import CHECKPOINT_OPTION, DEVICE_OPTION, PLUGINS_OPTION, TRUST_OPTION

if TYPE_CHECKING:
    from zoo.predict import Prediction


def _table(found: list[Prediction]) -> str:
    """Image, rank, class, probability; the image named on its first row only."""
    iw = max(len("image"), *(len(p.image) for p in found))
    cw = max(len("class"), *(len(c) for p in found for c in p.classes))
    lines = [f"{'image':<{iw}}  rank  {'class':<{cw}}  probability"]
    for p in found:
        for rank, (name, prob) in enumerate(zip(p.classes, p.probs, strict=True), 1):
            image = p.image if rank == 1 else ""
            lines.append(f"{image:<{iw}}  {rank:>4}  {name:<{cw}}  {prob:11.4f}")
    return "\n".join(lines)


def _csv(found: list[Prediction]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["image", "rank", "class", "probability"])
    for p in found:
        for rank, (name, prob) in enumerate(zip(p.classes, p.probs, strict=True), 1):
            writer.writerow([p.image, rank, name, f"{prob:.6f}"])
    return out.getvalue()


@click.command("predict")
@click.argument("source", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--top-k", default=5, show_default=True, help="Classes to show per image.")
@click.option("--csv", "as_csv", is_flag=True,
              help="Print CSV (image, rank, class, probability) instead of a table.")
@CHECKPOINT_OPTION
@DEVICE_OPTION
@PLUGINS_OPTION
@TRUST_OPTION
def predict_cmd(source: str, images: tuple[str, ...], top_k: int, as_csv: bool, which: str,
                device: str, plugin_paths: tuple[str, ...], trust_plugins: bool) -> None:
    """Classify IMAGES with a run dir or CHECKPOINT: the top classes and probabilities.

    Needs no dataset: class names and normalisation come from the run. A file that cannot
    be read is named on stderr, one line each, and the rest are classified; the exit code
    is then 2.

    \b
    zoo predict runs/quickstart/<timestamp> cat.png dog.jpg
    zoo predict runs/quickstart/<timestamp> photos/*.jpg --top-k 1 --csv > labels.csv
    """
    from zoo.predict import predict
    from zoo.runs import RunRef

    ref = RunRef(source, checkpoint=which, plugins=plugin_paths, trust_plugins=trust_plugins)
    ckpt, found, failed = predict(ref, images, top_k, device)
    if found:
        click.echo(f"checkpoint: {ckpt}", err=as_csv)  # stdout stays pure CSV
        click.echo(_csv(found) if as_csv else _table(found), nl=not as_csv)
    for line in failed:  # after the table, where a terminal still shows them
        click.echo(f"error: {line}", err=True)
    if failed:
        raise click.exceptions.Exit(2)


@click.command("export")
@click.argument("source", type=click.Path())
@click.option("--format", "fmt", required=True, type=click.Choice(["torchscript", "onnx"]),
              help="TorchScript (torch.jit.load) or ONNX (needs the onnx extra: pip install 'vit-zoo[onnx]').")
@click.option("--out", type=click.Path(), metavar="FILE",
              help="Where to write it (default <run>/export/model.pt or model.onnx).")
@CHECKPOINT_OPTION
@PLUGINS_OPTION
@TRUST_OPTION
def export_cmd(source: str, fmt: str, out: str | None, which: str,
               plugin_paths: tuple[str, ...], trust_plugins: bool) -> None:
    """Export a run dir's or CHECKPOINT's model for use without zoo.

    Writes the model and FILE.json next to it: image size, mean, std, class names and the
    input it expects ([B, C, H, W] RGB in [0, 1], then (x - mean) / std). The export is run
    against PyTorch on a random batch before it is written. It is traced on the CPU (hence
    no --device): a trace made on a GPU would hold that GPU's device in its graph.
    """
    from zoo.export import export
    from zoo.runs import RunRef

    ref = RunRef(source, checkpoint=which, plugins=plugin_paths, trust_plugins=trust_plugins)
    info = export(ref, fmt, out)
    click.echo(f"checkpoint: {info['source_checkpoint']}")
    click.echo(f"wrote {info['file']}\nwrote {info['json']}")
    if info["max_diff"] is None:
        click.echo("not checked: install onnxruntime to run the ONNX file against PyTorch")
    else:
        click.echo(f"checked: max |logit difference| from PyTorch {info['max_diff']:.2e}")
