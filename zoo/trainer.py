"""Training: plain PyTorch, every piece of state saved and restored whole.

`fit(recipe, run_dir)` trains with AdamW or SGD, warmup + cosine, label smoothing, gradient
clipping, AMP, optional torch.compile and EMA, evaluates every `eval_every` epochs, logs to
TensorBoard and metrics.jsonl, and checkpoints so that `--resume` continues bit for bit.
Under `torchrun` the same code trains with DistributedDataParallel; rank 0 logs and saves.

The schedule and the data order are pure functions of (seed, epoch, step), so the state to
save is small: weights, optimizer, scaler, EMA, RNG states, epoch and step.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from zoo import checkpoint, data
from zoo.device import Dist, pick_device, seed_everything, setup_distributed, sync
from zoo.errors import ZooError, first_line
from zoo.io import append_jsonl, atomic_write, read_jsonl, write_json
from zoo.model import build_model
from zoo.runs import METRICS_FILE, RECIPE_FILE, SUMMARY_FILE, lock_run
from zoo.schema import Recipe
from zoo.step import GraphStep

LOG_EVERY = 25  # steps between host syncs for the progress bar and the finite-loss check


class Diverged(ZooError):
    """The loss became NaN or infinite."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; the trainer saved and the process should exit."""

    def __init__(self, signum: int):
        self.signum = signum


def lr_at(step: int, total: int, warmup: int, lr: float, min_lr: float) -> float:
    """Linear warmup from lr/warmup to lr, then cosine decay to min_lr (Loshchilov & Hutter 2017)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Cross-entropy against soft targets (mixup/cutmix), with label smoothing (Szegedy et al. 2016)."""
    if smoothing:
        target = target * (1 - smoothing) + smoothing / target.shape[1]
    return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


class EMA:
    """Exponential moving average of the weights (Polyak & Juditsky 1992); eval uses it."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema = list(self.model.state_dict().values())
        cur = list(model.state_dict().values())
        floats = [(e, c) for e, c in zip(ema, cur, strict=True) if e.dtype.is_floating_point]
        torch._foreach_lerp_([e for e, _ in floats], [c for _, c in floats], 1 - self.decay)


class Trainer:
    """One run: data, model, optimiser and the loop, with state that checkpoints whole."""

    def __init__(self, recipe: Recipe, run_dir: Path | None, dist_info: Dist | None = None):
        self.recipe = recipe
        self.run_dir = run_dir
        self.dist = dist_info or Dist()
        t = recipe.train
        if recipe.data.batch_size % self.dist.world:
            raise ZooError(
                f"data.batch_size: {recipe.data.batch_size} is not divisible by the "
                f"{self.dist.world} processes; the batch size is global"
            )
        self.device = pick_device(t.device, self.dist)
        seed_everything(t.seed, t.deterministic)
        sets = data.build_datasets(recipe.data.dataset, ["train", *recipe.data.eval_splits],
                                   recipe.model.img_size, recipe.data.root)
        self.train_data = sets.pop("train")
        self.eval_data = sets  # split -> data, in the recipe's order (data.eval_splits)
        chans = len(self.train_data.mean)  # one mean per channel, for every dataset kind
        if chans != recipe.model.in_chans:
            raise ZooError(f"model.in_chans: {recipe.model.in_chans}, but the dataset's images "
                           f"have {chans} channels; set --set model.in_chans={chans}")
        n_cls = len(self.train_data.classes)
        if n_cls != recipe.model.num_classes:
            raise ZooError(
                f"model.num_classes: {recipe.model.num_classes}, but the dataset has {n_cls} "
                f"classes; set --set model.num_classes={n_cls}"
            )
        self.augment = data.build_augment(recipe.data.augment, n_cls, recipe.model.img_size)
        self.train_loader = data.make_loader(
            self.train_data, batch_size=recipe.data.batch_size // self.dist.world,
            device=self.device, train=True, seed=t.seed, rank=self.dist.rank, world_size=self.dist.world,
            num_workers=recipe.data.num_workers, on_device=recipe.data.on_device,
            repeats=recipe.data.repeats,
        )
        self.eval_loaders = {
            split: data.make_loader(
                d, batch_size=recipe.data.eval_batch_size, device=self.device, train=False,
                seed=t.seed, rank=self.dist.rank, world_size=self.dist.world,
                num_workers=recipe.data.num_workers, on_device=recipe.data.on_device,
            ) for split, d in self.eval_data.items()
        }
        self.mean, self.std = self.train_data.mean, self.train_data.std

        self.model = build_model(recipe.model).to(self.device)
        self.ema = EMA(self.model, t.ema) if t.ema else None
        self.graph_off = self._why_no_graph()
        self.optimizer = make_optimizer(self.model, recipe, self.device,
                                        lr_tensor=t.cuda_graph and not self.graph_off)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.amp)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=t.amp == "fp16")
        self.ddp: nn.Module = self.model
        if self.dist.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        compile_here = t.compile is True or (t.compile == "cuda" and self.device.type == "cuda")
        self.net = torch.compile(self.ddp) if compile_here else self.ddp
        self.run_step: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]] = (
            self._eager_step)
        if t.cuda_graph and not self.graph_off:
            self.run_step = GraphStep(
                self.prepare, self.update, note=self.warn,
                capture_prepare=all(getattr(op, "capturable", False) for op in self.augment.ops),
            )
        self.setup_s: float | None = None  # compile, warm-up and capture: the first steps
        self.saver = checkpoint.Saver()
        self._setup_tic: float | None = None

        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise ZooError(
                f"data.batch_size: {recipe.data.batch_size} is larger than the training set "
                f"({len(self.train_data)} images); lower it"
            )
        self.total_steps = t.epochs * self.steps_per_epoch
        if t.max_steps is not None:
            self.total_steps = min(self.total_steps, t.max_steps)
        self.warmup_steps = min(int(t.warmup_epochs * self.steps_per_epoch), self.total_steps)
        self.step = 0  # optimizer steps taken
        self.lr = t.lr  # the schedule's value at the last step
        self.best_acc = -1.0
        # the epoch under way, kept across a resume: loss * n, correct, n, grad-norm sum, steps
        self.epoch_stats = torch.zeros(5, device=self.device)
        self.epoch_seconds = 0.0  # its training time so far
        self.closed_step = 0  # the step at which the last epoch's end was handled
        self.last_metrics: dict[str, Any] = {}  # the last evaluation's row of metrics.jsonl
        self.train_seconds = 0.0  # wall time of the run's earlier segments (before a resume)
        self._fit_tic: float | None = None
        self.writer = None
        self._signal: int | None = None
        self._logged_batch = False

    # -- state ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        return {
            "step": self.step,
            "best_acc": self.best_acc,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": cuda_rng,
            "world_size": self.dist.world,
            "epoch_stats": self.epoch_stats.tolist(),  # global: reduced before a signal's save
            "epoch_seconds": self.epoch_seconds,
            "closed_step": self.closed_step,
            "last_metrics": self.last_metrics,
            "train_seconds": self.elapsed(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.best_acc = float(state["best_acc"])
        # checkpoints from before these keys: the epoch was closed when they were saved
        stats = state.get("epoch_stats") if self.dist.main else None  # counted on one rank
        self.epoch_stats = torch.tensor(stats or [0.0] * 5, device=self.device)
        self.epoch_seconds = float(state.get("epoch_seconds", 0.0))
        self.closed_step = int(state.get("closed_step", self.step))
        self.last_metrics = dict(state.get("last_metrics", {}))
        self.train_seconds = float(state.get("train_seconds", 0.0))
        lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        for g, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            g["lr"] = lr  # keep our own (device) rate; the schedule sets its value each step
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

    def restore(self, run_dir: Path) -> None:
        ckpt = checkpoint.newest(run_dir / "checkpoints")
        if ckpt is None:
            raise ZooError(
                f"{run_dir}: no checkpoint to resume from yet (checkpoints/last is missing); "
                "start the run again"
            )
        recipe_file = run_dir / RECIPE_FILE
        checkpoint.load_model(self.model, ckpt / checkpoint.MODEL_FILE, recipe_file)
        if self.ema:
            checkpoint.load_model(self.ema.model, ckpt / checkpoint.EMA_FILE, recipe_file)
        state_file = ckpt / checkpoint.STATE_FILE
        try:
            self.load_state_dict(checkpoint.load_state(state_file, checkpoint.TRAINING_STATE))
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ZooError(f"{state_file}: training state does not fit this run "
                           f"({first_line(e)}); resume with the recipe it was saved with") from e
        if self.dist.main:  # evaluations after the checkpoint will be redone
            metrics = run_dir / METRICS_FILE
            rows = [r for r in read_jsonl(metrics) if r.get("step", 0) <= self.step]
            atomic_write(metrics, "".join(json.dumps(r) + "\n" for r in rows))

    def figures(self) -> dict[str, torch.Tensor]:
        """Images for TensorBoard: the first augmented training batch (once), then the
        recipe's visualizers on the first evaluated split's fixed images at every evaluation.

        Drawn under a forked RNG so that logging never changes what the run trains on.
        """
        from zoo.tblog import image_grid

        out: dict[str, torch.Tensor] = {}
        if not self._logged_batch:
            devices = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                images, labels = next(iter(self.train_loader.epoch(0, 0)))
                y = F.one_hot(labels, self.recipe.model.num_classes).float()
                x, _ = self.augment(data.to_float(images), y)
            out["train/augmented_batch"] = image_grid(x[:64])
            self._logged_batch = True
        if self.recipe.log.visualizers:
            from zoo.viz import first_images, tensorboard_images

            model = self.ema.model if self.ema else self.model  # the weights evaluate() reads
            images, names = first_images(next(iter(self.eval_data.values())),
                                         self.recipe.log.viz_images)
            was_training = model.training
            model.eval()
            with torch.no_grad():
                out.update(tensorboard_images(model, images, self.mean, self.std,
                                              self.recipe.log.visualizers, names))
            model.train(was_training)
        return out

    # -- the loop -------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signal = signum

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
            logits = self.net(x)
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

    def _eager_step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.update(*self.prepare(images, labels))

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        t = self.recipe.train
        self.lr = lr_at(self.step, self.total_steps, self.warmup_steps, t.lr, t.min_lr)
        set_lr(self.optimizer, self.lr)
        if self.setup_s is not None:
            out = self.run_step(images, labels)
        else:  # compiling, warming up and capturing: timed, and a failed compile falls back
            self._setup_tic = self._setup_tic or time.perf_counter()
            out = self._first_steps(images, labels)
            if self._setup_done():
                sync(self.device)
                self.setup_s = time.perf_counter() - self._setup_tic
                if self.dist.main and (self.net is not self.ddp or isinstance(self.run_step, GraphStep)):
                    self.warn(f"training step ready in {self.setup_s:.1f} s "
                              f"({self.step_mode()})", prefix="")
        self.step += 1
        return out

    def _first_steps(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.net is self.ddp:
            return self.run_step(images, labels)
        try:
            return self.run_step(images, labels)
        except Exception as e:  # the compiler's failure, or the step's own error
            self.net = self.ddp
            out = self.run_step(images, labels)  # an error of the step itself raises here
            self.warn(f"torch.compile failed ({first_line(e)}); training without it")
            return out

    def _setup_done(self) -> bool:
        step = self.run_step
        return not isinstance(step, GraphStep) or step.graph is not None or not step.levels

    def step_mode(self) -> str:
        """How the step runs, in words: compiled or eager, and what a CUDA graph holds."""
        mode = "compiled" if self.net is not self.ddp else "eager"
        step = self.run_step
        if isinstance(step, GraphStep):
            if step.captured:
                return f"{mode}, {step.captured} in one CUDA graph"
            if step.levels:
                return f"{mode}, one CUDA graph after {step.warmup} warm-up steps"
            return f"{mode}, no CUDA graph: its capture failed"
        return mode + (f", no CUDA graph: {self.graph_off}" if self.recipe.train.cuda_graph
                       and self.graph_off else "")

    def warn(self, message: str, prefix: str = "warning: ") -> None:
        if self.dist.main:
            print(f"{prefix}{message}", file=sys.stderr, flush=True)

    def _why_no_graph(self) -> str:
        """Why a requested CUDA graph cannot be used here ('' when it can)."""
        t = self.recipe.train
        if self.device.type != "cuda":
            return "not on CUDA"
        if self.dist.world > 1:
            return "DistributedDataParallel"
        if t.amp == "fp16":
            return "fp16 loss scaling checks for overflow on the host; use amp bf16"
        if t.optimizer != "adamw":
            return "only AdamW takes its learning rate as a device tensor"
        return ""

    def train_epoch(self, epoch: int, start_step: int) -> None:
        """Train epoch `epoch` from `start_step` on (or to max_steps, or to a signal),
        adding to the epoch's statistics; `close_epoch` turns them into metrics."""
        self.model.train()
        stats = self.epoch_stats
        tic = time.perf_counter()
        batches = self.train_loader.epoch(epoch, start_step)
        bar = progress(
            batches, self.recipe.log.progress and self.dist.main,
            total=self.steps_per_epoch - start_step, desc=f"epoch {epoch + 1}/{self.recipe.train.epochs}",
        )
        try:
            for images, labels in bar:
                if self.step >= self.total_steps:
                    break
                loss, correct, grad_norm = self.train_step(images, labels)
                n = labels.shape[0]
                stats[0] += loss * n  # on the device: no host copies per step
                stats[1] += correct
                stats[2] += n
                stats[3] += grad_norm.float()
                stats[4] += 1
                if self.step % LOG_EVERY == 0:
                    self._check_finite(stats[0])
                    if hasattr(bar, "set_postfix"):
                        s = stats.tolist()
                        seconds = self.epoch_seconds + time.perf_counter() - tic
                        bar.set_postfix(
                            loss=f"{s[0] / s[2]:.3f}", acc=f"{s[1] / s[2]:.3f}",
                            lr=f"{self.lr:.2e}",
                            img_s=f"{s[2] * self.dist.world / seconds:.0f}",
                        )
                if self._stop_requested():
                    break
        finally:
            self.epoch_seconds += time.perf_counter() - tic

    def close_epoch(self) -> dict[str, float]:
        """The epoch's training metrics (over every rank, and every segment of a resumed
        epoch); the statistics start again from zero."""
        stats = self.reduced_epoch_stats().tolist()
        self._check_finite(torch.tensor(stats[0]))
        loss, correct, n, grad, steps = stats
        out = {
            "train_loss": loss / max(n, 1),
            "train_acc": correct / max(n, 1),
            "grad_norm": grad / max(steps, 1),
            "img_per_s": n / self.epoch_seconds if self.epoch_seconds > 0 else 0.0,
            "steps": int(round(steps / self.dist.world)),
        }
        self.epoch_stats.zero_()
        self.epoch_seconds = 0.0
        return out

    def reduced_epoch_stats(self) -> torch.Tensor:
        """The epoch's statistics summed over ranks (every rank must call this)."""
        if self.dist.world > 1:
            dist.all_reduce(self.epoch_stats)
            if not self.dist.main:  # one rank keeps the global sums; the others start anew
                self.epoch_stats.zero_()
        return self.epoch_stats

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
        if flag.item() and self._signal is None:
            self._signal = signal.SIGTERM
        return bool(flag.item())

    def _check_finite(self, loss_sum: torch.Tensor) -> None:
        if not torch.isfinite(loss_sum):
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
            loss, acc = self.evaluate_split(loader)
            out.update({f"{split}_loss": loss, f"{split}_acc": acc})
        return out

    @torch.no_grad()
    def evaluate_split(self, loader: Any) -> tuple[float, float]:
        """(mean loss, accuracy) over one split, with the EMA weights when there are any."""
        model = self.ema.model if self.ema else self.model
        model.eval()
        sums = torch.zeros(3, device=self.device)
        for images, labels in loader.epoch(0, 0):
            x = data.normalize(data.to_float(images), self.mean, self.std)
            with self.autocast():
                logits = model(x)
            loss = F.cross_entropy(logits.float(), labels, reduction="sum")
            correct = (logits.argmax(-1) == labels).sum()
            sums[0] += loss
            sums[1] += correct
            sums[2] += labels.shape[0]
        if self.dist.world > 1:
            dist.all_reduce(sums)
        s = sums.tolist()
        return s[0] / max(s[2], 1), s[1] / max(s[2], 1)

    def fit(self) -> dict[str, Any]:
        log = self.dist.main and self.run_dir is not None
        if log:
            from zoo import tblog

            self.writer = tblog.open_writer(self.run_dir, self.recipe, self.step) if self.recipe.log.tensorboard else None
            write_json(self.run_dir / data.DATA_FILE, data.describe(self.train_data))
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        self._fit_tic = time.perf_counter()
        try:
            while True:
                # also an epoch end owed from before a resume (a signal on its last step)
                if self.step > self.closed_step and self.at_epoch_end():
                    self.end_epoch(log)
                if self.step >= self.total_steps:
                    break
                epoch, start = divmod(self.step, self.steps_per_epoch)
                self.train_epoch(epoch, start)
                if self._signal is not None:
                    self.reduced_epoch_stats()  # the partial epoch goes into the checkpoint
                    self.save()
                    raise Interrupted(self._signal)
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
            self.saver.wait()  # the last checkpoint is on disk before anyone reads it
        summary = self.summary()
        if log:
            if self.writer is not None:
                tblog.log_final(self.writer, self.recipe, summary)
            write_json(self.run_dir / SUMMARY_FILE, summary)
        return summary

    def at_epoch_end(self) -> bool:
        return self.step >= self.total_steps or self.step % self.steps_per_epoch == 0

    def end_epoch(self, log: bool) -> None:
        """Close the epoch that just ended: evaluate, log and checkpoint as the recipe says."""
        t = self.recipe.train
        epoch = -(-self.step // self.steps_per_epoch)  # 1-based
        done = self.step >= self.total_steps
        train_metrics = self.close_epoch()
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
        if self.dist.main:
            print(epoch_line(metrics, t.epochs, best and "val_acc" in metrics), flush=True)
        if log:
            from zoo import tblog

            append_jsonl(self.run_dir / METRICS_FILE, metrics)
            if self.writer is not None:
                tblog.log_epoch(self.writer, metrics, self.model.lambdas(), self.figures())
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
            "setup_s": self.setup_s,
            "step_mode": self.step_mode(),
        }


def make_optimizer(model: nn.Module, recipe: Recipe, device: torch.device,
                   lr_tensor: bool = False) -> torch.optim.Optimizer:
    """Weight decay on matrices only; norms, biases, tokens and position tables are exempt.

    On CUDA, AdamW is the fused kernel; `lr_tensor` makes it capturable in a CUDA graph, its
    learning rate a device tensor that `set_lr` fills in place, so replays follow the
    schedule (AdamW only; PyTorch refuses to capture a step that is not `capturable`).
    """
    t = recipe.train
    skip = model.no_weight_decay()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, nesterov=True)
    fused = device.type == "cuda"
    graph = lr_tensor and fused
    lr = torch.tensor(t.lr, device=device) if graph else t.lr
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(t.betas), fused=fused or None,
                             capturable=graph)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's value into every group: in place where the rate is a device tensor."""
    for g in optimizer.param_groups:
        if isinstance(g["lr"], torch.Tensor):
            g["lr"].fill_(lr)
        else:
            g["lr"] = lr


def progress(it: Any, enabled: bool, **kw: Any) -> Any:
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, leave=False, dynamic_ncols=True, **kw)


def fit(recipe: Recipe, run_dir: Path | None, resume: bool = False) -> dict[str, Any]:
    """Train `recipe` into `run_dir` (resuming it if asked); the `zoo run` entry point."""
    d = setup_distributed(recipe.train.device)
    if d.world > 1:
        box = [str(run_dir) if run_dir else None]
        dist.broadcast_object_list(box, src=0)
        run_dir = Path(box[0])
    lock = lock_run(run_dir) if d.main and run_dir is not None else None  # before any work
    try:
        return _fit_locked(recipe, run_dir, resume, d)
    finally:
        if lock is not None:
            lock.close()


def _fit_locked(recipe: Recipe, run_dir: Path | None, resume: bool, d: Dist) -> dict[str, Any]:
    trainer = Trainer(recipe, run_dir, d)
    if resume:
        trainer.restore(run_dir)
        if trainer.finished():  # nothing to train: leave summary.json as it is
            if d.main:
                print(f"{run_dir}: finished already ({trainer.step} steps); nothing to do. To "
                      "train longer: zoo run --resume RUN --set train.epochs=N")
            return trainer.summary()
    try:
        summary = trainer.fit()
    except Interrupted as e:
        if d.main:
            print(
                f"\ninterrupted; checkpoint saved. Resume with:\n  zoo run --resume {run_dir}",
                file=sys.stderr,
            )
        sys.exit(128 + e.signum)
    if d.main:
        print(closing_lines(summary, recipe, run_dir))
    if d.world > 1:
        dist.destroy_process_group()
    return summary


def epoch_line(metrics: dict[str, Any], epochs: int, best: bool) -> str:
    """One line per evaluation, so a run shows progress with the progress bar off too."""
    evals = "  ".join(f"{split} acc {metrics[f'{split}_acc']:.4f} loss {metrics[f'{split}_loss']:.3f}"
                      for split in ("val", "test") if f"{split}_acc" in metrics)
    return (f"epoch {metrics['epoch']}/{epochs}  train loss {metrics['train_loss']:.3f} "
            f"acc {metrics['train_acc']:.4f}  {evals}  lr {metrics['lr']:.2e}  "
            f"{metrics['img_per_s']:,.0f} img/s" + ("  * best" if best else ""))


def closing_lines(summary: dict[str, Any], recipe: Recipe, run_dir: Path | None) -> str:
    """The end of `zoo run`: final (and best) accuracy, wall time, and what to do next."""
    accs = [f"final {split} acc {summary[f'final_{split}_acc']:.4f}"
            for split in recipe.data.eval_splits if summary.get(f"final_{split}_acc") is not None]
    if summary.get("best_val_acc") is not None:
        accs.append(f"best val acc {summary['best_val_acc']:.4f}")
    minutes, seconds = divmod(round(summary["wall_time"]), 60)
    lines = [f"done: {'  '.join(accs)}  ({summary['steps']} steps in {minutes}m{seconds:02d}s)"]
    if run_dir is not None:
        lines += [f"run: {run_dir}", "next:",
                  f"  zoo eval {run_dir} --split {recipe.data.eval_splits[-1]}",
                  f"  zoo viz {run_dir}",
                  f"  tensorboard --logdir {run_dir}"]
    return "\n".join(lines)


def dry_run(recipe: Recipe) -> str:
    """Build data and model without training; a summary of what `zoo run` would do."""
    trainer = Trainer(recipe, None)
    params = sum(p.numel() for p in trainer.model.parameters())
    sizes = " / ".join(f"{len(d)} {split}" for split, d in
                       {"train": trainer.train_data, **trainer.eval_data}.items())
    repeats = f" (x{recipe.data.repeats} per epoch)" if recipe.data.repeats > 1 else ""
    return "\n".join([
        f"recipe:     {recipe.name}",
        f"device:     {trainer.device}",
        f"data:       {sizes} images{repeats}, "
        f"{len(trainer.train_data.classes)} classes",
        f"model:      {params / 1e6:.2f}M parameters, {recipe.model.depth} blocks, "
        f"attention {recipe.model.attention}, posemb {recipe.model.posemb}",
        f"schedule:   {trainer.total_steps} steps ({trainer.steps_per_epoch}/epoch), "
        f"warmup {trainer.warmup_steps}, batch {recipe.data.batch_size}, amp {recipe.train.amp}",
        f"step:       {trainer.step_mode()}",
        f"augment:    {recipe.data.augment or 'none'}",
    ])
