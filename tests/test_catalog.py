"""`zoo list` reads plugin files without running them, and says what importing them would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import write_plugin
from zoo import catalog, registry
from zoo.errors import ZooError


def test_every_builtin_is_read_as_importing_it_describes_it():
    files = [f for f in registry.sources() if isinstance(f, Path)]  # no ZOO_PLUGIN_PATH here
    read = {(k, info["name"]): info for f in files for k, info in catalog.read(f)}
    registry.discover()
    builtin = registry.builtin_dir().resolve()  # not what other test modules registered
    imported = {(k, n): p.describe() for k, r in registry.REGISTRIES.items()
                for n, p in r.plugins.items() if builtin in Path(p.file).resolve().parents}
    assert read == imported
    assert len(read) >= 23 and read["posemb", "sinusoidal"]["params"] == {"dims": 2, "temperature": 10000.0}


def test_zoo_list_loads_no_torch():
    """What makes `zoo list` quick: listing every kind, and one as JSON, imports no torch."""
    code = ("import sys\nfrom zoo.cli import cli\n"
            "for args in (['list'], ['list', 'attention', '--json']):\n"
            "    cli(args, standalone_mode=False)\n"
            "print('torch' in sys.modules, file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "False" and "mhsa" in result.stdout


FALLBACKS = {
    "computed default": 'import math\nfrom zoo.registry import register\n\n'
                        '@register("attention", "{name}")\ndef make(dim: int, scale: float = math.pi):\n'
                        '    """Scaled."""\n',
    "registered in a loop": 'from zoo.registry import register\n\nclass A:\n    """Looped."""\n\n'
                            '    def __init__(self, dim: int, gain: float = 2.0):\n        pass\n\n'
                            'for n in ["{name}"]:\n    register("attention", n)(A)\n',
    "renamed decorator": 'from zoo.registry import register as reg\n\n@reg("attention", "{name}")\n'
                         'def make(dim: int, gain: float = 2.0):\n    """Renamed."""\n',
    "second decorator": 'import functools\nfrom zoo.registry import register\n\n'
                        'def scaled(fn):\n    @functools.wraps(fn)\n'
                        '    def wrapper(dim: int, scale: float = 2.0):\n        return fn(dim)\n'
                        '    wrapper.__doc__ = "Wrapped."\n    del wrapper.__wrapped__\n    return wrapper\n\n'
                        '@register("attention", "{name}")\n@scaled\ndef make(dim: int, gain: float = 1.0):\n'
                        '    """Original."""\n',
    "inherited docstring": 'from torch import nn\nfrom zoo.registry import register\n\n'
                           '@register("attention", "{name}")\nclass A(nn.Identity):\n'
                           '    def __init__(self, dim: int, gain: float = 2.0):\n        super().__init__()\n',
}


@pytest.mark.parametrize("case", FALLBACKS)
def test_files_it_cannot_follow_are_imported(tmp_path, case):
    path = tmp_path / "p.py"
    path.write_text(FALLBACKS[case].format(name="fallback_attn"))
    with pytest.raises(catalog.NeedsImport):
        catalog.read(path)
    found, errors = catalog.catalog("attention", "fallback_*", (path,))
    assert errors == [] and [p["name"] for p in found["attention"]] == ["fallback_attn"]
    assert found["attention"][0] == registry.registry("attention").get("fallback_attn").describe()


def test_a_user_file_reusing_a_builtin_name_names_both_files(tmp_path):
    path = write_plugin(tmp_path / "mine.py", "mhsa")
    found, errors = catalog.catalog("attention", "*", (path,))
    assert len(errors) == 1 and "attention 'mhsa' is registered twice" in errors[0]
    assert f"and in {path}" in errors[0] and "mhsa.py" in errors[0]
    assert [p["file"] for p in found["attention"] if p["name"] == "mhsa"] != [str(path)]


def test_syntax_errors_and_missing_paths_are_error_lines(tmp_path):
    (tmp_path / "broken.py").write_text("x = 1\ndef f(:\n")
    found, errors = catalog.catalog(None, "*", (tmp_path / "broken.py", tmp_path / "nowhere.py"))
    assert "mhsa" in json.dumps(found)
    assert len(errors) == 2 and "broken.py:2: syntax error" in errors[0]
    assert "nowhere.py does not exist" in errors[1]
    with pytest.raises(ZooError, match="unknown plugin kind 'atention'"):
        catalog.catalog("atention")


def test_wildcards_and_descriptions(tmp_path):
    write_plugin(tmp_path / "p.py", "zz_one")
    write_plugin(tmp_path / "q.py", "zz_two")
    found = catalog.catalog("attention", "zz_*", (tmp_path,))[0]["attention"]
    assert [p["name"] for p in found] == ["zz_one", "zz_two"]
    assert found[0]["doc"] == "A test attention that records what it was given."
    assert found[0]["params"] == {"scale": 1.0, "causal": False} and found[0]["required"] == []
    assert found[0]["file"] == str((tmp_path / "p.py").resolve())
