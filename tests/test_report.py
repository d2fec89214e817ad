"""`zoo report` on run folders fabricated with the files `zoo run` and `zoo eval` write."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from zoo.cli import cli
from zoo.errors import ZooError
from zoo.report import find_runs, plot_titles, write_report
from zoo.schema import Recipe


def make_run(path: Path, patch: int, accs: list[float], finished: bool, test_acc: float | None = None) -> None:
    recipe = Recipe()
    recipe.model.patch_size = patch
    recipe.data.augment = ["hflip"]
    path.mkdir(parents=True)
    (path / "recipe.yaml").write_text(recipe.to_yaml())
    (path / "env.json").write_text(json.dumps({"gpus": [], "cpu_count": 2}))
    rows = [{"epoch": i + 1, "step": 10 * (i + 1), "train_loss": 1.0, "train_acc": a, "grad_norm": 1.0,
             "img_per_s": 100.0 * patch, "steps": 10, "val_loss": 1.0, "val_acc": a, "lr": 1e-3,
             "time": 5.0 * (i + 1)} for i, a in enumerate(accs)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"epoch": 9, "va')
    if finished:
        (path / "summary.json").write_text(json.dumps({
            "status": "finished", "steps": 10 * len(accs), "epochs": len(accs), "params": 1000 * patch,
            "best_val_acc": max(accs), "final_val_acc": accs[-1], "final_val_loss": 1.0,
            "img_per_s": 100.0 * patch, "wall_time": 5.0 * len(accs),
        }))
    if test_acc is not None:
        (path / "eval_test.json").write_text(json.dumps({"split": "test", "acc": test_acc}))


@pytest.fixture
def sweep_dir(tmp_path):
    root = tmp_path / "runs" / "patch"
    make_run(root / "patch_size=2", 2, [0.5, 0.7, 0.65], finished=True, test_acc=0.64)
    make_run(root / "patch_size=16", 16, [0.4], finished=False)
    make_run(root / "patch_size=4", 4, [0.6, 0.8], finished=True)
    (root / "patch_size=4" / "checkpoints" / "last").mkdir(parents=True)
    return root


def test_report_table_csv_and_plots(sweep_dir):
    files = write_report([sweep_dir], sweep_dir)
    assert {f.name for f in files} == {"report.md", "report.csv", *plot_titles("val")}
    for name in plot_titles("val"):
        assert (sweep_dir / name).read_bytes().startswith(b"\x89PNG")

    rows = list(csv.DictReader((sweep_dir / "report.csv").open()))
    assert list(rows[0]) == ["run", "model.patch_size", "status", "epochs", "params", "best_val_acc",
                             "final_val_acc", "test_acc", "img_per_s", "wall_time", "device"]
    assert [r["run"] for r in rows] == ["patch_size=2", "patch_size=4", "patch_size=16"]
    expected = {"model.patch_size": "2", "status": "finished", "params": "2000", "best_val_acc": "0.7",
                "final_val_acc": "0.65", "test_acc": "0.64", "device": "CPU (2 cores)"}
    assert {k: rows[0][k] for k in expected} == expected
    assert rows[2]["status"] == "incomplete" and rows[2]["params"] == ""
    assert rows[2]["final_val_acc"] == "0.4" and rows[2]["wall_time"] == "5.0"

    md = (sweep_dir / "report.md").read_text()
    assert "| run | model.patch_size | status | epochs | params | best val acc % |" in md
    assert "| patch_size=2 | 2 | finished | 3 | 2.0k | 70.00 | 65.00 | 64.00 | 200 | 15 | CPU (2 cores) |" in md
    assert "| patch_size=16 | 16 | incomplete | 1 | - | 40.00 | 40.00 | - | 1600 | 5 | CPU (2 cores) |" in md
    assert "![validation accuracy per epoch](val_acc.png)" in md


def test_runs_that_report_the_test_set_are_reported_on_it(tmp_path):
    """CIFAR recipes evaluate only the test set while training: no best val column, the
    final test accuracy, and the plots of test accuracy."""
    root = tmp_path / "runs"
    run = root / "a"
    make_run(run, 4, [0.5, 0.7], finished=True)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()[:-1]]
    for m in metrics:
        m["test_acc"], m["test_loss"] = m.pop("val_acc"), m.pop("val_loss")
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    summary = json.loads((run / "summary.json").read_text())
    summary.update(best_val_acc=None, final_test_acc=0.7)
    del summary["final_val_acc"]
    (run / "summary.json").write_text(json.dumps(summary))
    files = write_report([root], root)
    assert {f.name for f in files} == {"report.md", "report.csv", "test_acc.png",
                                       "acc_vs_params.png", "acc_vs_throughput.png"}
    rows = list(csv.DictReader((root / "report.csv").open()))
    assert "best_val_acc" not in rows[0] and rows[0]["final_test_acc"] == "0.7"
    assert "![test accuracy per epoch](test_acc.png)" in (root / "report.md").read_text()


def test_runs_are_found_at_any_depth_and_labelled_by_their_path(tmp_path, sweep_dir):
    other = tmp_path / "single"
    make_run(other, 8, [0.9], finished=True)
    runs = find_runs([sweep_dir, other])
    assert [r.label for r in runs] == ["runs/patch/patch_size=2", "runs/patch/patch_size=4",
                                       "runs/patch/patch_size=16", "single"]
    assert [r.label for r in find_runs([other])] == ["single"]


def test_cli_writes_to_out_and_defaults_to_the_first_dir(tmp_path, sweep_dir):
    result = CliRunner().invoke(cli, ["report", str(sweep_dir), "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "rep" / "report.md").exists() and not (sweep_dir / "report.md").exists()
    assert CliRunner().invoke(cli, ["report", str(sweep_dir)]).exit_code == 0
    assert (sweep_dir / "report.csv").exists()


def test_only_differing_keys_are_columns(tmp_path):
    make_run(tmp_path / "a", 4, [0.5], finished=True)
    make_run(tmp_path / "b", 4, [0.6], finished=True)
    recipe = yaml.safe_load((tmp_path / "b" / "recipe.yaml").read_text())
    recipe["data"]["augment"] = [{"random_crop": {"padding": 4}}, "hflip"]
    (tmp_path / "b" / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    write_report([tmp_path], tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "| run | data.augment | status |" in md
    assert "| b | [{random_crop: {padding: 4}}, hflip] | finished |" in md


@pytest.mark.parametrize("make", [lambda p: p.mkdir(), lambda p: None])
def test_no_runs_is_a_one_line_error(tmp_path, make):
    make(tmp_path / "empty")
    with pytest.raises(ZooError):
        find_runs([tmp_path / "empty"])
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "empty")])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")


def test_run_names_are_inert_text_in_the_report(tmp_path):
    """A run dir named with HTML and a line break stays one table cell of plain text."""
    root = tmp_path / "runs"
    make_run(root / "<img src=x onerror=alert(1)>\nrow|cell", 4, [0.5], finished=True)
    make_run(root / "plain", 4, [0.6], finished=True)
    write_report([root], root)
    md = (root / "report.md").read_text()
    assert "<img" not in md and "&lt;img src=x onerror=alert(1)&gt; row\\|cell |" in md
    assert all(line.startswith("|") for line in md.splitlines() if "onerror" in line)
