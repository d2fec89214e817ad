"""A run directory: creating and locking it, the environment record, and loading the
trained model back from it (`zoo eval`, `zoo viz`)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any

from zoo import checkpoint, data
from zoo.errors import ZooError
from zoo.io import atomic_write, write_json
from zoo.model import ViT, build_model
from zoo.recipe import load_plugins, load_recipe
from zoo.schema import Recipe, check_name

RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


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


class RunLock:
    """An exclusive flock(2) on a run directory, held until `close()` (or the process ends)."""

    def __init__(self, run_dir: Path):
        import fcntl

        self.fd = os.open(run_dir, os.O_RDONLY)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise ZooError(f"{run_dir}: another zoo process is training this run; wait for it "
                           "or stop it, then zoo run --resume") from None

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def lock_run(run_dir: Path) -> RunLock:
    """Hold an exclusive lock on a run dir while this process trains it.

    Two processes training one run (two resumes, or a sweep started twice) would overwrite
    each other's checkpoints. The lock is flock(2) on the directory itself, so nothing is
    written for it, files inside may be replaced (a lengthened recipe.yaml) under it, and the
    OS drops it when the process dies, however it dies: a killed run never stays locked.
    Keep it until training ends.
    """
    return RunLock(run_dir)


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


def run_of(ckpt: Path) -> Path:
    """The run dir a checkpoint folder belongs to (the folder holding recipe.yaml)."""
    for parent in (ckpt, *ckpt.resolve().parents):
        if (parent / RECIPE_FILE).exists():
            return parent
    raise ZooError(f"{ckpt}: no {RECIPE_FILE} found above this checkpoint; evaluate a run dir")


def pick_checkpoint(source: str | Path, which: str = "last") -> Path:
    """The checkpoint folder of `source`: for a run dir, its `last` or `best` link (or a
    checkpoint PATH given as `which`); otherwise `source` itself names a checkpoint."""
    if which not in ("last", "best"):
        ckpt = checkpoint.find(which)
        _check_same_run(source, ckpt, which)
        return ckpt
    link = Path(source) / "checkpoints" / which
    if (Path(source) / RECIPE_FILE).exists() and which == "best" and not link.exists():
        raise ZooError(f"{source}: no best checkpoint (runs that report the test set keep only "
                       "last; best follows val accuracy); use --checkpoint last")
    return checkpoint.find(link if link.exists() else source)


def _check_same_run(source: str | Path, ckpt: Path, which: str) -> None:
    """--checkpoint PATH chooses among SOURCE's own checkpoints: one of another run would be
    read with that run's recipe, and its results written into that run under SOURCE's name."""
    own = Path(source) if (Path(source) / RECIPE_FILE).exists() else run_of(checkpoint.find(source))
    theirs = run_of(ckpt)
    if own.resolve() != theirs.resolve():
        raise ZooError(f"--checkpoint {which}: a checkpoint of the run {theirs.resolve()}, not of "
                       f"{source}; to use it, give {theirs.resolve()} as the source instead")


@dataclass(frozen=True)
class RunRef:
    """A trained model to load, as eval, predict, export and viz name it: a run dir or a
    checkpoint in one (`source`), which of the run's checkpoints (last, best, or a PATH of
    its own), the plugin files the user gives, whether the files its recipe names may be
    imported (they are code: zoo.recipe.load_plugins), and `--set` overrides of its recipe."""

    source: str | Path
    _: KW_ONLY
    checkpoint: str = "last"
    plugins: tuple[str | Path, ...] = ()
    trust_plugins: bool = False
    overrides: tuple[str, ...] = ()


def load_trained(ref: RunRef) -> tuple[ViT, Recipe, Path]:
    """Model (EMA weights when the run kept them), its recipe, and its run dir."""
    model, recipe, run, _ = load_checkpoint(ref)
    return model, recipe, run


def load_checkpoint(ref: RunRef) -> tuple[ViT, Recipe, Path, Path]:
    """load_trained, and the checkpoint folder it read (a step-XXXXXXXX folder)."""
    ckpt = pick_checkpoint(ref.source, ref.checkpoint)
    run = run_of(ckpt)
    recipe_path = run / RECIPE_FILE
    recipe = load_recipe(recipe_path, list(ref.overrides))
    load_plugins(recipe, str(recipe_path), ref.plugins, ref.trust_plugins)
    model = build_model(recipe.model)
    checkpoint.load_model(model, checkpoint.weights_file(ckpt), recipe_path)
    return model.eval(), recipe, run, ckpt.resolve()


def trained_on(run: Path, recipe: Recipe) -> dict[str, Any]:
    """Class names and normalisation of the run's training data (data.describe): from the
    run's DATA_FILE, written when it starts, so that images need no dataset on disk."""
    path = run / data.DATA_FILE
    if not path.exists():
        raise ZooError(f"{path}: missing; a run writes it when it starts (the classes and the "
                       "normalisation its model was trained with), so this folder is not a "
                       "complete run of this zoo: copy the whole run folder")
    try:
        info = json.loads(path.read_text())
        ok = (isinstance(info, dict) and all(isinstance(info.get(k), list) for k in
                                             ("classes", "mean", "std"))
              and len(info["mean"]) == len(info["std"]) == recipe.model.in_chans
              and all(isinstance(v, int | float) for v in info["mean"] + info["std"]))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        ok = False
    if not ok:
        raise ZooError(f"{path}: not a valid {data.DATA_FILE} (classes, mean, std); it is "
                       "written when the run starts: copy it from the run as it was made")
    return info
