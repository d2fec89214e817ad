"""What several test modules share: small recipes and plugin files, generated CIFAR files,
one-line error checks, spies and a signal at a chosen step. Tests import from here, never
from each other."""

from __future__ import annotations

import json
import pickle
import re
import signal
from pathlib import Path

import numpy as np
from click.testing import CliRunner, Result

import zoo.io
from tests.conftest import ROOT
from zoo.cli import cli
from zoo.schema import Recipe

# --- recipes and plugin files ------------------------------------------------------------

TINY = """
name: tiny
model: {{dim: 32, depth: 2, heads: 2, attention: {attention}, posemb: learned_1d}}
data:
  dataset: {{shapes: {{train_size: 512, val_size: 256, test_size: 256}}}}
  batch_size: 64
  eval_batch_size: 256
  augment: {augment}
train: {{epochs: 2, lr: 2.0e-3, warmup_epochs: 0.5, seed: 0}}
log: {{progress: false}}
"""


def tiny_recipe(tmp_path, attention="mhsa", augment="[hflip]"):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.format(attention=attention, augment=augment))
    return path


PLUGIN = '''
from zoo.registry import register


@register("attention", "{name}")
class Custom:
    """A test attention that records what it was given."""

    def __init__(self, dim: int, heads: int, scale: float = 1.0, causal: bool = False):
        self.dim, self.heads, self.scale, self.causal = dim, heads, scale, causal

    def __call__(self, x, return_attn=False):
        n = x.shape[1]
        return (x, {{"attn": x.new_ones(x.shape[0], self.heads, n, n) / n}}) if return_attn else x
'''


def write_plugin(path, name="custom_attn"):
    path.write_text(PLUGIN.format(name=name))
    return path


def readme_plugin(tmp_path):
    text = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(# plugins/attention/linear_mix\.py\n.*?)```", text, re.S)
    path = tmp_path / "linear_mix.py"
    path.write_text(code.group(1))
    return path


# A sweep's base recipe: a tiny run of one epoch
BASE = """\
name: tiny
model: {dim: 32, depth: 1, heads: 2, mlp_ratio: 2}
data: {dataset: {shapes: {train_size: 64, val_size: 64}}, batch_size: 32, augment: []}
train: {epochs: 1}
log: {progress: false, tensorboard: false}
"""


def make_run(path: Path, patch: int, accs: list[float], finished: bool, test_acc: float | None = None,
             **keys: object) -> None:
    """A run as `zoo run` leaves it; `keys` set more of its recipe, e.g. model__heads=2."""
    recipe = Recipe()
    recipe.model.patch_size = patch
    recipe.data.augment = ["hflip"]
    for key, value in keys.items():
        section, name = key.split("__")
        setattr(getattr(recipe, section), name, value)
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


# --- data ------------------------------------------------------------------------------

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"]


def dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, n: int = 20) -> dict[str, np.ndarray]:
    """CIFAR-10's python layout: five training batches, a test batch, batches.meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        dump(folder / name, {"batch_label": f"{name} of 6", "labels": labels, "data": data,
                             "filenames": [f"img_{i}.png" for i in range(n)]})
        written[name] = (data, labels)
    dump(folder / "batches.meta", {"num_cases_per_batch": n, "label_names": CIFAR10_NAMES,
                                   "num_vis": 3072})
    return written


# --- how zoo answers ---------------------------------------------------------------------

def assert_one_line_error(result, *fragments):
    assert result.returncode == 2 if hasattr(result, "returncode") else result.exit_code == 2
    err = result.stderr
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for f in fragments:
        assert f in lines[0], lines[0]


def zoo_cli(*args: str) -> Result:
    """`zoo ARGS` as a user runs it, in this process (so that tests can shrink the models)."""
    return CliRunner().invoke(cli, list(args), prog_name="zoo")


def record_atomic_writes(monkeypatch, *modules) -> list[Path]:
    """Every path written from now on through zoo.io.atomic_write (directly or by write_json)."""
    written: list[Path] = []
    real = zoo.io.atomic_write

    def spy(path: Path, data: bytes | str) -> None:
        written.append(Path(path))
        real(path, data)

    for module in (zoo.io, *modules):
        monkeypatch.setattr(module, "atomic_write", spy)
    return written


def stop_at(trainer, step: int) -> None:
    """A signal arrives during step `step` (1-based): the trainer stops right after it."""
    from zoo.train import trainer as trainer_module

    real = trainer_module.Trainer._stop_requested

    def stop(self) -> bool:
        if self.step == step:
            self._signal = signal.SIGINT
        return real(self)

    trainer._stop_requested = stop.__get__(trainer)


def assert_exports_match(run: Path, tmp_path: Path, x) -> None:
    """`zoo export` to TorchScript and ONNX: each file gives the run's logits on `x`."""
    import onnxruntime
    import torch

    from zoo.runs import RunRef, load_checkpoint

    model, _, _, _ = load_checkpoint(RunRef(run))
    with torch.no_grad():
        want = model(x)
    ts, onnx = tmp_path / "m.pt", tmp_path / "m.onnx"
    for fmt, path in (("torchscript", ts), ("onnx", onnx)):
        result = CliRunner().invoke(cli, ["export", str(run), "--format", fmt, "--out", str(path)])
        assert result.exit_code == 0, result.output
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(ts))(x), want, rtol=1e-5, atol=1e-5)
    session = onnxruntime.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-4, atol=1e-4)
