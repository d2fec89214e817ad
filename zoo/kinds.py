"""The plugin kinds: one table of what zoo passes each kind's plugins (their context, which
a recipe may not set) and what each plugin must be (a Protocol: its contract).

A plugin is a class or factory registered with `@register(kind, name)`; called with its
recipe parameters and the context, it returns an object of its kind's Protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from torch import Tensor


@runtime_checkable
class Attention(Protocol):
    """An attention module mapping tokens [B, N, C] to [B, N, C].

    `forward(x, return_attn=True)` returns `(out, maps)` where `maps["attn"]` holds the
    attention probabilities [B, heads, N, N]; plugins may add more entries (diff adds
    attn1, attn2, lam). A plugin with a learnable lambda also has `lam() -> Tensor`.
    Without `return_attn` there are no maps: the attention visualizers need it.
    """

    def __call__(self, x: Tensor, return_attn: bool = False) -> Any: ...


@runtime_checkable
class PosEmb(Protocol):
    """A positional-embedding module.

    `forward(x, grid)` adds position information to tokens [B, prefix + gh*gw, C] for the
    patch grid `grid = (gh, gw)` of the current image (learned tables are resized to it) and
    returns the same shape. `patch_embeddings()` gives the per-patch embeddings
    [gh*gw, C] of the grid the model was built for, or None if there are none.
    """

    def __call__(self, x: Tensor, grid: tuple[int, int]) -> Tensor: ...

    def patch_embeddings(self) -> Tensor | None: ...


@runtime_checkable
class AugmentOp(Protocol):
    """One batch augmentation on the device: (x [B, C, H, W] floats in [0, 1], soft targets
    [B, K]) -> the same. `capturable = True` declares it draws its randomness from torch's
    generators without host syncs, so a CUDA graph may hold it."""

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]: ...


@runtime_checkable
class Visualizer(Protocol):
    """Figures of a model looking at images: (model, images uint8 [B, 3, H, W], model input
    x, image names) -> {name: matplotlib Figure}.

    An optional class attribute `needs` (e.g. `("attention_maps",)`) names what the model
    must serve (`ViT.lacks`); a model that cannot gets one warning line and no figure from
    it, in training and in `zoo run --dry-run`, instead of an error mid-run."""

    def __call__(self, model: Any, images: Tensor, x: Tensor, names: list[str]) -> dict[str, Any]: ...


@runtime_checkable
class Dataset(Protocol):
    """One split: zoo.data.TensorData (held in memory, on the device) or a map-style
    dataset of (uint8 image [C, H, W], label) with `classes`, `mean` and `std`."""

    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class Kind:
    context: tuple[str, ...]  # what zoo passes; a recipe may not set these
    contract: type  # the Protocol a built plugin satisfies


KINDS: dict[str, Kind] = {
    "attention": Kind(("dim", "heads", "layer", "depth", "qkv_bias", "attn_drop"), Attention),
    "posemb": Kind(("dim", "grid_size", "num_prefix_tokens"), PosEmb),
    "augment": Kind(("num_classes", "img_size"), AugmentOp),
    "visualizer": Kind((), Visualizer),
    "dataset": Kind(("split", "img_size", "root"), Dataset),
}


def summary(contract: type) -> str:
    """The first line of a contract's doc, for errors."""
    return (contract.__doc__ or "").strip().splitlines()[0]
