"""`zoo run` from a recipe to a finished run: DDP setup under torchrun, the run-dir lock,
resume (and a resume that trains longer), exit codes, and what the console says at the
start and the end."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch.distributed as dist

from zoo import checkpoint
from zoo.device import Dist, setup_distributed
from zoo.errors import ZooError, first_line
from zoo.io import atomic_write
from zoo.recipe import apply_overrides, parse_override
from zoo.registry import spec_name
from zoo.runs import RECIPE_FILE, lock_run
from zoo.schema import Recipe, from_dict
from zoo.train.trainer import Interrupted, Trainer

LENGTHEN = ("train.epochs", "train.max_steps")  # what `zoo run --resume RUN --set` may change


def fit(recipe: Recipe, run_dir: Path | None, resume: bool = False,
        lengthened: bool = False) -> dict[str, Any]:
    """Train `recipe` into `run_dir` (resuming it if asked; `lengthened`: with the longer
    schedule of `lengthen`, written to the run's recipe.yaml first); the `zoo run` entry point."""
    d = setup_distributed(recipe.train.device)
    if d.world > 1:
        box = [str(run_dir) if run_dir else None]
        dist.broadcast_object_list(box, src=0)
        run_dir = Path(box[0])
    owner = d.main and run_dir is not None
    with lock_run(run_dir) if owner else contextlib.nullcontext():  # before any work
        if owner and lengthened:  # a later plain --resume continues this schedule
            atomic_write(run_dir / RECIPE_FILE, recipe.to_yaml())
        return _fit_locked(recipe, run_dir, resume, d)


def lengthen(recipe: Recipe, overrides: Sequence[str]) -> Recipe:
    """`recipe` with the `--set` of `zoo run --resume RUN --set ...` applied, where they only
    lengthen the schedule (LENGTHEN, not lowered): anything else would train the checkpoint
    on with a recipe it was not trained with, and the run would no longer say what it is.

    The learning rate is a function of the step and the total steps, so the cosine is
    recomputed for the new length: from the resumed step on the rate follows the longer
    curve (a finished run's rate rises from min_lr to where that curve is: a warm restart).
    """
    for item in overrides:
        key = ".".join(parse_override(item)[0])
        if key not in LENGTHEN:
            raise ZooError(f"--set {key}: a resumed run keeps the recipe its checkpoint was "
                           f"trained with; only {' and '.join(LENGTHEN)} may grow, to train "
                           "longer; to change anything else, start a new run (model.init: RUN "
                           "starts from its weights)")
    longer = from_dict(apply_overrides(recipe.to_dict(), list(overrides)), "--set")
    old, new = recipe.train, longer.train
    if new.epochs < old.epochs:
        raise ZooError(f"--set train.epochs={new.epochs}: the run has {old.epochs}; a resume may "
                       "lengthen the schedule, not shorten it")
    if new.max_steps is not None and (old.max_steps is None or new.max_steps < old.max_steps):
        raise ZooError(f"--set train.max_steps={new.max_steps}: the run has "
                       f"{old.max_steps or 'no limit (null)'}; a resume may raise or lift (null) "
                       "the limit, not lower it")
    return longer


def _fit_locked(recipe: Recipe, run_dir: Path | None, resume: bool, d: Dist) -> dict[str, Any]:
    trainer = Trainer(recipe, run_dir, d, init=not resume)
    if resume:
        restore(trainer, run_dir)
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


def closing_lines(summary: dict[str, Any], recipe: Recipe, run_dir: Path | None) -> str:
    """The end of `zoo run`: final (and best) accuracy, wall time, and what to do next."""
    accs = [f"final {split} acc {summary[f'final_{split}_acc']:.4f}"
            for split in recipe.data.eval_splits if summary.get(f"final_{split}_acc") is not None]
    if summary.get("best_val_acc") is not None:
        accs.append(f"best val acc {summary['best_val_acc']:.4f}")
    if summary.get("best_test_acc") is not None:
        accs.append(f"best test acc {summary['best_test_acc']:.4f} (chosen on the test set, "
                    "as the papers report it)")
    minutes, seconds = divmod(round(summary["wall_time"]), 60)
    lines = [f"done: {'  '.join(accs)}  ({summary['steps']} steps in {minutes}m{seconds:02d}s)"]
    if run_dir is not None:
        lines += [f"run: {run_dir}", "next:",
                  f"  zoo eval {run_dir} --split {recipe.data.eval_splits[-1]}",
                  f"  zoo viz {run_dir}",
                  f"  tensorboard --logdir {run_dir}"]
    return "\n".join(lines)


def model_line(model: Any) -> str:
    """Parameters and forward FLOPs of one image (torch's FlopCounterMode: 2 per
    multiply-add of every matmul and convolution), e.g. `2.73M parameters, 0.40 GFLOPs/image`."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    cfg = model.cfg
    was = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, cfg.in_chans, cfg.img_size, cfg.img_size))
    model.train(was)
    params = sum(p.numel() for p in model.parameters())
    return f"{params / 1e6:.2f}M parameters, {counter.get_total_flops() / 1e9:.3g} GFLOPs/image"


def check(recipe: Recipe, init: bool = True) -> list[str]:
    """What `zoo show` and `zoo run --dry-run` check past the schema, before any data is
    read: model.init is there (with `init`), the model builds, and each of log.visualizers
    can draw it. Returns the warning lines (a figure that cannot be drawn is skipped in
    training, never an error)."""
    from zoo.finetune import check_init
    from zoo.model import build_model, ignored_keys
    from zoo.viz.figures import build_visualizers, drawable

    if init:
        check_init(recipe.model)
    model = build_model(recipe.model)
    arch = spec_name(recipe.model.arch)
    warnings = [f"model.{k}: arch '{arch}' does not use it (zoo list arch shows what it reads)"
                for k in ignored_keys(recipe.model)]
    drawable(build_visualizers(recipe.log.visualizers, "log.visualizers"), model, warnings.append)
    return warnings


def describe_model(recipe: Recipe) -> str:
    """The arch and the plugins it reads, in a line: `vit: 9 blocks, tokenizer patch, ...`."""
    m = recipe.model
    arch = spec_name(m.arch)
    if arch != "vit":
        return f"arch {m.arch}"
    return (f"vit: {m.depth} blocks, tokenizer {m.tokenizer}, attention {m.attention}, "
            f"posemb {m.posemb}, pool {m.pool}")


def dry_run(recipe: Recipe, init: bool = True) -> str:
    """Build data and model (with model.init's weights if `init`) without training; a
    summary of what `zoo run` would do. Nothing is downloaded: absent data is described by
    its known size, with how to get it."""
    skipped = check(recipe, init)
    trainer = Trainer(recipe, None, init=init, offline=True)
    splits = {"train": trainer.train_data, **trainer.eval_data}
    sizes = " / ".join(f"{len(d)} {split}" for split, d in splits.items())
    r = recipe.data
    repeats = "" if r.repeats == 1 else (f" (x{r.repeats} per epoch)" if r.repeat_mode == "copies"
                                         else f" ({r.repeats} passes per epoch)")
    missing = next((d.missing for d in splits.values() if getattr(d, "missing", None)), None)
    lines = [
        f"recipe:     {recipe.name}",
        f"device:     {trainer.device}",
        f"data:       {sizes} images{repeats}, {len(trainer.train_data.classes)} classes"
        + (" (its known size: the files are not here)" if missing else ""),
        *([f"missing:    {missing}"] if missing else []),
        f"model:      {model_line(trainer.model)}; {describe_model(recipe)}",
        f"schedule:   {trainer.total_steps} steps ({trainer.steps_per_epoch}/epoch), "
        f"warmup {trainer.warmup_steps}, batch {recipe.data.batch_size}, amp {recipe.train.amp}",
        f"step:       {trainer.runner.mode()}",
        f"augment:    {recipe.data.augment or 'none'}",
        f"figures:    {', '.join(map(spec_name, recipe.log.visualizers)) or 'none'}",
    ]
    return "\n".join(lines + [f"warning:    {w}" for w in skipped])


def restore(trainer: Trainer, run_dir: Path) -> None:
    """Load the run's newest checkpoint into `trainer`: weights, EMA and training state."""
    ckpt = checkpoint.newest(run_dir / "checkpoints")
    if ckpt is None:
        raise ZooError(
            f"{run_dir}: no checkpoint to resume from yet (checkpoints/last is missing); "
            "start the run again"
        )
    recipe_file = run_dir / RECIPE_FILE
    checkpoint.load_model(trainer.model, ckpt / checkpoint.MODEL_FILE, recipe_file)
    if trainer.ema:
        checkpoint.load_model(trainer.ema.model, ckpt / checkpoint.EMA_FILE, recipe_file)
    state_file = ckpt / checkpoint.STATE_FILE
    try:
        trainer.load_state_dict(checkpoint.load_state(state_file, checkpoint.TRAINING_STATE))
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ZooError(f"{state_file}: training state does not fit this run "
                       f"({first_line(e)}); resume with the recipe it was saved with") from e
