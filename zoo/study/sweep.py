"""Running a sweep: each cell a real `zoo run` in its own folder, OUT/<cell>/.

A cell that finished is skipped, one with a checkpoint is resumed, and one that stopped
before its first checkpoint is removed and started over, so running a sweep again completes
only what is missing. Progress goes through an `echo` callable (click.echo from the CLI).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zoo.checkpoint import newest
from zoo.errors import ZooError
from zoo.io import read_json
from zoo.recipe import load_recipe, resolve, section_keys
from zoo.runs import RECIPE_FILE, SUMMARY_FILE
from zoo.study.cells import Cell, Sweep, cell_overrides, record_order

Runner = Callable[[list[str]], int]
Echo = Callable[[str], None]
INTERRUPTED = {128 + signal.SIGINT, 128 + signal.SIGTERM, -signal.SIGINT, -signal.SIGTERM}  # exit codes


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a cell (it checkpointed); the message says how to go on."""


# ---------------------------------------------------------------------------------------
# Planning: what each cell needs, and the command that does it


def cell_state(run_dir: Path) -> str:
    """finished | resume (has a checkpoint) | restart (started, no checkpoint) | new."""
    if read_json(run_dir / SUMMARY_FILE).get("status") == "finished":
        return "finished"
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


def command(sweep: Sweep, cell: Cell, run_dir: Path, state: str, extra: tuple[str, ...],
            plugins: tuple[str, ...] = ()) -> list[str]:
    """The exact argv a cell runs; `--dry-run` prints it. `plugins` (--plugins of the sweep)
    go to every cell, resumed ones too."""
    zoo = [sys.executable, "-m", "zoo", "run"]
    given = [a for p in plugins for a in ("--plugins", str(Path(p).resolve()))]
    if state == "resume":
        return [*zoo, "--resume", str(run_dir), *given]
    sets = [a for o in cell_overrides(sweep, cell, extra) for a in ("--set", o)]
    return [*zoo, _shell_path(cell.start(sweep)), *sets, *given, "--out", str(run_dir)]


def check(sweep: Sweep, out: Path, extra: tuple[str, ...],
          plugins: tuple[str, ...] = ()) -> dict[str, str]:
    """Validate every cell's recipe and plugins before anything runs; return each cell's state.

    A folder that already holds a run of a different recipe (say one shortened with
    `--set train.epochs=1`) is an error rather than a silent skip or resume; `log.*` keys
    may differ.
    """
    states = {}
    for cell in sweep.cells:
        try:
            recipe = resolve(str(cell.start(sweep)), tuple(cell_overrides(sweep, cell, extra)), plugins)
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


def dry_run_line(cmd: list[str], run_dir: Path, state: str) -> str:
    """One shell line per cell: pasted into a shell in the same directory, it runs the cell."""
    if state == "finished":
        return f"# finished: {run_dir}"
    if state == "restart":
        return f"rm -r {shlex.quote(str(run_dir))} && {shlex.join(cmd)}"
    return shlex.join(cmd)


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
    echo: Echo = print,
    plugins: tuple[str, ...] = (),
) -> list[str]:
    """Run the missing cells in order with `runner(argv) -> exit code`; return the failures.

    Raises SweepInterrupted when a cell was interrupted: the rest must wait for a rerun.
    """
    states = check(sweep, out, extra, plugins)
    if dry_run:
        for cell in sweep.cells:
            cmd = command(sweep, cell, out / cell.name, states[cell.name], extra, plugins)
            echo(dry_run_line(cmd, out / cell.name, states[cell.name]))
        return []
    record_order(sweep, out)
    failed: list[str] = []
    n = len(sweep.cells)
    for i, cell in enumerate(sweep.cells, 1):
        if states[cell.name] == "finished":
            echo(f"[{i}/{n}] {cell.name}: finished, skipped")
            continue
        failure = _run_cell(sweep, cell, out, states[cell.name], extra, runner, echo,
                            tag=f"[{i}/{n}] {cell.name}", plugins=plugins)
        if failure:
            failed.append(f"{cell.name} ({failure})")
    return failed


def _run_cell(sweep: Sweep, cell: Cell, out: Path, state: str, extra: tuple[str, ...],
              runner: Runner, echo: Echo, tag: str, plugins: tuple[str, ...] = ()) -> str | None:
    """Run one cell: None when it finished, else why it failed (exit 1, no summary)."""
    run_dir = out / cell.name
    cmd = command(sweep, cell, run_dir, state, extra, plugins)
    echo(f"{tag}: {'resuming' if state == 'resume' else 'running'}")
    echo(f"  {shlex.join(cmd)}")
    if state == "restart":
        shutil.rmtree(run_dir)  # stopped before its first checkpoint: nothing to resume
    tic = time.monotonic()
    try:
        rc = runner(cmd)
        why = f"exit {rc}" if rc in INTERRUPTED else ""
    except KeyboardInterrupt as e:
        why = str(e) or "SIGINT"
    if why:
        raise SweepInterrupted(f"sweep {sweep.name}: interrupted in {cell.name} ({why}); run the "
                               "same command again to finish the missing cells")
    if rc != 0:
        return f"exit {rc}"
    if cell_state(run_dir) != "finished":
        return f"exit 0 but no finished {SUMMARY_FILE}"
    echo(f"{tag}: done in {time.monotonic() - tic:.0f}s")
    return None
