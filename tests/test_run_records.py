"""What a run records and how: TensorBoard's layout across a resume, the figures of each
evaluation in figures/eval/, and a figure that cannot be drawn, which never ends a run."""

from __future__ import annotations

import json

from click.testing import CliRunner
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers import readme_plugin, tiny_recipe
from zoo.cli import cli


def events(run):
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0})
    return acc.Reload()


def test_a_resume_keeps_every_evaluation_in_tensorboard(tmp_path):
    """A finished 2-epoch run trained on to 3: TensorBoard keeps the evaluations at the
    checkpoint's step and before it, as metrics.jsonl does (8 steps per epoch)."""
    run = tmp_path / "run"
    runner = CliRunner()
    first = runner.invoke(cli, ["run", str(tiny_recipe(tmp_path)), "--out", str(run),
                                "--set", "log.visualizers=[rollout]", "--set", "log.viz_images=2"])
    assert first.exit_code == 0, first.output
    longer = runner.invoke(cli, ["run", "--resume", str(run), "--set", "train.epochs=3"])
    assert longer.exit_code == 0, longer.output
    acc = events(run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [8, 16, 24]
    for tag in ("val/acc", "train/loss", "train/lr"):
        assert [e.step for e in acc.Scalars(tag)] == [8, 16, 24], tag
    assert [e.value for e in acc.Scalars("val/acc")] == [r["val_acc"] for r in rows]
    assert [e.step for e in acc.Images("viz/rollout")] == [8, 16, 24]
    assert [e.step for e in acc.Images("data/augmented_batch")] == [8, 16, 24]


def test_tensorboard_layout_is_one_section_per_kind_of_curve(tmp_path):
    """train/ val/ step/ sections, no top-level scalars, no single-point hparams/ scalars
    (the HParams tab reads the curves), the figures also written as PNGs."""
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", str(tiny_recipe(tmp_path)), "--out", str(run),
                                      "--set", "train.epochs=1", "--set", "log.every_steps=4",
                                      "--set", "log.visualizers=[cls_attention, posemb_similarity]",
                                      "--set", "log.viz_images=2"])
    assert result.exit_code == 0, result.output
    acc = events(run)
    scalars = set(acc.Tags()["scalars"])
    assert {t.split("/")[0] for t in scalars} == {"train", "val", "step"}, scalars
    assert {"train/lr", "train/img_per_s", "step/loss", "step/lr", "step/grad_norm"} <= scalars
    assert set(acc.Tags()["images"]) == {"data/augmented_batch", "viz/cls_attention",
                                         "viz/posemb_similarity"}
    hp = acc.PluginTagToContent("hparams")
    assert hp, "no HParams summary"
    for name in ("cls_attention", "posemb_similarity"):
        assert (run / "figures" / "eval" / f"{name}.png").stat().st_size > 1000


def test_the_readme_plugin_example_runs_to_the_end(tmp_path):
    """The README's toy attention has no return_attn: the quickstart's attention figures are
    skipped with one warning each (said up front by --dry-run too), the run trains, saves
    and finishes, and posemb_similarity is still drawn."""
    plugin = readme_plugin(tmp_path)
    args = ["run", "quickstart", "--plugins", str(plugin),
            "--set", "model.attention={linear_mix: {temperature: 2}}"]
    runner = CliRunner()
    dry = runner.invoke(cli, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "visualizer 'cls_attention' skipped: attention 'linear_mix' has no return_attn" in dry.output
    run = tmp_path / "run"
    result = runner.invoke(cli, [*args, "--out", str(run), "--set", "train.epochs=2",
                                 "--set", "data.dataset={shapes: {train_size: 256, val_size: 64}}",
                                 "--set", "log.visualizers=[cls_attention, rollout, posemb_similarity]"])
    assert result.exit_code == 0, result.output
    for name in ("cls_attention", "rollout"):
        assert result.stderr.count(f"warning: visualizer '{name}' skipped") == 1, result.stderr
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"
    assert (run / "checkpoints" / "last" / "model.safetensors").is_file()
    assert [p.name for p in (run / "figures" / "eval").iterdir()] == ["posemb_similarity.png"]


def test_a_visualizer_that_fails_while_drawing_is_dropped_with_one_warning(tmp_path):
    plugin = tmp_path / "broken.py"
    plugin.write_text("from zoo.registry import register\n\n\n"
                      "@register('visualizer', 'broken')\nclass Broken:\n"
                      "    \"\"\"Fails.\"\"\"\n\n"
                      "    def __call__(self, model, images, x, names):\n"
                      "        raise RuntimeError('cannot draw this')\n")
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", str(tiny_recipe(tmp_path)), "--out", str(run),
                                      "--plugins", str(plugin),
                                      "--set", "log.visualizers=[broken, rollout]",
                                      "--set", "log.viz_images=2"])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("warning: visualizer 'broken' failed") == 1, result.stderr
    assert "RuntimeError: cannot draw this" in result.stderr
    assert len(events(run).Images("viz/rollout")) == 2
