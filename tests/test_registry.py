"""Registry: registration, spec parsing, parameter checks, discovery order and errors."""

from __future__ import annotations

import pytest

from tests.helpers import PLUGIN, write_plugin
from zoo import registry
from zoo.errors import ZooError
from zoo.registry import build, discover, register


def test_build_passes_accepted_context_and_checked_params(tmp_path):
    registry.load_file(write_plugin(tmp_path / "p.py"))
    obj = build("attention", {"custom_attn": {"scale": 2}}, dim=8, heads=2, layer=3, depth=4)
    assert (obj.dim, obj.heads, obj.scale, obj.causal) == (8, 2, 2, False)
    assert build("attention", "custom_attn", dim=4, heads=1).scale == 1.0


def test_parameters_are_checked_and_widened_by_their_annotations(tmp_path):
    """Optional and union annotations too, from `from __future__ import annotations` files."""
    path = tmp_path / "typed.py"
    path.write_text(PLUGIN.format(name="typed_attn").replace(
        "scale: float = 1.0", "scale: float | None = None"))
    registry.load_file(path)
    assert build("attention", {"typed_attn": {"scale": 2}}, dim=8, heads=2).scale == 2.0
    assert isinstance(build("attention", {"typed_attn": {"scale": 2}}, dim=8, heads=2).scale, float)
    with pytest.raises(ZooError, match=r"attention\.scale: expected float or null, got 'high'"):
        build("attention", {"typed_attn": {"scale": "high"}}, dim=8, heads=2)


def test_a_plugin_that_returns_the_wrong_thing_is_named(tmp_path):
    path = tmp_path / "wrong.py"
    path.write_text(PLUGIN.format(name="wrong_attn").replace("    def __call__", "    def other"))
    registry.load_file(path)
    with pytest.raises(ZooError, match=rf"model\.attention: attention 'wrong_attn' \({path}:\d+\) "
                                       r"returned Custom, not Attention"):
        build("attention", "wrong_attn", path="model.attention", dim=8, heads=2)


def test_unknown_parameter_names_path_and_suggests(tmp_path):
    registry.load_file(write_plugin(tmp_path / "p.py"))
    with pytest.raises(ZooError, match=r"model\.attention\.scal: unknown parameter .*did you mean scale"):
        build("attention", {"custom_attn": {"scal": 2}}, path="model.attention", dim=8, heads=2)


def test_wrong_type_and_context_owned_parameter(tmp_path):
    registry.load_file(write_plugin(tmp_path / "p.py"))
    with pytest.raises(ZooError, match=r"attention\.causal: expected true or false"):
        build("attention", {"custom_attn": {"causal": "yes"}}, dim=8, heads=2)
    with pytest.raises(ZooError, match=r"attention\.dim: set by zoo"):
        build("attention", {"custom_attn": {"dim": 3}}, dim=8, heads=2)


def test_unknown_name_lists_available_and_suggests(tmp_path):
    registry.load_file(write_plugin(tmp_path / "p.py"))
    with pytest.raises(ZooError, match=r"unknown attention 'custom_atn' \(did you mean custom_attn\?\); available: .*custom_attn"):
        build("attention", "custom_atn", dim=8, heads=2)


def test_bad_spec_shape():
    with pytest.raises(ZooError, match="expected a plugin name"):
        build("attention", ["a", "b"])
    with pytest.raises(ZooError, match="unknown plugin kind 'atention'.*did you mean attention"):
        build("atention", "x")


def test_same_name_in_two_files_names_both(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    registry.load_file(write_plugin(tmp_path / "a" / "one.py", "twin"))
    with pytest.raises(ZooError, match=r"registered twice: in .*a/one\.py and in .*b/two\.py"):
        registry.load_file(write_plugin(tmp_path / "b" / "two.py", "twin"))


def test_required_parameter_missing():
    @register("augment", "needs_p")
    def needs_p(num_classes: int, p: float):
        """Needs p."""
        def op(x, y):
            return x * p, y
        return op

    with pytest.raises(ZooError, match=r"data\.augment\[0\]: augment 'needs_p' needs parameter 'p'"):
        build("augment", "needs_p", path="data.augment[0]", num_classes=10)
    assert build("augment", {"needs_p": {"p": 0.5}}, num_classes=10)(2.0, None) == (1.0, None)


def test_syntax_error_reported_with_file_and_line(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("x = 1\ndef oops(:\n")
    with pytest.raises(ZooError, match=r"broken\.py:2: syntax error"):
        registry.load_file(bad)


def test_import_error_reported_with_file_and_line(tmp_path):
    bad = tmp_path / "raises.py"
    bad.write_text("import math\n\nraise RuntimeError('boom')\n")
    with pytest.raises(ZooError, match=r"raises\.py:3: plugin file failed to import: RuntimeError: boom"):
        registry.load_file(bad)


def test_discover_env_path_and_extra_and_lenient_errors(tmp_path, monkeypatch):
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    write_plugin(env_dir / "from_env.py", "env_attn")
    extra = write_plugin(tmp_path / "extra.py", "extra_attn")
    (env_dir / "broken.py").write_text("def (:\n")
    monkeypatch.setenv("ZOO_PLUGIN_PATH", str(env_dir))
    errors = discover([extra], strict=False)
    names = registry.registry("attention").plugins
    assert {"env_attn", "extra_attn"} <= set(names)
    assert len(errors) == 1 and "broken.py:1" in errors[0]
    with pytest.raises(ZooError, match="broken.py"):
        registry._loaded.discard((env_dir / "broken.py").resolve())
        discover([], strict=True)


def test_missing_plugin_path_is_an_error(tmp_path):
    with pytest.raises(ZooError, match="plugin path .*nowhere.py does not exist"):
        discover([tmp_path / "nowhere.py"])


PROBED = {  # kind, plugin body, context, what the error says
    "attention": ("attention", "def __call__(self, x, return_attn=False):\n        return x[:, 1:]",
                  dict(dim=8, heads=2), r"maps tokens \[2, 5, 8\] to \[2, 4, 8\]; An attention module"),
    "maps": ("attention", "def __call__(self, x, return_attn=False):\n        return (x, {}) if return_attn else x",
             dict(dim=8, heads=2), r"with return_attn=True returns tuple whose 'attn' is NoneType"),
    "posemb": ("posemb", "def __call__(self, x, grid):\n        return x[:, :1]\n\n"
                         "    def patch_embeddings(self):\n        return None",
               dict(dim=8, grid_size=(2, 2), num_prefix_tokens=1), r"maps tokens \[2, 5, 8\] of grid \(2, 2\)"),
    "augment": ("augment", "def __call__(self, x, y):\n        return x[:, :, ::2], y",
                dict(num_classes=3, img_size=8), r"maps \(x \[4, 3, 8, 8\], y \[4, 3\]\) to \(\[4, 3, 4, 8\], \[4, 3\]\)"),
    "needs": ("visualizer", "needs = ('xray',)\n\n    def __call__(self, model, images, x, names):\n        return {}",
              {}, r"needs \['xray'\], but a model serves only \['attention_maps', 'cls_token', 'position_table'\]"),
}


@pytest.mark.parametrize("case", PROBED)
def test_a_plugin_that_breaks_its_contract_on_a_tiny_input_is_refused_when_built(tmp_path, case):
    """The contract is checked, not only documented: each kind's probe runs the plugin on a
    tiny input when it is built and names what came back."""
    kind, body, context, says = PROBED[case]
    path = tmp_path / f"{case}.py"
    path.write_text(f"from zoo.registry import register\n\n\n@register('{kind}', 'bad_{case}')\n"
                    f"class Bad:\n    \"\"\"Breaks its contract.\"\"\"\n\n    {body}\n")
    registry.load_file(path)
    with pytest.raises(ZooError, match=rf"{kind}: {kind} 'bad_{case}' \({path}:\d+\) {says}"):
        build(kind, f"bad_{case}", **context)
