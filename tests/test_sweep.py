"""Sweeps: expansion, cell names, skip/resume/restart, dry run, errors.

A fake runner stands in for `zoo run`; one tiny cell trains for real, pasted from --dry-run.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import ROOT
from tests.helpers import BASE
from zoo.cli import cli
from zoo.errors import ZooError
from zoo.recipe import load_recipe, parse_override, resolve, yaml_value
from zoo.study import sweep as sweep_mod
from zoo.study.cells import cell_order, cell_overrides, load_sweep
from zoo.study.sweep import SweepInterrupted, check, run_sweep

SAFE_NAME = re.compile(r"^[A-Za-z0-9_.=+,-]+$")


def write_sweep(tmp_path: Path, text: str) -> Path:
    (tmp_path / "base.yaml").write_text(BASE)
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


def names(tmp_path: Path, text: str) -> list[str]:
    return [c.name for c in load_sweep(write_sweep(tmp_path, text)).cells]


def test_grid_is_the_cartesian_product(tmp_path):
    s = load_sweep(write_sweep(tmp_path, "base: base.yaml\ngrid:\n  model.patch_size: [2, 4, 8]\n"
                                         "  model.depth: [1, 2]\n"))
    assert s.name == "s" and s.base == tmp_path / "base.yaml"
    assert len(s.cells) == 6
    assert s.cells[0].overrides == {"model.patch_size": 2, "model.depth": 1}
    assert [c.name for c in s.cells[:2]] == ["patch_size=2-depth=1", "patch_size=2-depth=2"]


def test_list_cells_are_named_by_the_keys_that_vary(tmp_path):
    text = """base: base.yaml
cells:
  - {model.attention: mhsa, model.heads: 4, train.epochs: 2}
  - {model.attention: diff, model.heads: 2, train.epochs: 2}
"""
    assert names(tmp_path, text) == ["attention=mhsa-heads=4", "attention=diff-heads=2"]


def test_named_cells_times_grid_with_labels(tmp_path):
    text = """base: base.yaml
name: study
cells:
  vit: {}
  diffvit: {model.attention: diff, model.heads: 1}
grid:
  data.augment: {none: [], flip: [hflip]}
"""
    s = load_sweep(write_sweep(tmp_path, text))
    assert s.name == "study"
    assert [c.name for c in s.cells] == ["vit-augment=none", "vit-augment=flip",
                                         "diffvit-augment=none", "diffvit-augment=flip"]
    assert s.cells[3].overrides == {"model.attention": "diff", "model.heads": 1,
                                    "data.augment": ["hflip"]}


def test_mapping_and_list_values_get_short_names(tmp_path):
    text = """base: base.yaml
grid:
  model.posemb: [none, {sinusoidal: {dims: 1}}, sinusoidal]
  data.augment: [[], [hflip, {random_crop: {padding: 4}}]]
"""
    got = names(tmp_path, text)
    assert "posemb=sinusoidal,dims=1-augment=hflip+random_crop,padding=4" in got
    assert "posemb=none-augment=none" in got


def test_names_are_safe_and_unique(tmp_path):
    text = """base: base.yaml
grid:
  data.root: ["a/b", "a b", "a_b", "x/../..", "%s"]
""" % ("y" * 120)
    got = names(tmp_path, text)
    assert len(set(got)) == len(got) == 5
    assert all(SAFE_NAME.match(n) and len(n) <= 80 for n in got), got


def test_same_leaf_keys_keep_their_section(tmp_path):
    got = names(tmp_path, "base: base.yaml\ncells:\n  - {model.dropout: 0.1, train.seed: 1}\n"
                          "  - {model.dropout: 0.2, train.seed: 2}\n")
    assert got == ["dropout=0.1-seed=1", "dropout=0.2-seed=2"]
    got = names(tmp_path, "base: base.yaml\ncells:\n  - {model.name: 1}\n  - {name: 2}\n")
    assert got[0].startswith("model.name=1") and got[1].startswith("name=2")


def test_identical_cells_are_an_error(tmp_path):
    with pytest.raises(ZooError, match="same overrides"):
        load_sweep(write_sweep(tmp_path, "base: base.yaml\ngrid: {train.seed: [1, 1]}\n"))


@pytest.mark.parametrize("value", ["mhsa", "2", 1e-5, 0.001, True, None, [], ["hflip"],
                                   {"diff": {"lambda_init": 0.5}}, "a b", "x: y"])
def test_yaml_value_reads_back_through_set(value):
    assert parse_override(f"k={yaml_value(value)}")[1] == value


def test_sweep_set_wins_over_cells_which_win_over_file_set(tmp_path):
    s = load_sweep(write_sweep(tmp_path, "base: base.yaml\nset: {train.epochs: 5, train.seed: 7}\n"
                                         "grid: {train.epochs: [2, 3]}\n"))
    overrides = cell_overrides(s, s.cells[0], ("train.epochs=1",))
    assert overrides == ["train.epochs=2", "train.seed=7", "train.epochs=1"]
    recipe = load_recipe(s.base, overrides)
    assert (recipe.train.epochs, recipe.train.seed) == (1, 7)


# ---------------------------------------------------------------------------------------
# Running, with a fake runner that writes what a finished run leaves behind


def fabricate(run_dir: Path, recipe_yaml: str, state: str) -> None:
    """A run folder as `zoo run` leaves it: finished, with a checkpoint, or just started."""
    run_dir.mkdir(parents=True)
    (run_dir / "recipe.yaml").write_text(recipe_yaml)
    if state in ("finished", "resume"):
        (run_dir / "checkpoints" / "last").mkdir(parents=True)
    if state == "finished":
        (run_dir / "summary.json").write_text(json.dumps({"status": "finished"}))


class FakeRunner:
    """Records each command and finishes the run it names, like `zoo run` would."""

    def __init__(self, fail: set[str] = frozenset()):
        self.calls: list[list[str]] = []
        self.fail = fail

    def __call__(self, cmd: list[str]) -> int:
        self.calls.append(cmd)
        run_dir = Path(cmd[-1])
        if "--out" in cmd:
            assert not (run_dir / "recipe.yaml").exists(), "a started run must be removed first"
            sets = tuple(cmd[i + 1] for i, a in enumerate(cmd) if a == "--set")
            fabricate(run_dir, resolve(cmd[4], sets, ()).to_yaml(), "started")
        if run_dir.name in self.fail:
            return 1
        (run_dir / "summary.json").write_text(json.dumps({"status": "finished"}))
        return 0


@pytest.fixture
def seed_sweep(tmp_path):
    return load_sweep(write_sweep(tmp_path, "base: base.yaml\ngrid: {train.seed: [0, 1, 2, 3]}\n"))


def cell_yaml(s, i: int) -> str:
    return resolve(str(s.base), tuple(cell_overrides(s, s.cells[i])), ()).to_yaml()


def test_only_missing_cells_run(tmp_path, seed_sweep):
    out = tmp_path / "runs"
    fabricate(out / "seed=0", cell_yaml(seed_sweep, 0), "finished")
    fabricate(out / "seed=1", cell_yaml(seed_sweep, 1), "resume")
    fabricate(out / "seed=2", cell_yaml(seed_sweep, 2), "restart")
    runner = FakeRunner()
    assert run_sweep(seed_sweep, out, (), runner) == []
    zoo_run = [sys.executable, "-m", "zoo", "run"]
    assert runner.calls[0] == [*zoo_run, "--resume", str(out / "seed=1")]
    assert runner.calls[1][:5] == [*zoo_run, str(seed_sweep.base)]
    assert runner.calls[1][-4:] == ["--set", "train.seed=2", "--out", str(out / "seed=2")]
    assert runner.calls[2][-1] == str(out / "seed=3")
    assert len(runner.calls) == 3
    runner = FakeRunner()
    assert run_sweep(seed_sweep, out, (), runner) == [] and runner.calls == []
    assert cell_order(out) == ["seed=0", "seed=1", "seed=2", "seed=3"]  # for `zoo report`


def test_a_failed_cell_is_reported_and_the_rest_run(tmp_path, seed_sweep, monkeypatch):
    runner = FakeRunner(fail={"seed=1"})
    monkeypatch.setattr(sweep_mod, "run_subprocess", runner)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["sweep", str(seed_sweep.path), "--out", "runs"])
    assert result.exit_code == 1
    assert len(runner.calls) == 4
    assert result.stderr.strip() == "sweep s: 1 of 4 cells failed: seed=1 (exit 1)"


def test_exit_zero_without_summary_is_a_failure(tmp_path, seed_sweep):
    assert run_sweep(seed_sweep, tmp_path / "runs", (), lambda cmd: 0)[0].startswith("seed=0 (exit 0")


@pytest.mark.parametrize("how", ["signal to the sweep", "cell killed by SIGTERM"])
def test_an_interrupt_stops_the_sweep(tmp_path, seed_sweep, how):
    calls = []

    def interrupted(cmd):
        calls.append(cmd)
        if how == "signal to the sweep":
            raise KeyboardInterrupt("SIGINT")
        return 143

    with pytest.raises(SweepInterrupted, match="interrupted in seed=0"):
        run_sweep(seed_sweep, tmp_path / "runs", (), interrupted)
    assert len(calls) == 1


def test_the_cli_says_how_to_finish_an_interrupted_sweep(tmp_path, seed_sweep, monkeypatch):
    def interrupted(cmd):
        raise KeyboardInterrupt("SIGTERM")

    monkeypatch.setattr(sweep_mod, "run_subprocess", interrupted)
    result = CliRunner().invoke(cli, ["sweep", str(seed_sweep.path), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 130
    assert result.stdout.startswith("[1/4] seed=0: running\n  ")
    assert result.stderr == ("\nsweep s: interrupted in seed=0 (SIGTERM); run the same command "
                             "again to finish the missing cells\n")


def test_a_folder_with_another_recipe_is_not_skipped(tmp_path, seed_sweep):
    out = tmp_path / "runs"
    fabricate(out / "seed=0", cell_yaml(seed_sweep, 0), "finished")
    with pytest.raises(ZooError, match=r"seed=0: holds a run of another recipe \(train.epochs: 1 -> 3"):
        check(seed_sweep, out, ("train.epochs=3",))


def test_dry_run_prints_one_command_per_cell(tmp_path, seed_sweep, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fabricate(tmp_path / "runs/s/seed=0", cell_yaml(seed_sweep, 0), "finished")
    fabricate(tmp_path / "runs/s/seed=1", cell_yaml(seed_sweep, 1), "restart")
    result = CliRunner().invoke(cli, ["sweep", "s.yaml", "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 4
    assert lines[0] == "# finished: runs/s/seed=0"
    assert lines[1].startswith("rm -r runs/s/seed=1 && ")
    assert shlex.split(lines[3]) == [sys.executable, "-m", "zoo", "run", "base.yaml",
                                     "--set", "train.seed=3", "--out", "runs/s/seed=3"]
    assert (tmp_path / "runs/s/seed=1").exists() and not (tmp_path / "runs/s/seed=3").exists()


def test_a_dry_run_line_runs_unchanged_in_a_shell(tmp_path, seed_sweep, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = CliRunner().invoke(cli, ["sweep", "s.yaml", "--dry-run"]).stdout.splitlines()[0]
    result = subprocess.run(line, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "runs/s/seed=0/summary.json").read_text())["status"] == "finished"
    assert check(seed_sweep, tmp_path / "runs/s", ())["seed=0"] == "finished"


# ---------------------------------------------------------------------------------------
# Mistakes: one line, exit code 2, before anything runs


BAD = {
    "unknown key": ("base: base.yaml\ngrdi: {train.seed: [1]}\n", "unknown key 'grdi' (did you mean grid?)"),
    "empty grid": ("base: base.yaml\ngrid: {}\n", "grid: is empty"),
    "empty values": ("base: base.yaml\ngrid: {train.seed: []}\n", "grid: train.seed: expected a non-empty list"),
    "nothing": ("base: base.yaml\n", "nothing to sweep"),
    "no base": ("grid: {train.seed: [1]}\n", "base: expected the path of a recipe"),
    "missing base": ("base: nope.yaml\ngrid: {train.seed: [1]}\n", "nope.yaml not found"),
    "unknown recipe key": ("base: base.yaml\ngrid: {model.patch_szie: [2, 4]}\n",
                           "cell patch_szie=2: ", "(did you mean patch_size?)"),
    "unknown plugin": ("base: base.yaml\ncells: [{model.attention: dif}]\n", "unknown attention 'dif'"),
    "bad value": ("base: base.yaml\ngrid: {model.depth: [2, deep]}\n", "cell depth=deep: ", "model.depth: expected int"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_sweep_files_are_one_line_errors(tmp_path, case):
    text, *fragments = BAD[case]
    path = write_sweep(tmp_path, text)
    result = CliRunner().invoke(cli, ["sweep", str(path), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert not (tmp_path / "runs").exists()


def test_bad_sweep_file_in_a_real_process(tmp_path):
    path = write_sweep(tmp_path, BAD["unknown recipe key"][0])
    code = "import sys; from zoo.cli import cli; sys.exit(cli(prog_name='zoo'))"
    result = subprocess.run([sys.executable, "-c", code, "sweep", str(path), "--dry-run"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "did you mean patch_size?" in result.stderr


@pytest.mark.parametrize("path", sorted((ROOT / "recipes" / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_every_sweep_file_validates(path, tmp_path):
    s = load_sweep(path)
    assert s.name == path.stem and s.cells
    assert set(check(s, tmp_path, ()).values()) == {"new"}


def test_plugins_given_to_a_sweep_reach_every_cell(tmp_path):
    """--plugins: the cells are checked with them, and each cell's command loads them."""
    plugin = tmp_path / "mine.py"
    plugin.write_text((ROOT / "plugins" / "attention" / "mhsa.py").read_text()
                      .replace('register("attention", "mhsa")', 'register("attention", "mine")'))
    path = write_sweep(tmp_path, "base: base.yaml\ngrid: {model.attention: [mine], model.depth: [1, 2]}\n")
    refused = CliRunner().invoke(cli, ["sweep", str(path), "--dry-run"])
    assert refused.exit_code == 2 and "unknown attention 'mine'" in refused.output
    shown = CliRunner().invoke(cli, ["sweep", str(path), "--dry-run", "--plugins", str(plugin)])
    assert shown.exit_code == 0, shown.output
    commands = [line for line in shown.output.splitlines() if "-m zoo run" in line]
    assert len(commands) == 2 and all(f"--plugins {plugin}" in c for c in commands)


def test_a_cell_may_start_from_a_recipe_of_its_own(tmp_path):
    """`recipe:` in a cells entry: that cell's run starts from it (the zoo of published
    models: each its own recipe), `set:` and the cell's overrides on top; the name stays."""
    (tmp_path / "other.yaml").write_text(BASE.replace("name: tiny", "name: other").replace(
        "depth: 1", "depth: 2"))
    path = write_sweep(tmp_path, "base: base.yaml\nset: {train.epochs: 2}\ncells:\n  plain: {}\n"
                                 "  own: {recipe: other.yaml, model.heads: 4}\n")
    sweep = load_sweep(path)
    assert [c.name for c in sweep.cells] == ["plain", "own"]
    assert sweep.cells[0].start(sweep) == tmp_path / "base.yaml"
    assert sweep.cells[1].start(sweep) == tmp_path / "other.yaml"
    assert "recipe" not in sweep.cells[1].overrides
    recipe = resolve(str(sweep.cells[1].start(sweep)), tuple(cell_overrides(sweep, sweep.cells[1])))
    assert (recipe.name, recipe.model.depth, recipe.model.heads, recipe.train.epochs) == ("other", 2, 4, 2)
    cmd = sweep_mod.command(sweep, sweep.cells[1], tmp_path / "out" / "own", "new", ())
    assert str(tmp_path / "other.yaml") in " ".join(cmd) or "other.yaml" in " ".join(cmd)
    bad = write_sweep(tmp_path, "base: base.yaml\ncells:\n  x: {recipe: missing.yaml}\n")
    with pytest.raises(ZooError, match=r"cells: recipe: 'missing.yaml' is not a recipe file"):
        load_sweep(bad)
