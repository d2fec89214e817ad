"""How predictions move: each mode's ImageNet zero-shot predictions against FP32's on the
same images."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import ZooError, first_line
from zoo.io import open_rgb

from ..clip_common.images import SAMPLE_PHOTOS, list_images, sample_photos
from .precision import forward, model_for
from .settings import MODES, Mode


def agreement(ref_emb: torch.Tensor, emb: torch.Tensor, head: torch.Tensor, logit_scale: float) -> dict:
    """How a mode's zero-shot predictions differ from FP32's on the same images.

    top1_agreement: share of images with the same top-1 class; max/mean_abs_prob_change: the
    largest change of any class probability in an image, max and mean over images;
    kl_mean: KL(p_fp32 || p_mode) in nats, mean over images; cosine_*: of the image embeddings.
    """
    ref_emb, emb, head = ref_emb.double(), emb.double(), head.double()
    ref_logits = logit_scale * F.normalize(ref_emb, dim=-1) @ head.t()
    logits = logit_scale * F.normalize(emb, dim=-1) @ head.t()
    ref_logp, logp = ref_logits.log_softmax(dim=-1), logits.log_softmax(dim=-1)
    change = (logp.exp() - ref_logp.exp()).abs().amax(dim=-1)
    cosine = F.cosine_similarity(ref_emb, emb, dim=-1)
    return {
        "n_images": int(emb.shape[0]),
        "top1_agreement": float((ref_logits.argmax(-1) == logits.argmax(-1)).double().mean()),
        "max_abs_prob_change": float(change.max()),
        "mean_abs_prob_change": float(change.mean()),
        "kl_mean": float((ref_logp.exp() * (ref_logp - logp)).sum(dim=-1).mean()),
        "cosine_mean": float(cosine.mean()),
        "cosine_min": float(cosine.min()),
        "non_finite_embeddings": int((~torch.isfinite(emb)).any(dim=-1).sum()),
    }


def embed(model: nn.Module, images: torch.Tensor, mode: Mode, device: torch.device, batch: int = 32) -> torch.Tensor:
    return torch.cat([forward(model, chunk.to(device), mode, device).float().cpu() for chunk in images.split(batch)])


def prediction_impact(model: nn.Module, modes: list[Mode], images: torch.Tensor, head: torch.Tensor,
                      logit_scale: float, device: torch.device) -> Iterator[tuple[str, dict]]:
    """(mode, agreement with FP32) per mode, yielded as measured (a Ctrl-C keeps the earlier ones)."""
    ref = embed(model, images, MODES["fp32"], device)
    for mode in modes:
        m = model_for(model, mode)
        try:
            yield mode.name, agreement(ref, embed(m, images, mode, device), head, logit_scale)
        except (RuntimeError, NotImplementedError) as e:
            yield mode.name, {"status": f"unsupported: {first_line(e)}"}
        del m


def evaluation_images(folder: Path | None, preprocess, resolution: int) -> tuple[torch.Tensor, str]:
    """The images predictions are compared on, and a sentence saying what they are."""
    if folder is not None:
        if not folder.is_dir():
            raise ZooError(f"--images {folder}: not a folder")
        tensors = []
        for path in list_images(folder):
            try:
                tensors.append(preprocess(open_rgb(path, exif=True)))
            except Exception as e:  # an unreadable file is skipped, like in clip_vs_resnet
                print(f"warning: skipped {path}: {first_line(e)}", file=sys.stderr)
        if not tensors:
            raise ZooError(f"--images {folder}: no readable images")
        return torch.stack(tensors), f"{len(tensors)} images from {folder}"
    try:
        photos = list(sample_photos())
    except ImportError:
        generator = torch.Generator().manual_seed(0)
        return (torch.randn(8, 3, resolution, resolution, generator=generator),
                "8 random tensors (scikit-image is not installed; pass --images DIR for real photos)")
    return (torch.stack([preprocess(im) for _, im in photos]),
            f"scikit-image sample photos ({', '.join(SAMPLE_PHOTOS)})")
