"""What a profile measures: the precision modes, and the batch sizes, warm-up and timed calls
sized for the device when the user gives none. No torch here: `zoo --help` reads it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from zoo.errors import ZooError, suggest

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Mode:
    name: str
    weights: str  # the torch dtype the weights and the input batch are cast to
    autocast: str | None  # the torch dtype of torch.autocast, or no autocast
    description: str

    @property
    def weights_dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, self.weights)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        import torch

        return getattr(torch, self.autocast) if self.autocast else None


MODES = {m.name: m for m in (
    Mode("fp32", "float32", None, "FP32 weights and math"),
    Mode("fp16", "float16", None, "a .half() copy: FP16 weights and activations"),
    Mode("amp-fp16", "float32", "float16", "FP32 weights, torch.autocast(dtype=float16)"),
    Mode("amp-bf16", "float32", "bfloat16", "FP32 weights, torch.autocast(dtype=bfloat16)"),
)}

# (batch sizes, warm-up calls, timed calls) when the user gives none. On a CPU one RN50 forward
# at batch 256 takes minutes, so CPU runs get a size that finishes in a few minutes.
DEFAULTS = {"cuda": ("1,8,32,128,256", 10, 50), "cpu": ("1,4", 2, 5)}


def parse_batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError as e:
        raise ZooError(f"--batch-sizes {text!r}: expected comma-separated positive integers, e.g. 1,8,32") from e
    if not sizes or min(sizes) < 1:
        raise ZooError(f"--batch-sizes {text!r}: expected comma-separated positive integers, e.g. 1,8,32")
    return sizes


def parse_modes(text: str) -> list[Mode]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    for name in names:
        if name not in MODES:
            raise ZooError(f"--modes: unknown mode '{name}'{suggest(name, MODES)}; choose from {', '.join(MODES)}")
    if not names:
        raise ZooError(f"--modes: give at least one of {', '.join(MODES)}")
    return [MODES[n] for n in dict.fromkeys(names)]


def run_sizes(device_type: str, batch_sizes: str | None = None, warmup: int | None = None,
              repeats: int | None = None) -> tuple[list[int], int, int]:
    """Batch sizes, warm-up and timed calls: the user's, else the DEFAULTS of this device type."""
    batches, warmups, timed = DEFAULTS["cuda" if device_type == "cuda" else "cpu"]
    return (parse_batch_sizes(batch_sizes if batch_sizes is not None else batches),
            warmup if warmup is not None else warmups,
            repeats if repeats is not None else timed)
