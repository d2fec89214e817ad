"""YAML recipes: read them safely, deep-merge `base:` files, apply `--set` overrides,
validate against zoo.schema, and import the plugins they name.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import stat
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from zoo.errors import ZooError, brief, clip, suggest
from zoo.io import packaged_dir, regular_stat
from zoo.registry import check_params, discover, parse_spec, registry
from zoo.schema import Recipe, from_dict, safe_name

MAX_BYTES = 1 << 18  # recipes are ~1 KB; the worst 256 KiB parsed in 1.6 s on a 2-core CI box
MAX_EXPANDED = 4 * MAX_BYTES  # characters after YAML aliases are expanded (~2x the text without)
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 50x faster, bounds nesting
KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")  # what a recipe's top-level keys look like


def read_text(path: Path, limit: int = MAX_BYTES) -> str:
    """A small UTF-8 text file; checked again after opening, so a file swapped for a FIFO
    in between cannot block, and never more than `limit` bytes are read."""
    where = clip(str(path))
    try:
        regular_stat(path)
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ZooError(f"{where}: not a regular file; give the path of a file")
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise ZooError(f"{where}: recipe file not found") from None
    except OSError as e:
        raise ZooError(f"{where}: cannot read recipe: {e.strerror}") from e
    if len(data) > limit:
        raise ZooError(f"{where}: larger than {limit} bytes; a recipe is a small YAML file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ZooError(f"{where}: not UTF-8 text; a recipe is a YAML text file") from e


def _expanded(node: yaml.Node, memo: dict[int, int]) -> int:
    """Characters `node` stands for once every alias is expanded, from the node graph (each
    shared node counted once per use, but walked once); a recursive alias counts as endless."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = MAX_EXPANDED + 1  # seen again before it is done: a cycle
    if isinstance(node, yaml.ScalarNode):
        size = 1 + len(node.value)
    else:
        items = node.value if isinstance(node, yaml.SequenceNode) else [n for kv in node.value for n in kv]
        size = 1 + sum(_expanded(n, memo) for n in items)
    memo[id(node)] = size = min(size, MAX_EXPANDED + 1)
    return size


def parse_yaml(text: str, where: str, lines: bool = True) -> Any:
    """`yaml.safe_load`, but a document whose aliases expand beyond MAX_EXPANDED characters
    (an alias bomb, or a recursive alias) is refused before any Python object is built, and
    every failure is a one-line ZooError at `where` (`:line:column` when `lines`, else
    `(column N)`) that quotes no long run of the text."""
    loader = LOADER(text)
    try:
        node = loader.get_single_node()
        if node is not None and _expanded(node, {}) > MAX_EXPANDED:
            raise ZooError(f"{where}: YAML aliases (*name) expand to more than {MAX_EXPANDED} "
                           "characters or refer to themselves; write the values out instead")
        if node is not None:
            _check_unique_keys(node, where, lines)
        return None if node is None else loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = (where if not mark else f"{where}:{mark.line + 1}:{mark.column + 1}" if lines
              else f"{where} (column {mark.column + 1})")
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        # PyYAML quotes tags and anchors from the text: keep the file's content out of it
        problem = re.sub(r"'(?!<)[^'\s]{4,}'", "'...'", problem)
        if mark and _char_at(text, mark.line, mark.column) == "\t":
            problem = "a tab character; YAML indents with spaces only: replace the tab with spaces"
        raise ZooError(f"{at}: malformed YAML: {problem}") from e
    except (ValueError, TypeError, OverflowError) as e:  # a date 2020-13-01, a 5000-digit int
        raise ZooError(f"{where}: malformed YAML: a value cannot be read "
                       f"({clip(str(e).splitlines()[0], 60)})") from e
    except RecursionError:
        raise ZooError(f"{where}: malformed YAML: nested too deeply") from None
    finally:
        loader.dispose()


def _char_at(text: str, line: int, column: int) -> str:
    rows = text.splitlines()
    return rows[line][column] if line < len(rows) and column < len(rows[line]) else ""


def _check_unique_keys(node: yaml.Node, where: str, lines: bool, path: str = "",
                       seen: set[int] | None = None) -> None:
    """A key given twice in one mapping is an error naming it and both lines (PyYAML would
    keep the last silently); without `lines`, a one-line --set value, no lines to name."""
    seen = set() if seen is None else seen
    if id(node) in seen:  # an alias: its node was checked where it was defined
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_unique_keys(item, where, lines, f"{path}[{i}]", seen)
    elif isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if name is not None and name != "<<":
                dotted = clip(f"{path}.{name}" if path else name)
                if name in first:
                    at = (f"{where}:{key.start_mark.line + 1}: duplicate key {dotted}, first at "
                          f"line {first[name]}" if lines else f"{where}: duplicate key {dotted}")
                    raise ZooError(f"{at}; keep one of them")
                first[name] = key.start_mark.line + 1
                _check_unique_keys(value, where, lines, dotted, seen)
            else:
                _check_unique_keys(value, where, lines, path, seen)


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse one YAML mapping (bounded: see read_text, parse_yaml); malformed YAML names the
    file, line and column. A file that is not a recipe, say `base: /etc/shadow`, is refused
    without quoting any of it."""
    data = parse_yaml(read_text(path), clip(str(path)))
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) and KEY.fullmatch(k) for k in data):
        raise ZooError(f"{clip(str(path))}: not a recipe: a recipe must be a YAML mapping of "
                       "plain keys (name:, model:, data:, train:, ...)")
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
    if "cells" in data or "grid" in data:
        raise ZooError(f"{clip(str(path))}: a sweep file (it has cells: or grid:), not a "
                       f"recipe; run it with `zoo sweep {clip(str(path))}`")
    if "plugins" in data:
        plugins = data["plugins"]
        if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
            raise ZooError(f"{path}: plugins: expected a list of paths, got {brief(plugins)}")
        data["plugins"] = [str((path.parent / p).resolve()) for p in plugins]
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ZooError(f"{path}: base: expected a path to a YAML file, got {brief(base)}")
    base_path = path.parent / base
    try:
        regular_stat(base_path)
    except OSError:
        raise ZooError(f"{path}: base: {clip(str(base_path))} not found "
                       "(paths are relative to the recipe)") from None
    except ZooError as e:
        raise ZooError(f"{path}: base: {e}") from None
    return deep_merge(_load_raw(base_path, seen + (path,)), data)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`model.depth=8` -> (["model", "depth"], 8); the value is read as YAML."""
    if "=" not in item:
        raise ZooError(f"--set {item}: expected KEY=VALUE, e.g. --set train.lr=5e-4")
    key, _, text = item.partition("=")
    keys = key.strip().split(".")
    if not all(keys):
        raise ZooError(f"--set {item}: empty key; use dotted keys like model.depth=8")
    value = parse_yaml(text, f"--set {clip(item)}", lines=False) if text.strip() else None
    return keys, value


def parse_spec_text(text: str, option: str) -> Any:
    """A plugin spec given on the command line (`--data`, `--visualizer`): a name or a YAML
    mapping such as `{rollout: {fusion: max}}`, read as recipes are (parse_yaml), so its
    mistakes are one line naming `option`."""
    return parse_yaml(text, f"{option} {clip(text)}", lines=False)


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


def recipes_dir() -> Path:
    """The recipes that come with zoo: `zoo._recipes` when installed, else this checkout's."""
    return packaged_dir("zoo._recipes", "recipes")


def list_recipes() -> list[tuple[str, Path, str]]:
    """(name, file, its opening comment) of each built-in recipe; sweeps as `sweeps/NAME`."""
    root = recipes_dir()
    out = []
    for path in sorted(root.glob("*.yaml")) + sorted((root / "sweeps").glob("*.yaml")):
        lines = read_text(path).splitlines()
        head = " ".join(line.lstrip("# ").strip() for line in lines[:next(
            (i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))])
        out.append((str(path.relative_to(root).with_suffix("")), path, clip(head, 90)))
    return out


def find_recipe(name: str | Path) -> Path:
    """A recipe file: `name` itself when it is a path (or looks like one), else the built-in
    recipe of that name (`quickstart`, `vit_p4`, `sweeps/posemb` or just `posemb`)."""
    path = Path(name)
    if path.exists() or path.suffix in (".yaml", ".yml") or len(path.parts) > 2:
        return path
    root = recipes_dir()
    for candidate in (root / f"{name}.yaml", root / "sweeps" / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    names = [n for n, _, _ in list_recipes()]
    raise ZooError(f"{clip(str(name))}: no such recipe file, nor a built-in recipe of that "
                   f"name{suggest(str(name), names)}; `zoo list recipes` shows them")


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Load `path` (a file, or a built-in recipe's name: find_recipe) with its bases, apply
    `--set` overrides, and validate."""
    path = find_recipe(path)
    data = _load_raw(path)
    data.setdefault("name", safe_name(path.stem))
    if not overrides:
        return from_dict(data, source=str(path))
    from_dict(copy.deepcopy(data), source=str(path))  # the file's own mistakes are the file's
    for item in overrides:
        check_override_key(item)
    return from_dict(apply_overrides(data, list(overrides)), source="--set")


def check_override_key(item: str) -> None:
    """`--set KEY=VALUE` names a recipe key (down to a plugin spec, whose inside is the
    plugin's to check), so a typo is blamed on the --set that made it."""
    keys, _ = parse_override(item)
    cls: Any = Recipe
    for depth, key in enumerate(keys):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if key not in fields:
            dotted = ".".join(keys[: depth + 1])
            raise ZooError(f"--set {clip(item)}: {clip(dotted)}: unknown key"
                           f"{suggest(key, fields)}; valid keys: {', '.join(fields)}")
        hint = typing.get_type_hints(cls)[key]
        if not dataclasses.is_dataclass(hint):
            return
        cls = hint


def plugin_specs(recipe: Recipe) -> list[tuple[str, Any, str]]:
    """(kind, spec, recipe key path) of every plugin the recipe names."""
    return [
        ("arch", recipe.model.arch, "model.arch"),
        ("tokenizer", recipe.model.tokenizer, "model.tokenizer"),
        ("pool", recipe.model.pool, "model.pool"),
        ("attention", recipe.model.attention, "model.attention"),
        ("posemb", recipe.model.posemb, "model.posemb"),
        ("dataset", recipe.data.dataset, "data.dataset"),
        *(("augment", s, f"data.augment[{i}]") for i, s in enumerate(recipe.data.augment)),
        *(("visualizer", s, f"log.visualizers[{i}]") for i, s in enumerate(recipe.log.visualizers)),
    ]


def resolve(recipe_path: str | Path, overrides: Sequence[str] = (),
            plugin_paths: Sequence[str | Path] = (), trust: bool = True) -> Recipe:
    """Load a recipe, import its plugins (its own files only with `trust`), check its specs:
    the recipe `zoo show`, `zoo run` and every sweep cell start from."""
    recipe = load_recipe(recipe_path, list(overrides))
    load_plugins(recipe, str(recipe_path), plugin_paths, trust)
    return recipe


def load_plugins(recipe: Recipe, source: str, extra: Sequence[str | Path] = (),
                 trust: bool = True) -> None:
    """Import the plugins a recipe needs (built-in, entry points, ZOO_PLUGIN_PATH, `extra`),
    then check every plugin spec it holds.

    Plugin files are code. The files a recipe's `plugins:` names are imported only with
    `trust`: a recipe the user runs is trusted; the recipe.yaml of a run directory, which
    someone may have shared, is not (zoo eval, zoo viz, zoo run --resume), unless the user
    says so (--trust-plugins) or gives the files again (--plugins).
    """
    discover([*(recipe.plugins if trust else []), *extra])
    try:
        check_plugins(recipe, source)
    except ZooError as e:
        if recipe.plugins and not trust:
            files = clip(", ".join(map(str, recipe.plugins)))
            raise ZooError(f"{e}; {source} names plugin files ({files}), which are code and "
                           "are not imported from a run directory: add --trust-plugins to "
                           "import them, or --plugins PATH to load your own copy") from e
        raise


def check_plugins(recipe: Recipe, source: str) -> None:
    """Every plugin the recipe names exists and gets only parameters it accepts."""
    for kind, spec, path in plugin_specs(recipe):
        try:
            name, params = parse_spec(spec, path)
            check_params(registry(kind).get(name, path), params, path)
        except ZooError as e:
            raise ZooError(f"{source}: {e}") from e


def yaml_value(value: Any) -> str:
    """One-line YAML that `--set key=...` reads back as `value`."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
    return text.removesuffix("...").strip()


def section_keys(recipe: dict[str, Any]) -> dict[str, Any]:
    """`{model: {depth: 9}}` -> `{model.depth: 9}`; plugin specs below stay whole values."""
    out: dict[str, Any] = {}
    for key, value in recipe.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out
