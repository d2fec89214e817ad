"""arch resnet18 (plugins/arch/resnet18.py): torchvision's ResNet-18 with the CIFAR stem, equal
to it by state dict and outputs; trained, evaluated, exported, resumed and fine-tuned through
the CLI like any arch, with the attention figures skipped in one warning each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from tests.conftest import ROOT
from tests.helpers import assert_exports_match, assert_one_line_error, stop_at
from zoo import checkpoint
from zoo.cli import cli
from zoo.errors import ZooError
from zoo.finetune import init_weights
from zoo.kinds import NEEDS
from zoo.model import build_model
from zoo.schema import ModelConfig

QUICKSTART = str(ROOT / "recipes" / "quickstart.yaml")
SMALL_DATA = "data.dataset={shapes: {train_size: 128, val_size: 64}}"


def cifar_torchvision(**kw) -> nn.Module:
    """torchvision's resnet with kuangliu/pytorch-cifar's stem: 3x3 stride 1, no max-pool."""
    tv = torchvision.models.resnet18(num_classes=10, **kw)
    tv.conv1, tv.maxpool = nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.Identity()
    return tv


def loaded_from(tv: nn.Module, arch: object) -> nn.Module:
    """Our arch, with torchvision's weights loaded strictly (every name and shape the same)."""
    ours = build_model({"arch": arch})
    ours.load_state_dict(tv.state_dict(), strict=True)
    return ours


def test_equals_torchvision_resnet18_with_the_cifar_stem():
    """Same parameters (11,173,962, kuangliu's count), same logits in eval mode and with batch
    statistics in train mode, same gradients and running statistics after the step."""
    torch.manual_seed(0)
    tv = cifar_torchvision()
    ours = loaded_from(tv, "resnet18")
    assert sum(p.numel() for p in ours.parameters()) == 11_173_962
    x = torch.randn(4, 3, 32, 32)
    tv.eval(), ours.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), rtol=1e-5, atol=1e-5)
    tv.train(), ours.train()
    out, ref = ours(x), tv(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    out.square().sum().backward()
    ref.square().sum().backward()
    grads = dict(tv.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-4, atol=1e-5, msg=name)
    for name, buf in tv.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[name], buf, msg=name)


def test_stem_imagenet_is_torchvision_resnet18():
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(num_classes=10).eval()
    ours = loaded_from(tv, {"resnet18": {"stem": "imagenet"}}).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), rtol=1e-5, atol=1e-5)


def test_init_is_torchvisions_draw_for_draw():
    """Kaiming-normal fan-out convolutions, batch norm 1 and 0, PyTorch's default fc: under
    one seed, the very tensors torchvision's resnet18 draws (its stem, to build both alike)."""
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(num_classes=10).state_dict()
    torch.manual_seed(0)
    ours = build_model({"arch": {"resnet18": {"stem": "imagenet"}}}).state_dict()
    assert ours.keys() == tv.keys()
    for name, t in tv.items():
        assert torch.equal(ours[name], t), name


def test_blocks_3_4_6_3_is_torchvision_resnet34():
    torch.manual_seed(0)
    tv = torchvision.models.resnet34(num_classes=10)
    tv.conv1, tv.maxpool = nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.Identity()
    ours = loaded_from(tv.eval(), {"resnet18": {"blocks": [3, 4, 6, 3]}}).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), rtol=1e-5, atol=1e-5)


def test_width_and_blocks_size_every_stage():
    """Width 16, two stages of one block: stage 2 at 32 channels with the only shortcut
    convolution; the parameters counted by hand."""
    model = build_model({"arch": {"resnet18": {"width": 16, "blocks": [1, 1]}}})
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert shapes["layer2.0.conv1.weight"] == (32, 16, 3, 3)
    assert shapes["layer2.0.downsample.0.weight"] == (32, 16, 1, 1)
    assert shapes["fc.weight"] == (10, 32)
    assert not any(n.startswith(("layer3", "layer1.0.downsample")) for n in shapes)
    stem, layer1 = 3 * 16 * 9 + 2 * 16, 2 * (16 * 16 * 9 + 2 * 16)
    layer2 = 16 * 32 * 9 + 32 * 32 * 9 + 16 * 32 + 3 * 2 * 32
    assert sum(p.numel() for p in model.parameters()) == stem + layer1 + layer2 + 32 * 10 + 10
    assert model.features(torch.zeros(2, 3, 32, 32)).shape == (2, 32)


def test_num_classes_0_gives_the_pooled_features():
    model = build_model({"arch": {"resnet18": {"width": 8}}, "num_classes": 0}).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        assert torch.equal(out, model.features(x)) and out.shape == (2, 64)


def test_it_lacks_every_visualizer_need_with_a_reason():
    model = build_model({"arch": "resnet18", "num_classes": 2})
    reasons = {need: model.lacks(need) for need in NEEDS}
    assert all(isinstance(r, str) and r.startswith("resnet18 ") for r in reasons.values()), reasons
    assert "attention" in reasons["attention_maps"] and "[CLS]" in reasons["cls_token"]
    with pytest.raises(ZooError, match="unknown visualizer need 'maps'"):
        model.lacks("maps")


def test_weight_decay_skips_batch_norm_and_the_fc_bias():
    model = build_model({"arch": "resnet18"})
    norms = {f"{name}.{p}" for name, m in model.named_modules()
             if isinstance(m, nn.BatchNorm2d) for p in ("weight", "bias")}
    assert len(norms) == 40
    assert model.no_weight_decay() == norms | {"fc.bias"}


@pytest.mark.parametrize(("arch", "fragment"), [
    ("{resnet18: {stem: big}}", "model.arch.stem: 'big' is not a resnet18 stem; choose cifar"),
    ("{resnet18: {blocks: [2, 0]}}", "model.arch.blocks: expected a non-empty list"),
    ("{resnet18: {blocks: []}}", "model.arch.blocks: expected a non-empty list"),
    ("{resnet18: {width: 0}}", "model.arch.width: must be at least 1, got 0"),
    ("{resnet18: {width: wide}}", "model.arch.width: expected int"),
])
def test_bad_parameters_are_one_line(arch, fragment):
    result = CliRunner().invoke(cli, ["run", QUICKSTART, "--set", f"model.arch={arch}", "--dry-run"])
    assert_one_line_error(result, fragment)


# --------------------------------------------------------------------------- through the CLI


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The quickstart as a user runs it with `--set model.arch=resnet18`, on fewer images."""
    out = tmp_path_factory.mktemp("resnet18") / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "zoo", "run", QUICKSTART, "--set", "model.arch=resnet18",
         "--set", "train.epochs=1", "--set", SMALL_DATA, "--set", "log.progress=false",
         "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out, proc


def test_the_quickstart_trains_and_skips_each_attention_figure_in_one_warning(run):
    out, proc = run
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: visualizer '{name}' skipped: resnet18 is a CNN: it has no "
                        "attention, so no attention maps" for name in ("cls_attention", "rollout")]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["params"] == 11_173_962
    assert not list((out / "figures").glob("*.png"))
    assert any(k.endswith("bn1.running_mean") for k in load_file(out / "checkpoints" / "last"
                                                                  / checkpoint.MODEL_FILE))


def test_zoo_eval_gives_the_runs_own_val_accuracy(run):
    out, _ = run
    result = CliRunner().invoke(cli, ["eval", str(out), "--split", "val"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "eval_val.json").read_text())
    assert report["images"] == 64
    assert report["acc"] == pytest.approx(json.loads((out / "summary.json").read_text())
                                          ["final_val_acc"], abs=1e-9)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_export_torchscript_and_onnx_give_the_models_logits(run, tmp_path):
    out, _ = run
    assert_exports_match(out, tmp_path, torch.randn(3, 3, 32, 32))


RESUME = ["model.arch={resnet18: {width: 8}}", "train.epochs=2", "data.batch_size=32",
          "data.dataset={shapes: {train_size: 128, val_size: 32}}", "train.deterministic=true",
          "train.device=cpu", "log.progress=false", "log.tensorboard=false", "log.visualizers=[]"]


def test_an_interrupted_run_resumes_to_the_uninterrupted_weights_and_statistics(tmp_path):
    """Stopped inside epoch 2 and resumed with `zoo run --resume`: the weights, batch-norm
    running statistics and optimizer moments are those of the run that was not stopped."""
    from zoo.recipe import load_recipe
    from zoo.registry import discover
    from zoo.train.trainer import Interrupted, Trainer

    ref = tmp_path / "ref"
    sets = [a for s in RESUME for a in ("--set", s)]
    result = CliRunner().invoke(cli, ["run", QUICKSTART, *sets, "--out", str(ref)])
    assert result.exit_code == 0, result.output
    discover()
    recipe = load_recipe(QUICKSTART, RESUME)
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    (stopped / "recipe.yaml").write_text(recipe.to_yaml())
    trainer = Trainer(recipe, stopped)
    stop_at(trainer, 6)  # 4 steps an epoch
    with pytest.raises(Interrupted):
        trainer.fit()
    assert checkpoint.load_state(stopped / "checkpoints" / "last" / checkpoint.STATE_FILE)["step"] == 6
    result = CliRunner().invoke(cli, ["run", "--resume", str(stopped)])
    assert result.exit_code == 0, result.output
    a, b = (load_file(r / "checkpoints" / "last" / checkpoint.MODEL_FILE) for r in (stopped, ref))
    assert a.keys() == b.keys() and "layer2.0.downsample.1.running_var" in a
    for k in a:
        assert torch.equal(a[k], b[k]), k
    moments = [checkpoint.load_state(r / "checkpoints" / "last" / checkpoint.STATE_FILE)
               ["optimizer"]["state"] for r in (stopped, ref)]
    for k in moments[1]:
        assert torch.equal(moments[0][k]["exp_avg_sq"], moments[1][k]["exp_avg_sq"]), k


def test_init_from_a_resnet18_run_into_other_classes(run, tmp_path):
    """Every tensor but the fc of 10 classes is taken (batch-norm statistics included); the
    fc of 3 classes starts fresh; a run on a 3-class image folder says so and trains."""
    out, _ = run
    source = load_file(out / "checkpoints" / "last" / checkpoint.MODEL_FILE)
    cfg = ModelConfig(arch="resnet18", num_classes=3, init=str(out))
    model, said = build_model(cfg), []
    report = init_weights(model, cfg, said.append)
    fc = ["fc.weight", "fc.bias"]
    assert report["new"] == fc and sorted(report["unused"]) == sorted(fc) and not report["resized"]
    assert len(report["matched"]) == len(source) - 2 == 120
    state = model.state_dict()
    assert all(torch.equal(state[n], source[n]) for n in report["matched"])
    for label in ("a", "b", "c"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(4):
            color = (80 * "abc".index(label), 40 * i, 200)
            Image.new("RGB", (32, 32), color).save(tmp_path / "images" / label / f"{i}.png")
    sets = ["model.arch=resnet18", "model.num_classes=3", f"model.init={out}", "train.epochs=1",
            f"data.dataset={{imagefolder: {{path: {tmp_path / 'images'}, val_fraction: 0.25}}}}",
            "data.batch_size=3", "data.num_workers=0", "log.progress=false",
            "log.visualizers=[]"]
    result = CliRunner().invoke(cli, ["run", QUICKSTART, *(a for s in sets for a in ("--set", s)),
                                      "--out", str(tmp_path / "tuned")])
    assert result.exit_code == 0, result.output
    assert f"init from {out}: 120 matched, 0 resized, 2 new (fc.weight, fc.bias), 2 unused" \
        in result.output
