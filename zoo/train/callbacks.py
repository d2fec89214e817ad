"""What a run records, as callbacks the trainer calls with itself (as mmengine's hooks and
Lightning's callbacks receive the runner): the console line per evaluation, the run dir's
files, and TensorBoard. The trainer knows none of them; each reads its public state.

Callbacks run on the main process only, and only for a trainer with a run dir (`console`
for any trainer).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from zoo import data
from zoo.errors import first_line
from zoo.io import append_jsonl, atomic_write, read_jsonl, write_json
from zoo.runs import METRICS_FILE, SUMMARY_FILE
from zoo.schema import Recipe


class Trainer(Protocol):
    """The public state of zoo.train.trainer.Trainer that callbacks read."""

    recipe: Recipe
    run_dir: Path  # callbacks that write run only with a run dir
    step: int
    lr: float  # the schedule's value at the last step
    device: torch.device
    model: Any  # a zoo ViT, training
    eval_model: nn.Module  # the weights evaluation reads (EMA or the model)
    train_data: Any
    train_loader: Any
    eval_data: dict[str, Any]
    augment: data.Augment
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def say(self, line: str) -> None: ...


class Callback:
    """The moments of a run a callback may act on; each hook does nothing by default."""

    def before_fit(self, trainer: Trainer) -> None:
        """Training starts (or resumes, at `trainer.step`)."""

    def after_step(self, trainer: Trainer, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """An optimizer step was taken (`trainer.step` counts it): its loss and gradient norm
        on this rank, still on the device. Called at every step, so a hook reads them
        (`.item()`, a host sync that stalls CUDA) only on the steps it records."""

    def after_eval(self, trainer: Trainer, metrics: dict[str, Any], best: bool) -> None:
        """An epoch was evaluated: `metrics` is its row of metrics.jsonl."""

    def after_fit(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        """Training ended; `summary` is summary.json."""


def epoch_line(metrics: dict[str, Any], epochs: int, best: bool) -> str:
    """One line per evaluation, so a run shows progress with the progress bar off too."""
    evals = "  ".join(f"{split} acc {metrics[f'{split}_acc']:.4f} loss {metrics[f'{split}_loss']:.3f}"
                      for split in ("val", "test") if f"{split}_acc" in metrics)
    return (f"epoch {metrics['epoch']}/{epochs}  train loss {metrics['train_loss']:.3f} "
            f"acc {metrics['train_acc']:.4f}  {evals}  lr {metrics['lr']:.2e}  "
            f"{metrics['img_per_s']:,.0f} img/s" + ("  * best" if best else ""))


class Console(Callback):
    """`epoch_line` on stdout at every evaluation."""

    def after_eval(self, trainer: Trainer, metrics: dict[str, Any], best: bool) -> None:
        print(epoch_line(metrics, trainer.recipe.train.epochs, best and "val_acc" in metrics),
              flush=True)


class RunFiles(Callback):
    """data.json (what the model was trained on), metrics.jsonl and summary.json."""

    def before_fit(self, trainer: Trainer) -> None:
        write_json(trainer.run_dir / data.DATA_FILE, data.describe(trainer.train_data))
        metrics = trainer.run_dir / METRICS_FILE
        if metrics.exists():  # a resumed run redoes the evaluations after its checkpoint
            rows = [r for r in read_jsonl(metrics) if r.get("step", 0) <= trainer.step]
            atomic_write(metrics, "".join(json.dumps(r) + "\n" for r in rows))

    def after_eval(self, trainer: Trainer, metrics: dict[str, Any], best: bool) -> None:
        append_jsonl(trainer.run_dir / METRICS_FILE, metrics)

    def after_fit(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        """summary.json, with `best_test_acc`, the best test accuracy over the evaluations:
        chosen on the test set, as published CIFAR tables report it (Lee et al.'s best_acc1),
        so comparable with them; never used to pick a checkpoint (the summary the console
        prints is this same dict)."""
        tests = [r["test_acc"] for r in read_jsonl(trainer.run_dir / METRICS_FILE) if "test_acc" in r]
        if tests:
            summary["best_test_acc"] = max(tests)
        write_json(trainer.run_dir / SUMMARY_FILE, summary)


SCALARS = [  # (TensorBoard tag, metrics key), at every evaluation: one section per split
    ("train/loss", "train_loss"), ("train/acc", "train_acc"), ("train/grad_norm", "grad_norm"),
    ("train/lr", "lr"), ("train/img_per_s", "img_per_s"),
    ("val/loss", "val_loss"), ("val/acc", "val_acc"),
    ("test/loss", "test_loss"), ("test/acc", "test_acc"),
]
HPARAM_METRICS = ("val/acc", "val/loss", "test/acc", "test/loss", "train/img_per_s")


class TensorBoard(Callback):
    """The run's own event file, one section per kind of curve (the README's table):
    `train/`, `val/`, `test/` and `lambda/` (Diff-ViT) scalars and `viz/` figures at every
    evaluation, `step/` scalars every `log.every_steps` steps, `data/augmented_batch`, the
    recipe as text, and the recipe in the HParams tab beside the final val/test scalars.

    Each evaluation's figures are also written to `figures/eval/` (the newest ones): a
    visualizer that cannot draw the model is skipped with one warning line, never ending
    the run."""

    def __init__(self) -> None:
        self.writer: Any = None
        self.visualizers: list[tuple[str, Any]] = []

    def before_fit(self, trainer: Trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter

        from zoo.viz.figures import build_visualizers, drawable

        # on resume, hide what was logged after the checkpoint's step; its own step stays
        self.writer = SummaryWriter(log_dir=str(trainer.run_dir),
                                    purge_step=trainer.step + 1 if trainer.step else None)
        if trainer.step == 0:
            self.writer.add_text("recipe", "```yaml\n" + trainer.recipe.to_yaml() + "\n```", 0)
        built = build_visualizers(trainer.recipe.log.visualizers, "log.visualizers")
        self.visualizers = drawable(built, trainer.model, lambda w: trainer.say(f"warning: {w}"))

    def after_step(self, trainer: Trainer, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """Curves between evaluations: `step/loss`, `step/lr` and `step/grad_norm`, of that
        step alone (not averaged), read only on those steps."""
        every = trainer.recipe.log.every_steps
        if not every or trainer.step % every:
            return
        loss_v, norm_v = torch.stack((loss.float(), grad_norm.float())).tolist()  # one sync
        for tag, value in (("step/loss", loss_v), ("step/lr", trainer.lr),
                           ("step/grad_norm", norm_v)):
            self.writer.add_scalar(tag, value, trainer.step)

    def after_eval(self, trainer: Trainer, metrics: dict[str, Any], best: bool) -> None:
        from zoo.viz.figures import figure_array

        step = metrics["step"]
        for tag, key in SCALARS:
            if key in metrics:  # val and test only where data.eval_splits names them
                self.writer.add_scalar(tag, metrics[key], step)
        for i, lam in enumerate(getattr(trainer.model, "lambdas", list)(), start=1):
            self.writer.add_scalar(f"lambda/layer_{i}", float(lam), step)
        self.writer.add_image("data/augmented_batch", augmented_batch(trainer, metrics["epoch"]),
                              step)
        folder = trainer.run_dir / "figures" / "eval"
        for name, png in self.figures(trainer).items():
            atomic_write(folder / f"{name}.png", png)
            self.writer.add_image(f"viz/{name}", figure_array(png), step)
        self.writer.flush()

    def after_fit(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        # the HParams tab reads each metric's last value from the run's own scalars
        tags = [t for t, key in SCALARS if t in HPARAM_METRICS and summary_has(summary, key)]
        for s in hparams(hparam_values(trainer.recipe.to_dict()), dict.fromkeys(tags, 0.0)):
            self.writer.file_writer.add_summary(s)
        self.writer.close()

    def figures(self, trainer: Trainer) -> dict[str, bytes]:
        """The drawable visualizers on the first evaluated split's fixed images, with the
        weights evaluation reads, as PNGs. One that fails is dropped with a warning line."""
        if not self.visualizers:
            return {}
        from zoo.data import model_input
        from zoo.viz.figures import draw, png_bytes
        from zoo.viz.subjects import first_images

        model = trainer.eval_model
        shown = first_images(next(iter(trainer.eval_data.values())), trainer.recipe.log.viz_images)
        was_training = model.training
        model.eval()
        out: dict[str, bytes] = {}
        try:
            with torch.no_grad():
                x = model_input(model, shown.images, trainer.mean, trainer.std)
                for vis in list(self.visualizers):
                    try:
                        figs = draw([vis], model, shown, x)
                    except Exception as e:  # a figure must never end the run
                        trainer.say(f"warning: visualizer '{vis[0]}' failed and is skipped "
                                    f"from now on: {first_line(e)}")
                        self.visualizers.remove(vis)
                        continue
                    out.update({k: png_bytes(f) for k, f in figs.items()})
        finally:
            model.train(was_training)
        return out


def summary_has(summary: dict[str, Any], key: str) -> bool:
    """Whether the run ended with a value for a metrics key (`val_acc` -> final_val_acc)."""
    return summary.get(f"final_{key}", summary.get(key)) is not None


def augmented_batch(trainer: Trainer, epoch: int) -> torch.Tensor:
    """The first training batch of `epoch` (1-based) as the model saw it, augmented, as an
    image grid; drawn under a forked RNG, so logging never changes what the run trains on."""
    devices = [trainer.device] if trainer.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        images, labels = next(iter(trainer.train_loader.epoch(epoch - 1, 0)))
        y = F.one_hot(labels, trainer.recipe.model.num_classes).float()
        x, _ = trainer.augment(data.to_float(images), y)
    return image_grid(x[:64])


def hparam_values(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested recipe -> {"model.dim": 192, ...}; values TensorBoard's HParams tab accepts."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(hparam_values(v, f"{key}."))
        elif isinstance(v, bool | int | float | str):
            out[key] = v
        else:
            out[key] = str(v)
    return out


def image_grid(images: torch.Tensor, nrow: int = 8) -> torch.Tensor:
    """uint8 or [0,1] float images [B, C, H, W] -> one [C, H', W'] float grid in [0,1]."""
    from torchvision.utils import make_grid

    x = images.detach().float().cpu()
    if images.dtype == torch.uint8:
        x = x / 255
    return make_grid(x.clamp(0, 1), nrow=nrow, padding=1)


def defaults(recipe: Recipe, has_run_dir: bool, main: bool) -> list[Callback]:
    """What `zoo run` records: the console line, and with a run dir its files and TensorBoard."""
    if not main:
        return []
    # summary.json last: a run dir that holds it is finished (zoo sweep skips it)
    files: list[Callback] = [*([TensorBoard()] if recipe.log.tensorboard else []), RunFiles()]
    return [Console(), *(files if has_run_dir else [])]
