"""The README's plugin example works as printed."""

from __future__ import annotations

import torch
from click.testing import CliRunner

from tests.helpers import readme_plugin
from zoo.cli import cli
from zoo.model import build_model
from zoo.registry import discover


def test_readme_plugin_is_listed_and_builds(tmp_path):
    path = readme_plugin(tmp_path)
    listed = CliRunner().invoke(cli, ["list", "attention", "--plugins", str(path)])
    assert "linear_mix" in listed.output and "temperature=1.0" in listed.output
    discover([path])
    model = build_model({"dim": 32, "depth": 1, "heads": 2,
                         "attention": {"linear_mix": {"temperature": 2.0}}})
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_readme_plugin_works_with_every_command(tmp_path):
    """Trained, evaluated and shown: without return_attn, `zoo viz` says so in one line and
    still draws what needs no attention maps."""
    path = readme_plugin(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {img_size: 32, patch_size: 8, dim: 32, depth: 1, heads: 2, "
                      "attention: linear_mix}\ndata: {dataset: {shapes: {train_size: 64, "
                      "val_size: 32}}, batch_size: 32, augment: []}\ntrain: {epochs: 1}\n"
                      f"plugins: [{path}]\nlog: {{tensorboard: false, progress: false}}\n")
    run = tmp_path / "run"
    runner = CliRunner()
    assert runner.invoke(cli, ["run", str(recipe), "--out", str(run)]).exit_code == 0
    plugins = ["--plugins", str(path)]
    assert runner.invoke(cli, ["eval", str(run), "--split", "val", *plugins]).exit_code == 0
    drawn = runner.invoke(cli, ["viz", str(run), *plugins])
    assert drawn.exit_code == 2 and "Traceback" not in drawn.output
    assert "attention 'linear_mix' has no return_attn" in drawn.output
    shown = runner.invoke(cli, ["viz", str(run), *plugins, "--visualizer", "posemb_similarity"])
    assert shown.exit_code == 0, shown.output
