"""The training step: compiled, replayed as a CUDA graph, falling back; checkpoints in the background."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from tests.helpers import tiny_recipe
from zoo import checkpoint, registry
from zoo.cli import cli
from zoo.recipe import load_recipe
from zoo.train.optim import make_optimizer, set_lr
from zoo.train.step import GraphStep
from zoo.train.trainer import Trainer

NO_AUTOAUGMENT = "[{random_crop: {padding: 2}}, hflip, {mixup: {p: 0.5}}, {cutmix: {p: 0.5}}]"


def trainer(tmp_path, *overrides: str, augment: str = NO_AUTOAUGMENT, plugins=()) -> Trainer:
    registry.discover(list(plugins))
    return Trainer(load_recipe(tiny_recipe(tmp_path, augment=augment), list(overrides)), None)


def steps(t: Trainer, n: int) -> torch.Tensor:
    batches = t.train_loader.epoch(0)
    return torch.stack([t.train_step(*next(batches))[0] for _ in range(n)])


# ---------------------------------------------------------------------------------------
# compile (inductor runs on the CPU too)


def test_compiled_steps_match_eager_steps_on_cpu(tmp_path):
    eager = trainer(tmp_path, "train.device=cpu")
    a = steps(eager, 4)  # before the next trainer re-seeds the global generators
    compiled = trainer(tmp_path, "train.device=cpu", "train.compile=true")
    b = steps(compiled, 4)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert compiled.runner.mode() == "compiled" and compiled.runner.setup_s > 0
    assert eager.runner.mode() == "eager"


def test_compile_cuda_compiles_only_on_cuda(tmp_path):
    assert trainer(tmp_path, "train.device=cpu", "train.compile=cuda").runner.mode() == "eager"
    result = CliRunner().invoke(cli, ["show", str(tiny_recipe(tmp_path)), "--set", "train.compile=gpu"])
    assert result.exit_code == 2
    assert "train.compile: 'gpu' is not one of true, false, cuda" in result.output


def test_a_failing_compile_falls_back_to_eager_with_one_line(tmp_path, monkeypatch, capsys):
    def broken_compile(module, **kw):
        def call(*args, **kwargs):
            raise RuntimeError("no C++ compiler\nsecond line")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    t = trainer(tmp_path, "train.device=cpu", "train.compile=true")
    assert torch.isfinite(steps(t, 2)).all()
    err = capsys.readouterr().err
    assert "warning: torch.compile failed (RuntimeError: no C++ compiler); training without it" in err
    assert "second line" not in err and t.runner.mode() == "eager"


def test_an_error_of_the_step_itself_is_not_blamed_on_compile(tmp_path, capsys):
    t = trainer(tmp_path, "train.device=cpu", "train.compile=true")
    images, labels = next(t.train_loader.epoch(0))
    with pytest.raises(RuntimeError):
        t.train_step(images[:, :2], labels)  # two channels for a three-channel model
    assert "torch.compile failed" not in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# the learning rate as a tensor, and when there is no graph


def test_set_lr_fills_tensor_rates_in_place():
    p = torch.nn.Parameter(torch.zeros(2))
    rate = torch.tensor(1.0)
    opt = torch.optim.AdamW([{"params": [p], "lr": rate}, {"params": [], "lr": 0.5}],
                            capturable=True)
    set_lr(opt, 0.25)
    assert opt.param_groups[0]["lr"] is rate and rate.item() == 0.25
    assert opt.param_groups[1]["lr"] == 0.25


def test_optimizer_keeps_a_float_rate_off_cuda(tmp_path):
    r = load_recipe(tiny_recipe(tmp_path), ["train.device=cpu"])
    model = torch.nn.Linear(2, 2)
    model.no_weight_decay = lambda: set()
    opt = make_optimizer(model, r, torch.device("cpu"), lr_tensor=True)
    assert isinstance(opt.param_groups[0]["lr"], float) and not opt.defaults["fused"]


@pytest.mark.parametrize("overrides, why", [
    ([], "not on CUDA"),
])
def test_step_mode_says_why_there_is_no_graph(tmp_path, overrides, why):
    t = trainer(tmp_path, "train.device=cpu", "train.cuda_graph=true", *overrides)
    assert t.runner.mode() == f"eager, no CUDA graph: {why}"
    assert not isinstance(t.runner.run, GraphStep)


def test_dry_run_shows_how_the_step_runs(tmp_path):
    result = CliRunner().invoke(cli, ["run", str(tiny_recipe(tmp_path)), "--dry-run",
                                      "--set", "train.device=cpu", "--set", "train.cuda_graph=true"])
    assert result.exit_code == 0, result.output
    assert "step:       eager, no CUDA graph: not on CUDA" in result.output


# ---------------------------------------------------------------------------------------
# checkpoints written in the background


def test_saver_writes_the_state_as_it_was_when_submitted(tmp_path):
    weights = {"w": torch.arange(4.0)}
    state = {"step": 3, "nested": [torch.ones(2)]}
    saver = checkpoint.Saver()
    saver.submit(tmp_path, 3, weights, state)
    weights["w"].add_(100)  # training goes on changing the tensors in place
    state["nested"][0].zero_()
    saver.wait()
    last = tmp_path / "last"
    assert torch.equal(checkpoint.load_weights(last / checkpoint.MODEL_FILE)["w"], torch.arange(4.0))
    assert torch.equal(checkpoint.load_state(last / checkpoint.STATE_FILE)["nested"][0], torch.ones(2))


def test_saver_raises_the_writers_error_at_wait(tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save", full_disk)
    saver = checkpoint.Saver()
    saver.submit(tmp_path, 1, {"w": torch.zeros(1)}, {})
    with pytest.raises(OSError, match="No space left"):
        saver.wait()
    saver.wait()  # reported once


# ---------------------------------------------------------------------------------------
# CUDA graphs (need a GPU: benchmarks/gpu_check.py runs these)

SYNCING_OP = '''
from zoo.registry import register

@register("augment", "syncing_flip")
class SyncingFlip:
    """Claims to be capturable but reads a value on the host."""
    capturable = True

    def __call__(self, x, y):
        return (x.flip(3) if x.mean().item() > -1 else x), y
'''


@pytest.mark.cuda
@pytest.mark.parametrize("compiled", [False, True])
def test_graph_steps_match_eager_steps(tmp_path, compiled):
    sets = ["train.device=cuda", "train.amp=bf16", f"train.compile={str(compiled).lower()}",
            "train.seed=3"]
    eager = trainer(tmp_path, *sets, augment="[hflip]")
    a = steps(eager, 8)  # before the next trainer re-seeds the global generators
    graph = trainer(tmp_path, *sets, "train.cuda_graph=true", augment="[hflip]")
    b = steps(graph, 8)
    assert graph.runner.run.captured == "prepare + update"
    assert graph.runner.mode() == ("compiled" if compiled else "eager") + ", prepare + update in one CUDA graph"
    torch.testing.assert_close(a, b, atol=2e-2, rtol=2e-2)  # same batches, same draws


@pytest.mark.cuda
def test_graph_replays_learn(tmp_path):
    t = trainer(tmp_path, "train.device=cuda", "train.amp=bf16", "train.cuda_graph=true",
                "train.epochs=4", "data.dataset={shapes: {train_size: 4096, val_size: 512}}",
                augment=NO_AUTOAUGMENT)
    before = t.evaluate()["val_loss"]
    for epoch in range(4):
        t.train_epoch(epoch, 0)
    after = t.evaluate()
    assert t.runner.run.graph is not None
    assert after["val_loss"] < before - 0.15 and after["val_acc"] > 0.15, (before, after)


@pytest.mark.cuda
def test_an_op_that_syncs_is_kept_out_of_the_graph_with_one_line(tmp_path, capsys):
    plugin = tmp_path / "syncing_flip.py"
    plugin.write_text(SYNCING_OP)
    t = trainer(tmp_path, "train.device=cuda", "train.cuda_graph=true", augment="[syncing_flip]",
                plugins=[plugin])
    losses = steps(t, 6)
    assert torch.isfinite(losses).all() and t.runner.run.captured == "update"
    err = capsys.readouterr().err
    assert "could not capture the step with its augmentations as a CUDA graph" in err
    assert "keeping the augmentations out of it" in err


@pytest.mark.cuda
@pytest.mark.parametrize("overrides, why", [
    (["train.amp=fp16"], "fp16 loss scaling"),
    (["train.optimizer=sgd"], "only AdamW"),
])
def test_no_graph_where_it_cannot_work(tmp_path, overrides, why):
    t = trainer(tmp_path, "train.device=cuda", "train.cuda_graph=true", *overrides)
    assert why in t.runner.mode()
    assert torch.isfinite(steps(t, 2)).all()
