"""`zoo sweep`: one base recipe, many cells, each cell a real `zoo run` in its own folder.

A sweep file (YAML; paths relative to it):

    name: patch_size                  # optional, default the file's stem
    base: ../vit_p4.yaml              # the recipe every cell starts from
    set: {train.epochs: 100}          # optional: overrides for every cell
    cells:                            # optional: alternatives, {name: overrides} or a list
      vit: {}
      diffvit: {model.attention: diff, model.heads: 6}
    grid:                             # optional: cartesian product of dotted keys
      model.patch_size: [2, 4, 8]       # a list, or {label: value} to name the values

The cells are `cells` x `grid` (at least one of them). A cell's overrides apply in the order
`set`, its `cells` entry, its `grid` values, then `zoo sweep --set` (last wins, so
`--set train.epochs=1` shortens every cell). Each cell runs into `OUT/<cell>/`, named by its
`cells` name and the keys that vary, e.g. `diffvit-patch_size=2`. A cell that finished is
skipped, one with a checkpoint is resumed, and one that stopped before its first checkpoint
is removed and started over, so running a sweep again completes only what is missing.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from zoo.checkpoint import newest
from zoo.errors import ZooError, suggest
from zoo.recipe import load_recipe, read_yaml, resolve, section_keys, yaml_value
from zoo.runs import RECIPE_FILE, SUMMARY_FILE

SWEEP_KEYS = ("name", "base", "set", "cells", "grid")
SAFE = re.compile(r"[^A-Za-z0-9_.=+,-]")  # no quoting in a shell, portable in a file name
MAX_NAME = 80

Runner = Callable[[list[str]], int]
INTERRUPTED = {128 + signal.SIGINT, 128 + signal.SIGTERM, -signal.SIGINT, -signal.SIGTERM}  # exit codes


@dataclass
class Cell:
    name: str
    overrides: dict[str, Any]  # dotted recipe key -> value, from `cells` then `grid`


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
    """Parse and expand a sweep file; every mistake is a one-line ZooError naming the file."""
    path = Path(path)
    data = read_yaml(path)
    for key in data:
        if key not in SWEEP_KEYS:
            raise ZooError(
                f"{path}: unknown key '{key}'{suggest(key, SWEEP_KEYS)}; "
                f"a sweep has {', '.join(SWEEP_KEYS)}"
            )
    name = str(data.get("name", path.stem))
    if not name or SAFE.search(name):
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
    grid = _grid(data["grid"], path) if "grid" in data else [({}, {})]
    combos = [(n, c, g, labels) for (n, c), (g, labels) in itertools.product(named, grid)]
    names = cell_names(combos, path)
    cells = [Cell(n, {**c, **g}) for n, (_, c, g, _) in zip(names, combos, strict=True)]
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
        if name is not None and (not name or SAFE.search(name)):
            raise ZooError(f"{path}: cells: name '{name}' must be letters, digits and _.=+,- only")
    return [(n, _overrides(v or {}, f"{path}: cells: {n or i}")) for i, (n, v) in enumerate(items)]


def _grid(value: Any, path: Path) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """Every combination as (overrides, labels); `KEY: {label: value}` names its values."""
    grid = _overrides(value, f"{path}: grid")
    if not grid:
        raise ZooError(f"{path}: grid: is empty; give KEY: [values], e.g. model.patch_size: [2, 4, 8]")
    axes = []
    for key, values in grid.items():
        if isinstance(values, dict) and values:
            for label in values:
                if SAFE.search(str(label)):
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


# ---------------------------------------------------------------------------------------
# Cell names


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
        text = SAFE.sub("_", "-".join(parts)) or "base"
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


# ---------------------------------------------------------------------------------------
# Planning: what each cell needs, and the command that does it


def cell_overrides(sweep: Sweep, cell: Cell, extra: tuple[str, ...] = ()) -> list[str]:
    """`set`, the cell's own overrides, then the command line's (last wins)."""
    merged = {**sweep.fixed, **cell.overrides}
    return [f"{k}={yaml_value(v)}" for k, v in merged.items()] + list(extra)


def cell_state(run_dir: Path) -> str:
    """finished | resume (has a checkpoint) | restart (started, no checkpoint) | new."""
    try:
        if json.loads((run_dir / SUMMARY_FILE).read_text()).get("status") == "finished":
            return "finished"
    except (OSError, ValueError, AttributeError):
        pass
    if newest(run_dir / "checkpoints") is not None:  # never "restart" (delete) over a checkpoint
        return "resume"
    if (run_dir / RECIPE_FILE).exists():
        return "restart"
    return "new"


def _shell_path(path: Path) -> str:
    """`path` relative to the working directory when inside it, so commands stay short."""
    path = Path(os.path.abspath(path))
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def command(sweep: Sweep, cell: Cell, run_dir: Path, state: str, extra: tuple[str, ...]) -> list[str]:
    """The exact argv a cell runs; `--dry-run` prints it."""
    zoo = [sys.executable, "-m", "zoo", "run"]
    if state == "resume":
        return [*zoo, "--resume", str(run_dir)]
    sets = [a for o in cell_overrides(sweep, cell, extra) for a in ("--set", o)]
    return [*zoo, _shell_path(sweep.base), *sets, "--out", str(run_dir)]


def check(sweep: Sweep, out: Path, extra: tuple[str, ...]) -> dict[str, str]:
    """Validate every cell's recipe and plugins before anything runs; return each cell's state.

    A folder that already holds a run of a different recipe (say one shortened with
    `--set train.epochs=1`) is an error rather than a silent skip or resume; `log.*` keys
    may differ.
    """
    states = {}
    for cell in sweep.cells:
        try:
            recipe = resolve(str(sweep.base), tuple(cell_overrides(sweep, cell, extra)), ())
        except ZooError as e:
            raise ZooError(f"{sweep.path}: cell {cell.name}: {e}") from e
        run_dir = out / cell.name
        states[cell.name] = state = cell_state(run_dir)
        if state in ("finished", "resume"):
            had = section_keys(load_recipe(run_dir / RECIPE_FILE).to_dict())
            want = section_keys(recipe.to_dict())
            diff = [f"{k}: {had.get(k)!r} -> {want.get(k)!r}" for k in want
                    if had.get(k) != want.get(k) and not k.startswith("log.")]  # log: no effect on results
            if diff:
                raise ZooError(
                    f"{run_dir}: holds a run of another recipe ({'; '.join(diff[:3])}); "
                    "remove it or sweep into another --out"
                )
    return states


# ---------------------------------------------------------------------------------------
# Running


def _die_with_parent() -> None:
    """In the cell's process (Linux): SIGTERM when the sweep dies, even by SIGKILL, so the
    cell checkpoints and stops instead of training on unwatched (PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def run_subprocess(cmd: list[str]) -> int:
    """Run one cell; Ctrl-C or SIGTERM reaches the trainer, which checkpoints, then we stop."""
    proc = subprocess.Popen(cmd, preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    got: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        got.append(signum)
        proc.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        rc = proc.wait()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if got:
        raise KeyboardInterrupt(signal.Signals(got[0]).name)
    return rc


def run_sweep(
    sweep: Sweep,
    out: Path,
    extra: tuple[str, ...],
    runner: Runner,
    dry_run: bool = False,
) -> list[str]:
    """Run the missing cells in order with `runner(argv) -> exit code`; return the failures."""
    states = check(sweep, out, extra)
    failed: list[str] = []
    n = len(sweep.cells)
    for i, cell in enumerate(sweep.cells, 1):
        run_dir = out / cell.name
        state = states[cell.name]
        cmd = command(sweep, cell, run_dir, state, extra)
        if dry_run:
            line = shlex.join(cmd)
            if state == "finished":
                line = f"# finished: {run_dir}"
            elif state == "restart":
                line = f"rm -r {shlex.quote(str(run_dir))} && {line}"
            click.echo(line)
            continue
        if state == "finished":
            click.echo(f"[{i}/{n}] {cell.name}: finished, skipped")
            continue
        click.echo(f"[{i}/{n}] {cell.name}: {'resuming' if state == 'resume' else 'running'}")
        click.echo(f"  {shlex.join(cmd)}")
        if state == "restart":
            shutil.rmtree(run_dir)  # stopped before its first checkpoint: nothing to resume
        tic = time.monotonic()
        try:
            rc = runner(cmd)
            why = f"exit {rc}" if rc in INTERRUPTED else ""
        except KeyboardInterrupt as e:
            why = str(e) or "SIGINT"
        if why:
            click.echo(
                f"\nsweep {sweep.name}: interrupted in {cell.name} ({why}); run the same "
                "command again to finish the missing cells", err=True,
            )
            sys.exit(130)
        if rc != 0:
            failed.append(f"{cell.name} (exit {rc})")
        elif cell_state(run_dir) != "finished":
            failed.append(f"{cell.name} (exit 0 but no finished {SUMMARY_FILE})")
        else:
            click.echo(f"[{i}/{n}] {cell.name}: done in {time.monotonic() - tic:.0f}s")
    return failed
