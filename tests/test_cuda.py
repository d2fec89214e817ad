"""CUDA paths: training under AMP and compile, checkpoints with the CUDA RNG, no host syncs.

Every test here is marked `cuda` (skipped without a GPU); benchmarks/gpu_check.py runs them.
"""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from tests.helpers import tiny_recipe
from zoo import registry
from zoo.cli import cli
from zoo.recipe import load_recipe
from zoo.runs import new_run_dir
from zoo.train.launch import restore
from zoo.train.trainer import Trainer

pytestmark = pytest.mark.cuda

NO_AUTOAUGMENT = "[{random_crop: {padding: 2}}, hflip, {mixup: {p: 0.5}}, {cutmix: {p: 0.5}}]"


def trainer(tmp_path, *overrides: str, attention: str = "mhsa",
            augment: str = NO_AUTOAUGMENT, data: str | None = None) -> Trainer:
    registry.discover()
    sets = ["train.device=cuda", *overrides] + ([f"data.dataset={data}"] if data else [])
    r = load_recipe(tiny_recipe(tmp_path, attention=attention, augment=augment), sets)
    return Trainer(r, None)


@pytest.mark.parametrize("amp", ["none", "bf16", "fp16"])
@pytest.mark.parametrize("attention", ["mhsa", "diff"])
def test_training_on_cuda_learns(tmp_path, amp, attention):
    t = trainer(tmp_path, f"train.amp={amp}", "train.epochs=4", attention=attention,
                augment="[hflip]", data="{shapes: {train_size: 4096, val_size: 512}}")
    before = t.evaluate()["val_loss"]
    for epoch in range(4):
        t.train_epoch(epoch, 0)
    after = t.evaluate()
    assert after["val_loss"] < before - 0.15 and after["val_acc"] > 0.15, (before, after)  # chance: 0.1
    assert next(t.model.parameters()).device.type == "cuda"


@pytest.mark.parametrize("attention, heads", [("mhsa", 4), ("diff", 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_and_explicit_attention_agree_on_cuda(attention, heads, dtype):
    registry.discover()
    torch.manual_seed(0)
    attn = registry.build("attention", attention, dim=64, heads=heads, layer=2, depth=3,
                          qkv_bias=True, attn_drop=0.0).cuda()
    x = torch.randn(4, 65, 64, device="cuda", requires_grad=True)
    with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        fused = attn(x)
        explicit, _ = attn(x, return_attn=True)
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(fused.float(), explicit.float(), atol=tol, rtol=tol)


def test_compiled_training_matches_eager(tmp_path):
    losses = []
    for compiled in ("false", "true"):  # one after the other: each trainer seeds the generators
        t = trainer(tmp_path, "train.amp=none", "train.seed=1", f"train.compile={compiled}")
        batches = t.train_loader.epoch(0)
        losses.append(torch.stack([t.train_step(*next(batches))[0] for _ in range(3)]))
    torch.testing.assert_close(losses[0], losses[1], atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("graph", ["false", "true"])
def test_train_step_makes_no_host_sync(tmp_path, graph):
    t = trainer(tmp_path, "train.amp=bf16", f"train.cuda_graph={graph}")
    batches = t.train_loader.epoch(0)
    for _ in range(5):  # the first steps set things up (and capture the graph)
        t.train_step(*next(batches))
    assert (t.runner.run.captured if graph == "true" else "eager") in ("prepare + update", "eager")
    images, labels = next(batches)
    torch.cuda.set_sync_debug_mode("error")
    try:
        t.train_step(images, labels)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_resume_on_cuda_restores_the_cuda_rng(tmp_path):
    """The augmentations draw from the CUDA generator: a resumed run must draw the same."""
    recipe = tiny_recipe(tmp_path, augment=NO_AUTOAUGMENT)
    sets = ["--set", "train.device=cuda", "--set", "train.deterministic=true"]
    ref = tmp_path / "ref"
    result = CliRunner().invoke(cli, ["run", str(recipe), "--out", str(ref), *sets])
    assert result.exit_code == 0, result.output
    r = load_recipe(recipe, ["train.device=cuda", "train.deterministic=true"])
    out = new_run_dir(r, tmp_path / "run")
    first = Trainer(r, out)
    first.train_epoch(0, 0)
    first.save()
    second = Trainer(r, out)  # seeds every generator afresh; restore must bring them back
    restore(second, out)
    second.fit()
    a = [json.loads(line) for line in (ref / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in b] == [2]
    assert b[0]["train_loss"] == pytest.approx(a[1]["train_loss"], rel=1e-5)


def test_viz_and_predict_compute_on_the_device_asked(tmp_path, monkeypatch):
    """`--device cuda` moves the model there (viz draws from it on CUDA) and predict on CUDA
    ranks as on the CPU."""
    from zoo.viz import render

    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", str(tiny_recipe(tmp_path)), "--out", str(run)])
    assert result.exit_code == 0, result.output
    seen, draw = [], render.draw

    def spy(visualizers, model, *args):
        seen.append(next(model.parameters()).device.type)
        return draw(visualizers, model, *args)

    monkeypatch.setattr(render, "draw", spy)
    viz = CliRunner().invoke(cli, ["viz", str(run), "--device", "cuda", "--visualizer", "rollout",
                                   "--out", str(tmp_path / "viz")])
    assert viz.exit_code == 0 and (tmp_path / "viz" / "rollout.png").exists(), viz.output
    assert seen == ["cuda"]
    image = tmp_path / "viz" / "rollout.png"
    probs = {}
    for dev in ("cpu", "cuda"):
        r = CliRunner().invoke(cli, ["predict", str(run), str(image), "--csv", "--top-k", "100",
                                     "--device", dev])
        assert r.exit_code == 0, r.output
        probs[dev] = {row[2]: float(row[3]) for row in (line.split(",") for line in r.stdout.splitlines()[1:])}
    assert probs["cuda"].keys() == probs["cpu"].keys() and len(probs["cpu"]) > 1
    assert all(abs(probs["cuda"][c] - p) < 1e-2 for c, p in probs["cpu"].items()), probs
