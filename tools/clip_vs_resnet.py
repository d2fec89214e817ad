"""CLIP zero-shot against an ImageNet-trained ResNet-50, on your own folder of images.

    python tools/clip_vs_resnet.py IMAGES --out OUT [--labels labels.csv] [--clip-model RN50]
        [--resnet resnet50.a1_in1k] [--prompts auto|ensemble|single|name] [--random-init]

CLIP (Radford et al. 2021, arXiv:2103.00020) classifies by comparing an image embedding with
text embeddings of the 1000 ImageNet class names (zero-shot, no ImageNet training labels);
the ResNet-50 (He et al. 2016, arXiv:1512.03385) is a timm classifier trained on ImageNet-1k
(`resnet50.a1_in1k`: Wightman et al., "ResNet strikes back", arXiv:2110.00476;
`resnet50.tv_in1k`: the original torchvision weights). Each model gets its own eval transform.

IMAGES is a folder: flat (no labels), or ImageFolder-style with one subfolder per class named
by WordNet id (n01440764) or class name (tench, golden_retriever), or any folder plus
`--labels` CSV rows `path,label` (paths relative to IMAGES). OUT gets predictions.csv,
summary.json, the galleries clip_better/ and resnet_better/, and report.md.
"""

from __future__ import annotations

import csv
import io
import re
import shlex
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # `python tools/clip_vs_resnet.py`: import tools and zoo from this checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from tqdm import tqdm  # noqa: E402

from tools.clip_common import (  # noqa: E402
    ArgumentParser,
    LoadedClip,
    add_shared_args,
    choose_device,
    imagenet_classnames,
    imagenet_descriptions,
    imagenet_wnids,
    list_images,
    load_clip,
    prompt_templates,
    resolve_prompts,
    tool_package,
    zero_shot_head,
    zero_shot_logits,
)
from zoo.convert import check_timm_name  # noqa: E402
from zoo.errors import ZooError, exit_on_user_error, first_line, suggest  # noqa: E402
from zoo.io import atomic_write, open_rgb, quiet_hub_retries, write_json  # noqa: E402

DEFAULT_RESNET = "resnet50.a1_in1k"
GALLERIES = ("clip_better", "resnet_better")
TOPK = 5
RANDOM_BANNER = "RANDOM WEIGHTS: a smoke test of the pipeline, not a result"


# --- labels ---------------------------------------------------------------------------------


def _norm(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


class ImageNetClasses:
    """Maps what users write as a label (wnid, index, class name) to an ImageNet-1k index."""

    def __init__(self) -> None:
        self.wnids = imagenet_wnids()
        self.names = imagenet_classnames()  # CLIP's curated names, what reports show
        self._by_wnid = {w: i for i, w in enumerate(self.wnids)}
        lemmas = [[_norm(s) for s in d.split(",")] for d in imagenet_descriptions()]
        # Tried in order; the first table with exactly one match wins. CLIP's names are not
        # unique ('missile', 'sunglasses' appear twice), WordNet's first lemmas break those ties.
        self._tables: list[dict[str, list[int]]] = []
        for keys in ([[_norm(n)] for n in self.names], [ls[:1] for ls in lemmas], lemmas):
            table: dict[str, list[int]] = {}
            for i, ks in enumerate(keys):
                for k in ks:
                    table.setdefault(k, []).append(i)
            self._tables.append(table)

    def index(self, label: str) -> int:
        text = label.strip()
        if re.fullmatch(r"n\d{8}", text):
            if text not in self._by_wnid:
                raise ZooError(f"'{text}' is not one of the 1000 ImageNet-1k WordNet ids")
            return self._by_wnid[text]
        if text.isdigit():
            if int(text) >= len(self.wnids):
                raise ZooError(f"class index {text} is out of range 0..{len(self.wnids) - 1}")
            return int(text)
        key = _norm(text)
        ambiguous: list[int] = []
        for table in self._tables:
            hits = table.get(key, [])
            if len(hits) == 1:
                return hits[0]
            ambiguous = ambiguous or hits
        if ambiguous:
            raise ZooError(f"class name '{text}' is ambiguous ({', '.join(self.wnids[i] for i in ambiguous)}); "
                           "use the WordNet id")
        raise ZooError(f"'{text}' is not an ImageNet class name or WordNet id{suggest(key, self._tables[0])}")


@dataclass
class Sample:
    path: Path
    rel: str  # path relative to the image folder, as written in predictions.csv
    label: int | None


def collect_samples(root: Path, classes: ImageNetClasses, labels_csv: Path | None = None,
                    unlabelled: bool = False) -> list[Sample]:
    """The images to classify, with labels from the layout or the CSV (see the module doc)."""
    if not root.is_dir():
        raise ZooError(f"{root}: not a folder of images")
    if labels_csv is not None:
        return read_labels_csv(labels_csv, root, classes)
    paths = list_images(root)
    if not paths:
        raise ZooError(f"{root}: no images found (looked for files PIL opens: .jpg, .png, .webp, ...)")
    samples = []
    for path in paths:
        parts = path.relative_to(root).parts
        label = None
        if len(parts) > 1 and not unlabelled:
            try:
                label = classes.index(parts[0])
            except ZooError as e:
                raise ZooError(f"{root / parts[0]}: folder name is not an ImageNet class ({e}); "
                               "pass --unlabelled to ignore folder names") from e
        samples.append(Sample(path, path.relative_to(root).as_posix(), label))
    return samples


def read_labels_csv(csv_path: Path, root: Path, classes: ImageNetClasses) -> list[Sample]:
    """Rows `path,label` (optional header; empty label = unlabelled), paths relative to `root`."""
    if not csv_path.is_file():
        raise ZooError(f"--labels {csv_path}: no such file")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:  # Excel writes a BOM
            rows = list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise ZooError(f"{csv_path}: not a readable CSV file ({first_line(e)})") from e
    samples = []
    for lineno, row in enumerate(rows, 1):
        if not any(cell.strip() for cell in row):
            continue
        if not samples and [c.strip().lower() for c in row] == ["path", "label"]:
            continue
        if len(row) != 2:
            raise ZooError(f"{csv_path}:{lineno}: expected 'path,label', got {len(row)} fields")
        rel, label = row[0].strip(), row[1].strip()
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise ZooError(f"{csv_path}:{lineno}: path '{rel}' points outside {root}; write "
                           "paths relative to the image folder, without '..' or a leading '/'")
        path = root / rel
        if not path.is_file():
            raise ZooError(f"{csv_path}:{lineno}: no such image {path}")
        try:
            index = classes.index(label) if label else None
        except ZooError as e:
            raise ZooError(f"{csv_path}:{lineno}: {e}") from e
        samples.append(Sample(path, Path(rel).as_posix(), index))
    if not samples:
        raise ZooError(f"{csv_path}: no rows (expected lines 'path,label')")
    return samples


# --- models ---------------------------------------------------------------------------------


@dataclass
class LoadedResnet:
    model: nn.Module
    transform: object
    tag: str  # resolved 'architecture.pretrained_tag'
    source: str
    input_size: int


def load_resnet(tag: str, *, device: torch.device, weights: Path | None = None,
                random_init: bool = False, seed: int = 0) -> LoadedResnet:
    """timm classifier `tag` (pretrained, local file, or random) with its own eval transform."""
    import timm
    import timm.data

    arch = tag.split(".")[0]
    check_timm_name(tag, "--resnet")
    if random_init and weights is not None:
        raise ZooError("--random-init and --resnet-weights exclude each other")
    kwargs = {}
    if weights is not None:
        if not Path(weights).is_file():
            raise ZooError(f"--resnet-weights {weights}: no such file")
        kwargs["pretrained_cfg_overlay"] = {"file": str(weights)}
    torch.manual_seed(seed)
    try:
        with quiet_hub_retries():
            model = timm.create_model(tag, pretrained=not random_init, **kwargs)
    except Exception as e:  # hub download, missing cache, or a file that does not fit
        if weights is not None:
            raise ZooError(f"could not load {tag} weights from {weights} ({first_line(e)})") from e
        raise ZooError(
            f"could not get pretrained weights for {tag} ({first_line(e)}); without network, download "
            f"model.safetensors from https://huggingface.co/timm/{tag} elsewhere and pass "
            "--resnet-weights FILE, or use --random-init for a smoke test") from e
    if model.num_classes != 1000:
        raise ZooError(f"{tag} has {model.num_classes} classes; the comparison needs an ImageNet-1k classifier")
    config = timm.data.resolve_data_config({}, model=model)
    cfg = model.pretrained_cfg
    resolved = f"{cfg.get('architecture', arch)}.{cfg['tag']}" if cfg.get("tag") else arch
    if random_init:
        source = f"random init (seed {seed}), NOT pretrained"
    else:
        source = str(weights) if weights is not None else f"hf-hub:{cfg.get('hf_hub_id', resolved)}"
    return LoadedResnet(model.eval().to(device), timm.data.create_transform(**config), resolved, source,
                        int(config["input_size"][-1]))


# --- prediction -----------------------------------------------------------------------------


@dataclass
class Prediction:
    rel: str
    path: Path
    label: int | None
    clip_top: list[int]
    clip_prob: list[float]
    resnet_top: list[int]
    resnet_prob: list[float]


class _PairDataset(Dataset):
    """One image through both transforms; a failed decode is returned as its error string."""

    def __init__(self, samples: list[Sample], clip_tf, resnet_tf) -> None:
        self.samples, self.clip_tf, self.resnet_tf = samples, clip_tf, resnet_tf

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        try:
            image = open_rgb(self.samples[i].path, exif=True)
        except Exception as e:  # any decoder failure skips this image, never the run
            return i, None, None, first_line(e)
        return i, self.clip_tf(image), self.resnet_tf(image), None


def _collate(items):
    good = [it for it in items if it[3] is None]
    bad = [(it[0], it[3]) for it in items if it[3] is not None]
    if not good:
        return [], None, None, bad
    return ([it[0] for it in good], torch.stack([it[1] for it in good]),
            torch.stack([it[2] for it in good]), bad)


def _topk(logits: torch.Tensor) -> tuple[list[list[int]], list[list[float]]]:
    prob, top = logits.float().softmax(dim=-1).topk(TOPK, dim=-1)
    return top.tolist(), prob.tolist()


@torch.inference_mode()
def predict(samples: list[Sample], clip_: LoadedClip, head: torch.Tensor, resnet: LoadedResnet,
            *, batch_size: int, workers: int, device: torch.device,
            progress: bool = True) -> tuple[list[Prediction], list[dict], dict[str, float]]:
    """Top-5 of both models per readable image; unreadable images are skipped and listed."""
    loader = DataLoader(_PairDataset(samples, clip_.preprocess, resnet.transform), batch_size=batch_size,
                        num_workers=workers, collate_fn=_collate)
    preds, skipped = [], []
    seconds = {"clip": 0.0, "resnet": 0.0}
    with tqdm(total=len(samples), unit="img", desc="images", disable=not progress) as bar:
        for idx, x_clip, x_resnet, bad in loader:
            for i, err in bad:
                tqdm.write(f"warning: skipped {samples[i].rel}: {err}", file=sys.stderr)
                skipped.append({"path": samples[i].rel, "error": err})
            if idx:
                start = time.perf_counter()
                clip_logits = zero_shot_logits(clip_.model, x_clip.to(device), head).cpu()  # .cpu() syncs
                seconds["clip"] += time.perf_counter() - start
                start = time.perf_counter()
                resnet_logits = resnet.model(x_resnet.to(device)).cpu()
                seconds["resnet"] += time.perf_counter() - start
                ct, cp = _topk(clip_logits)
                rt, rp = _topk(resnet_logits)
                for j, i in enumerate(idx):
                    s = samples[i]
                    preds.append(Prediction(s.rel, s.path, s.label, ct[j], cp[j], rt[j], rp[j]))
            bar.update(len(idx) + len(bad))
    return preds, skipped, seconds


# --- metrics and galleries ------------------------------------------------------------------


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


# --- architecture ---------------------------------------------------------------------------


def _conv(m: nn.Conv2d) -> str:
    return f"{m.kernel_size[0]}x{m.kernel_size[1]}/s{m.stride[0]} {m.in_channels}->{m.out_channels}"


def _head_part(m: nn.Module) -> str:
    if hasattr(m, "num_heads") and hasattr(m, "positional_embedding"):  # CLIP AttentionPool2d
        tokens = m.positional_embedding.shape[0]
        return (f"attention pooling, {m.num_heads} heads over {tokens - 1} feature vectors plus their mean "
                f"as the query token, width {m.k_proj.in_features} -> {m.c_proj.out_features}-d embedding")
    if hasattr(m, "pool_type"):  # timm SelectAdaptivePool2d
        return f"global {m.pool_type} pooling"
    if isinstance(m, nn.Linear):
        return f"linear {m.in_features} -> {m.out_features}"
    return type(m).__name__


def design_facts(visual: nn.Module) -> list[str]:
    """What the module tree says about stem, downsampling and head (no hand-written claims)."""
    if isinstance(visual, tool_package("clip.model").VisionTransformer):
        conv, blocks = visual.conv1, visual.transformer.resblocks
        grid = visual.input_resolution // conv.stride[0]
        return [f"patch embedding: {_conv(conv)} ({grid}x{grid} patches + a class token)",
                f"{len(blocks)} transformer blocks of width {visual.transformer.width}",
                f"head: LayerNorm on the class token, linear projection to {visual.output_dim}-d embedding"]
    children = list(visual.named_children())
    stages = [i for i, (n, _) in enumerate(children) if re.fullmatch(r"layer\d+", n)]
    if not stages:
        return [f"{type(visual).__name__}: no layer1..4 stages found"]
    stem = [m for _, m in children[: stages[0]]]
    body = [children[i][1] for i in stages]
    convs = [m for m in stem if isinstance(m, nn.Conv2d)]
    pools = [type(m).__name__ + f"({m.kernel_size})" for m in stem if isinstance(m, (nn.AvgPool2d, nn.MaxPool2d))]
    inner = [m for stage in body for m in stage.modules()]
    strided = Counter(f"{m.kernel_size[0]}x{m.kernel_size[1]}" for m in inner
                      if isinstance(m, nn.Conv2d) and max(m.stride) > 1)
    avgpools = [m for m in inner if isinstance(m, nn.AvgPool2d)]
    facts = [f"stem: {len(convs)} convolution(s) ({', '.join(_conv(c) for c in convs)})"
             + (f", then {', '.join(pools)}" if pools else ""),
             f"{len(body)} residual stages of {', '.join(str(len(s)) for s in body)} blocks"]
    if strided:
        facts.append("downsampling in the stages: strided convolutions ("
                     + ", ".join(f"{n} of {k}" for k, n in sorted(strided.items())) + ")")
    else:
        facts.append("downsampling in the stages: no strided convolution; "
                     f"{len(avgpools)} AvgPool2d layers average before stride-1 convolutions instead "
                     "(anti-aliased downsampling, 'rect-2 blur pooling', Zhang 2019)")
    facts.append("head: " + " -> ".join(_head_part(m) for _, m in children[stages[-1] + 1:]))
    return facts


def describe(model: nn.Module, resolution: int, device: torch.device) -> dict:
    """Parameters, FLOPs (FlopCounterMode: one multiply-add = 2 FLOPs) and a per-child layer table."""
    rows = []

    def hook(name: str):
        def record(module, _inputs, output):
            shape = list(output.shape) if isinstance(output, torch.Tensor) else "-"
            rows.append({"layer": name, "type": type(module).__name__, "output": shape,
                         "params": sum(p.numel() for p in module.parameters())})
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_children()]
    x = torch.zeros(1, 3, resolution, resolution, device=device)
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for h in handles:
            h.remove()
    return {"params": sum(p.numel() for p in model.parameters()), "flops": counter.get_total_flops(),
            "resolution": resolution, "layers": rows, "facts": design_facts(model)}


def architecture(clip_: LoadedClip, resnet: LoadedResnet, device: torch.device) -> dict:
    visual = clip_.model.visual
    clip_desc = describe(visual, visual.input_resolution, device)
    clip_desc["params_total"] = sum(p.numel() for p in clip_.model.parameters())
    clip_desc["params_text"] = clip_desc["params_total"] - clip_desc["params"]
    return {"clip_image_encoder": clip_desc, "resnet": describe(resnet.model, resnet.input_size, device)}


# --- outputs --------------------------------------------------------------------------------


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
    cfg, acc, arch = summary["config"], summary["accuracy"], summary["architecture"]
    lines = ["# CLIP zero-shot vs ResNet-50", ""]
    if cfg["random_init"]:
        lines += [f"> **{RANDOM_BANNER}.** Both models have random weights (`--random-init`); every number",
                  "> and picture below only shows that the pipeline runs.", ""]
    lines += ["## Setup", "",
              "| | CLIP | ResNet |", "|---|---|---|",
              f"| model | `{cfg['clip_model']}` zero-shot, prompts: {cfg['prompts']} ({cfg['n_templates']} "
              f"template(s)) | `{cfg['resnet']}` |",
              f"| weights | {cfg['clip_source']} | {cfg['resnet_source']} |",
              f"| input | {arch['clip_image_encoder']['resolution']} px, CLIP preprocess | "
              f"{arch['resnet']['resolution']} px, timm eval transform |",
              f"| forward time, this run | {summary['seconds']['clip']:.1f} s | {summary['seconds']['resnet']:.1f} s |",
              "",
              f"Images: {summary['n_images']} classified from `{cfg['images']}`"
              + (f", {len(summary['skipped'])} skipped (unreadable, listed in summary.json)" if summary["skipped"] else "")
              + f". Device: {cfg['device']}. Command: `{cfg['command']}`", ""]
    lines += ["## Accuracy", ""]
    if acc is None:
        lines += [f"No labels, so no accuracy. The models' top-1 classes agree on "
                  f"{_pct(summary['top1_agreement'])} of the images.", ""]
    else:
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
        lines.append("")
    lines += ["## Where each model wins", "",
              "With a label, an image goes to `clip_better/` when CLIP's top-1 is right and the ResNet's is "
              "wrong (and the other way round). Without a label, when the top-1 classes differ, it goes "
              "to the model more confident in its own top-1: a pointer to disagreements, not a score.", ""]
    for g in GALLERIES:
        count = summary["galleries"][g]
        lines += [f"### {g.replace('_', ' ')} ({count} images, {len(galleries[g])} drawn in `{g}/`)", ""]
        lines += [f"![{Path(png).stem}]({png})" for png in galleries[g][:thumbs]] or ["(none)"]
        lines.append("")
    c, r = arch["clip_image_encoder"], arch["resnet"]
    lines += ["## Architecture", "",
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
    lines += ["CLIP's paper (Radford et al. 2021, Sec. 2.4) names these changes to ResNet-50: the ResNet-D "
              "stem and shortcut changes (He et al. 2019, 'Bag of Tricks'), anti-aliased rect-2 blur pooling "
              "(Zhang 2019, 'Making Convolutional Networks Shift-Invariant Again'), and attention pooling in "
              "place of global average pooling.", "",
              "Files: `predictions.csv` (top-5 of both models per image), `summary.json` (everything above).", ""]
    return "\n".join(lines)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("images", type=Path, help="folder of images (flat, or one subfolder per class)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--labels", type=Path, help="CSV with rows path,label (paths relative to IMAGES)")
    p.add_argument("--unlabelled", action="store_true", help="ignore subfolder names")
    p.add_argument("--resnet", default=DEFAULT_RESNET, help=f"timm model tag (default {DEFAULT_RESNET})")
    p.add_argument("--resnet-weights", type=Path, help="local timm weights (.safetensors/.pth)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--gallery-max", type=int, default=50, help="PNGs per gallery at most")
    p.add_argument("--report-thumbs", type=int, default=8, help="gallery PNGs shown in report.md")
    add_shared_args(p, random_init_help="random weights: smoke tests and profiling only")
    return p


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    for flag in ("batch_size", "gallery_max"):
        if getattr(args, flag) < 1:
            raise ZooError(f"--{flag.replace('_', '-')} must be at least 1")
    if args.workers < 0 or args.report_thumbs < 0:
        raise ZooError("--workers and --report-thumbs must be 0 or more")
    start = time.perf_counter()
    device = choose_device(args.device)
    classes = ImageNetClasses()
    samples = collect_samples(args.images, classes, args.labels, args.unlabelled)
    prompts = resolve_prompts(args.prompts, args.random_init)
    clip_ = load_clip(args.clip_model, weights=args.clip_weights, random_init=args.random_init,
                      device=device, seed=args.seed)
    resnet = load_resnet(args.resnet, weights=args.resnet_weights, random_init=args.random_init,
                         device=device, seed=args.seed)
    head = zero_shot_head(clip_, prompts, cache_dir=args.cache_dir, progress=not args.no_progress)
    preds, skipped, seconds = predict(samples, clip_, head, resnet, batch_size=args.batch_size,
                                      workers=args.workers, device=device, progress=not args.no_progress)
    if not preds:
        raise ZooError(f"{args.images}: none of the {len(samples)} images could be read")
    args.out.mkdir(parents=True, exist_ok=True)
    galleries = split_galleries(preds)
    written = write_galleries(galleries, args.out, classes.names, resnet.tag, args.random_init, args.gallery_max)
    summary = {
        "config": {
            "images": str(args.images), "labels": str(args.labels) if args.labels else None,
            "clip_model": args.clip_model, "clip_source": clip_.source, "resnet": resnet.tag,
            "resnet_source": resnet.source, "prompts": prompts, "n_templates": len(prompt_templates(prompts)),
            "random_init": args.random_init, "device": str(device), "batch_size": args.batch_size,
            "command": shlex.join(["python", "tools/clip_vs_resnet.py", *(sys.argv[1:] if argv is None else argv)]),
            "torch": torch.__version__,
        },
        "note": RANDOM_BANNER if args.random_init else None,
        "n_images": len(preds),
        "skipped": skipped,
        "accuracy": accuracy(preds, classes),
        "top1_agreement": sum(p.clip_top[0] == p.resnet_top[0] for p in preds) / len(preds),
        "galleries": {g: len(v) for g, v in galleries.items()},
        "gallery_files": written,
        "architecture": architecture(clip_, resnet, device),
        "seconds": {**seconds, "total": time.perf_counter() - start},
    }
    write_predictions(preds, args.out / "predictions.csv", classes)
    write_json(args.out / "summary.json", summary)
    atomic_write(args.out / "report.md", render_report(summary, written, args.report_thumbs))
    print(f"{len(preds)} images, {len(skipped)} skipped; report: {args.out / 'report.md'}")
    return summary


if __name__ == "__main__":
    main()
