"""The optimisation pieces of a step: learning-rate schedule, loss, optimizer and EMA."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from zoo.schema import Recipe


def lr_at(step: int, total: int, warmup: int, lr: float, min_lr: float,
          warmup_lr: float | None = None) -> float:
    """Linear warmup, then cosine decay to min_lr (Loshchilov & Hutter 2017). The warmup
    rises from lr/warmup at the first step to lr, or, with `warmup_lr`, from warmup_lr at
    step 0 (as Lee et al.'s CosineAnnealingWarmupRestarts does, from its min_lr)."""
    if step < warmup:
        if warmup_lr is not None:
            return warmup_lr + (lr - warmup_lr) * step / warmup
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Cross-entropy against soft targets (mixup/cutmix), with label smoothing (Szegedy et al. 2016)."""
    if smoothing:
        target = target * (1 - smoothing) + smoothing / target.shape[1]
    return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


class EMA:
    """Exponential moving average of the weights (Polyak & Juditsky 1992); eval uses it."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema = list(self.model.state_dict().values())
        cur = list(model.state_dict().values())
        floats = [(e, c) for e, c in zip(ema, cur, strict=True) if e.dtype.is_floating_point]
        torch._foreach_lerp_([e for e, _ in floats], [c for _, c in floats], 1 - self.decay)


def make_optimizer(model: nn.Module, recipe: Recipe, device: torch.device,
                   lr_tensor: bool = False) -> torch.optim.Optimizer:
    """Weight decay on matrices only; norms, biases, tokens and position tables are exempt
    (`train.decay: all`: on every parameter, as AdamW(model.parameters()) in Lee et al.'s code).

    On CUDA, AdamW is the fused kernel; `lr_tensor` makes it capturable in a CUDA graph, its
    learning rate a device tensor that `set_lr` fills in place, so replays follow the
    schedule (AdamW only; PyTorch refuses to capture a step that is not `capturable`).
    """
    t = recipe.train
    skip = model.no_weight_decay() if t.decay == "weights" else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = t.decay == "weights" and (p.ndim <= 1 or name in skip)
        (no_decay if exempt else decay).append(p)
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, nesterov=True)
    fused = device.type == "cuda"
    graph = lr_tensor and fused
    lr = torch.tensor(t.lr, device=device) if graph else t.lr
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(t.betas), fused=fused or None,
                             capturable=graph)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's value into every group: in place where the rate is a device tensor."""
    for g in optimizer.param_groups:
        if isinstance(g["lr"], torch.Tensor):
            g["lr"].fill_(lr)
        else:
            g["lr"] = lr
