"""A sweep file and its cells: one base recipe, many cells, each cell a real `zoo run`.

A sweep file (YAML; paths relative to it):

    name: patch_size                  # optional, default the file's stem
    base: ../vit_p4.yaml              # the recipe every cell starts from
    set: {train.epochs: 100}          # optional: overrides for every cell
    cells:                            # optional: alternatives, {name: overrides} or a list
      vit: {}
      diffvit: {model.attention: diff, model.heads: 6}
      swin: {recipe: ../swin_lee.yaml}  # a cell may start from a recipe of its own
    grid:                             # optional: cartesian product of dotted keys
      model.patch_size: [2, 4, 8]       # a list, or {label: value} to name the values

The cells are `cells` x `grid` (at least one of them). A cell's overrides apply in the order
`set`, its `cells` entry, its `grid` values, then `zoo sweep --set` (last wins, so
`--set train.epochs=1` shortens every cell). Each cell runs into `OUT/<cell>/`, named by its
`cells` name and the keys that vary, e.g. `diffvit-patch_size=2`; OUT/sweep.json records
the cells in order, so that a report lists them as the sweep file does.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.errors import ZooError, suggest
from zoo.io import read_json, write_json
from zoo.recipe import find_recipe, read_yaml, yaml_value
from zoo.schema import UNSAFE

SWEEP_KEYS = ("name", "base", "set", "cells", "grid")
MAX_NAME = 80
ORDER_FILE = "sweep.json"  # in OUT: the sweep that made the cells, and their order


@dataclass
class Cell:
    name: str
    overrides: dict[str, Any]  # dotted recipe key -> value, from `cells` then `grid`
    recipe: Path | None = None  # its own recipe (`recipe:` in its cells entry), else the base

    def start(self, sweep: Sweep) -> Path:
        """The recipe file this cell's run starts from."""
        return self.recipe or sweep.base


@dataclass
class Sweep:
    name: str
    path: Path
    base: Path
    fixed: dict[str, Any]  # `set:`
    cells: list[Cell]


# ---------------------------------------------------------------------------------------
# The sweep file


def load_sweep(path: str | Path) -> Sweep:
    """Parse and expand a sweep file (or a built-in sweep's name); every mistake is a
    one-line ZooError naming the file."""
    path = find_recipe(path)
    data = read_yaml(path)
    for key in data:
        if key not in SWEEP_KEYS:
            raise ZooError(
                f"{path}: unknown key '{key}'{suggest(key, SWEEP_KEYS)}; "
                f"a sweep has {', '.join(SWEEP_KEYS)}"
            )
    name = str(data.get("name", path.stem))
    if not name or UNSAFE.search(name):
        raise ZooError(f"{path}: name: '{name}' must be letters, digits and _.=+,- only")
    base = data.get("base")
    if not isinstance(base, str):
        raise ZooError(f"{path}: base: expected the path of a recipe, e.g. base: ../vit_p4.yaml")
    base_path = Path(os.path.normpath(path.parent / base))
    if not base_path.is_file():
        raise ZooError(f"{path}: base: {base_path} not found (paths are relative to the sweep file)")
    if "cells" not in data and "grid" not in data:
        raise ZooError(f"{path}: nothing to sweep; add grid: {{KEY: [values]}} or cells: [...]")
    fixed = _overrides(data.get("set") or {}, f"{path}: set")
    named = _cells(data["cells"], path) if "cells" in data else [(None, {})]
    recipes = [_own_recipe(c, path) for _, c in named]  # takes `recipe:` out of the overrides
    grid = _grid(data["grid"], path) if "grid" in data else [({}, {})]
    pairs = list(itertools.product(zip(named, recipes, strict=True), grid))
    combos = [(n, c, g, labels) for ((n, c), _), (g, labels) in pairs]
    names = cell_names(combos, path)
    cells = [Cell(name, {**c, **g}, own) for name, (((_, c), own), (g, _)) in
             zip(names, pairs, strict=True)]
    return Sweep(name, path, base_path, fixed, cells)


def _overrides(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ZooError(f"{where}: expected a mapping of dotted recipe keys, e.g. {{model.depth: 6}}")
    for key in value:
        if not isinstance(key, str) or not all(key.split(".")):
            raise ZooError(f"{where}: '{key}' is not a dotted recipe key like model.depth")
    return dict(value)


def _cells(value: Any, path: Path) -> list[tuple[str | None, dict[str, Any]]]:
    """`cells:` as a list (names made from the values) or a mapping {name: overrides}."""
    if isinstance(value, dict):
        items: list[tuple[str | None, Any]] = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, list):
        items = [(None, v) for v in value]
    else:
        raise ZooError(f"{path}: cells: expected a list of overrides or a mapping name -> overrides")
    if not items:
        raise ZooError(f"{path}: cells: is empty; list at least one cell")
    for name, _ in items:
        if name is not None and (not name or UNSAFE.search(name)):
            raise ZooError(f"{path}: cells: name '{name}' must be letters, digits and _.=+,- only")
    return [(n, _overrides(v or {}, f"{path}: cells: {n or i}")) for i, (n, v) in enumerate(items)]


def _own_recipe(overrides: dict[str, Any], path: Path) -> Path | None:
    """A cell's `recipe:` (relative to the sweep file), removed from its overrides."""
    if "recipe" not in overrides:
        return None
    own = overrides.pop("recipe")
    if not isinstance(own, str) or not (recipe := find_recipe(path.parent / own)).is_file():
        raise ZooError(f"{path}: cells: recipe: {own!r} is not a recipe file (paths are "
                       "relative to the sweep file)")
    return Path(os.path.normpath(recipe))


def _grid(value: Any, path: Path) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """Every combination as (overrides, labels); `KEY: {label: value}` names its values."""
    grid = _overrides(value, f"{path}: grid")
    if not grid:
        raise ZooError(f"{path}: grid: is empty; give KEY: [values], e.g. model.patch_size: [2, 4, 8]")
    axes = []
    for key, values in grid.items():
        if isinstance(values, dict) and values:
            for label in values:
                if UNSAFE.search(str(label)):
                    raise ZooError(f"{path}: grid: {key}: label '{label}' must be letters, digits and _.=+,- only")
            axes.append([(key, v, str(label)) for label, v in values.items()])
        elif isinstance(values, list) and values:
            axes.append([(key, v, None) for v in values])
        else:
            raise ZooError(
                f"{path}: grid: {key}: expected a non-empty list of values (or label: value "
                f"mapping), got {values!r}"
            )
    return [
        ({k: v for k, v, _ in combo}, {k: label for k, _, label in combo if label is not None})
        for combo in itertools.product(*axes)
    ]


def cell_overrides(sweep: Sweep, cell: Cell, extra: tuple[str, ...] = ()) -> list[str]:
    """`set`, the cell's own overrides, then the command line's (last wins)."""
    merged = {**sweep.fixed, **cell.overrides}
    return [f"{k}={yaml_value(v)}" for k, v in merged.items()] + list(extra)


# ---------------------------------------------------------------------------------------
# Cell names, and their order on disk


def short_value(value: Any) -> str:
    """A compact form for names: lists join with +, plugin specs as name,param=value."""
    if isinstance(value, list):
        return "+".join(short_value(v) for v in value) or "none"
    if isinstance(value, dict):
        parts = []
        for k, v in value.items():
            if v is None or v == {}:
                parts.append(str(k))
            elif isinstance(v, dict):
                parts.append(",".join([str(k), *(f"{p}={short_value(x)}" for p, x in v.items())]))
            else:
                parts.append(f"{k}={short_value(v)}")
        return "+".join(parts)
    if isinstance(value, str):
        return value
    return yaml_value(value)


def _digest(overrides: dict[str, Any]) -> str:
    return hashlib.sha1(yaml_value(overrides).encode()).hexdigest()[:6]


Combo = tuple[str | None, dict[str, Any], dict[str, Any], dict[str, str]]  # name, cell, grid, labels


def cell_names(combos: list[Combo], path: Path) -> list[str]:
    """Readable, file-safe, unique names: the `cells` name, then key=value for varying keys.

    A key varies when its value is not the same in every cell; keys from named cells are
    left to the name, and grid values given as `label: value` show their label. Long names
    are cut and collisions get a short hash of the overrides.
    """
    varied_from = [g if n is not None else {**c, **g} for n, c, g, _ in combos]
    keys = list(dict.fromkeys(k for o in varied_from for k in o))
    if len(combos) > 1:
        keys = [k for k in keys if len({yaml_value(o.get(k, "<unset>")) for o in varied_from}) > 1]
    leaves = [k.split(".")[-1] for k in keys]
    short = {k: leaf if leaves.count(leaf) == 1 else k for k, leaf in zip(keys, leaves, strict=True)}
    names = []
    for (name, c, g, labels), o in zip(combos, varied_from, strict=True):
        parts = ([name] if name is not None else []) + [
            f"{short[k]}={labels.get(k) or short_value(o[k])}" for k in keys if k in o
        ]
        text = UNSAFE.sub("_", "-".join(parts)) or "base"
        if len(text) > MAX_NAME:
            text = f"{text[:MAX_NAME - 7]}-{_digest({**c, **g})}"
        names.append(text)
    unique: list[str] = []
    for name, (_, c, g, _) in zip(names, combos, strict=True):
        overrides = {**c, **g}
        if names.count(name) > 1:
            name = f"{name}-{_digest(overrides)}"
        if name in unique:
            raise ZooError(f"{path}: two cells have the same overrides: {yaml_value(overrides)}")
        unique.append(name)
    return unique


def record_order(sweep: Sweep, out: Path) -> None:
    """Write OUT/sweep.json: a folder listing cannot tell the sweep file's order."""
    write_json(out / ORDER_FILE, {"sweep": sweep.name, "file": str(sweep.path),
                                  "cells": [c.name for c in sweep.cells]})


def cell_order(folder: Path) -> list[str]:
    """The cell names a sweep recorded in `folder`, in its order; [] when none did (read
    bounded, as anything in a run folder may be hostile)."""
    cells = read_json(folder / ORDER_FILE).get("cells")
    return [c for c in cells if isinstance(c, str)] if isinstance(cells, list) else []
