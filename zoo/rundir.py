"""The run directory: creation, the environment record, atomic writes, metrics lines."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from zoo.errors import ZooError
from zoo.recipe import Recipe, check_name, load_recipe

RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers never see half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, default=str) + "\n")


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a metrics file; a torn last line (a kill mid-write) is ignored."""
    rows = []
    if not Path(path).exists():
        return rows
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def new_run_dir(recipe: Recipe, out: str | Path | None = None) -> Path:
    """`out` exactly, or `<log.dir>/<name>/<timestamp>` (suffixed if taken).

    The name is checked again here (a Recipe built in Python skips from_dict), so that no
    run lands outside log.dir."""
    if out is not None:
        run = Path(out)
        if (run / RECIPE_FILE).exists():
            raise ZooError(
                f"--out {run}: already holds a run; resume it with "
                f"`zoo run --resume {run}` or choose another folder"
            )
    else:
        check_name(recipe.name, "recipe")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run = Path(recipe.log.dir) / recipe.name / stamp
        n = 1
        while run.exists():
            run = Path(recipe.log.dir) / recipe.name / f"{stamp}-{n}"
            n += 1
    for sub in ("", "checkpoints", "figures"):
        (run / sub).mkdir(parents=True, exist_ok=True)
    atomic_write(run / RECIPE_FILE, recipe.to_yaml())
    write_json(run / "env.json", environment())
    return run


def lock_run(run_dir: Path) -> IO[bytes]:
    """Hold an exclusive lock on a run dir while this process trains it.

    Two processes training one run (two resumes, or a sweep started twice) would overwrite
    each other's checkpoints. The lock is flock(2) on the run's recipe.yaml, so nothing is
    written for it, and the OS drops it when the process dies, however it dies: a killed
    run never stays locked. Keep the returned file open while training.
    """
    import fcntl

    f = open(run_dir / RECIPE_FILE, "rb")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise ZooError(f"{run_dir}: another zoo process is training this run; wait for it or "
                       "stop it, then zoo run --resume") from None
    return f


def load_run(run_dir: str | Path) -> tuple[Path, Recipe]:
    """The recipe a run was started with; a folder that is not a run is a one-line error."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ZooError(f"{run}: no such run directory")
    if not (run / RECIPE_FILE).exists():
        raise ZooError(
            f"{run}: not a run directory (no {RECIPE_FILE}); pass a folder made by `zoo run`, "
            "e.g. runs/quickstart/<timestamp>"
        )
    return run, load_recipe(run / RECIPE_FILE)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).parent,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _installed(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """What produced a run: versions, device, commit, command line.

    timm and torchvision are named by their installed metadata, not imported: importing
    timm costs seconds at every start (6 s of a 31 s quickstart epoch, measured).
    """
    import torch

    import zoo

    cuda = torch.cuda.is_available()
    return {
        "zoo": zoo.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": _installed("torchvision"),
        "timm": _installed("timm"),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.version.cuda if cuda else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if cuda else [],
        "git_commit": _git_commit(),
        "argv": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
