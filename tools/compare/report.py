"""The comparison's files for people: predictions.csv (top-5 of both models per image) and
report.md (setup, accuracy, galleries, architecture), rendered from summary.json's data."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from zoo.io import atomic_write

from . import RANDOM_BANNER, TOPK
from .galleries import GALLERIES
from .labels import ImageNetClasses
from .predict import Prediction


def write_predictions(preds: list[Prediction], path: Path, classes: ImageNetClasses) -> None:
    head = ["path", "label", "label_wnid"]
    for model in ("clip", "resnet"):
        for k in range(1, TOPK + 1):
            head += [f"{model}_top{k}", f"{model}_p{k}"]
    head += ["clip_correct", "resnet_correct"]
    text = io.StringIO()
    w = csv.writer(text)
    w.writerow(head)
    for p in preds:
        row = [p.rel, classes.names[p.label] if p.label is not None else "",
               classes.wnids[p.label] if p.label is not None else ""]
        for top, prob in ((p.clip_top, p.clip_prob), (p.resnet_top, p.resnet_prob)):
            for i, v in zip(top, prob, strict=True):
                row += [classes.names[i], f"{v:.4f}"]
        for top in (p.clip_top, p.resnet_top):
            row.append("" if p.label is None else int(top[0] == p.label))
        w.writerow(row)
    atomic_write(path, text.getvalue())


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def render_report(summary: dict, galleries: dict[str, list[str]], thumbs: int) -> str:
    """report.md: setup, accuracy, galleries (relative PNG links), architecture."""
    lines = ["# CLIP zero-shot vs ResNet-50", ""]
    if summary["config"]["random_init"]:
        lines += [f"> **{RANDOM_BANNER}.** Both models have random weights (`--random-init`); every number",
                  "> and picture below only shows that the pipeline runs.", ""]
    lines += [*_setup(summary), *_accuracy(summary), *_galleries(summary, galleries, thumbs),
              *_architecture(summary["architecture"]),
              "Files: `predictions.csv` (top-5 of both models per image), `summary.json` (everything above).", ""]
    return "\n".join(lines)


def _setup(summary: dict) -> list[str]:
    cfg, arch, seconds = summary["config"], summary["architecture"], summary["seconds"]
    skipped = (f", {len(summary['skipped'])} skipped (unreadable, listed in summary.json)"
               if summary["skipped"] else "")
    return ["## Setup", "",
            "| | CLIP | ResNet |", "|---|---|---|",
            f"| model | `{cfg['clip_model']}` zero-shot, prompts: {cfg['prompts']} ({cfg['n_templates']} "
            f"template(s)) | `{cfg['resnet']}` |",
            f"| weights | {cfg['clip_source']} | {cfg['resnet_source']} |",
            f"| input | {arch['clip_image_encoder']['resolution']} px, CLIP preprocess | "
            f"{arch['resnet']['resolution']} px, timm eval transform |",
            f"| forward time, this run | {seconds['clip']:.1f} s | {seconds['resnet']:.1f} s |",
            "",
            f"Images: {summary['n_images']} classified from `{cfg['images']}`{skipped}. "
            f"Device: {cfg['device']}. Command: `{cfg['command']}`", ""]


def _accuracy(summary: dict) -> list[str]:
    acc = summary["accuracy"]
    lines = ["## Accuracy", ""]
    if acc is None:
        return [*lines, f"No labels, so no accuracy. The models' top-1 classes agree on "
                        f"{_pct(summary['top1_agreement'])} of the images.", ""]
    a = acc["agreement"]
    lines += [f"{acc['n_labelled']} labelled images.", "",
              "| model | top-1 | top-5 |", "|---|---|---|",
              f"| CLIP | {_pct(acc['clip']['top1'])} | {_pct(acc['clip']['top5'])} |",
              f"| ResNet | {_pct(acc['resnet']['top1'])} | {_pct(acc['resnet']['top5'])} |", "",
              "Top-1 agreement (images):", "",
              "| | ResNet right | ResNet wrong |", "|---|---|---|",
              f"| **CLIP right** | {a['both_right']} | {a['only_clip']} |",
              f"| **CLIP wrong** | {a['only_resnet']} | {a['both_wrong']} |", "",
              "Per class (top-1):", "",
              "| class | wnid | n | CLIP | ResNet |", "|---|---|---|---|---|"]
    lines += [f"| {c['name']} | {c['wnid']} | {c['n']} | {_pct(c['clip_top1'])} | {_pct(c['resnet_top1'])} |"
              for c in acc["per_class"]]
    return [*lines, ""]


def _galleries(summary: dict, galleries: dict[str, list[str]], thumbs: int) -> list[str]:
    lines = ["## Where each model wins", "",
             "With a label, an image goes to `clip_better/` when CLIP's top-1 is right and the ResNet's is "
             "wrong (and the other way round). Without a label, when the top-1 classes differ, it goes "
             "to the model more confident in its own top-1: a pointer to disagreements, not a score.", ""]
    for g in GALLERIES:
        count = summary["galleries"][g]
        lines += [f"### {g.replace('_', ' ')} ({count} images, {len(galleries[g])} drawn in `{g}/`)", ""]
        lines += [f"![{Path(png).stem}]({png})" for png in galleries[g][:thumbs]] or ["(none)"]
        lines.append("")
    return lines


def _architecture(arch: dict) -> list[str]:
    c, r = arch["clip_image_encoder"], arch["resnet"]
    lines = ["## Architecture", "",
             "Counted from the models built in this run (parameters) and one forward pass of one image "
             "under `torch.utils.flop_counter.FlopCounterMode` (a multiply-add counts as 2 FLOPs).", "",
             "| | CLIP image encoder | ResNet |", "|---|---|---|",
             f"| parameters | {c['params'] / 1e6:.2f} M (text encoder: {c['params_text'] / 1e6:.2f} M more) | "
             f"{r['params'] / 1e6:.2f} M |",
             f"| GFLOPs per image | {c['flops'] / 1e9:.2f} at {c['resolution']} px | "
             f"{r['flops'] / 1e9:.2f} at {r['resolution']} px |", ""]
    for title, d in (("CLIP image encoder", c), ("ResNet", r)):
        lines += [f"**{title}**, read from its module tree:", ""] + [f"- {f}" for f in d["facts"]] + [""]
        lines += ["| layer | type | output | params |", "|---|---|---|---|"]
        lines += [f"| {row['layer']} | {row['type']} | {row['output']} | {row['params']:,} |" for row in d["layers"]]
        lines.append("")
    return [*lines,
            "CLIP's paper (Radford et al. 2021, Sec. 2.4) names these changes to ResNet-50: the ResNet-D "
            "stem and shortcut changes (He et al. 2019, 'Bag of Tricks'), anti-aliased rect-2 blur pooling "
            "(Zhang 2019, 'Making Convolutional Networks Shift-Invariant Again'), and attention pooling in "
            "place of global average pooling.", ""]
