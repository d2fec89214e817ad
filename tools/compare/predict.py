"""Both models on every image: top-5 classes and probabilities, and the forward time of each."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from zoo.errors import first_line
from zoo.io import open_rgb
from zoo.train.trainer import progress as bar

from ..clip_common.models import LoadedClip
from ..clip_common.zeroshot import zero_shot_logits
from . import TOPK
from .labels import Sample
from .resnet import LoadedResnet


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
    for idx, x_clip, x_resnet, bad in bar(loader, progress, desc="images", unit="batch"):
        for i, err in bad:
            tqdm.write(f"warning: skipped {samples[i].rel}: {err}", file=sys.stderr)  # under a bar
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
    return preds, skipped, seconds
