"""The README's plugin example works as printed."""

from __future__ import annotations

import re

import torch
from click.testing import CliRunner

from tests.conftest import ROOT
from zoo.cli import cli
from zoo.model import build_model
from zoo.registry import discover


def readme_plugin(tmp_path):
    text = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(# plugins/attention/linear_mix\.py\n.*?)```", text, re.S)
    path = tmp_path / "linear_mix.py"
    path.write_text(code.group(1))
    return path


def test_readme_plugin_is_listed_and_builds(tmp_path):
    path = readme_plugin(tmp_path)
    listed = CliRunner().invoke(cli, ["list", "attention", "--plugins", str(path)])
    assert "linear_mix" in listed.output and "temperature=1.0" in listed.output
    discover([path])
    model = build_model({"dim": 32, "depth": 1, "heads": 2,
                         "attention": {"linear_mix": {"temperature": 2.0}}})
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
