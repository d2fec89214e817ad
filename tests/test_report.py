"""`zoo report` on run folders fabricated with the files `zoo run` and `zoo eval` write,
and on the folder of a real (tiny) sweep."""

from __future__ import annotations

import csv
import json
import sys

import pytest
import yaml
from click.testing import CliRunner

from tests.helpers import BASE, make_run
from zoo.cli import cli
from zoo.errors import ZooError
from zoo.study import sweep as sweep_mod
from zoo.study.cells import Cell, Sweep, record_order
from zoo.study.report import write_report
from zoo.study.results import find_runs, readable

PLOTS = ["val_acc.png", "acc_vs_model.patch_size.png", "acc_vs_params.png", "acc_vs_throughput.png"]


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
    assert [f.name for f in files] == ["report.md", "report.csv", *PLOTS]
    for name in PLOTS:
        assert (sweep_dir / name).read_bytes().startswith(b"\x89PNG")

    rows = list(csv.DictReader((sweep_dir / "report.csv").open()))
    assert list(rows[0]) == ["run", "model.patch_size", "status", "epochs", "params", "best_val_acc",
                             "final_val_acc", "eval_test_acc", "img_per_s", "wall_time", "device"]
    assert [r["run"] for r in rows] == ["patch_size=2", "patch_size=4", "patch_size=16"]
    expected = {"model.patch_size": "2", "status": "finished", "params": "2000", "best_val_acc": "0.7",
                "final_val_acc": "0.65", "eval_test_acc": "0.64", "device": "CPU (2 cores)"}
    assert {k: rows[0][k] for k in expected} == expected
    assert rows[2]["status"] == "incomplete" and rows[2]["params"] == ""
    assert rows[2]["final_val_acc"] == "0.4" and rows[2]["wall_time"] == "5.0"

    md = (sweep_dir / "report.md").read_text()
    assert ("| run | model.patch_size | status | epochs | params | val acc % (training, best epoch) "
            "| val acc % (training, last epoch) | test acc % (zoo eval) | train img/s |") in md
    assert "| patch_size=2 | 2 | finished | 3 | 2.0k | 70.00 | 65.00 | 64.00 | 200 | 15 | CPU (2 cores) |" in md
    assert "| patch_size=16 | 16 | incomplete | 1 | - | 40.00 | 40.00 | - | 1600 | 5 | CPU (2 cores) |" in md
    assert "![validation accuracy per epoch](val_acc.png)" in md
    assert ("![final validation accuracy vs model.patch_size](acc_vs_model.patch_size.png)"
            in md)


def test_the_header_names_the_checkpoint_zoo_eval_read_when_the_runs_agree(tmp_path):
    """Accuracies from training and from `zoo eval` are told apart, and the latter says which
    checkpoint it read (its path as eval_<split>.json wrote it, before the runs were moved
    here), or nothing when the runs read different ones."""
    for name in ("a", "b"):
        make_run(tmp_path / name, 4, [0.5, 0.6], finished=True)
        ckpts = tmp_path / name / "checkpoints"
        for step in (10, 15, 20):
            (ckpts / f"step-{step:08d}").mkdir(parents=True)
        (ckpts / "best").symlink_to("step-00000010")
        (ckpts / "last").symlink_to("step-00000020")

    def header(**read: int) -> str:
        for name, step in read.items():
            (tmp_path / name / "eval_test.json").write_text(json.dumps(
                {"split": "test", "acc": 0.6, "checkpoint": f"/elsewhere/{name}/step-{step:08d}"}))
        write_report([tmp_path], tmp_path)
        return (tmp_path / "report.md").read_text().split("| status |")[1].split("\n")[0]

    assert header(a=20, b=20) == (" epochs | params | val acc % (training, best epoch) | "
                                  "val acc % (training, last epoch) | "
                                  "test acc % (zoo eval, last checkpoint) | train img/s | wall s | "
                                  "device |")
    assert "| test acc % (zoo eval, best checkpoint) |" in header(a=10, b=10)
    assert "| test acc % (zoo eval, checkpoint step-00000015) |" in header(a=15, b=15)
    assert "| test acc % (zoo eval) |" in header(a=15, b=20)
    rows = list(csv.DictReader((tmp_path / "report.csv").open()))
    assert [r["eval_test_acc"] for r in rows] == ["0.6", "0.6"]


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


def test_runs_keep_the_order_of_the_sweep_that_made_them(sweep_dir, tmp_path):
    cells = [Cell(name, {}) for name in ("patch_size=16", "patch_size=2")]  # patch_size=4 unlisted
    record_order(Sweep("patch", tmp_path / "s.yaml", tmp_path / "b.yaml", {}, cells), sweep_dir)
    assert [r.label for r in find_runs([sweep_dir])] == ["patch_size=16", "patch_size=2", "patch_size=4"]
    write_report([sweep_dir], sweep_dir)
    rows = list(csv.DictReader((sweep_dir / "report.csv").open()))
    assert [r["run"] for r in rows] == ["patch_size=16", "patch_size=2", "patch_size=4"]


def test_numbers_read_compactly_in_the_table_and_stay_exact_in_the_csv(tmp_path):
    make_run(tmp_path / "a", 4, [0.5], finished=True, train__warmup_epochs=0.0961538, model__depth=6)
    make_run(tmp_path / "b", 4, [0.6], finished=True, train__warmup_epochs=2.0, model__depth=12)
    write_report([tmp_path], tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "| run | model.depth | train.warmup_epochs | status | epochs |" in md
    assert "| a | 6 | 0.0962 | finished | 1 | 4.0k | 50.00 |" in md
    assert "| b | 12 | 2 | finished | 1 |" in md
    rows = list(csv.DictReader((tmp_path / "report.csv").open()))
    assert rows[0]["train.warmup_epochs"] == "0.0961538" and rows[0]["model.depth"] == "6"
    assert [readable(v) for v in (3, 1234.5, 1e-5, 2.5e-4, True)] == ["3", "1234", "1e-05", "0.00025", "true"]
    assert readable([{"mixup_cutmix": {"alpha": 0.123456}}]) == "[{mixup_cutmix: {alpha: 0.123}}]"


def test_the_swept_keys_are_plotted_and_a_key_that_follows_another_shares_its_plot(tmp_path):
    from zoo.study.plots import swept_axes

    for attention, heads in (("mhsa", 4), ("diff", 2)):
        for patch in (2, 4):
            make_run(tmp_path / f"{attention}-{patch}", patch, [0.5 + patch / 10], finished=True,
                     model__attention=attention, model__heads=heads)
    assert swept_axes(find_runs([tmp_path])) == [["model.patch_size"], ["model.heads", "model.attention"]]
    files = [f.name for f in write_report([tmp_path], tmp_path)]
    assert files == ["report.md", "report.csv", "val_acc.png", "acc_vs_model.patch_size.png",
                     "acc_vs_model.heads.png", "acc_vs_params.png", "acc_vs_throughput.png"]
    assert ("![final validation accuracy vs model.heads / model.attention](acc_vs_model.heads.png)"
            in (tmp_path / "report.md").read_text())


def test_no_finished_runs_draw_nothing(tmp_path):
    make_run(tmp_path / "a", 2, [0.5], finished=False)
    make_run(tmp_path / "b", 4, [0.6, 0.7], finished=False)
    assert [f.name for f in write_report([tmp_path], tmp_path)] == ["report.md", "report.csv"]
    assert not list(tmp_path.glob("*.png"))
    md = (tmp_path / "report.md").read_text()
    assert "no finished runs" in md and "![" not in md


def test_a_plot_without_points_is_not_drawn(tmp_path):
    """Finished runs that logged no metrics and no size or speed: only the plot that has
    points (final accuracy against the swept key) is drawn, and only it is linked."""
    for patch in (2, 4):
        make_run(tmp_path / str(patch), patch, [0.5], finished=True)
        summary = json.loads((tmp_path / str(patch) / "summary.json").read_text())
        for key in ("params", "img_per_s"):
            del summary[key]
        (tmp_path / str(patch) / "summary.json").write_text(json.dumps(summary))
        (tmp_path / str(patch) / "metrics.jsonl").write_text("")
    files = [f.name for f in write_report([tmp_path], tmp_path)]
    assert files == ["report.md", "report.csv", "acc_vs_model.patch_size.png"]
    assert (tmp_path / "report.md").read_text().count("![") == 1


def test_report_on_a_real_sweep(tmp_path, monkeypatch):
    """A tiny sweep run by `zoo sweep`, each cell by `zoo run` with the argv the sweep built
    (in this process: a new one per cell took 17 s to start on a shared 2-core machine), then
    `zoo report`: one row per cell in the sweep's order (8 before 4), the numbers the runs
    wrote, and the plots."""

    def in_process(cmd: list[str]) -> int:
        assert cmd[:4] == [sys.executable, "-m", "zoo", "run"]
        return CliRunner().invoke(cli, cmd[3:]).exit_code

    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "s.yaml").write_text("base: base.yaml\ngrid: {model.patch_size: [8, 4]}\n")
    out = tmp_path / "runs"
    monkeypatch.setattr(sweep_mod, "run_subprocess", in_process)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["sweep", "s.yaml", "--out", str(out)])
    assert result.exit_code == 0, result.output
    evaluated = CliRunner().invoke(cli, ["eval", str(out / "patch_size=8"), "--split", "val",
                                         "--device", "cpu"])
    assert evaluated.exit_code == 0, evaluated.output
    result = CliRunner().invoke(cli, ["report", str(out)])
    assert result.exit_code == 0, result.output

    rows = list(csv.DictReader((out / "report.csv").open()))
    md = (out / "report.md").read_text()
    assert ("| val acc % (training, best epoch) | val acc % (training, last epoch) | "
            "val acc % (zoo eval, last checkpoint) |") in md
    assert rows[0]["eval_val_acc"] == rows[0]["final_val_acc"] and rows[1]["eval_val_acc"] == ""
    assert [(r["run"], r["model.patch_size"]) for r in rows] == [("patch_size=8", "8"), ("patch_size=4", "4")]
    for row in rows:
        summary = json.loads((out / row["run"] / "summary.json").read_text())
        last = [m for m in map(json.loads, (out / row["run"] / "metrics.jsonl").read_text().splitlines())
                if "val_acc" in m][-1]
        assert summary["status"] == row["status"] == "finished"
        assert float(row["final_val_acc"]) == summary["final_val_acc"] == last["val_acc"]
        assert float(row["best_val_acc"]) == summary["best_val_acc"]
        assert int(row["params"]) == summary["params"]
        acc = f"{100 * summary['final_val_acc']:.2f}"  # best and final: one epoch
        line = (f"| {row['run']} | {row['model.patch_size']} | finished | 1 | "
                f"{summary['params'] / 1e3:.1f}k | {acc} | {acc} | ")
        assert any(text.startswith(line) for text in md.splitlines()), (line, md)
    for name in PLOTS:
        assert (out / name).read_bytes().startswith(b"\x89PNG"), name
        assert f"]({name})" in md
