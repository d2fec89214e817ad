"""The plugin kinds: one table of what zoo passes each kind's plugins (their context, which
a recipe may not set) and what each plugin must be (a Protocol: its contract).

A plugin is a class or factory registered with `@register(kind, name)`; called with its
recipe parameters and the context, it returns an object of its kind's Protocol. What is
checked when it is built: the Protocol's methods exist, and the kind's `probe` runs it on a
tiny input (a forward of 5 tokens, a batch of 4 images) and checks the shapes it returns.
"""

from __future__ import annotations

from collections.abc import Callable
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
class Tokenizer(Protocol):
    """Images [B, C, H, W] -> tokens on their grid [B, gh, gw, dim] (channels last, so the
    grid travels with them); `grid(H, W) -> (gh, gw)` says the grid without running it."""

    def __call__(self, img: Tensor) -> Tensor: ...

    def grid(self, h: int, w: int) -> tuple[int, int]: ...


@runtime_checkable
class Pool(Protocol):
    """Tokens after the last block [B, prefix + N, dim] -> one vector [B, dim] per image,
    given the prefix count and the final norm (applied before or after pooling as the pool
    defines). `cls_token`: whether the model it pools gets a [CLS] token."""

    cls_token: bool

    def __call__(self, x: Tensor, prefix: int, norm: Any) -> Tensor: ...


@runtime_checkable
class Arch(Protocol):
    """An image model (`model.arch`): images [B, C, H, W] -> logits [B, num_classes]
    (pooled features where num_classes is 0); `features(img)` the pooled vector the head
    reads [B, F] (kNN, probes); `lacks(need)` why it cannot serve a visualizer's need (one
    of NEEDS), None where it can; `no_weight_decay()` the parameter names weight decay
    skips; `cfg` the ModelConfig it was built from. An arch with global attention maps
    also has `attention_maps(img, details=False)`, as zoo.model.ViT."""

    cfg: Any
    num_classes: int

    def __call__(self, img: Tensor) -> Tensor: ...

    def features(self, img: Tensor) -> Tensor: ...

    def lacks(self, need: str) -> str | None: ...

    def no_weight_decay(self) -> set[str]: ...


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


NEEDS = ("attention_maps", "cls_token", "position_table")  # a visualizer may need (Arch.lacks)


def _shape(value: Any) -> str:
    return str(list(value.shape)) if hasattr(value, "shape") else type(value).__name__


def probe_attention(obj: Any, ctx: dict[str, Any]) -> str | None:
    """Tokens [2, 5, dim] in, the same shape out; with return_attn, maps [2, h, 5, 5]."""
    import inspect

    import torch

    if "dim" not in ctx:  # built by hand without zoo's context: nothing to size a probe with
        return None
    x = torch.randn(2, 5, ctx["dim"])
    out = obj(x)
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        return f"maps tokens {_shape(x)} to {_shape(out)}; {summary(Attention)}"
    params = inspect.signature(obj.forward if hasattr(obj, "forward") else obj).parameters
    if "return_attn" not in params:
        return None
    res = obj(x, return_attn=True)
    maps = res[1] if isinstance(res, tuple) and len(res) == 2 and isinstance(res[1], dict) else {}
    attn = maps.get("attn")
    if not isinstance(attn, torch.Tensor) or attn.dim() != 4 or attn.shape[::2] != (2, 5) \
            or attn.shape[-1] != 5:
        return (f"with return_attn=True returns {type(res).__name__} whose 'attn' is "
                f"{_shape(attn)}; expected (out, {{'attn': [B, heads, N, N]}}) ([2, heads, 5, 5])")
    return None


def probe_posemb(obj: Any, ctx: dict[str, Any]) -> str | None:
    """Tokens of the grid in, the same shape out; patch_embeddings None or [gh*gw, dim]."""
    import torch

    if not {"dim", "grid_size", "num_prefix_tokens"} <= set(ctx):
        return None
    gh, gw = ctx["grid_size"]
    x = torch.zeros(2, ctx["num_prefix_tokens"] + gh * gw, ctx["dim"])
    out = obj(x, (gh, gw))
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        return f"maps tokens {_shape(x)} of grid {(gh, gw)} to {_shape(out)}; {summary(PosEmb)}"
    table = obj.patch_embeddings()
    if table is not None and tuple(table.shape) != (gh * gw, ctx["dim"]):
        return f"patch_embeddings() is {_shape(table)}, not None or [{gh * gw}, {ctx['dim']}]"
    return None


def probe_tokenizer(obj: Any, ctx: dict[str, Any]) -> str | None:
    """Two images at the model's size -> [2, gh, gw, dim] with (gh, gw) = grid(size, size)."""
    import torch

    if not {"in_chans", "dim", "img_size"} <= set(ctx):
        return None
    size = ctx["img_size"]
    x = torch.zeros(2, ctx["in_chans"], size, size)
    out, grid = obj(x), tuple(obj.grid(size, size))
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, *grid, ctx["dim"]):
        return (f"maps images {_shape(x)} to {_shape(out)}, not [2, gh, gw, {ctx['dim']}] "
                f"with its grid({size}, {size}) = {grid}; {summary(Tokenizer)}")
    return None


def probe_pool(obj: Any, ctx: dict[str, Any]) -> str | None:
    """Tokens [2, prefix + 4, dim] -> [2, dim]."""
    import torch

    if "dim" not in ctx:
        return None
    prefix = int(bool(obj.cls_token))
    x = torch.randn(2, prefix + 4, ctx["dim"])
    out = obj(x, prefix, torch.nn.LayerNorm(ctx["dim"]))
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, ctx["dim"]):
        return f"maps tokens {_shape(x)} to {_shape(out)}; {summary(Pool)}"
    return None


def probe_arch(obj: Any, ctx: dict[str, Any]) -> str | None:
    """Two images at the model's size -> logits [2, num_classes] and features [2, F], in
    eval mode without autograd (batch-norm statistics stay as they were)."""
    import torch

    cfg = ctx.get("cfg")
    if cfg is None:
        return None
    x = torch.zeros(2, cfg.in_chans, cfg.img_size, cfg.img_size)
    was = obj.training
    obj.eval()
    try:
        with torch.no_grad():
            out, feats = obj(x), obj.features(x)
    finally:
        obj.train(was)
    n = cfg.num_classes or (feats.shape[-1] if isinstance(feats, torch.Tensor) else -1)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, n):
        return f"maps images {_shape(x)} to {_shape(out)}, not [2, {n}]; {summary(Arch)}"
    if not isinstance(feats, torch.Tensor) or feats.dim() != 2 or feats.shape[0] != 2:
        return f"has features {_shape(feats)} for images {_shape(x)}, not [2, F]"
    return None


def probe_augment(obj: Any, ctx: dict[str, Any]) -> str | None:
    """A batch [4, 3, size, size] in [0, 1] and its soft targets keep their shapes (drawn
    under a forked RNG: building a run never changes its random numbers)."""
    import torch

    if not {"img_size", "num_classes"} <= set(ctx):
        return None
    size, k = ctx["img_size"], max(ctx["num_classes"], 1)
    with torch.random.fork_rng(devices=[]):
        x, y = torch.rand(4, 3, size, size), torch.full((4, k), 1.0 / k)
        out = obj(x, y)
    if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)
            and out[0].shape == x.shape and out[1].shape == y.shape):
        shapes = ", ".join(map(_shape, out)) if isinstance(out, tuple) else _shape(out)
        return f"maps (x {_shape(x)}, y {_shape(y)}) to ({shapes}); {summary(AugmentOp)}"
    return None


def probe_visualizer(obj: Any, ctx: dict[str, Any]) -> str | None:
    """What can be checked without a model: the needs it declares are known."""
    unknown = [n for n in getattr(obj, "needs", ()) if n not in NEEDS]
    return f"needs {unknown}, but a model serves only {list(NEEDS)}" if unknown else None


def probe_dataset(obj: Any, ctx: dict[str, Any]) -> str | None:
    """Class names, and one mean and std per channel."""
    if not (isinstance(obj.classes, list | tuple) and obj.classes):
        return f"has classes {_shape(obj.classes)}; expected a non-empty list of names"
    if not obj.mean or len(obj.mean) != len(obj.std):
        return f"has {len(obj.mean)} mean and {len(obj.std)} std values; one per channel each"
    return None


@dataclass(frozen=True)
class Kind:
    context: tuple[str, ...]  # what zoo passes; a recipe may not set these
    contract: type  # the Protocol a built plugin satisfies
    probe: Callable[[Any, dict[str, Any]], str | None]  # a cheap check of the contract: why not


KINDS: dict[str, Kind] = {
    "attention": Kind(("dim", "heads", "layer", "depth", "qkv_bias", "attn_drop"), Attention,
                      probe_attention),
    "posemb": Kind(("dim", "grid_size", "num_prefix_tokens"), PosEmb, probe_posemb),
    "tokenizer": Kind(("in_chans", "dim", "patch_size", "img_size"), Tokenizer, probe_tokenizer),
    "pool": Kind(("dim",), Pool, probe_pool),
    "arch": Kind(("cfg",), Arch, probe_arch),
    "augment": Kind(("num_classes", "img_size"), AugmentOp, probe_augment),
    "visualizer": Kind((), Visualizer, probe_visualizer),
    "dataset": Kind(("split", "img_size", "root"), Dataset, probe_dataset),
}


def summary(contract: type) -> str:
    """The first line of a contract's doc, for errors."""
    return (contract.__doc__ or "").strip().splitlines()[0]
