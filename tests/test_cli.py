"""The `zoo` command line, through click's runner and as a real subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from tests.conftest import ROOT
from tests.helpers import assert_one_line_error
from zoo.cli import cli
from zoo.registry import builtin_dir

MY_ATTN = '''
from torch import nn

from zoo.registry import register


@register("attention", "{name}")
class MyAttention(nn.Module):
    """Identity attention, for trying the plugin mechanism."""

    def __init__(self, dim: int, heads: int, gain: float = 1.0):
        super().__init__()
        self.gain = gain

    def forward(self, x):
        return x * self.gain
'''


def run_zoo(zoo_exe, *args, env=None, cwd=None):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([zoo_exe, *args], capture_output=True, text=True, env=full_env,
                          cwd=cwd, timeout=120)


def test_help_lists_commands():
    out = CliRunner().invoke(cli, ["--help"]).output
    for cmd in ("list", "show", "run"):
        assert cmd in out
    for cmd in ("list", "show", "run"):
        result = CliRunner().invoke(cli, [cmd, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output


def test_recipes_by_name(zoo_exe, tmp_path):
    """From any folder: `zoo list recipes`, then a recipe or sweep by its name."""
    listed = run_zoo(zoo_exe, "list", "recipes", cwd=tmp_path)
    assert listed.returncode == 0 and "quickstart" in listed.stdout
    assert "sweeps/patch_size_shapes" in listed.stdout
    shown = run_zoo(zoo_exe, "show", "vit_p4", "--set", "train.epochs=2", cwd=tmp_path)
    assert shown.returncode == 0 and "name: vit_p4" in shown.stdout and "epochs: 2" in shown.stdout
    swept = run_zoo(zoo_exe, "sweep", "patch_size_shapes", "--dry-run", cwd=tmp_path)
    assert swept.returncode == 0 and swept.stdout.count("-m zoo run") == 6
    assert_one_line_error(run_zoo(zoo_exe, "show", "quikstart", cwd=tmp_path),
                          "quikstart: no such recipe", "did you mean quickstart?")


def test_the_tools_are_zoo_commands(zoo_exe):
    """One implementation: the tools' click commands, reached through zoo."""
    listed = run_zoo(zoo_exe, "--help").stdout
    assert "clip-vs-resnet" in listed and "fp16-profile" in listed
    for name, flag in (("clip-vs-resnet", "--resnet"), ("fp16-profile", "--batch-sizes")):
        helped = run_zoo(zoo_exe, name, "--help")
        assert helped.returncode == 0 and f"Usage: zoo {name}" in helped.stdout
        assert flag in helped.stdout
    assert_one_line_error(run_zoo(zoo_exe, "fp16-profile", "--device", "tpu"), "--device tpu")


def test_the_tools_without_their_extra_say_how_to_install_it(zoo_exe, tmp_path):
    """openai-clip is the `tools` extra's: with it broken (a `clip` whose import needs a
    missing ftfy), both ways of running a tool say which package and how to get it."""
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'ftfy'\", name='ftfy')\n")
    env = {"PYTHONPATH": str(tmp_path)}
    assert run_zoo(zoo_exe, "fp16-profile", "--help", env=env).returncode == 0
    args = ("--random-init", "--device", "cpu", "--out", str(tmp_path / "out"))
    assert_one_line_error(run_zoo(zoo_exe, "fp16-profile", *args, env=env),
                          "need the package ftfy", "pip install 'vit-zoo[tools]'")
    script = subprocess.run([sys.executable, str(ROOT / "tools" / "fp16_profile.py"), *args],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, **env})
    assert_one_line_error(script, "need the package ftfy")
    assert not (tmp_path / "out").exists()


def test_list_every_kind():
    out = CliRunner().invoke(cli, ["list"]).output
    for kind in ("attention", "posemb", "augment", "visualizer", "dataset"):
        assert kind in out
    assert "mhsa" in out and "diff" in out


def test_list_kind_shows_doc_params_file_and_filters():
    result = CliRunner().invoke(cli, ["list", "attention"])
    assert result.exit_code == 0
    assert "params:" in result.output and "plugins/attention/diff.py" in result.output
    only_d = CliRunner().invoke(cli, ["list", "attention", "d*"]).output
    assert "diff" in only_d and "mhsa" not in only_d


def test_list_json():
    result = CliRunner().invoke(cli, ["list", "posemb", "--json"])
    data = json.loads(result.output)
    names = {p["name"] for p in data["plugins"]["posemb"]}
    assert {"none", "learned_1d", "learned_2d", "sinusoidal"} <= names


def test_list_unknown_kind_is_one_line():
    result = CliRunner().invoke(cli, ["list", "atention"])
    assert result.exit_code == 2
    assert "unknown plugin kind 'atention' (did you mean attention?)" in result.output
    recipe = CliRunner().invoke(cli, ["list", "recipe"])
    assert recipe.exit_code == 2 and "(did you mean recipes?)" in recipe.output


def test_file_dropped_into_builtin_folder_is_listed(tmp_path):
    """On a copy of the package (the source tree is never written): a file dropped into
    the built-in plugin folder is a plugin, with no registration anywhere else."""
    shutil.copytree(ROOT / "zoo", tmp_path / "zoo", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(builtin_dir(), tmp_path / "zoo" / "_plugins",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "zoo" / "_plugins" / "attention" / "dropped.py").write_text(
        MY_ATTN.format(name="dropped"))
    result = subprocess.run([sys.executable, "-m", "zoo", "list", "attention"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "dropped" in result.stdout and "Identity attention" in result.stdout
    assert not (builtin_dir() / "attention" / "dropped.py").exists()


def test_zoo_plugin_path_and_recipe_plugins(zoo_exe, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "my_attn.py").write_text(MY_ATTN.format(name="env_attn"))
    result = run_zoo(zoo_exe, "list", "attention", env={"ZOO_PLUGIN_PATH": str(folder)})
    assert result.returncode == 0 and "env_attn" in result.stdout

    (tmp_path / "rec_attn.py").write_text(MY_ATTN.format(name="recipe_attn"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("plugins: [rec_attn.py]\nmodel: {attention: {recipe_attn: {gain: 2}}}\n")
    shown = run_zoo(zoo_exe, "show", str(recipe))
    assert shown.returncode == 0, shown.stderr
    assert "recipe_attn" in shown.stdout and "gain: 2" in shown.stdout


def test_show_resolves_overrides():
    result = CliRunner().invoke(cli, ["show", str(ROOT / "recipes" / "quickstart.yaml"),
                                      "--set", "model.depth=3", "--set", "train.lr=2e-4"])
    assert result.exit_code == 0, result.output
    assert "depth: 3" in result.output and "lr: 0.0002" in result.output


@pytest.mark.parametrize("command", [["show"], ["run", "--dry-run"]])
def test_show_checks_what_a_dry_run_checks(command, tmp_path):
    """One validation for both: a device name zoo does not know, a plugin whose constructor
    refuses its value, and a figure the model cannot serve (a warning: training skips it)."""
    from tests.helpers import readme_plugin

    quickstart = str(ROOT / "recipes" / "quickstart.yaml")
    device = CliRunner().invoke(cli, [*command, quickstart, "--set", "train.device=gpu"])
    assert device.exit_code == 2 and "train.device: unknown device 'gpu'" in device.output
    vis = CliRunner().invoke(cli, [*command, quickstart,
                                   "--set", "log.visualizers=[{rollout: {fusion: avg}}]"])
    assert vis.exit_code == 2 and "fusion must be mean, max or min" in vis.output, vis.output
    toy = CliRunner().invoke(cli, [*command, quickstart, "--plugins", str(readme_plugin(tmp_path)),
                                   "--set", "model.attention=linear_mix"])
    assert toy.exit_code == 0, toy.output
    assert "visualizer 'rollout' skipped: attention 'linear_mix' has no return_attn" in toy.output


USAGE = {
    "unknown command": (["lst"], ["zoo: No such command 'lst'", "Did you mean 'list'?", "zoo --help"]),
    "bad choice": (["export", "run", "--format", "xyz"], ["zoo export: Invalid value for '--format'",
                                                           "(see zoo export --help)"]),
    "missing value": (["eval", "--split"], ["zoo eval: Option '--split' requires an argument"]),
    "missing argument": (["predict"], ["zoo predict: Missing argument 'SOURCE'"]),
    "group option": (["--bogus"], ["zoo: No such option '--bogus'"]),
}


@pytest.mark.parametrize("case", sorted(USAGE))
def test_usage_errors_are_one_line(zoo_exe, case):
    args, fragments = USAGE[case]
    assert_one_line_error(run_zoo(zoo_exe, *args), *fragments)


def test_bare_zoo_still_shows_the_help(zoo_exe):
    result = run_zoo(zoo_exe)  # click >= 8.2 writes it to stderr, with exit code 2
    assert "Commands:" in result.stdout + result.stderr and "error:" not in result.stderr


BAD = {
    "malformed": ("model:\n  dim: [64\n", ["malformed YAML"]),
    "unknown_key": ("model: {dpeth: 3}\n", ["model.dpeth", "did you mean depth?"]),
    "misspelled_plugin": ("model: {attention: mhas}\n", ["unknown attention 'mhas'", "did you mean mhsa?"]),
    "misspelled_param": ("model: {attention: {diff: {lamda_init: 0.5}}}\n",
                         ["model.attention.lamda_init", "did you mean lambda_init?"]),
    "missing_base": ("base: nowhere.yaml\n", ["base:", "nowhere.yaml not found"]),
    "broken_plugin": ("plugins: [broken.py]\n", ["broken.py:2", "syntax error"]),
    "mistyped_param": ("model: {attention: {diff: {lambda_init: high}}}\n",
                       ["model.attention.lambda_init: expected float or null, got 'high'"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_one_line_exit_2_subprocess(zoo_exe, tmp_path, case):
    text, fragments = BAD[case]
    (tmp_path / "broken.py").write_text("import torch\ndef f(:\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    assert_one_line_error(run_zoo(zoo_exe, "show", str(recipe)), str(recipe) if case != "broken_plugin" else "", *fragments)


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_one_line_exit_2_runner(tmp_path, case):
    text, fragments = BAD[case]
    (tmp_path / "broken.py").write_text("import torch\ndef f(:\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    result = CliRunner().invoke(cli, ["run", str(recipe), "--dry-run"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in result.output


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_traceback(zoo_exe, tmp_path, where):
    """`zoo --debug CMD` and `zoo CMD --debug` alike; without it, one line."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {dpeth: 3}\n")
    args = ["--debug", "show", str(recipe)] if where == "before" else ["show", str(recipe), "--debug"]
    result = run_zoo(zoo_exe, *args)
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "ZooError" in result.stderr
    plain = run_zoo(zoo_exe, "show", str(recipe))
    assert plain.returncode == 2 and "Traceback" not in plain.stderr


def test_list_survives_a_broken_plugin_file(zoo_exe, tmp_path):
    (tmp_path / "broken.py").write_text("def f(:\n")
    result = run_zoo(zoo_exe, "list", "attention", env={"ZOO_PLUGIN_PATH": str(tmp_path)})
    assert result.returncode == 0
    assert "mhsa" in result.stdout
    assert "broken.py:1" in result.stderr and "Traceback" not in result.stderr


def test_a_run_dirs_plugin_files_run_only_when_trusted(zoo_exe, tmp_path):
    """Plugin files are code: `zoo eval`, `zoo viz` and `zoo run --resume` on a run dir do
    not import the files its recipe.yaml names unless told to (--trust-plugins), or unless
    the user gives the files (--plugins); the refusal is one line that says so."""
    plugin = tmp_path / "marked.py"
    marker = tmp_path / "IMPORTED"
    plugin.write_text(MY_ATTN.format(name="marked_attn")
                      + f"\nimport pathlib\npathlib.Path({str(marker)!r}).write_text('yes')\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"plugins: [{plugin}]\n"
                      "model: {dim: 16, depth: 1, heads: 2, attention: marked_attn}\n"
                      "data: {dataset: {shapes: {train_size: 64, val_size: 32, test_size: 32}},"
                      " batch_size: 32}\n"
                      "train: {epochs: 1, max_steps: 1}\nlog: {progress: false}\n")
    run = tmp_path / "run"
    trained = run_zoo(zoo_exe, "run", str(recipe), "--out", str(run))
    assert trained.returncode == 0, trained.stderr
    assert marker.exists()  # the user's own recipe: its plugins load
    marker.unlink()
    for args in (["eval", str(run)], ["viz", str(run), "--visualizer", "rollout"],
                 ["run", "--resume", str(run)]):
        refused = run_zoo(zoo_exe, *args)
        assert_one_line_error(refused, "marked_attn", "--trust-plugins", "--plugins")
        assert not marker.exists(), args
    assert run_zoo(zoo_exe, "eval", str(run), "--plugins", str(plugin)).returncode == 0
    marker.unlink()
    trusted = run_zoo(zoo_exe, "eval", str(run), "--split", "val", "--trust-plugins")
    assert trusted.returncode == 0, trusted.stderr
    assert marker.exists()


def test_entry_point_plugins_and_the_discovery_order(zoo_exe, tmp_path):
    """An installed package's `zoo.plugins` entry point is discovered (a tiny package in a
    temp site dir), and sources load in the documented order: built-in, entry points,
    ZOO_PLUGIN_PATH, then --plugins; the same name twice names both files, first loaded first."""
    site = tmp_path / "site"
    (site / "zoo_ep_demo").mkdir(parents=True)
    (site / "zoo_ep_demo" / "__init__.py").write_text(MY_ATTN.format(name="ep_attn"))
    info = site / "zoo_ep_demo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zoo-ep-demo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[zoo.plugins]\ndemo = zoo_ep_demo\n")
    env = {"PYTHONPATH": str(site)}
    listed = run_zoo(zoo_exe, "list", "attention", env=env)
    assert listed.returncode == 0 and "ep_attn" in listed.stdout, listed.stderr

    env_dir, mine = tmp_path / "env", tmp_path / "mine"
    env_dir.mkdir()
    mine.mkdir()
    (env_dir / "again.py").write_text(MY_ATTN.format(name="ep_attn"))
    clash = run_zoo(zoo_exe, "list", "attention", env={**env, "ZOO_PLUGIN_PATH": str(env_dir)})
    assert (f"registered twice: in {site / 'zoo_ep_demo' / '__init__.py'} and in "
            f"{env_dir / 'again.py'}") in clash.stderr
    (env_dir / "again.py").write_text(MY_ATTN.format(name="env_attn"))
    (mine / "late.py").write_text(MY_ATTN.format(name="env_attn"))
    late = run_zoo(zoo_exe, "list", "attention", "--plugins", str(mine / "late.py"),
                   env={**env, "ZOO_PLUGIN_PATH": str(env_dir)})
    assert f"in {env_dir / 'again.py'} and in {mine / 'late.py'}" in late.stderr
