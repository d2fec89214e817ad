"""`zoo predict` and `zoo export` on a tiny run trained once for this module."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from zoo.cli import cli
from zoo.errors import ZooError
from zoo.export import to_torchscript
from zoo.model import build_model
from zoo.registry import register
from zoo.runs import RunRef, load_checkpoint

RECIPE = ("model: {img_size: 32, patch_size: 8, dim: 32, depth: 1, heads: 2}\n"
          "data: {dataset: {shapes: {train_size: 64, val_size: 32}}, batch_size: 32, augment: []}\n"
          "train: {epochs: 1}\nlog: {tensorboard: false, progress: false}\n")
ZOO = cli


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("predict")
    (tmp / "r.yaml").write_text(RECIPE)
    result = CliRunner().invoke(cli, ["run", str(tmp / "r.yaml"), "--out", str(tmp / "run")])
    assert result.exit_code == 0, result.output
    return tmp / "run"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three 32x32 PNGs (the model's size, so the test can read them without resizing)."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def table_rows(output: str) -> dict[str, list[tuple[str, float]]]:
    """The predict table as {image: [(class, probability), ...]} in rank order."""
    rows: dict[str, list[tuple[str, float]]] = {}
    lines = output.splitlines()
    assert lines[0].startswith("checkpoint: ") and lines[1].split() == [
        "image", "rank", "class", "probability"]
    for line in lines[2:]:
        *image, rank, name, prob = line.split()
        if image:
            current = rows.setdefault(image[0], [])
        assert int(rank) == len(current) + 1
        current.append((name, float(prob)))
    return rows


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def test_predict_table_csv_and_independent_argmax(run, images, tmp_path):
    wide = tmp_path / "wide.png"  # another size: resized and cropped on the way in
    Image.new("RGB", (48, 40), "orange").save(wide)
    table = CliRunner().invoke(ZOO, ["predict", str(run), *images, str(wide), "--top-k", "3"])
    assert table.exit_code == 0, table.output
    rows = table_rows(table.stdout)
    assert list(rows) == [*images, str(wide)]
    for ranked in rows.values():
        probs = [p for _, p in ranked]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1.0005

    as_csv = CliRunner().invoke(ZOO, ["predict", str(run), *images, "--top-k", "3", "--csv"])
    assert as_csv.exit_code == 0 and as_csv.stderr.startswith("checkpoint: ")
    parsed = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(parsed) == 9 and set(parsed[0]) == {"image", "rank", "class", "probability"}
    assert {r["image"]: r["class"] for r in parsed if r["rank"] == "1"} == {
        i: rows[i][0][0] for i in images}

    model, _, _, _ = load_checkpoint(RunRef(run))
    trained = json.loads((run / "data.json").read_text())
    x = torch.stack([torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1) for p in images])
    mean, std = (torch.tensor(trained[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        top1 = model((x.float() / 255 - mean) / std).argmax(-1).tolist()
    assert [trained["classes"][i] for i in top1] == [rows[i][0][0] for i in images]


def test_predict_reads_more_images_than_one_batch(run, images, tmp_path):
    """Files are decoded data.eval_batch_size at a time: three images in batches of two rank
    as they do in one batch."""
    import shutil

    import yaml

    small = tmp_path / "run"
    shutil.copytree(run, small)
    recipe = yaml.safe_load((small / "recipe.yaml").read_text())
    recipe["data"]["eval_batch_size"] = 2
    (small / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    one, two = (CliRunner().invoke(ZOO, ["predict", str(r), *images, "--csv"]) for r in (run, small))
    assert two.exit_code == 0, two.output
    assert len(two.stdout.splitlines()) == 1 + 5 * len(images)
    assert two.stdout == one.stdout


def test_top_k_is_clipped_to_the_classes(run, images):
    result = CliRunner().invoke(ZOO, ["predict", str(run), images[0], "--top-k", "100"])
    assert result.exit_code == 0, result.output
    ranked = table_rows(result.stdout)[images[0]]
    assert len(ranked) == 10 and abs(sum(p for _, p in ranked) - 1) < 5e-3


def test_predict_bad_input_is_one_line(run, images, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert_one_line_error(CliRunner().invoke(ZOO, ["predict", str(run), str(text)]),
                          "notes.png", "cannot read image")
    assert_one_line_error(CliRunner().invoke(ZOO, ["predict", str(run), str(tmp_path / "no.png")]),
                          "no.png: no such file")
    assert_one_line_error(CliRunner().invoke(ZOO, ["predict", str(run), images[0], "--top-k", "0"]),
                          "--top-k 0")


def test_unreadable_files_are_reported_and_the_rest_predicted(run, images, tmp_path):
    """`zoo predict photos/*.jpg --csv` with a broken, a missing and a folder among them: one
    stderr line per bad file, every readable file predicted as it would be alone, exit 2."""
    broken, missing, folder = tmp_path / "broken.jpg", tmp_path / "gone.jpg", tmp_path / "dir.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    folder.mkdir()
    given = [images[0], str(broken), images[1], str(missing), str(folder), images[2]]
    result = CliRunner().invoke(ZOO, ["predict", str(run), *given, "--csv", "--top-k", "1"])
    assert result.exit_code == 2 and "Traceback" not in result.stderr, result.output
    alone = CliRunner().invoke(ZOO, ["predict", str(run), *images, "--csv", "--top-k", "1"])
    assert result.stdout == alone.stdout and len(result.stdout.splitlines()) == 1 + len(images)
    lines = result.stderr.splitlines()
    assert lines[0].startswith("checkpoint: ") and all(x.startswith("error: ") for x in lines[1:])
    assert len(lines) == 4, result.stderr
    for path, what in ((broken, "cannot read image"), (missing, "no such file"),
                       (folder, "not a regular file")):
        assert sum(f"{path}: {what}" in x for x in lines) == 1, (path, result.stderr)

    bad = CliRunner().invoke(ZOO, ["predict", str(run), str(broken), str(missing)])
    assert bad.exit_code == 2 and bad.stdout == "", bad.output
    assert [x.split(":")[1].strip() for x in bad.stderr.splitlines()] == [str(broken), str(missing)]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_export_torchscript_round_trips(run):
    result = CliRunner().invoke(ZOO, ["export", str(run), "--format", "torchscript"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("checkpoint: ") and "checked: max |logit difference|" in result.stdout
    path = run / "export" / "model.pt"
    loaded = torch.jit.load(str(path))
    model, _, _, _ = load_checkpoint(RunRef(run))
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-5, rtol=1e-5)
    stated = json.loads((run / "export" / "model.pt.json").read_text())
    trained = json.loads((run / "data.json").read_text())
    assert {k: stated[k] for k in ("mean", "std", "classes")} == {
        k: trained[k] for k in ("mean", "std", "classes")}
    assert stated["img_size"] == 32 and stated["in_chans"] == 3
    assert "(x - mean) / std" in stated["input"] and "step-" in stated["source_checkpoint"]


def test_export_onnx_round_trips(run, tmp_path):
    """The ONNX file, run by onnxruntime at a batch size it was not exported with, gives
    PyTorch's logits; the progress torch.onnx prints stays off stdout."""
    import onnxruntime

    path = tmp_path / "m.onnx"
    result = CliRunner().invoke(ZOO, ["export", str(run), "--format", "onnx", "--out", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith("checkpoint: ")
    assert "checked: max |logit difference|" in result.stdout and "torch.onnx" not in result.stdout
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model, _, _, _ = load_checkpoint(RunRef(run))
    x = torch.randn(5, 3, 32, 32)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(x), atol=1e-4, rtol=1e-4)
    assert json.loads((tmp_path / "m.onnx.json").read_text())["format"] == "onnx"


def test_export_onnx_without_onnx_is_one_line(run, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxscript" else real(name, *a))
    result = CliRunner().invoke(ZOO, ["export", str(run), "--format", "onnx",
                                      "--out", str(tmp_path / "m.onnx")])
    assert_one_line_error(result, "needs onnxscript", "pip install 'vit-zoo[onnx]'")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("attention,sdpa_on_cpu", [("mhsa", False), ("diff", False), ("diff", True)])
def test_attention_paths_trace(attention, sdpa_on_cpu, monkeypatch):
    """Plain SDPA, differential attention's explicit path and its fused SDPA path."""
    model = build_model({"img_size": 32, "patch_size": 8, "dim": 32, "depth": 2, "heads": 2,
                         "attention": attention}).eval()
    attn = type(model.blocks[0].attn)
    if attention == "diff":
        monkeypatch.setattr(attn, "sdpa_on_cpu", sdpa_on_cpu)
    with torch.no_grad():
        blob, diff = to_torchscript(model, torch.randn(2, 3, 32, 32), torch.randn(3, 3, 32, 32))
    assert blob and diff < 1e-5


def test_untraceable_attention_is_named():
    @register("attention", "notrace")
    class NoTrace(nn.Module):
        def __init__(self, dim: int, heads: int):
            super().__init__()

        def forward(self, x):
            if torch.jit.is_tracing():
                raise RuntimeError("cannot be traced\nsecond line")
            return x

    model = build_model({"img_size": 32, "patch_size": 8, "dim": 32, "depth": 1, "heads": 2,
                         "attention": "notrace"}).eval()
    with pytest.raises(ZooError, match="attention 'notrace'.*TorchScript") as error:
        to_torchscript(model, torch.randn(2, 3, 32, 32), torch.randn(3, 3, 32, 32))
    assert "\n" not in str(error.value)


def test_predict_as_a_user_runs_it(zoo_exe, run, images):
    """A real `zoo` process: the command is registered and prints its table."""
    import subprocess

    out = subprocess.run([zoo_exe, "predict", str(run), *map(str, images), "--top-k", "2"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("checkpoint: ") and all(Path(p).name in out.stdout for p in images)
