"""`zoo eval`, and the --checkpoint that eval, predict and export share, on a tiny run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from zoo.cli import cli

RECIPE = ("model: {img_size: 32, patch_size: 8, dim: 32, depth: 1, heads: 2}\n"
          "data: {dataset: {shapes: {train_size: 64, val_size: 32, test_size: 32}}, "
          "batch_size: 32, augment: []}\n"
          "train: {epochs: 1}\nlog: {tensorboard: false, progress: false}\n")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs of one recipe: A trained, B a copy of it in another folder (a sweep's cells)."""
    tmp = tmp_path_factory.mktemp("eval")
    (tmp / "r.yaml").write_text(RECIPE)
    result = CliRunner().invoke(cli, ["run", str(tmp / "r.yaml"), "--out", str(tmp / "a")])
    assert result.exit_code == 0, result.output
    shutil.copytree(tmp / "a", tmp / "b", symlinks=True)
    return tmp / "a", tmp / "b"


def one_line_error(result, *fragments: str) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


def test_eval_writes_into_its_run(runs, tmp_path):
    a, _ = runs
    result = CliRunner().invoke(cli, ["eval", str(a), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "eval_test.json").read_text())
    assert written["source"] == str(a) and written["images"] == 32
    assert written["checkpoint"].startswith(str(a.resolve() / "checkpoints" / "step-"))


def test_a_checkpoint_of_another_run_is_refused(runs, tmp_path):
    """`zoo eval A --checkpoint B/...` would evaluate B with B's recipe and write B's result
    under A's name; it is refused, saying how to evaluate B, and nothing is written."""
    a, b = runs
    theirs = str(b / "checkpoints" / "last")
    one_line_error(CliRunner().invoke(cli, ["eval", str(a), "--checkpoint", theirs]),
                          f"--checkpoint {theirs}", f"of the run {b.resolve()}, not of {a}",
                          f"give {b.resolve()} as the source")
    assert not (a / "eval_test.json").exists() and not (b / "eval_test.json").exists()
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    for args in (["predict", str(a), str(image)], ["export", str(a), "--format", "torchscript",
                                                   "--out", str(tmp_path / "m.pt")]):
        one_line_error(CliRunner().invoke(cli, [*args, "--checkpoint", theirs]), "not of")
    # a checkpoint given as the source is checked against --checkpoint the same way
    one_line_error(CliRunner().invoke(cli, ["eval", str(a / "checkpoints" / "last"),
                                            "--checkpoint", theirs]), "not of")


def test_a_checkpoint_of_the_same_run_is_used(runs, tmp_path):
    a, _ = runs
    step = next(p for p in (a / "checkpoints").iterdir() if p.name.startswith("step-"))
    for source in (a, step):
        result = CliRunner().invoke(cli, ["eval", str(source), "--checkpoint", str(step),
                                          "--out", str(tmp_path)])
        assert result.exit_code == 0, result.output
        written = json.loads((tmp_path / "eval_test.json").read_text())
        assert written["checkpoint"] == str(step.resolve())


def test_a_data_spec_is_read_as_recipes_are(runs):
    """--data is read by zoo's YAML reader: a key given twice is refused (a plain YAML load
    keeps the last silently), malformed YAML is one line naming --data."""
    a, _ = runs
    twice = "{shapes: {test_size: 8}, shapes: {test_size: 16}}"
    one_line_error(CliRunner().invoke(cli, ["eval", str(a), "--data", twice]),
                   f"--data {twice}: duplicate key shapes")
    one_line_error(CliRunner().invoke(cli, ["eval", str(a), "--data", "{shapes: "]),
                   "--data {shapes: ", "malformed YAML")
    assert not (a / "eval_test.json").exists()


def test_the_confusion_figure_leaves_pyplot_alone(tmp_path):
    """The confusion matrix is drawn as every zoo figure is, on a bare Figure: pyplot is
    never imported (its global state and backend stay the user's), and the PNG lands whole."""
    import subprocess
    import sys

    path = tmp_path / "figures" / "confusion_test.png"
    code = ("import sys, torch\nfrom pathlib import Path\nfrom zoo.evaluate import plot_confusion\n"
            f"plot_confusion(torch.tensor([[3, 1], [0, 4]]), ['a', 'b'], 't', Path({str(path)!r}))\n"
            "print('matplotlib.pyplot' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False"]
    assert Image.open(path).size == (720, 600)  # 6 x 5 inches at 120 dpi


def test_a_run_is_named_by_keyword(runs):
    """RunRef names a run to load in one way: its source first, the rest by keyword only (a
    positional `"best"` or a swapped pair of flags cannot slip in), and it does not change."""
    import dataclasses

    from zoo.runs import RunRef, load_checkpoint

    a, _ = runs
    with pytest.raises(TypeError):
        RunRef(a, "best")
    ref = RunRef(a, overrides=("data.eval_batch_size=8",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.checkpoint = "best"
    _, recipe, run, ckpt = load_checkpoint(ref)
    assert recipe.data.eval_batch_size == 8 and run == a
    assert ckpt == (a / "checkpoints" / "last").resolve()
