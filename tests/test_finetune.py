"""Fine-tuning: `model.init` from a run, a weights file or timm, by the matching rules of
zoo/finetune.py; and a finished run trained longer (`zoo run --resume RUN --set ...`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from tests.conftest import ROOT
from tests.helpers import assert_one_line_error
from zoo import checkpoint
from zoo.cli import cli
from zoo.finetune import init_weights, match
from zoo.layers import resize_grid
from zoo.model import build_model
from zoo.recipe import load_recipe
from zoo.schema import ModelConfig
from zoo.train.trainer import Trainer

TINY = {"img_size": 32, "patch_size": 8, "dim": 32, "depth": 1, "heads": 2}
RECIPE = """
model: {model}
data: {{dataset: {{shapes: {{train_size: 64, val_size: 32}}}}, batch_size: 32, augment: []}}
train: {{epochs: 1{train}}}
log: {{tensorboard: false, progress: false}}
"""


def write_recipe(tmp_path: Path, model: str = "", train: str = "", name: str = "r") -> Path:
    """RECIPE with the model keys in `model` (", key: value, ...") over TINY's: a recipe
    names each key once."""
    keys = {**TINY, **(yaml.safe_load("{" + model.lstrip(", ") + "}") or {})}
    path = tmp_path / f"{name}.yaml"
    path.write_text(RECIPE.format(model=yaml.safe_dump(keys, default_flow_style=True, width=1000)
                                  .strip(), train=train))
    return path


@pytest.fixture(scope="module")
def source_run(tmp_path_factory) -> Path:
    """A tiny trained run that keeps EMA weights (2 steps: they differ from the model's)."""
    tmp = tmp_path_factory.mktemp("source")
    run = tmp / "run"
    result = CliRunner().invoke(cli, ["run", str(write_recipe(tmp, train=", ema: 0.9")),
                                      "--out", str(run)])
    assert result.exit_code == 0, result.output
    return run


def last(run: Path, file: str = checkpoint.MODEL_FILE) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / "last" / file)


def test_init_from_a_run_into_another_patch_size_and_head(source_run):
    """Same name and shape: copied (from the EMA weights the run kept); the position table
    and the patch kernel of the other grid: resized; the head of other classes: new."""
    cfg = ModelConfig(**{**TINY, "patch_size": 4, "num_classes": 5, "init": str(source_run)})
    model, said = build_model(cfg), []
    report = init_weights(model, cfg, said.append)
    assert len(report["matched"]) == 16
    assert report["resized"] == {"patch_embed.weight": "8->4 px", "posemb.pos_embed": "17->65 tokens"}
    assert report["new"] == ["head.weight", "head.bias"]
    assert report["unused"] == ["head.bias", "head.weight"]  # in the file's order
    assert said == [f"init from {source_run}: 16 matched, 2 resized (patch_embed.weight 8->4 px, "
                    "posemb.pos_embed 17->65 tokens), 2 new (head.weight, head.bias), 2 unused "
                    "(head.bias, head.weight)"]
    ema, ours = last(source_run, checkpoint.EMA_FILE), model.state_dict()
    assert not torch.equal(ema["blocks.0.attn.qkv.weight"], last(source_run)["blocks.0.attn.qkv.weight"])
    for name in report["matched"]:
        assert torch.equal(ours[name], ema[name]), name
    table = ema["posemb.pos_embed"]
    assert torch.equal(ours["posemb.pos_embed"][:, :1], table[:, :1])  # the [CLS] slot as it was
    grid = resize_grid(table[0, 1:].reshape(4, 4, 32), (8, 8)).reshape(1, 64, 32)
    assert torch.allclose(ours["posemb.pos_embed"][:, 1:], grid)


def test_a_resized_patch_kernel_embeds_a_patch_of_one_colour_as_before():
    """16 -> 8 px: each of the new kernel's weights stands for 4 of the old one's pixels."""
    old = ModelConfig(img_size=32, patch_size=16, dim=8, depth=1, heads=2)
    source = build_model(old)
    with torch.no_grad():
        source.patch_embed.weight.copy_(torch.randn(8, 3, 1, 1).expand(8, 3, 16, 16))
    new = ModelConfig(img_size=32, patch_size=8, dim=8, depth=1, heads=2)
    model = build_model(new)
    model.load_state_dict(match(model, source.state_dict())[0])
    image = torch.rand(1, 3, 1, 1).expand(1, 3, 32, 32)
    assert torch.allclose(model.patch_embed(image)[:, 0, 0], source.patch_embed(image)[:, 0, 0],
                          atol=1e-5)


def test_init_from_a_weights_file_or_checkpoint_folder(source_run, tmp_path):
    """A file is read as it is (here the model's weights, not the EMA's); a checkpoint folder
    is read as a run is (its EMA weights)."""
    weights = tmp_path / "w.pth"
    torch.save(last(source_run), weights)
    for init, expected in ((weights, last(source_run)),
                           (source_run / "checkpoints" / "last", last(source_run, checkpoint.EMA_FILE))):
        cfg = ModelConfig(**{**TINY, "init": str(init)})
        model = build_model(cfg)
        report = init_weights(model, cfg, lambda line: None)
        assert len(report["matched"]) == 20 and not report["new"] and not report["unused"]
        assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())


def test_trainer_inits_before_the_ema_copy(source_run, tmp_path, capsys):
    recipe = load_recipe(write_recipe(tmp_path, model=f", init: {source_run}", train=", ema: 0.5"))
    trainer = Trainer(recipe, None)
    ema, source = trainer.ema.model.state_dict(), last(source_run, checkpoint.EMA_FILE)
    assert all(torch.equal(v, source[k]) and torch.equal(ema[k], v)
               for k, v in trainer.model.state_dict().items())
    assert f"init from {source_run}: 20 matched, 0 resized, 0 new, 0 unused" in capsys.readouterr().err


def tiny_timm(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    """A random 1-block timm ViT-Ti (32 px, 8 px patches, 10 classes) and its state-dict file."""
    import timm

    torch.manual_seed(0)
    tm = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                           num_classes=10, depth=1).eval()
    path = tmp_path / "vit_tiny.pth"
    torch.save(tm.state_dict(), path)
    return tm, path


def test_init_from_timm_offline_gives_timms_outputs(tmp_path):
    from zoo.convert import from_timm

    tm, weights = tiny_timm(tmp_path)
    reference = from_timm(tm).eval()
    cfg = ModelConfig(**{**vars(reference.cfg), "init": "timm:vit_tiny_patch16_224",
                         "init_weights": str(weights)})
    model = build_model(cfg).eval()
    report = init_weights(model, cfg, lambda line: None)
    assert len(report["matched"]) == 20 and not report["resized"] and not report["new"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


def test_a_recipe_inits_from_timm_and_says_so(tmp_path, monkeypatch):
    """Through the recipe (zoo run --dry-run): 4 px patches from timm's 8 px ones; without
    model.init_weights and without a network, one line says how to get the file."""
    import huggingface_hub

    _, weights = tiny_timm(tmp_path)
    timm_model = ", dim: 192, heads: 3, mlp_ratio: 4, init: timm:vit_tiny_patch16_224"
    recipe = write_recipe(tmp_path, model=timm_model + f", patch_size: 4, init_weights: {weights}")
    result = CliRunner().invoke(cli, ["run", str(recipe), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert ("init from timm:vit_tiny_patch16_224: 18 matched, 2 resized (patch_embed.weight "
            "8->4 px, posemb.pos_embed 17->65 tokens), 0 new, 0 unused") in result.stderr
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # fail fast, as offline
    offline = CliRunner().invoke(cli, ["run", str(write_recipe(tmp_path, model=timm_model)), "--dry-run"])
    assert_one_line_error(offline, "timm:vit_tiny_patch16_224: cannot get pretrained weights",
                          "set model.init_weights: vit_tiny_patch16_224.pth")


@pytest.mark.parametrize("model, fragments", [
    (", init: timm:vit_tinny_patch16_224", ["model.init: unknown timm model", "did you mean"]),
    (", init: timm:vit_tiny_patch16_224, init_weights: missing.pth",
     ["model.init_weights: missing.pth: no such file", "python -c"]),
    (", init: no/such/run", ["model.init: no/such/run: no such run dir, checkpoint or weights file"]),
])
def test_an_init_that_is_not_there_stops_before_the_run(tmp_path, model, fragments):
    recipe = write_recipe(tmp_path, model=model)
    assert_one_line_error(CliRunner().invoke(cli, ["show", str(recipe)]), *fragments)
    assert_one_line_error(CliRunner().invoke(cli, ["run", str(recipe), "--dry-run"]), *fragments)
    out = tmp_path / "run"
    assert_one_line_error(CliRunner().invoke(cli, ["run", str(recipe), "--out", str(out)]), *fragments)
    assert not out.exists()


@pytest.mark.parametrize("model, fragment", [
    (", init_weights: w.pth", "model.init_weights: only with model.init: timm:NAME"),
    (", init: 'timm:'", "model.init: 'timm:' names no weights"),
])
def test_init_keys_are_checked_by_zoo_show(tmp_path, model, fragment):
    assert_one_line_error(CliRunner().invoke(cli, ["show", str(write_recipe(tmp_path, model=model))]),
                          fragment)


def test_an_init_that_matches_nothing_is_an_error(tmp_path):
    weights = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(3, 3)}, weights)
    recipe = write_recipe(tmp_path, model=f", init: {weights}")
    assert_one_line_error(CliRunner().invoke(cli, ["run", str(recipe), "--dry-run"]),
                          "none of its 1 tensors (encoder.weight) fits", "probably the wrong model")


def test_the_finetune_recipe_resolves():
    result = CliRunner().invoke(cli, ["show", str(ROOT / "recipes" / "finetune_vit_s16_cifar10.yaml")])
    assert result.exit_code == 0, result.output
    assert "init: timm:vit_small_patch16_224.augreg_in21k" in result.output


def test_resume_trains_a_finished_run_longer(source_run, tmp_path):
    """`--set train.epochs=2` on a finished 1-epoch run trains epoch 2 and records it in
    recipe.yaml, so that a plain --resume continues that schedule; the init is not done
    again (its file is gone by then). Anything but a longer schedule is one line."""
    weights = tmp_path / "w.safetensors"
    save_file(last(source_run), weights)
    run, runner = tmp_path / "run", CliRunner()
    first = runner.invoke(cli, ["run", str(write_recipe(tmp_path, model=f", init: {weights}")),
                                "--out", str(run)])
    assert first.exit_code == 0, first.output
    weights.unlink()
    longer = runner.invoke(cli, ["run", "--resume", str(run), "--set", "train.epochs=2"])
    assert longer.exit_code == 0, longer.output
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert json.loads((run / "summary.json").read_text())["steps"] == 4
    assert load_recipe(run / "recipe.yaml").train.epochs == 2
    assert "finished already (4 steps)" in runner.invoke(cli, ["run", "--resume", str(run)]).output
    for item, fragment in (("model.dim=64", "--set model.dim: a resumed run keeps the recipe"),
                           ("train.epochs=1", "--set train.epochs=1: the run has 2"),
                           ("train.max_steps=3", "the run has no limit (null)")):
        refused = runner.invoke(cli, ["run", "--resume", str(run), "--set", item])
        assert_one_line_error(refused, fragment)
    assert load_recipe(run / "recipe.yaml").train.epochs == 2


def test_a_lengthened_resume_stays_locked_while_it_rewrites_the_recipe(tmp_path, monkeypatch):
    """The longer recipe replaces recipe.yaml while the run is locked: the run stays locked
    through training, or a second resume could train it at the same time."""
    from zoo.errors import ZooError
    from zoo.runs import RECIPE_FILE, lock_run
    from zoo.train import launch

    recipe = load_recipe(write_recipe(tmp_path))
    (tmp_path / RECIPE_FILE).write_text(recipe.to_yaml())
    longer = launch.lengthen(recipe, ["train.epochs=3"])

    def training(recipe, run_dir, resume, d):
        with pytest.raises(ZooError, match="another zoo process is training this run"):
            lock_run(run_dir)
        return {}

    monkeypatch.setattr(launch, "_fit_locked", training)
    launch.fit(longer, tmp_path, resume=True, lengthened=True)
    assert load_recipe(tmp_path / RECIPE_FILE).train.epochs == 3
    lock_run(tmp_path).close()  # free once fit returned
