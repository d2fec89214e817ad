"""Training: plain PyTorch, every piece of state saved and restored whole.

`Trainer.fit` trains with AdamW or SGD, warmup + cosine, label smoothing, gradient clipping,
AMP, optional torch.compile and EMA, evaluates every `eval_every` epochs and checkpoints so
that `--resume` continues bit for bit. What is recorded (console, metrics files,
TensorBoard) is up to its callbacks (zoo.train.callbacks). Under `torchrun` the same code
trains with DistributedDataParallel; rank 0 records and saves.

The schedule and the data order are pure functions of (seed, epoch, step), so the state to
save is small: weights, optimizer, scaler, EMA, RNG states, epoch and step."""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from zoo import checkpoint, data
from zoo.device import Dist, pick_device, seed_everything
from zoo.errors import ZooError
from zoo.evaluate import loss_sums
from zoo.finetune import init_weights
from zoo.model import build_model
from zoo.schema import Recipe
from zoo.train import callbacks as cb
from zoo.train.build import build_data
from zoo.train.epoch import EpochStats
from zoo.train.optim import EMA, lr_at, make_optimizer, set_lr, soft_cross_entropy
from zoo.train.step import StepRunner, why_no_graph

LOG_EVERY = 25  # steps between host syncs for the progress bar and the finite-loss check


class Diverged(ZooError):
    """The loss became NaN or infinite."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; the trainer saved and the process should exit."""

    def __init__(self, signum: int):
        self.signum = signum


class Trainer:
    """One run: data, model, optimiser and the loop, with state that checkpoints whole.

    `callbacks` record the run (default: cb.defaults, what `zoo run` records); `init`: start
    from the weights model.init names (a resume skips it: its checkpoint replaces them);
    `offline`: absent data stands in by its known size, nothing downloads (a dry run)."""

    def __init__(self, recipe: Recipe, run_dir: Path | None, dist_info: Dist | None = None,
                 callbacks: Sequence[cb.Callback] | None = None, init: bool = True,
                 offline: bool = False):
        self.recipe, self.run_dir = recipe, run_dir
        self.dist = dist_info or Dist()
        t = recipe.train
        self.device = pick_device(t.device, self.dist)
        seed_everything(t.seed, t.deterministic)
        d = build_data(recipe, self.device, self.dist, offline)
        self.train_data, self.eval_data, self.augment = d.train, d.evals, d.augment
        self.train_loader, self.eval_loaders = d.train_loader, d.eval_loaders
        self.mean, self.std = self.train_data.mean, self.train_data.std

        self.model = build_model(recipe.model).to(self.device)
        if init:
            init_weights(self.model, recipe.model, self.say)
        self.ema = EMA(self.model, t.ema) if t.ema else None
        graph_off = why_no_graph(recipe, self.device, self.dist.world)
        self.optimizer = make_optimizer(self.model, recipe, self.device,
                                        lr_tensor=t.cuda_graph and not graph_off)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.amp)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=t.amp == "fp16")
        ddp: nn.Module = self.model
        if self.dist.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            ddp = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.runner = StepRunner(
            self.prepare, self.update, ddp, recipe, self.device, graph_off=graph_off,
            capture_prepare=all(getattr(op, "capturable", False) for op in self.augment.ops),
            say=self.say,
        )
        self.saver = checkpoint.Saver()
        self.callbacks = list(callbacks if callbacks is not None else
                              cb.defaults(recipe, run_dir is not None, self.dist.main))

        self.steps_per_epoch = len(self.train_loader)
        self.total_steps = t.epochs * self.steps_per_epoch
        if t.max_steps is not None:
            self.total_steps = min(self.total_steps, t.max_steps)
        self.warmup_steps = min(int(t.warmup_epochs * self.steps_per_epoch), self.total_steps)
        self.step = 0  # optimizer steps taken
        self.lr = t.lr  # the schedule's value at the last step
        self.best_acc = -1.0
        self.epoch = EpochStats(self.device)  # the epoch under way, kept across a resume
        self.closed_step = 0  # the step at which the last epoch's end was handled
        self.last_metrics: dict[str, Any] = {}  # the last evaluation's row of metrics.jsonl
        self.train_seconds = 0.0  # wall time of the run's earlier segments (before a resume)
        self._fit_tic: float | None = None
        self._signal: int | None = None

    @property
    def eval_model(self) -> nn.Module:
        """The weights evaluation reads: the EMA's when the run keeps one."""
        return self.ema.model if self.ema else self.model

    # -- state ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        return {
            "format": checkpoint.FORMAT,
            "step": self.step,
            "best_acc": self.best_acc,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": cuda_rng,
            "world_size": self.dist.world,
            **self.epoch.state_dict(),  # global: reduced before a signal's save
            "closed_step": self.closed_step,
            "last_metrics": self.last_metrics,
            "train_seconds": self.elapsed(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.best_acc = float(state["best_acc"])
        self.epoch.load_state_dict(state, self.dist.main)
        self.closed_step = int(state["closed_step"])
        self.last_metrics = dict(state["last_metrics"])
        self.train_seconds = float(state["train_seconds"])
        lrs = [g["lr"] for g in self.optimizer.param_groups]  # ours: the schedule sets them
        self.optimizer.load_state_dict(state["optimizer"])
        for g, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            g["lr"] = lr
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng_cpu"])
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"][: torch.cuda.device_count()])

    def save(self, best: bool = False) -> None:
        if not self.dist.main or self.run_dir is None:
            return
        self.saver.submit(
            self.run_dir / "checkpoints", self.step, self.model.state_dict(), self.state_dict(),
            ema=self.ema.model.state_dict() if self.ema else None, best=best,
        )

    # -- one step -------------------------------------------------------------------------

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def prepare(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 batch -> normalised, augmented float images and soft targets."""
        x = data.to_float(images)
        y = F.one_hot(labels, self.recipe.model.num_classes).float()
        x, y = self.augment(x, y)
        return data.normalize(x, self.mean, self.std), y

    def update(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Forward, loss, backward, clipping, optimizer and EMA: (loss, correct, grad norm).

        No host synchronisation in here: this is what a CUDA graph captures.
        """
        t = self.recipe.train
        with self.autocast():
            logits = self.runner.net(x)
        loss = soft_cross_entropy(logits, y, t.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        max_norm = t.grad_clip if t.grad_clip else float("inf")
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema:
            self.ema.update(self.model)
        correct = (logits.argmax(-1) == y.argmax(-1)).sum()
        return loss.detach(), correct, grad_norm

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        t = self.recipe.train
        self.lr = lr_at(self.step, self.total_steps, self.warmup_steps, t.lr, t.min_lr, t.warmup_lr)
        set_lr(self.optimizer, self.lr)
        out = self.runner(images, labels)
        self.step += 1
        return out

    def say(self, line: str) -> None:
        """A line on stderr, from the main process only."""
        if self.dist.main:
            print(line, file=sys.stderr, flush=True)

    # -- the loop -------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        for c in self.callbacks:
            c.before_fit(self)
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        self._fit_tic = time.perf_counter()
        try:
            while True:
                # also an epoch end owed from before a resume (a signal on its last step)
                if self.step > self.closed_step and self.at_epoch_end():
                    self.end_epoch()
                if self.step >= self.total_steps:
                    break
                epoch, start = divmod(self.step, self.steps_per_epoch)
                self.train_epoch(epoch, start)
                if self._signal is not None:
                    self.epoch.reduce(self.dist)  # the partial epoch goes into the checkpoint
                    self.save()
                    raise Interrupted(self._signal)
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
            self.saver.wait()  # the last checkpoint is on disk before anyone reads it
        summary = self.summary()
        for c in self.callbacks:
            c.after_fit(self, summary)
        return summary

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signal = signum

    def train_epoch(self, epoch: int, start_step: int) -> None:
        """Train epoch `epoch` from `start_step` on (or to max_steps, or to a signal),
        adding to the epoch's statistics; `end_epoch` turns them into metrics."""
        self.model.train()
        tic = time.perf_counter()
        bar = progress(self.train_loader.epoch(epoch, start_step),
                       self.recipe.log.progress and self.dist.main,
                       total=self.steps_per_epoch - start_step,
                       desc=f"epoch {epoch + 1}/{self.recipe.train.epochs}")
        try:
            for images, labels in bar:
                if self.step >= self.total_steps:
                    break
                loss, correct, grad_norm = self.train_step(images, labels)
                self.epoch.add(loss, correct, labels.shape[0], grad_norm)
                for c in self.callbacks:  # tensors on the device: each reads them only when it logs
                    c.after_step(self, loss, grad_norm)
                if self.step % LOG_EVERY == 0:
                    loss, acc, n = self.epoch.running()
                    self._check_finite(loss)
                    if hasattr(bar, "set_postfix"):
                        seconds = self.epoch.seconds + time.perf_counter() - tic
                        bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.3f}", lr=f"{self.lr:.2e}",
                                        img_s=f"{n * self.dist.world / seconds:.0f}")
                if self._stop_requested():
                    break
        finally:
            self.epoch.seconds += time.perf_counter() - tic

    def elapsed(self) -> float:
        """Wall seconds of the whole run so far, every resumed segment included."""
        now = time.perf_counter() - self._fit_tic if self._fit_tic is not None else 0.0
        return self.train_seconds + now

    def _stop_requested(self) -> bool:
        """A signal arrived here (or, under DDP, on any rank: all ranks stop at one step)."""
        if self.dist.world == 1:
            return self._signal is not None
        if self.step % LOG_EVERY:
            return False
        flag = torch.tensor([float(self._signal is not None)], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if (stop := bool(flag.item())) and self._signal is None:
            self._signal = signal.SIGTERM
        return stop

    def _check_finite(self, loss: float) -> None:
        if not math.isfinite(loss):
            last = self.run_dir / "checkpoints" / "last" if self.run_dir else None
            kept = f"; the last good checkpoint is {last}" if last and last.exists() else ""
            raise Diverged(
                f"loss became non-finite at step {self.step}{kept}; lower train.lr, set "
                "train.grad_clip, or use train.amp=bf16 instead of fp16"
            )

    def evaluate(self) -> dict[str, float]:
        """`<split>_loss` and `<split>_acc` of every split in data.eval_splits."""
        out = {}
        for split, loader in self.eval_loaders.items():
            sums = loss_sums(self.eval_model, loader, self.mean, self.std, self.autocast)
            if self.dist.world > 1:
                dist.all_reduce(sums)
            loss, correct, n = sums.tolist()
            out.update({f"{split}_loss": loss / max(n, 1), f"{split}_acc": correct / max(n, 1)})
        return out

    def at_epoch_end(self) -> bool:
        return self.step >= self.total_steps or self.step % self.steps_per_epoch == 0

    def end_epoch(self) -> None:
        """Close the epoch that just ended: evaluate, record and checkpoint as the recipe says."""
        t = self.recipe.train
        epoch = -(-self.step // self.steps_per_epoch)  # 1-based
        done = self.step >= self.total_steps
        train_metrics = self.epoch.close(self.dist)
        self._check_finite(train_metrics["train_loss"])
        self.closed_step = self.step
        if not (epoch % t.eval_every == 0 or done):
            if epoch % t.checkpoint_every == 0:
                self.save()
            return
        metrics = {"epoch": epoch, "step": self.step, **train_metrics, **self.evaluate(),
                   "lr": self.lr, "time": self.elapsed()}
        # `best` is chosen on val only, never on the test set
        best = metrics.get("val_acc", -1.0) > self.best_acc
        self.best_acc = max(self.best_acc, metrics.get("val_acc", -1.0))
        self.last_metrics = metrics
        for c in self.callbacks:
            c.after_eval(self, metrics, best)
        if best or epoch % t.checkpoint_every == 0 or done:
            self.save(best=best)

    def finished(self) -> bool:
        """Every step taken and the last epoch closed: a resume has nothing to do."""
        return self.step >= self.total_steps and self.closed_step >= self.step

    def summary(self) -> dict[str, Any]:
        """summary.json: the whole run, across resumes (wall time included)."""
        m = self.last_metrics
        return {
            "status": "finished",
            "steps": self.step,
            "epochs": self.step / self.steps_per_epoch,
            "params": sum(p.numel() for p in self.model.parameters()),
            "best_val_acc": self.best_acc if "val" in self.eval_loaders else None,
            **{f"final_{split}_{k}": m.get(f"{split}_{k}")
               for split in self.eval_loaders for k in ("acc", "loss")},
            "img_per_s": m.get("img_per_s"),  # training img/s in the last evaluated epoch
            "wall_time": self.elapsed(),
            "setup_s": self.runner.setup_s,
            "step_mode": self.runner.mode(),
        }


def progress(it: Any, enabled: bool, **kw: Any) -> Any:
    """A bar over `it` on a terminal; a log file gets only the per-evaluation lines."""
    if not enabled or not sys.stderr.isatty():
        return it
    from tqdm import tqdm

    return tqdm(it, leave=False, dynamic_ncols=True, **kw)
