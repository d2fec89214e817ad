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
