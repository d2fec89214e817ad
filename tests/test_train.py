"""The training engine: schedule, loss, a real `zoo run`, TensorBoard output, CIFAR recipes."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import ROOT
from tests.helpers import tiny_recipe, write_cifar10
from zoo.cli import cli
from zoo.train.optim import lr_at, soft_cross_entropy

STEP_TAGS = ("step/loss", "step/lr", "step/grad_norm")

def test_lr_warmup_then_cosine_to_min():
    lrs = [lr_at(s, total=100, warmup=10, lr=1.0, min_lr=0.01) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] == pytest.approx(0.01, abs=1e-3)
    assert lr_at(55, 100, 10, 1.0, 0.0) == pytest.approx(0.5)


def test_soft_cross_entropy_matches_torch_on_hard_targets():
    logits = torch.randn(8, 5)
    labels = torch.randint(0, 5, (8,))
    ours = soft_cross_entropy(logits, F.one_hot(labels, 5).float(), 0.1)
    assert ours.item() == pytest.approx(F.cross_entropy(logits, labels, label_smoothing=0.1).item(), rel=1e-6)


def test_tiny_run_writes_the_run_dir(tmp_path):
    out = tmp_path / "run"
    augment = "[{random_crop: {padding: 2}}, hflip, {mixup: {p: 0.5}}, {cutmix: {p: 0.5}}]"
    result = CliRunner().invoke(cli, ["run", str(tiny_recipe(tmp_path, augment=augment)),
                                      "--out", str(out), "--set", "train.ema=0.99"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("step", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "img_per_s", "time"):
        assert all(math.isfinite(r[key]) for r in rows), key
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 16
    for f in ("model.safetensors", "ema.safetensors", "state.pt"):
        assert (out / "checkpoints" / "last" / f).exists()
    assert (out / "recipe.yaml").read_text().startswith("name: tiny")
    env = json.loads((out / "env.json").read_text())
    assert env["torch"] == torch.__version__


def test_quickstart_as_a_user_runs_it(quickstart_run):
    """The README's promise: >= 95% val accuracy, and TensorBoard shows scalars, images, hparams."""
    out = quickstart_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_val_acc"] >= 0.95, summary

    events = EventAccumulator(str(out), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    for tag in ("train/loss", "train/acc", "val/loss", "val/acc", "train/lr", "train/img_per_s",
                "train/grad_norm"):
        assert tag in tags["scalars"], tag
    assert len(events.Scalars("val/acc")) == summary["epochs"]
    assert {"viz/cls_attention", "viz/rollout"} <= set(tags["images"]), tags["images"]  # log.visualizers
    assert "hparams" in events.PluginTagToContent("hparams") or events.PluginTagToContent("hparams")
    assert "recipe/text_summary" in tags["tensors"]


def test_tensorboard_logs_every_n_steps_without_changing_the_run(tmp_path):
    """log.every_steps=2 on 8 steps: the step's loss, rate and gradient norm at steps 2, 4, 6
    and 8; the run trains exactly as with them off (0)."""
    runs = {}
    for every in (2, 0):
        out = runs[every] = tmp_path / f"every_{every}"
        result = CliRunner().invoke(cli, ["run", str(tiny_recipe(tmp_path)), "--out", str(out),
                                          "--set", "train.epochs=1", "--set", f"log.every_steps={every}"])
        assert result.exit_code == 0, result.output
    events = EventAccumulator(str(runs[2]), size_guidance={"scalars": 0})
    events.Reload()
    for tag in STEP_TAGS:
        assert [e.step for e in events.Scalars(tag)] == [2, 4, 6, 8], tag
    lrs = [lr_at(s - 1, total=8, warmup=4, lr=2e-3, min_lr=1e-5) for s in (2, 4, 6, 8)]
    assert [e.value for e in events.Scalars("step/lr")] == pytest.approx(lrs)
    assert all(math.isfinite(e.value) for e in events.Scalars("step/loss"))
    off = EventAccumulator(str(runs[0])).Reload().Tags()["scalars"]
    assert "train/loss" in off and not set(STEP_TAGS) & set(off)

    def trained(run):
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in ("time", "img_per_s")} for r in rows]

    assert trained(runs[2]) == trained(runs[0])
    result = CliRunner().invoke(cli, ["run", str(tiny_recipe(tmp_path)), "--dry-run",
                                      "--set", "log.every_steps=-1"])
    assert result.exit_code == 2 and "log.every_steps: -1 must be 0" in result.output


def test_diff_attention_logs_lambda_per_layer(tmp_path):
    out = tmp_path / "diff"
    result = CliRunner().invoke(cli, ["run", str(tiny_recipe(tmp_path, attention="diff")),
                                      "--out", str(out), "--set", "model.heads=1"])
    assert result.exit_code == 0, result.output
    events = EventAccumulator(str(out))
    events.Reload()
    assert {"lambda/layer_1", "lambda/layer_2"} <= set(events.Tags()["scalars"])


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_on_cpu_trains(tmp_path, amp):
    out = tmp_path / amp
    result = CliRunner().invoke(cli, ["run", str(tiny_recipe(tmp_path)), "--out", str(out),
                                      "--set", f"train.amp={amp}", "--set", "train.epochs=1"])
    assert result.exit_code == 0, result.output
    assert math.isfinite(json.loads((out / "summary.json").read_text())["final_val_loss"])


def test_sgd_and_max_steps(tmp_path):
    out = tmp_path / "sgd"
    result = CliRunner().invoke(cli, ["run", str(tiny_recipe(tmp_path)), "--out", str(out),
                                      "--set", "train.optimizer=sgd", "--set", "train.lr=0.05",
                                      "--set", "train.max_steps=5"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "summary.json").read_text())["steps"] == 5


@pytest.fixture
def cifar_root(tmp_path):
    write_cifar10(tmp_path / "cifar", n=64)
    return tmp_path / "cifar"


def test_diffvit_p2_dry_run_and_steps_on_cifar_format(tmp_path, cifar_root):
    recipe = str(ROOT / "recipes" / "diffvit_p2.yaml")
    sets = ["--set", f"data.root={cifar_root}", "--set", "data.dataset={cifar10: {download: false, val_size: 64}}",
            "--set", "log.progress=false", "--set", "train.amp=none"]
    dry = CliRunner().invoke(cli, ["run", recipe, "--dry-run", *sets])
    assert dry.exit_code == 0, dry.output
    assert "256 train / 64 test images (3 passes per epoch)" in dry.output and "diff" in dry.output
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", recipe, *sets, "--out", str(out),
                                      "--set", "train.max_steps=2", "--set", "data.batch_size=16",
                                      "--set", "model.depth=2"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "summary.json").read_text())["steps"] == 2


def test_cifar_recipes_train_on_all_50k_and_report_the_test_set(tmp_path):
    """The published protocol, on CIFAR-10's real file layout at its real size."""
    root = tmp_path / "cifar"
    write_cifar10(root, n=10_000)  # five batches of 10,000 and a test batch of 10,000
    dry = CliRunner().invoke(cli, ["run", str(ROOT / "recipes" / "vit_p4.yaml"), "--dry-run",
                                   "--set", f"data.root={root}",
                                   "--set", "data.dataset={cifar10: {download: false}}"])
    assert dry.exit_code == 0, dry.output
    assert "data:       50000 train / 10000 test images (3 passes per epoch)" in dry.output


def tiny_cifar_run(name: str, out, cifar_root, steps: int, depth: int):
    """A shipped CIFAR recipe, shrunk to a few CPU steps on generated CIFAR-10 files."""
    result = CliRunner().invoke(cli, [
        "run", str(ROOT / "recipes" / f"{name}.yaml"), "--out", str(out),
        "--set", f"data.root={cifar_root}", "--set", "data.dataset={cifar10: {download: false}}",
        "--set", "log.progress=false", "--set", "train.amp=none", "--set", f"train.max_steps={steps}",
        "--set", "data.batch_size=16", "--set", "data.repeats=1", "--set", f"model.depth={depth}"])
    assert result.exit_code == 0, result.output
    return result


def test_a_run_that_reports_test_logs_test_accuracy_and_picks_no_best_by_it(tmp_path, cifar_root):
    out = tmp_path / "run"
    result = tiny_cifar_run("vit_p4", out, cifar_root, steps=2, depth=2)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"test_acc", "test_loss"} <= set(metrics[-1]) and "val_acc" not in metrics[-1]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_test_acc"] == metrics[-1]["test_acc"] and summary["best_val_acc"] is None
    assert (out / "checkpoints" / "last").exists() and not (out / "checkpoints" / "best").exists()
    assert f"final test acc {summary['final_test_acc']:.4f}" in result.output
    # one line per evaluation (the progress bar is off), then what to do next
    assert f"epoch 1/100  train loss {metrics[-1]['train_loss']:.3f}" in result.output
    assert f"test acc {metrics[-1]['test_acc']:.4f}" in result.output
    assert f"run: {out}" in result.output and f"  zoo viz {out}" in result.output
    tags = EventAccumulator(str(out)).Reload().Tags()["scalars"]
    assert "test/acc" in tags and "val/acc" not in tags


def test_the_progress_bar_runs_on_a_terminal_only(tmp_path, monkeypatch):
    """A log file gets the per-evaluation lines alone: `zoo run ... > log` with the default
    log.progress writes no bar; on a terminal the bar is there."""
    import io
    import subprocess
    import sys

    from zoo.train.trainer import progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    assert hasattr(progress(range(3), True), "set_postfix") and progress(range(3), False) == range(3)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert progress(range(3), True) == range(3)
    recipe = tiny_recipe(tmp_path)
    logged = subprocess.run([sys.executable, "-m", "zoo", "run", str(recipe), "--out", str(tmp_path / "run"),
                             "--set", "train.epochs=1"], capture_output=True, text=True, timeout=300)
    assert logged.returncode == 0, logged.stderr
    assert "epoch 1/1  train loss" in logged.stdout + logged.stderr
    assert "\r" not in logged.stdout + logged.stderr and "it/s" not in logged.stderr


def test_a_run_keeps_its_data_stats_so_images_need_no_dataset(tmp_path, cifar_root):
    """data.json holds classes, mean and std: `zoo viz --image` works with the dataset gone,
    and a damaged data.json is a one-line error, not a silent wrong normalisation."""
    import shutil

    from PIL import Image

    out = tmp_path / "run"
    tiny_cifar_run("vit_p8", out, cifar_root, steps=1, depth=1)
    info = json.loads((out / "data.json").read_text())
    assert info["mean"] == [0.4914, 0.4822, 0.4465] and info["std"] == [0.2470, 0.2435, 0.2616]
    assert info["classes"][:2] == ["airplane", "automobile"]
    shutil.rmtree(cifar_root)
    Image.new("RGB", (40, 30), "red").save(tmp_path / "red.png")
    args = ["viz", str(out), "--image", str(tmp_path / "red.png"), "--visualizer", "rollout",
            "--out", str(tmp_path / "figs")]
    shown = CliRunner().invoke(cli, args)
    assert shown.exit_code == 0, shown.output
    assert (tmp_path / "figs" / "rollout.png").is_file()
    (out / "data.json").write_text('{"classes": [], "mean": [0.5]}')
    broken = CliRunner().invoke(cli, args)
    assert broken.exit_code == 2 and "data.json: not a valid data.json" in broken.output


@pytest.mark.parametrize("name", ["vit_lee", "vit_lite_7_4", "vit_p2", "vit_p4", "vit_p8",
                                  "diffvit_p2", "diffvit_p4", "vit_p4_fast", "diffvit_p4_fast",
                                  "quickstart"])
def test_shipped_recipes_resolve(name):
    result = CliRunner().invoke(cli, ["show", str(ROOT / "recipes" / f"{name}.yaml")])
    assert result.exit_code == 0, result.output


def test_every_cifar_recipe_names_its_source_and_number():
    """A CIFAR-10 recipe says which paper it follows and what it should reproduce (or that
    nothing was published for it)."""
    from zoo.recipe import load_recipe

    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        if "cifar10" not in str(load_recipe(path).data.dataset):
            continue
        header = "".join(line for line in path.read_text().splitlines(True) if line.startswith("#"))
        assert re.search(r"Lee et al\.|Hassani et al\.|He et al\.", header), path.name
        assert re.search(r"\d\d\.\d\d%|no published|not a reproduction", header), path.name


def test_in_chans_mismatch_is_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["run", str(tiny_recipe(tmp_path)), "--dry-run",
                                      "--set", "model.in_chans=1"])
    assert result.exit_code == 2
    assert "model.in_chans: 1, but the dataset's images have 3 channels" in result.output


def test_num_classes_mismatch_is_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["run", str(tiny_recipe(tmp_path)), "--dry-run",
                                      "--set", "model.num_classes=7"])
    assert result.exit_code == 2
    assert "model.num_classes: 7, but the dataset has 10 classes" in result.output


def test_visualizers_are_logged_to_tensorboard(tmp_path):
    out = tmp_path / "viz"
    result = CliRunner().invoke(cli, ["run", str(tiny_recipe(tmp_path)), "--out", str(out),
                                      "--set", "log.visualizers=[rollout, dino]",
                                      "--set", "log.viz_images=2", "--set", "train.epochs=1"])
    assert result.exit_code == 0, result.output
    events = EventAccumulator(str(out), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()["images"]
    assert "data/augmented_batch" in tags
    assert any(t.startswith("viz/rollout") for t in tags) and any(t.startswith("viz/dino") for t in tags), tags


def test_a_dry_run_without_the_data_downloads_nothing_and_still_sizes_the_run(tmp_path, monkeypatch):
    """CIFAR-10 absent: no download is tried, nothing is written, and the summary gives the
    model, steps and step mode from the dataset's known size, with how to get the data."""
    import torchvision.datasets.utils

    def no_download(*args, **kwargs):
        raise AssertionError("a dry run downloaded")

    monkeypatch.setattr(torchvision.datasets.utils, "download_url", no_download)
    root = tmp_path / "data"
    dry = CliRunner().invoke(cli, ["run", str(ROOT / "recipes" / "vit_p4.yaml"), "--dry-run",
                                   "--set", f"data.root={root}"])
    assert dry.exit_code == 0, dry.output
    assert "data:       50000 train / 10000 test images (3 passes per epoch), 10 classes (its known " \
           "size: the files are not here)" in dry.output
    assert f"missing:    cifar10: not found in {root}/" in dry.output and "cifar-10-python.tar.gz" in dry.output
    assert "schedule:   117100 steps (1171/epoch)" in dry.output and "2.69M parameters, 0.3" in dry.output
    assert not root.exists()
    held_out = CliRunner().invoke(cli, ["run", str(ROOT / "recipes" / "vit_p4.yaml"), "--dry-run",
                                        "--set", f"data.root={root}", "--set", "data.eval_splits=[val]",
                                        "--set", "data.dataset={cifar10: {val_size: 5000}}"])
    assert held_out.exit_code == 0 and "45000 train / 5000 val images" in held_out.output
