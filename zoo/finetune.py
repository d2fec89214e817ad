"""Fine-tuning: a model that starts from trained weights (`model.init`), not from scratch.

The weights come from a zoo run or checkpoint (its EMA weights when it kept them), a
weights file of our ViT, or a timm ViT (`timm:NAME`, converted by zoo.convert.from_timm).
Tensors are taken by name: one of the same shape is copied ("matched"); a position table
of another grid and a patch kernel of another patch size are resized ("resized"); the rest
(the head for other classes, say) keeps its fresh initialisation ("new"), and source tensors
nothing takes are "unused". The counts are said in one line, so that a fine-tune that
quietly started from scratch, or lost half its weights, shows at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from einops import rearrange
from torch import Tensor

from zoo import checkpoint
from zoo.convert import check_timm_name, from_timm, how_to_get, timm_vit
from zoo.errors import ZooError, clip
from zoo.io import read_state_dict
from zoo.layers import resize_grid, resize_table
from zoo.model import ViT
from zoo.runs import pick_checkpoint
from zoo.schema import ModelConfig

TIMM = "timm:"
SHOWN = 4  # names the report line lists per kind before "+N more"


def check_init(cfg: ModelConfig) -> None:
    """A timm name that does not exist or a file that is not there is a one-line error now,
    before a run dir is made or any data is read."""
    if cfg.init is None:
        return
    if cfg.init.startswith(TIMM):
        name = cfg.init.removeprefix(TIMM)
        check_timm_name(name, "model.init")
        if cfg.init_weights is not None and not Path(cfg.init_weights).is_file():
            raise ZooError(f"model.init_weights: {cfg.init_weights}: no such file; "
                           f"{how_to_get(name, 'model.init_weights')}")
    elif not Path(cfg.init).exists():
        raise ZooError(f"model.init: {cfg.init}: no such run dir, checkpoint or weights file")


def init_weights(model: ViT, cfg: ModelConfig, say: Callable[[str], None]) -> dict[str, Any] | None:
    """Load what `cfg.init` names into `model` by the rules above, `say` the report line and
    return the report (None without model.init). Call it before an EMA copy of the model is
    made: the EMA must start from these weights too."""
    if cfg.init is None:
        return None
    check_init(cfg)
    source = source_state(cfg)
    state, report = match(model, source)
    if not report["matched"] and not report["resized"]:
        raise ZooError(f"model.init: {cfg.init}: none of its {len(source)} tensors "
                       f"({clip(', '.join(source), 60)}) fits this model by name and shape; it "
                       "is probably the wrong model")
    model.load_state_dict(state)
    say(f"init from {cfg.init}: {describe(report)}")
    return {"source": cfg.init, **report}


def source_state(cfg: ModelConfig) -> dict[str, Tensor]:
    """The tensors `model.init` names, under our ViT's names."""
    init = str(cfg.init)
    if init.startswith(TIMM):
        return _timm_state(init.removeprefix(TIMM), cfg.init_weights)
    path = Path(init)
    if not path.is_dir():
        return _read(path, "model.init")
    ckpt = pick_checkpoint(path)  # a run dir, its checkpoints/ or one checkpoint folder
    return checkpoint.load_weights(checkpoint.weights_file(ckpt))


def _read(path: str | Path, key: str) -> dict[str, Tensor]:
    """The tensors of a state-dict file (zoo.io.read_state_dict), the error naming `key`."""
    state = read_state_dict(path, f"{key}:")
    return {k: v for k, v in state.items() if isinstance(v, Tensor)}


def _timm_state(name: str, weights: str | None) -> dict[str, Tensor]:
    """timm's NAME as our ViT's tensors (zoo.convert.timm_vit, offline from model.init_weights)."""
    return from_timm(timm_vit(name, weights, "model.init_weights")).state_dict()


def match(model: ViT, source: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """`model`'s state dict with what `source` gives it, and what happened to each tensor:
    names `matched`, `new` and `unused`, and `resized` as {name: how}."""
    state = model.state_dict()
    report: dict[str, Any] = {"matched": [], "resized": {}, "new": [], "unused": []}
    for name, own in state.items():
        src = source.get(name)
        if src is None:
            report["new"].append(name)
        elif src.shape == own.shape:
            state[name] = src
            report["matched"].append(name)
        elif (resized := _resize(model, name, src, own)) is not None:
            state[name], report["resized"][name] = resized
        else:
            report["new"].append(name)
    taken = {*report["matched"], *report["resized"]}
    report["unused"] = [name for name in source if name not in taken]
    return state, report


def _resize(model: ViT, name: str, src: Tensor, own: Tensor) -> tuple[Tensor, str] | None:
    """`src` fitted to `own`'s shape, and how, where one of the two resize rules applies."""
    if name.startswith("posemb."):
        table = _resize_table(src, own, model.num_prefix_tokens, model.grid_size)
        return None if table is None else (table, f"{src.shape[1]}->{own.shape[1]} tokens")
    if name == "patch_embed.weight":
        kernel = _resize_kernel(src, own)
        return None if kernel is None else (kernel, f"{src.shape[-1]}->{own.shape[-1]} px")
    return None


def _resize_table(src: Tensor, own: Tensor, prefix: int, grid: tuple[int, int]) -> Tensor | None:
    """A position table [1, prefix + s*s, C] of another square grid, its patch rows resized
    to `grid` (zoo.model.resize_table, as learned_1d does at another image size), its
    prefix rows kept; None where `src` or `own` is not such a table."""
    if src.ndim != 3 or src.shape[0] != 1 or src.shape[1] <= prefix:
        return None
    side = math.isqrt(src.shape[1] - prefix)
    if side * side != src.shape[1] - prefix or own.shape != (1, prefix + grid[0] * grid[1], src.shape[2]):
        return None
    return resize_table(src, prefix, (side, side), grid)


def _resize_kernel(src: Tensor, own: Tensor) -> Tensor | None:
    """A patch-embedding kernel [C, in, q, q] resized bicubically to own's [C, in, p, p] and
    scaled by (q/p)^2, so that a patch of one colour embeds as before (to first order what
    the pseudo-inverse resize of FlexiViT, Beyer et al. 2023, does); None where the two are
    not square kernels of the same channels."""
    if src.ndim != 4 or src.shape[:2] != own.shape[:2] or src.shape[2] != src.shape[3] \
            or own.shape[2] != own.shape[3]:
        return None
    q, p = src.shape[2], own.shape[2]
    table = resize_grid(rearrange(src, "o i h w -> h w (o i)"), (p, p))
    return rearrange(table, "h w (o i) -> o i h w", o=src.shape[0]) * (q / p) ** 2


def describe(report: dict[str, Any]) -> str:
    """`150 matched, 2 resized (posemb.pos_embed 197->65 tokens, ...), 2 new (head.weight,
    head.bias), 2 unused (...)`."""
    listed = {"resized": [f"{n} {how}" for n, how in report["resized"].items()],
              "new": report["new"], "unused": report["unused"]}
    parts = [f"{len(report['matched'])} matched"]
    for kind, names in listed.items():
        more = f", +{len(names) - SHOWN} more" if len(names) > SHOWN else ""
        parts.append(f"{len(names)} {kind}" + (f" ({', '.join(names[:SHOWN])}{more})" if names else ""))
    return ", ".join(parts)
