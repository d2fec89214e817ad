"""Running CLIP's image encoder in a precision mode: on a cast copy (FP16) or under autocast."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import nn

from .settings import Mode


def model_for(model: nn.Module, mode: Mode) -> nn.Module:
    """The module to run in `mode`; FP16 works on a copy so the caller's model never changes."""
    return copy.deepcopy(model).to(mode.weights_dtype) if mode.weights != "float32" else model


@contextlib.contextmanager
def precision(mode: Mode, device: torch.device) -> Iterator[None]:
    if mode.autocast is None:
        yield
    else:
        with torch.autocast(device.type, dtype=mode.autocast_dtype):
            yield


def forward(model: nn.Module, x: torch.Tensor, mode: Mode, device: torch.device) -> torch.Tensor:
    with torch.inference_mode(), precision(mode, device):
        return model(x.to(mode.weights_dtype))
