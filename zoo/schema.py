"""The recipe schema: typed dataclasses for every key a run reads, their ranges, and the
validation that turns a plain mapping into a `Recipe`, so a typo or a bad value fails with
its file, key path and the closest valid key."""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from zoo.device import check_device_name
from zoo.errors import ZooError, brief, clip, suggest
from zoo.typecheck import check_type

Spec = Any  # a plugin spec: `name` or `{name: {param: value}}`


@dataclass
class ModelConfig:
    """The model: which arch (our ViT by default), its sizes, regularisation, and the
    plugins inside it (tokenizer, attention, positional embedding, pool)."""

    arch: Spec = "vit"  # vit (zoo/model.py) or a plugin of kind arch (plugins/arch): swin, ...
    img_size: int = 32
    patch_size: int = 4
    in_chans: int = 3
    num_classes: int = 10
    dim: int = 192
    depth: int = 9
    heads: int = 12
    mlp_ratio: float = 2.0
    mlp_dim: int | None = None  # overrides mlp_ratio when set
    dropout: float = 0.0
    attn_dropout: float = 0.0
    drop_path: float = 0.0
    drop_path_schedule: str = "linear"  # linear: 0 -> drop_path over the blocks (DeiT); uniform
    qkv_bias: bool = True
    norm_eps: float = 1e-6  # LayerNorm eps (timm's ViTs; Lee et al. and PyTorch's default: 1e-5)
    weight_init: str = "trunc_normal"  # trunc_normal (std 0.02, timm) or xavier (Lee et al.)
    tokenizer: Spec = "patch"  # image -> tokens: patch, spt, conv (plugins/tokenizer)
    pool: Spec = "cls"  # tokens -> one vector: cls, mean, seqpool (plugins/pool)
    attention: Spec = "mhsa"
    posemb: Spec = "learned_1d"
    # weights to start from, matched by name (zoo/finetune.py): a run dir or checkpoint, a
    # weights file, or timm:NAME (pretrained, downloaded by timm)
    init: str | None = None
    init_weights: str | None = None  # with init timm:NAME and no network: its timm state dict file


@dataclass
class DataConfig:
    """Which dataset, where it lives, and the per-batch augmentations in order."""

    dataset: Spec = "shapes"
    root: str = "data"
    batch_size: int = 128
    eval_batch_size: int = 500
    num_workers: int = 2
    on_device: bool = True  # keep in-memory datasets on the training device as uint8
    augment: list[Spec] = field(default_factory=list)
    repeats: int = 1  # repeated augmentation: each training image this often per epoch
    repeat_mode: str = "copies"  # copies side by side in a batch (DeiT), or passes (Lee et al.)
    eval_splits: list[str] = field(default_factory=lambda: ["val"])  # evaluated, in order


@dataclass
class TrainConfig:
    """Optimisation, precision, schedule, evaluation and reproducibility."""

    epochs: int = 10
    max_steps: int | None = None  # stop early after this many optimizer steps (smoke tests)
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.05
    decay: str = "weights"  # what weight_decay applies to: weights (matrices) or all parameters
    momentum: float = 0.9
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_epochs: float = 5.0
    warmup_lr: float | None = None  # null: warm up from lr/warmup steps; else from this rate
    min_lr: float = 1e-5
    label_smoothing: float = 0.1
    grad_clip: float | None = 1.0
    amp: str = "none"  # none | bf16 | fp16
    compile: bool | str = False  # torch.compile the model: true, false, or cuda (only on CUDA)
    cuda_graph: bool = False  # CUDA only: replay the whole step as one CUDA graph (zoo/train/step.py)
    ema: float | None = None  # EMA decay, e.g. 0.999; evaluation then uses the EMA weights
    eval_every: int = 1
    checkpoint_every: int = 1
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N


@dataclass
class LogConfig:
    """Where the run goes and what it shows in TensorBoard."""

    dir: str = "runs"
    tensorboard: bool = True
    progress: bool = True  # the tqdm bar, where stderr is a terminal
    every_steps: int = 50  # TensorBoard: train/*_step scalars every N optimizer steps; 0: off
    visualizers: list[Spec] = field(default_factory=list)
    viz_images: int = 8


@dataclass
class Recipe:
    """One run, fully resolved: everything needed to repeat it."""

    name: str = "run"
    plugins: list[str] = field(default_factory=list)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


NAME_CHARS = "A-Za-z0-9_.=+,-"  # of run and sweep-cell names: portable, no shell quoting
NAME = re.compile(f"[{NAME_CHARS}]+")
UNSAFE = re.compile(f"[^{NAME_CHARS}]")


def safe_name(stem: str) -> str:
    """A run name from a file name: characters a folder name should not hold become `_`."""
    name = UNSAFE.sub("_", stem)
    return "run" if name in ("", ".", "..") else name


def check_name(name: str, source: str) -> None:
    """The run folder is `<log.dir>/<name>/...`: a name with `/`, `..` or an absolute path
    would put it (and everything the run writes) somewhere else."""
    if not NAME.fullmatch(name) or name in (".", ".."):
        raise ZooError(f"{source}: name: {brief(name)} must be one folder name: letters, digits "
                       "and _.-+=, only (not . or ..), e.g. name: vit_p4")


def _nonneg(v: float) -> bool:
    return math.isfinite(v) and v >= 0


def _positive(v: float) -> bool:
    return math.isfinite(v) and v > 0


def _fraction(v: float) -> bool:
    return 0 <= v < 1


# (key, test, what it must be): every number a recipe holds, tested before anything runs.
# NaN fails every test (all comparisons with it are false).
RANGES: list[tuple[str, Callable[[Any], bool], str]] = [
    *((f"model.{k}", lambda v: v >= 1, "must be 1 or more")
      for k in ("img_size", "patch_size", "in_chans", "dim", "depth", "heads")),
    ("model.num_classes", lambda v: v >= 0, "must be 0 (features only) or more"),
    ("model.mlp_ratio", _positive, "must be a number > 0, e.g. 4.0"),
    ("model.mlp_dim", lambda v: v is None or v >= 1, "must be null or 1 or more"),
    ("model.norm_eps", _positive, "must be a number > 0, e.g. 1e-6"),
    *((f"model.{k}", _fraction, "must be in [0, 1), e.g. 0.1")
      for k in ("dropout", "attn_dropout", "drop_path")),
    ("data.batch_size", lambda v: v >= 1, "must be 1 or more"),
    ("data.eval_batch_size", lambda v: v >= 1, "must be 1 or more"),
    ("data.num_workers", lambda v: v >= 0, "must be 0 (load in the main process) or more"),
    ("train.epochs", lambda v: v >= 1, "must be 1 or more"),
    ("train.max_steps", lambda v: v is None or v >= 1, "must be null (no limit) or 1 or more"),
    ("train.lr", _positive, "must be a number > 0, e.g. 1e-3"),
    ("train.weight_decay", _nonneg, "must be a number >= 0, e.g. 0.05"),
    ("train.momentum", _fraction, "must be in [0, 1), e.g. 0.9"),
    ("train.betas", lambda v: len(v) == 2 and all(map(_fraction, v)),
     "must be two numbers in [0, 1), e.g. [0.9, 0.999]"),
    ("train.warmup_epochs", _nonneg, "must be a number >= 0 (0: no warmup)"),
    ("train.min_lr", _nonneg, "must be a number >= 0"),
    ("train.warmup_lr", lambda v: v is None or _nonneg(v), "must be null or a number >= 0"),
    ("train.label_smoothing", _fraction, "must be in [0, 1), e.g. 0.1"),
    ("train.grad_clip", lambda v: v is None or _positive(v),
     "must be null (no clipping) or a number > 0, e.g. 1.0"),
    ("train.ema", lambda v: v is None or 0 < v < 1, "must be null (no EMA) or in (0, 1), e.g. 0.999"),
    ("train.eval_every", lambda v: v >= 1, "must be 1 or more (epochs between evaluations)"),
    ("train.checkpoint_every", lambda v: v >= 1, "must be 1 or more (epochs between saves)"),
    ("train.seed", lambda v: 0 <= v < 2**32, "must be in [0, 2**32)"),
    ("log.every_steps", lambda v: v >= 0,
     "must be 0 (no per-step TensorBoard scalars) or more (optimizer steps between them)"),
    ("log.viz_images", lambda v: v >= 1, "must be 1 or more"),
]


CHOICES: dict[str, tuple[str, ...]] = {
    "model.drop_path_schedule": ("linear", "uniform"),
    "model.weight_init": ("trunc_normal", "xavier"),
    "data.repeat_mode": ("copies", "passes"),
    "train.optimizer": ("adamw", "sgd"),
    "train.decay": ("weights", "all"),
    "train.amp": ("none", "bf16", "fp16"),
}


def from_dict(data: dict[str, Any], source: str = "recipe") -> Recipe:
    """Validate a plain mapping against the schema; errors name `source` and the key path."""
    recipe = _build(Recipe, data, source, "")
    check_name(recipe.name, source)
    for key, test, must in RANGES:
        section, name = key.split(".")
        value = getattr(getattr(recipe, section), name)
        if not test(value):
            raise ZooError(f"{source}: {key}: {brief(value)} {must}")
    for key, choices in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(recipe, section), name)
        if value not in choices:
            raise ZooError(
                f"{source}: {key}: '{clip(value)}' is not one of {', '.join(choices)}"
                f"{suggest(value, choices)}"
            )
    if isinstance(recipe.train.compile, str) and recipe.train.compile != "cuda":
        raise ZooError(f"{source}: train.compile: '{clip(recipe.train.compile)}' is not one of "
                       f"true, false, cuda{suggest(recipe.train.compile, ['cuda'])}")
    check_device_name(recipe.train.device, f"{source}: train.device")
    splits = recipe.data.eval_splits
    if not splits or len(set(splits)) < len(splits) or not set(splits) <= {"val", "test"}:
        raise ZooError(f"{source}: data.eval_splits: {brief(splits)} must name val, test or both, "
                       "once each (e.g. [test] to report the test set as papers do)")
    if recipe.data.repeats < 1:
        raise ZooError(f"{source}: data.repeats: {recipe.data.repeats} must be 1 or more "
                       "(3 is repeated augmentation as DeiT and Lee et al. use it)")
    m = recipe.model
    if m.dim % m.heads:
        raise ZooError(f"{source}: model.heads: {m.heads} does not divide dim {m.dim}")
    if m.init is not None and m.init.removeprefix("timm:").strip() == "":
        raise ZooError(f"{source}: model.init: {brief(m.init)} names no weights; give a run dir, "
                       "a checkpoint, a weights file or timm:NAME")
    if m.init_weights is not None and not (m.init or "").startswith("timm:"):
        raise ZooError(f"{source}: model.init_weights: only with model.init: timm:NAME (the timm "
                       "model's state dict, offline); a run or weights file brings its own")
    return recipe


# ---------------------------------------------------------------------------------------
# Validation


def _build(cls: type, data: Any, source: str, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ZooError(f"{source}: {prefix.rstrip('.') or 'recipe'}: expected a mapping, got {brief(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ZooError(
                f"{source}: {prefix}{clip(str(key))}: unknown key{suggest(key, fields)}; "
                f"valid keys: {', '.join(fields)}"
            )
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value if value is not None else {}, source, f"{prefix}{key}.")
        else:
            kwargs[key] = check_type(hint, value, f"{source}: {prefix}{key}")
    return cls(**kwargs)
