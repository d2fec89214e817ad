"""Recipes: base merging, overrides, typed validation and the errors users see."""

from __future__ import annotations

import pytest

from zoo.errors import ZooError
from zoo.recipe import deep_merge, load_recipe, parse_override


def write(path, text):
    path.write_text(text)
    return path


def test_deep_merge_maps_merge_lists_replace():
    a = {"model": {"dim": 64, "depth": 2}, "data": {"augment": ["hflip", "random_crop"]}}
    b = {"model": {"depth": 4}, "data": {"augment": ["mixup"]}}
    assert deep_merge(a, b) == {"model": {"dim": 64, "depth": 4}, "data": {"augment": ["mixup"]}}


def test_base_relative_to_file_plugins_resolved_and_name_from_stem(tmp_path):
    (tmp_path / "base").mkdir()
    write(tmp_path / "base" / "common.yaml", "model: {dim: 64, heads: 4}\ntrain: {lr: 1e-3}\nplugins: [mine.py]\n")
    r = load_recipe(write(tmp_path / "child.yaml", "base: base/common.yaml\nmodel: {depth: 3}\n"))
    assert (r.name, r.model.dim, r.model.depth, r.train.lr) == ("child", 64, 3, 0.001)
    assert r.plugins == [str(tmp_path / "base" / "mine.py")]


def test_overrides_are_yaml_typed(tmp_path):
    path = write(tmp_path / "r.yaml", "model: {dim: 64, heads: 4}\n")
    r = load_recipe(path, ["model.depth=8", "train.lr=5e-4", "model.qkv_bias=false",
                           "data.augment=[hflip, {random_crop: {padding: 2}}]", "train.ema=null"])
    assert r.model.depth == 8 and r.train.lr == 5e-4 and r.model.qkv_bias is False
    assert r.data.augment == ["hflip", {"random_crop": {"padding": 2}}]
    assert r.train.ema is None
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ("model: {dpeth: 3}\n", [], r"r\.yaml: model\.dpeth: unknown key \(did you mean depth\?\)"),
        ("modle: {depth: 3}\n", [], r"modle: unknown key \(did you mean model\?\)"),
        ("model: {depth: three}\n", [], r"model\.depth: expected int, got 'three'"),
        ("train: {lr: fast}\n", [], r"train\.lr: expected float"),
        ("train: {amp: fp8}\n", [], r"train\.amp: 'fp8' is not one of none, bf16, fp16"),
        ("model: {dim: 100, heads: 3}\n", [], r"model\.heads: 3 does not divide dim 100"),
        ("{}\n", ["model.depht=2"], r"model\.depht: unknown key \(did you mean depth\?\)"),
        ("{}\n", ["train.lr"], r"--set train\.lr: expected KEY=VALUE"),
        ("- a\n- b\n", [], r"a recipe must be a YAML mapping"),
        ("base: missing.yaml\n", [], r"base: .*missing\.yaml not found"),
    ],
)
def test_bad_recipes_give_one_line_errors(tmp_path, text, overrides, message):
    path = write(tmp_path / "r.yaml", text)
    with pytest.raises(ZooError, match=message) as e:
        load_recipe(path, overrides)
    assert "\n" not in str(e.value)


def test_malformed_yaml_names_line_and_column(tmp_path):
    path = write(tmp_path / "bad.yaml", "model:\n  dim: 64\n  depth: [1, 2\n")
    with pytest.raises(ZooError, match=r"bad\.yaml:\d+:\d+: malformed YAML"):
        load_recipe(path)


def test_base_cycle_is_reported(tmp_path):
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(ZooError, match="cycle"):
        load_recipe(tmp_path / "a.yaml")


def test_missing_recipe_file(tmp_path):
    with pytest.raises(ZooError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_a_key_given_twice_names_the_key_and_both_lines(tmp_path):
    path = write(tmp_path / "r.yaml", "train:\n  epochs: 1\n  lr: 1.0e-3\n  epochs: 2\n")
    with pytest.raises(ZooError, match=r"r\.yaml:4: duplicate key train\.epochs, first at line 2"):
        load_recipe(path)
    with pytest.raises(ZooError, match=r"--set .*: duplicate key depth"):
        load_recipe(write(tmp_path / "ok.yaml", "{}\n"), ["model={depth: 2, depth: 3}"])


def test_a_tab_in_a_recipe_says_yaml_indents_with_spaces(tmp_path):
    path = write(tmp_path / "r.yaml", "train:\n\tepochs: 1\n")
    with pytest.raises(ZooError, match=r"r\.yaml:2:1: malformed YAML: a tab character; YAML "
                                       r"indents with spaces only"):
        load_recipe(path)


def test_set_mistakes_are_blamed_on_set_and_the_files_on_the_file(tmp_path):
    path = write(tmp_path / "r.yaml", "train: {epochs: 1}\n")
    with pytest.raises(ZooError, match=r"^--set train\.epoch=1: train\.epoch: unknown key "
                                       r"\(did you mean epochs\?\)"):
        load_recipe(path, ["train.epoch=1"])
    with pytest.raises(ZooError, match=r"^--set: model\.depth: -1 must be 1 or more"):
        load_recipe(path, ["model.depth=-1"])
    bad = write(tmp_path / "bad.yaml", "train: {epoch: 1}\n")
    with pytest.raises(ZooError, match=r"bad\.yaml: train\.epoch: unknown key"):
        load_recipe(bad, ["model.depth=2"])
    # inside a plugin spec, keys are the plugin's parameters: checked against its signature
    assert load_recipe(path, ["model.attention.diff.lambda_init=0.5"]).model.attention == {
        "diff": {"lambda_init": 0.5}}


def test_a_sweep_file_given_as_a_recipe_says_to_use_zoo_sweep(tmp_path):
    path = write(tmp_path / "s.yaml", "base: r.yaml\nset: {train.epochs: 1}\ngrid: {model.depth: [1, 2]}\n")
    with pytest.raises(ZooError, match=r"s\.yaml: a sweep file .* run it with `zoo sweep "):
        load_recipe(path)


def test_an_unknown_device_is_refused_wherever_a_recipe_is_read(tmp_path):
    path = write(tmp_path / "r.yaml", "train: {device: gpu}\n")
    with pytest.raises(ZooError, match=r"train\.device: unknown device 'gpu'; use auto, cpu"):
        load_recipe(path)
    fine = write(tmp_path / "fine.yaml", "train: {device: cpu}\n")
    assert load_recipe(fine, ["train.device=cuda:1"]).train.device == "cuda:1"
    with pytest.raises(ZooError, match=r"^--set: train\.device: unknown device 'cuda1'"):
        load_recipe(fine, ["train.device=cuda1"])
