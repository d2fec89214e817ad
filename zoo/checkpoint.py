"""Checkpoints that survive kills: one folder per save, published by an atomic link swap.

Layout inside a run's `checkpoints/`:

    step-00001200/model.safetensors   model weights (the EMA's too, as ema.safetensors)
    step-00001200/state.pt            optimizer, scaler, RNG states, epoch/step, ...
    last -> step-00001200             the newest complete save
    best -> step-00000800             the best by validation accuracy

A save writes a hidden temp folder, fsyncs it, renames it into place and only then moves
the `last` link (os.replace of a link is atomic), so a kill at any moment leaves the
previous checkpoint intact. Loading never unpickles arbitrary objects: weights come from
safetensors and the state through `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from zoo.errors import ZooError, clip, first_line
from zoo.io import regular_stat

MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "state.pt"
# What the trainer's state.pt must hold (`load_state(path, TRAINING_STATE)`), so that a
# malformed file is one line, not a KeyError deep in the trainer's restore.
FORMAT = 1  # of state.pt; a checkpoint of another format is refused in one line (load_state)


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


TRAINING_STATE: dict[str, Callable[[Any], bool]] = {
    "format": lambda v: v == FORMAT,
    "step": _count,
    "closed_step": _count,
    "world_size": lambda v: _count(v) and v >= 1,
    "epoch_stats": lambda v: isinstance(v, list) and len(v) == 5,
    "epoch_seconds": lambda v: isinstance(v, int | float),
    "train_seconds": lambda v: isinstance(v, int | float),
    "last_metrics": lambda v: isinstance(v, dict),
    "best_acc": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "optimizer": lambda v: isinstance(v, dict) and {"state", "param_groups"} <= v.keys(),
    "scaler": lambda v: isinstance(v, dict),
    "rng_cpu": lambda v: isinstance(v, torch.Tensor) and v.dtype == torch.uint8,
    "rng_cuda": lambda v: isinstance(v, list),
}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _point(link: Path, target: str) -> None:
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def save(
    ckpt_dir: Path,
    step: int,
    model: dict[str, torch.Tensor],
    state: dict[str, Any],
    ema: dict[str, torch.Tensor] | None = None,
    best: bool = False,
) -> Path:
    """Write one complete checkpoint and point `last` (and `best`) at it.

    Written aside, then published by a rename; `best` moves before `last`, so a kill
    between the two leaves `last` on the previous step, whose resume saves this one again.
    A write that fails (a full disk) removes its debris and says the previous checkpoint is
    intact, in one line.
    """
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    final = ckpt_dir / name
    tmp = ckpt_dir / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        cpu = {k: v.detach().cpu().contiguous() for k, v in model.items()}
        save_file(cpu, tmp / MODEL_FILE, metadata={"format": "pt", "step": str(step)})
        if ema is not None:
            cpu_ema = {k: v.detach().cpu().contiguous() for k, v in ema.items()}
            save_file(cpu_ema, tmp / EMA_FILE, metadata={"format": "pt", "step": str(step)})
        torch.save(state, tmp / STATE_FILE)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    except (OSError, RuntimeError) as e:  # ENOSPC, or torch's zip writer ("unexpected pos")
        shutil.rmtree(tmp, ignore_errors=True)
        last = ckpt_dir / "last"
        kept = f"the previous checkpoint {last.resolve()} is intact" if last.exists() else \
            "no earlier checkpoint exists"
        raise ZooError(f"{ckpt_dir}: could not write the checkpoint of step {step} "
                       f"({first_line(e)}); is the disk full? {kept}") from e
    if final.exists():  # the same step saved again (e.g. final save right after an epoch save)
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(ckpt_dir)
    if best:
        _point(ckpt_dir / "best", name)
        _fsync_dir(ckpt_dir)
    _point(ckpt_dir / "last", name)
    _fsync_dir(ckpt_dir)
    _prune(ckpt_dir)
    return final


def newest(ckpt_dir: Path) -> Path | None:
    """The checkpoint to resume from: `last`, or, should that link be broken, the newest
    complete step folder (weights and training state both there)."""
    last = ckpt_dir / "last"
    if last.is_dir():
        return last
    steps = sorted(p for p in ckpt_dir.glob("step-*")
                   if (p / MODEL_FILE).is_file() and (p / STATE_FILE).is_file())
    return steps[-1] if steps else None


def to_host(obj: Any) -> Any:
    """A copy of `obj` with every tensor in host memory, taken now in stream order.

    CUDA tensors are copied without waiting (into pinned memory); CPU tensors are cloned,
    since training goes on changing the originals in place.
    """
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        return t.to("cpu", non_blocking=True) if t.is_cuda else t.clone()
    if isinstance(obj, dict):
        return {k: to_host(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_host(v) for v in obj)
    return obj


class Saver:
    """`save` on a background thread, so that writing files never stalls training.

    `submit` snapshots the state to host memory (queued behind the running GPU work, no
    wait) and writes it from a thread; one save runs at a time. `wait` joins the running
    save and raises its error, if any: call it before exiting.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, ckpt_dir: Path, step: int, model: dict[str, torch.Tensor],
               state: dict[str, Any], ema: dict[str, torch.Tensor] | None = None,
               best: bool = False) -> None:
        self.wait()
        model, state, ema = to_host((model, state, ema))
        ready = None
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            ready = torch.cuda.Event()
            ready.record()  # the copies above are done when this is

        def write() -> None:
            try:
                if ready is not None:
                    ready.synchronize()
                save(ckpt_dir, step, model, state, ema=ema, best=best)
            except BaseException as e:  # handed to the training thread by wait()
                self._error = e

        self._thread = threading.Thread(target=write, name=f"save step {step}")
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def _prune(ckpt_dir: Path) -> None:
    """Drop saves no link points at (and temp folders of interrupted saves)."""
    keep = {os.readlink(ckpt_dir / n) for n in ("last", "best") if (ckpt_dir / n).is_symlink()}
    for p in ckpt_dir.iterdir():
        if p.is_dir() and not p.is_symlink() and p.name not in keep and (
            p.name.startswith("step-") or p.name.startswith(".step-")
        ):
            shutil.rmtree(p, ignore_errors=True)


def find(path: str | Path) -> Path:
    """A checkpoint folder from a run dir, a `checkpoints/` dir, a link or a weights file."""
    p = Path(path)
    for candidate in (p / "checkpoints" / "last", p / "last", p):
        if candidate.is_dir() and (candidate / MODEL_FILE).exists():
            return candidate
    if p.is_file() and p.suffix == ".safetensors":
        return p.parent
    raise ZooError(
        f"{p}: no checkpoint found (expected a run dir with checkpoints/last/, a checkpoint "
        f"folder holding {MODEL_FILE}, or a .safetensors file)"
    )



def weights_file(ckpt: Path) -> Path:
    """The weights a checkpoint is used with: its EMA where the run kept one, else the
    trained weights."""
    ema = ckpt / EMA_FILE
    return ema if ema.exists() else ckpt / MODEL_FILE

def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Weights from a safetensors file; a corrupt or truncated file is a one-line error."""
    try:
        regular_stat(path)  # a FIFO would block the reader
        return load_file(str(path))
    except FileNotFoundError:
        raise ZooError(f"{path}: checkpoint file missing") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise ZooError(
            f"{path}: corrupt or truncated checkpoint ({str(e).splitlines()[0]}); "
            "use another checkpoint of the run"
        ) from e


def load_state(path: Path, schema: dict[str, Callable[[Any], bool]] | None = None) -> dict[str, Any]:
    """Training state through `torch.load(weights_only=True)`: tensors and plain data only.
    A mapping whose keys pass `schema` (e.g. TRAINING_STATE), so a malformed file fails here
    in one line rather than wherever its values are used."""
    if not path.exists():
        raise ZooError(f"{path}: training state missing; this checkpoint cannot be resumed")
    regular_stat(path)  # a FIFO would block torch.load
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        raise ZooError(
            f"{path}: corrupt or truncated training state ({type(e).__name__}); "
            "use another checkpoint of the run"
        ) from e
    if not isinstance(state, dict):
        raise ZooError(f"{path}: malformed training state (not a mapping); "
                       "use another checkpoint of the run")
    if schema and "format" in schema and state.get("format") != FORMAT:
        found = state.get("format")
        raise ZooError(f"{path}: checkpoint format {found if found is not None else 'none'} "
                       f"(written by {'an older' if found is None else 'another'} zoo); this zoo "
                       f"reads format {FORMAT}: resume it with the zoo that wrote it, or start "
                       "the run again")
    bad = next((k for k, ok in (schema or {}).items() if k not in state or not ok(state[k])), None)
    if bad is not None:
        raise ZooError(f"{path}: malformed training state ({bad}: missing or not what zoo "
                       "saves); use another checkpoint of the run")
    return state


def load_model(module: nn.Module, path: Path, recipe: str | Path) -> None:
    """Load the weights in `path` into `module`, built from `recipe`. Weights of another
    shape (the recipe was edited, or they come from another run) fail naming the first
    tensor that differs, instead of torch's error listing every one of them."""
    weights = load_weights(path)
    own = module.state_dict()
    for name, tensor in own.items():
        if name not in weights:
            raise ZooError(f"{path}: no tensor {name}, which {recipe} builds; these weights "
                           "are from another model: resume or evaluate with its own recipe")
        if weights[name].shape != tensor.shape:
            raise ZooError(
                f"{path}: {name} has shape {list(weights[name].shape)} but {recipe} builds "
                f"{list(tensor.shape)}; use the recipe these weights were trained with"
            )
    extra = sorted(weights.keys() - own.keys())
    if extra:
        raise ZooError(f"{path}: holds {len(extra)} tensors {recipe} does not build (first: "
                       f"{clip(extra[0])}); use the recipe these weights were trained with")
    module.load_state_dict(weights)
