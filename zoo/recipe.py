"""YAML recipes: load, deep-merge `base:` files, apply `--set` overrides, validate.

A recipe is validated against the dataclasses below, so every key a run reads is typed and
documented here, and a typo fails with its file, key path and the closest valid key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zoo.errors import ZooError, suggest

Spec = Any  # a plugin spec: `name` or `{name: {param: value}}`


@dataclass
class ModelConfig:
    """The ViT: sizes, regularisation, and which attention / positional embedding."""

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
    qkv_bias: bool = True
    pool: str = "cls"  # cls | mean
    attention: Spec = "mhsa"
    posemb: Spec = "learned_1d"


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


@dataclass
class TrainConfig:
    """Optimisation, precision, schedule, evaluation and reproducibility."""

    epochs: int = 10
    max_steps: int | None = None  # stop early after this many optimizer steps (smoke tests)
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_epochs: float = 5.0
    min_lr: float = 1e-5
    label_smoothing: float = 0.1
    grad_clip: float | None = 1.0
    amp: str = "none"  # none | bf16 | fp16
    compile: bool | str = False  # torch.compile the model: true, false, or cuda (only on CUDA)
    cuda_graph: bool = False  # CUDA only: replay the whole step as one CUDA graph (zoo/step.py)
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
    progress: bool = True
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


# ---------------------------------------------------------------------------------------
# Loading


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse one YAML mapping; malformed YAML names the file, line and column."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ZooError(f"{path}: recipe file not found") from None
    except OSError as e:
        raise ZooError(f"{path}: cannot read recipe: {e.strerror}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ZooError(f"{where}: malformed YAML: {problem}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ZooError(f"{path}: a recipe must be a YAML mapping, got {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; everything else (lists included) is replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _load_raw(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ZooError(f"{path}: base recipes form a cycle: {' -> '.join(map(str, seen + (path,)))}")
    data = read_yaml(path)
    if "plugins" in data:
        plugins = data["plugins"]
        if not isinstance(plugins, list):
            raise ZooError(f"{path}: plugins: expected a list of paths, got {plugins!r}")
        data["plugins"] = [str((path.parent / str(p)).resolve()) for p in plugins]
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ZooError(f"{path}: base: expected a path to a YAML file, got {base!r}")
    base_path = path.parent / base
    if not base_path.exists():
        raise ZooError(f"{path}: base: {base_path} not found (paths are relative to the recipe)")
    return deep_merge(_load_raw(base_path, seen + (path,)), data)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`model.depth=8` -> (["model", "depth"], 8); the value is read as YAML."""
    if "=" not in item:
        raise ZooError(f"--set {item}: expected KEY=VALUE, e.g. --set train.lr=5e-4")
    key, _, text = item.partition("=")
    keys = key.strip().split(".")
    if not all(keys):
        raise ZooError(f"--set {item}: empty key; use dotted keys like model.depth=8")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as e:
        raise ZooError(f"--set {item}: value is not valid YAML") from e
    return keys, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        keys, value = parse_override(item)
        node = data
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        node[keys[-1]] = value
    return data


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Load `path` (with its bases), apply `--set` overrides, and validate."""
    path = Path(path)
    data = _load_raw(path)
    data.setdefault("name", path.stem)
    data = apply_overrides(data, list(overrides or []))
    return from_dict(data, source=str(path))


CHOICES: dict[str, tuple[str, ...]] = {
    "model.pool": ("cls", "mean"),
    "train.optimizer": ("adamw", "sgd"),
    "train.amp": ("none", "bf16", "fp16"),
}


def from_dict(data: dict[str, Any], source: str = "recipe") -> Recipe:
    """Validate a plain mapping against the schema; errors name `source` and the key path."""
    recipe = _build(Recipe, data, source, "")
    for key, choices in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(recipe, section), name)
        if value not in choices:
            raise ZooError(
                f"{source}: {key}: '{value}' is not one of {', '.join(choices)}"
                f"{suggest(value, choices)}"
            )
    if isinstance(recipe.train.compile, str) and recipe.train.compile != "cuda":
        raise ZooError(f"{source}: train.compile: '{recipe.train.compile}' is not one of "
                       f"true, false, cuda{suggest(recipe.train.compile, ['cuda'])}")
    m = recipe.model
    if m.img_size % m.patch_size:
        raise ZooError(f"{source}: model.patch_size: {m.patch_size} does not divide img_size {m.img_size}")
    if m.dim % m.heads:
        raise ZooError(f"{source}: model.heads: {m.heads} does not divide dim {m.dim}")
    return recipe


# ---------------------------------------------------------------------------------------
# Validation


def _build(cls: type, data: Any, source: str, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ZooError(f"{source}: {prefix.rstrip('.') or 'recipe'}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ZooError(
                f"{source}: {prefix}{key}: unknown key{suggest(key, fields)}; "
                f"valid keys: {', '.join(fields)}"
            )
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value if value is not None else {}, source, f"{prefix}{key}.")
        else:
            kwargs[key] = _check(hint, value, source, f"{prefix}{key}")
    return cls(**kwargs)


def _check(hint: Any, value: Any, source: str, key: str) -> Any:
    """Return `value` (ints widened to float where a float is wanted) or raise a typed error."""
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check(arg, value, source, key)
            except ZooError:
                continue
        raise ZooError(f"{source}: {key}: expected {_name(hint)}, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ZooError(f"{source}: {key}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_check(item, v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads `1e-3` as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint in (int, float, str) and isinstance(value, bool):
        raise ZooError(f"{source}: {key}: expected {_name(hint)}, got {value!r}")
    if isinstance(hint, type) and not isinstance(value, hint):
        raise ZooError(f"{source}: {key}: expected {_name(hint)}, got {value!r}")
    return value


def _name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_name(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is list:
        return f"a list of {_name(typing.get_args(hint)[0])}"
    return getattr(hint, "__name__", str(hint))


def plugin_specs(recipe: Recipe) -> list[tuple[str, Any, str]]:
    """(kind, spec, recipe key path) of every plugin the recipe names."""
    return [
        ("attention", recipe.model.attention, "model.attention"),
        ("posemb", recipe.model.posemb, "model.posemb"),
        ("dataset", recipe.data.dataset, "data.dataset"),
        *(("augment", s, f"data.augment[{i}]") for i, s in enumerate(recipe.data.augment)),
        *(("visualizer", s, f"log.visualizers[{i}]") for i, s in enumerate(recipe.log.visualizers)),
    ]


def check_plugins(recipe: Recipe, source: str) -> None:
    """Every plugin the recipe names exists and gets only parameters it accepts."""
    from zoo.registry import check_params, parse_spec, registry

    for kind, spec, path in plugin_specs(recipe):
        try:
            name, params = parse_spec(spec, path)
            check_params(registry(kind).get(name, path), params, path)
        except ZooError as e:
            raise ZooError(f"{source}: {e}") from e
