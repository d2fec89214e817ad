"""Shared fixtures: an isolated registry per test, paths, and a real `zoo` executable."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

from zoo import registry

ROOT = Path(__file__).resolve().parents[1]

torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` run where a GPU is (benchmarks/gpu_check.py runs `-m cuda`)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch):
    """Plugins a test registers or loads are forgotten after it."""
    saved = {k: dict(r.plugins) for k, r in registry.REGISTRIES.items()}
    loaded = set(registry._loaded)
    monkeypatch.setattr(registry, "_discovered", registry._discovered)  # restored after
    monkeypatch.delenv("ZOO_PLUGIN_PATH", raising=False)
    yield
    for k, r in registry.REGISTRIES.items():
        r.plugins = saved[k]
    registry._loaded.clear()
    registry._loaded.update(loaded)


@pytest.fixture
def zoo_exe() -> str:
    exe = Path(sys.executable).parent / "zoo"
    return str(exe) if exe.exists() else shutil.which("zoo")


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory) -> Path:
    """The README's quickstart, run once per session as a user runs it (a real subprocess)."""
    import subprocess

    out = tmp_path_factory.mktemp("quickstart") / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "zoo", "run", str(ROOT / "recipes" / "quickstart.yaml"),
         "--out", str(out), "--set", "log.progress=false"],
        capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out
