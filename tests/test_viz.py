"""Attention visualization: the numerics on known tensors, every visualizer on tiny models,
what the trained quickstart model attends to, `zoo viz` on runs, timm models and bad images."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from click.testing import CliRunner
from PIL import Image

from tests.conftest import ROOT
from zoo import checkpoint
from zoo.cli import cli
from zoo.data import build_datasets, describe, load_image, model_input
from zoo.errors import ZooError
from zoo.model import build_model
from zoo.recipe import load_recipe
from zoo.registry import discover
from zoo.runs import RunRef, load_trained
from zoo.viz.figures import (
    Shown,
    build_visualizers,
    draw,
    figure_array,
    png_bytes,
)
from zoo.viz.maps import (
    as_distribution,
    cls_attention_maps,
    cls_maps,
    cosine_similarity,
    fuse_heads,
    mass_mask,
    rollout,
    rollout_map,
    upsample,
)
from zoo.viz.render import render, write_pngs
from zoo.viz.subjects import (
    ALL,
    Subject,
    compare_figures,
    first_images,
    load_subject,
    load_timm,
)


def one_line_error(result, *fragments: str) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


# --------------------------------------------------------------------------- numerics


def test_as_distribution_keeps_softmax_and_clamps_diff_rows():
    soft = torch.randn(2, 3, 5, 5).softmax(-1)
    assert torch.allclose(as_distribution(soft), soft)
    diff = torch.tensor([[0.5, -0.2, 0.3]])  # a differential row: sums to 1 - lambda = 0.6
    assert torch.allclose(as_distribution(diff), torch.tensor([[0.625, 0.0, 0.375]]))


def test_cls_maps_are_the_cls_row_in_raster_order():
    attn = torch.zeros(1, 2, 1 + 6, 1 + 6)
    attn[0, 1, 0, 1:] = torch.arange(6.0)
    maps = cls_maps(attn, (2, 3))
    assert maps.shape == (1, 2, 2, 3)
    assert maps[0, 1].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_rollout_on_known_maps():
    t = 3
    eye = torch.eye(t).expand(1, 2, t, t)
    assert torch.allclose(rollout([eye, eye, eye]), torch.eye(t))  # attention to self only
    uniform = torch.full((1, 1, t, t), 1 / t)
    one = (uniform[0, 0] + torch.eye(t)) / 2  # norm(A + I) = the paper's 0.5 A + 0.5 I
    assert torch.allclose(rollout([uniform])[0], one)
    a, b = torch.rand(2, 1, 4, t, t).softmax(-1)
    norm = [(m.mean(1) + torch.eye(t)) / 2 for m in (a, b)]
    assert torch.allclose(rollout([a, b]), norm[1] @ norm[0], atol=1e-6)  # later layers left
    heads = torch.stack([torch.eye(t), torch.full((t, t), 1 / t)])[None]  # [1, 2, t, t]
    fused_max = rollout([heads], "max")[0]
    top = torch.maximum(torch.eye(t), torch.full((t, t), 1 / t)) + torch.eye(t)
    assert torch.allclose(fused_max, top / top.sum(-1, keepdim=True))
    assert torch.allclose(fuse_heads(heads, "min")[0], torch.eye(t) / t)
    row = torch.tensor([0.1, 0.2, 0.3, 0.4]).expand(1, 1, 4, 4)
    kept = rollout([row], discard=0.5)[0, 0]  # the two weakest entries of row 0 dropped
    expected = torch.tensor([1.0, 0.0, 0.3, 0.4])  # + identity on the diagonal
    assert torch.allclose(kept, expected / expected.sum())


def test_rollout_of_diff_maps_is_a_distribution():
    a1, a2 = torch.rand(2, 2, 3, 6, 6).softmax(-1)
    diff = a1 - 0.7 * a2  # negative entries, rows summing to 0.3
    r = rollout([diff, diff])
    assert (r >= 0).all() and torch.allclose(r.sum(-1), torch.ones(2, 6))


def test_mass_mask_keeps_the_fewest_patches_holding_the_mass():
    m = torch.tensor([[0.2, 0.5], [0.3, 0.0]])
    assert mass_mask(m, 0.6).tolist() == [[False, True], [True, False]]
    assert mass_mask(m, 0.5).tolist() == [[False, True], [False, False]]
    assert mass_mask(10 * m, 0.9).tolist() == [[True, True], [True, False]]  # scale-free
    assert mass_mask(torch.rand(2, 3, 4, 4), 0.6).shape == (2, 3, 4, 4)


def test_upsample_is_blockwise_and_similarity_is_cosine():
    up = upsample(torch.tensor([[True, False], [False, True]]), (4, 4))
    assert up.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]
    sim = cosine_similarity(torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]]))
    assert torch.allclose(sim, torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))


# --------------------------------------------------------------------------- every visualizer

# attention x patch size, with every posemb once: the whole matrix would cost minutes of plots
MODELS = [
    ("mhsa", 2, "learned_1d"), ("mhsa", 4, "none"), ("mhsa", 8, "learned_2d"),
    ("diff", 2, "sinusoidal"), ("diff", 4, {"sinusoidal": {"dims": 1}}), ("diff", 8, "learned_1d"),
]


@pytest.mark.parametrize("attention,patch,posemb", MODELS)
def test_every_visualizer_on_tiny_models(attention, patch, posemb):
    discover()
    torch.manual_seed(0)
    model = build_model(dict(img_size=16, patch_size=patch, num_classes=3, dim=16, depth=2,
                             heads=2 if attention == "mhsa" else 1, attention=attention,
                             posemb=posemb)).eval()
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    x = model_input(model, images, (0.5,) * 3, (0.5,) * 3)
    with torch.no_grad():
        figures = draw(build_visualizers(ALL, "v"), model, Shown(images, ["a", "b"]), x)
    assert sorted(figures) == sorted(ALL)
    for fig in figures.values():  # as TensorBoard gets them
        image = figure_array(png_bytes(fig))
        assert image.dim() == 3 and image.shape[0] == 3 and 0 <= image.min() and image.max() <= 1
    grid = (16 // patch,) * 2
    r = rollout_map(model, x, "min", 0.3)
    assert r.shape == (2, *grid) and (r >= 0).all() and r.sum() > 0
    assert cls_attention_maps(model, x, layer=-2).shape == (2, model.cfg.heads, *grid)


def row_labels(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[0].get_yticklabels()]


def test_images_are_labelled_with_the_prediction():
    """Every figure that names its images adds the model's prediction, right (✓) or wrong (✗)
    against the true class where there is one; files show the prediction only."""
    discover()
    torch.manual_seed(0)
    model = build_model(dict(img_size=16, patch_size=4, num_classes=3, dim=16, depth=2, heads=2)).eval()
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    x = model_input(model, images, (0.5,) * 3, (0.5,) * 3)
    classes = ["circle", "square", "star"]
    with torch.no_grad():
        index = model(x).argmax(-1).tolist()
        pred = [classes[i] for i in index]
        truth = [pred[0], next(c for c in classes if c != pred[1]), pred[2], pred[3]]
        visualizers = build_visualizers(["cls_attention", "rollout", "dino"], "v")
        figures = draw(visualizers, model, Shown(images, list("0123"), truth, classes), x)
        files = draw(visualizers[1:2], model, Shown(images, ["a.png", "b.png", "c.png", "d.png"]), x)
        named = draw(visualizers[1:2], model, Shown(images, ["a.png"] * 4, classes=classes), x)
    expected = [f"{i}  true: {t}\npred: {p} {'✓' if p == t else '✗'}"
                for i, (t, p) in enumerate(zip(truth, pred, strict=True))]
    assert "✗" in expected[1]
    for name, fig in figures.items():
        assert row_labels(fig) == expected, name
    assert row_labels(files["rollout"]) == [f"{f}.png\npred: class {i}"
                                            for f, i in zip("abcd", index, strict=True)]
    assert row_labels(named["rollout"]) == [f"a.png\npred: {p}" for p in pred]  # zoo viz --image

    a = Subject(model, "vit", (0.5,) * 3, (0.5,) * 3, Path("."), classes=classes)
    b = Subject(build_model(dict(img_size=16, patch_size=4, num_classes=0, dim=16, depth=1,
                                 heads=2)).eval(), "headless", (0.5,) * 3, (0.5,) * 3, Path("."))
    with torch.no_grad():
        compared = compare_figures(a, b, visualizers[1:2], Shown(images, list("0123"), truth))
    assert row_labels(compared["compare_rollout"]) == [e.replace("pred:", "pred A:") for e in expected]
    assert [t.get_text() for t in compared["compare_rollout"].axes[0].get_xticklabels()] == [
        "input", "A: vit", "B: headless"]


def test_first_images_know_their_classes():
    discover()
    val = build_datasets({"shapes": {"val_size": 16}}, ["val"], 32, "data")["val"]
    shown = first_images(val, 3)
    assert shown.images.shape == (3, 3, 32, 32) and shown.names == ["0", "1", "2"]
    assert shown.truth == [val.classes[y] for y in val.labels[:3].tolist()]
    assert shown.classes == list(val.classes)


def test_posemb_similarity_colours_span_the_similarities_shown():
    """A sinusoidal table's similarities sit far above -1: the colour scale is their range."""
    discover()
    model = build_model(dict(img_size=32, patch_size=8, dim=64, depth=1, heads=4, posemb="sinusoidal"))
    images = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    (vis,) = [v for _, v in build_visualizers(["posemb_similarity"], "v")]
    fig = vis(model.eval(), images, model_input(model, images, (0.5,) * 3, (0.5,) * 3), ["0"])["posemb_similarity"]
    sim = cosine_similarity(model.patch_posemb().detach())
    low, high = fig.axes[0].images[0].get_clim()
    assert (low, high) == pytest.approx((sim.min().item(), sim.max().item()), abs=1e-6)
    assert low > 0.5
    assert f"{low:.2f} to {high:.2f}" in fig.axes[1].get_ylabel()


def test_visualizer_options_are_checked():
    discover()
    with pytest.raises(ZooError, match="unknown parameter of visualizer 'rollout'.*did you mean fusion"):
        build_visualizers([{"rollout": {"fuson": "max"}}], "--visualizer")
    with pytest.raises(ZooError, match="fusion must be mean, max or min"):
        build_visualizers([{"rollout": {"fusion": "median"}}], "--visualizer")
    model = build_model(dict(img_size=8, patch_size=4, dim=8, depth=2, heads=2)).eval()
    with pytest.raises(ZooError, match="layer 2 is out of range for a 2-layer model"):
        cls_attention_maps(model, torch.zeros(1, 3, 8, 8), layer=2)


# --------------------------------------------------------------------------- a trained model


def test_trained_quickstart_attends_to_the_object(quickstart_run):
    """The share of attention mass on the object's patches (each patch weighted by the
    fraction of its pixels inside the object mask) against the object's share of the image.

    Measured over the first 500 val images (object: 15.7% of the image), 2-core CPU runs:
    quickstart at 8-pixel patches (6 epochs, seeds 0-2, val acc 0.988-0.993): rollout
    1.79-1.91x the object share (above it on 100% of images), [CLS] attention 1.94-2.40x;
    at 4-pixel patches (sinusoidal posemb, 5 epochs, val acc 0.950): rollout 31.2%
    (1.99x; above the image's own object share on 100% of images), last-layer [CLS]
    attention, head mean, 55.4% (3.54x); its earlier version (learned_1d, 6 epochs, 0.887):
    27.9% (1.78x, 100%) and 36.5% (2.33x); a random-init model 15.6% (1.0x).
    """
    model, recipe, _ = load_trained(RunRef(quickstart_run))
    val = build_datasets(recipe.data.dataset, ["val"], recipe.model.img_size, recipe.data.root)["val"]
    x = model_input(model, val.images[:500], val.mean, val.std)
    frac = F.avg_pool2d(val.masks[:500, None].float(), model.cfg.patch_size)[:, 0]  # [B, gh, gw]
    obj = frac.mean((1, 2))

    def share(maps: torch.Tensor) -> torch.Tensor:
        return (maps * frac).sum((1, 2)) / maps.sum((1, 2))

    rollout, cls = share(rollout_map(model, x)), share(cls_attention_maps(model, x).mean(1))
    assert rollout.mean() > 1.4 * obj.mean(), (rollout.mean(), obj.mean())
    assert (rollout > obj).float().mean() > 0.9
    assert cls.mean() > 1.7 * obj.mean(), (cls.mean(), obj.mean())
    torch.manual_seed(0)
    untrained = share(rollout_map(build_model(recipe.model).eval(), x))
    assert untrained.mean() < 1.15 * obj.mean()  # the measure itself does not favour the object


def test_zoo_viz_on_a_run(quickstart_run, tmp_path):
    result = CliRunner().invoke(cli, ["viz", str(quickstart_run), "--visualizer", "rollout",
                                          "--visualizer", "{dino: {threshold: 0.5}}"])
    assert result.exit_code == 0, result.output
    paths = [Path(p) for p in result.stdout.split()]
    assert paths == [quickstart_run / "figures" / "viz" / f"{n}.png" for n in ("rollout", "dino")]
    png = Image.open(paths[0])
    assert png.format == "PNG" and png.width > 300
    ckpt = next((quickstart_run / "checkpoints" / "last").glob("*.safetensors"))
    result = CliRunner().invoke(cli, ["viz", str(ckpt), "--out", str(tmp_path), "--visualizer",
                                          "posemb_similarity", "--device", "cpu"])
    assert result.exit_code == 0 and (tmp_path / "posemb_similarity.png").exists(), result.output


def test_zoo_viz_as_a_subprocess(quickstart_run, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "zoo", "viz", str(quickstart_run), "--out", str(tmp_path),
                           "--visualizer", "cls_attention"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(tmp_path / "cls_attention.png")]
    assert Image.open(tmp_path / "cls_attention.png").format == "PNG"


@pytest.fixture
def diff_run(tmp_path) -> Path:
    """A Diff-ViT run folder with random weights whose recipe logs rollout."""
    run = tmp_path / "diff_run"
    recipe = load_recipe(ROOT / "recipes" / "quickstart.yaml",
                         ["model.attention=diff", "model.heads=2", "log.visualizers=[rollout]",
                          "log.viz_images=3"])
    run.mkdir()
    (run / "recipe.yaml").write_text(recipe.to_yaml())
    discover()
    shapes = build_datasets({"shapes": {"train_size": 10}}, ["train"], 32, "data")["train"]
    (run / "data.json").write_text(json.dumps(describe(shapes)))  # as a run writes it
    checkpoint.save(run / "checkpoints", 0, build_model(recipe.model).state_dict(), {})
    return run


def test_compare_and_recipe_visualizers(quickstart_run, diff_run, tmp_path):
    result = CliRunner().invoke(cli, ["viz", str(diff_run)])  # the recipe's log.visualizers
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(diff_run / "figures" / "viz" / "rollout.png")]
    result = CliRunner().invoke(cli, ["viz", str(quickstart_run), "--compare", str(diff_run),
                                          "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(tmp_path / f"compare_{n}.png") for n in ("rollout", "cls_attention")]
    one_line_error(CliRunner().invoke(cli, ["viz", str(quickstart_run), "--compare", str(diff_run),
                                                "--visualizer", "dino"]), "draws no single map")


def test_render_draws_and_leaves_the_files_to_write_pngs(diff_run, tmp_path):
    """`zoo viz` as a library: render returns the run's figures (what a page would show)
    and writes nothing; write_pngs saves them, and a folder it cannot write is one line."""
    drawn = render(RunRef(diff_run))
    assert list(drawn.figures) == ["rollout"] and drawn.folder == diff_run / "figures" / "viz"
    assert not drawn.folder.exists()
    paths = write_pngs(drawn.figures, tmp_path / "pngs")
    assert paths == [tmp_path / "pngs" / "rollout.png"] and Image.open(paths[0]).format == "PNG"
    (tmp_path / "file").write_text("")
    one_line_error(CliRunner().invoke(cli, ["viz", str(diff_run), "--out", str(tmp_path / "file" / "x")]),
                   "cannot write the figures", "--out DIR")


def compared_labels(a: Subject, b: Subject) -> tuple[str, list[str]]:
    """The title and column labels of a --compare figure of A and B."""
    images = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    visualizers = build_visualizers(["rollout"], "v")
    with torch.no_grad():
        fig = compare_figures(a, b, visualizers, Shown(images, ["x.png"]))["compare_rollout"]
    ax = fig.axes[0]
    return ax.get_title(), [t.get_text() for t in ax.get_xticklabels()]


def test_compare_tells_runs_of_one_recipe_apart(diff_run, tmp_path):
    """Two cells of a sweep (one recipe, one attention) are labelled by their folders, two
    checkpoints of one run by their steps; differing recipes keep their names."""
    import shutil

    cells = [tmp_path / "sweep" / cell for cell in ("p4", "p8")]
    for cell in cells:
        shutil.copytree(diff_run, cell, symlinks=True)
    a, b = (load_subject(RunRef(cell), need_images=False) for cell in cells)
    assert compared_labels(a, b) == ("rollout: quickstart (diff), p4 vs quickstart (diff), p8",
                                     ["input", "A: quickstart (diff), p4", "B: quickstart (diff), p8"])
    twin = tmp_path / "other" / "p4"  # the same folder name elsewhere: one more part of its path
    shutil.copytree(diff_run, twin, symlinks=True)
    _, columns = compared_labels(a, load_subject(RunRef(twin), need_images=False))
    assert columns[1:] == ["A: quickstart (diff), sweep/p4", "B: quickstart (diff), other/p4"]

    model, recipe, _ = load_trained(RunRef(diff_run))
    for step in (0, 7):  # best stays on step 0, last moves on: both are kept
        checkpoint.save(diff_run / "checkpoints", step, model.state_dict(), {}, best=step == 0)
    steps = [str(diff_run / "checkpoints" / f"step-{n:08d}") for n in (0, 7)]
    _, columns = compared_labels(*(load_subject(RunRef(s), need_images=False) for s in steps))
    assert columns[1:] == ["A: quickstart (diff), step-00000000", "B: quickstart (diff), step-00000007"]

    other = tmp_path / "mhsa"
    other.mkdir()
    mhsa = recipe.to_dict()
    mhsa["model"]["attention"] = "mhsa"
    (other / "recipe.yaml").write_text(yaml.safe_dump(mhsa))
    shutil.copy(diff_run / "data.json", other / "data.json")
    checkpoint.save(other / "checkpoints", 0, build_model(mhsa["model"]).state_dict(), {})
    _, columns = compared_labels(a, load_subject(RunRef(other), need_images=False))
    assert columns[1:] == ["A: quickstart (diff)", "B: quickstart (mhsa)"]


def test_user_mistakes_are_one_line(quickstart_run, tmp_path):
    run = str(quickstart_run)
    one_line_error(CliRunner().invoke(cli, ["viz", str(tmp_path / "nope")]), "no checkpoint found")
    one_line_error(CliRunner().invoke(cli, ["viz", run, "--device", "tpu"]),
                   "--device: unknown device 'tpu'")
    one_line_error(CliRunner().invoke(cli, ["viz", run, "--visualizer", "rolout"]),
                   "unknown visualizer 'rolout'", "did you mean rollout?")
    one_line_error(CliRunner().invoke(cli, ["viz", run, "--visualizer", "{cls_attention: {layer: 9}}"]),
                   "layer 9 is out of range")
    twice = "{rollout: {fusion: max}, rollout: {fusion: min}}"  # YAML would keep the last
    one_line_error(CliRunner().invoke(cli, ["viz", run, "--visualizer", twice]),
                   f"--visualizer {twice}: duplicate key rollout")
    (tmp_path / "notes.png").write_text("not an image")
    one_line_error(CliRunner().invoke(cli, ["viz", run, "--image", str(tmp_path / "notes.png")]),
                   "notes.png: cannot read image")


# --------------------------------------------------------------------------- images


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims a size and holds almost no pixels: what a decompression bomb is."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def test_images_are_converted_or_refused(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    rgba = np.concatenate([rgb, np.full((40, 60, 1), 255, np.uint8)], -1)
    rgba[:, :10, 3] = 0  # a transparent strip: shown as white
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    Image.new("RGB", (5000, 4000), "red").save(tmp_path / "huge.png")
    for name in ("grey.png", "rgba.png", "huge.png"):
        img = load_image(tmp_path / name, 32)
        assert img.dtype == torch.uint8 and img.shape == (3, 32, 32), name
    grey = load_image(tmp_path / "grey.png", 32)
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    assert load_image(tmp_path / "huge.png", 32)[:, 0, 0].tolist() == [255, 0, 0]

    Image.fromarray(rgb).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.png").write_text("hello")
    (tmp_path / "bomb.png").write_bytes(png_header(20000, 20000))
    for name, why in (("truncated.png", "cannot read image"), ("text.png", "cannot read image"),
                      ("bomb.png", r"image \(400 megapixels\) is over the 89-megapixel limit"),
                      ("missing.png", "cannot read image")):
        with pytest.raises(ZooError, match=rf"{name}: {why}") as e:
            load_image(tmp_path / name, 32)
        assert "\n" not in str(e.value)


# --------------------------------------------------------------------------- timm sources


def test_timm_source_offline(tmp_path, monkeypatch):
    """`timm:NAME --weights FILE` runs without network; without weights, one line says how.

    test_vit is timm's own tiny ViT (160 px, 16 px patches, 0.4 M parameters)."""
    import huggingface_hub
    import timm
    from safetensors.torch import save_file

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # fail fast, as offline
    torch.manual_seed(0)
    weights = tmp_path / "test_vit.safetensors"
    save_file(timm.create_model("test_vit").state_dict(), weights)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(
        tmp_path / "photo.jpg")
    args = ["viz", "timm:test_vit", "--image", str(tmp_path / "photo.jpg"), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(cli, [*args, "--weights", str(weights)])
    assert result.exit_code == 0, result.output
    assert sorted(Path(p).name for p in result.stdout.split()) == sorted(f"{n}.png" for n in ALL)
    one_line_error(CliRunner().invoke(cli, args), "timm:test_vit: cannot get pretrained weights",
                   "--weights test_vit.pth")
    one_line_error(CliRunner().invoke(cli, args[:2] + ["--weights", str(weights)]), "pass --image PATH")
    one_line_error(CliRunner().invoke(cli, ["viz", "timm:vit_smal_patch16_224"]),
                   "unknown timm model", "did you mean")

    pth = tmp_path / "test_vit.pth"
    torch.save(timm.create_model("test_vit").state_dict(), pth)
    subject = load_subject(RunRef("timm:test_vit"), str(pth))
    assert subject.model.cfg.img_size == 160 and subject.mean == (0.5, 0.5, 0.5)
    with pytest.raises(ZooError, match="does not fit timm:vit_tiny_patch16_224"):
        load_timm("vit_tiny_patch16_224", str(pth))


def test_timm_source_offline_fails_fast_or_reads_the_cache(tmp_path, monkeypatch):
    """Where the hub is out of reach (HF_ENDPOINT at a closed loopback port; nothing leaves
    this machine), the download runs in huggingface_hub's offline mode, as HF_HUB_OFFLINE=1
    would: weights in its cache load, others are a one-line error at once instead of after
    about 50 s of retries. Where the hub answers, nothing changes."""
    import socket

    import timm
    from huggingface_hub import constants
    from safetensors.torch import save_file

    from zoo.io import quiet_hub_retries

    for var in ("https_proxy", "http_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with socket.socket() as hub:
        hub.bind(("127.0.0.1", 0))
        hub.listen()
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{hub.getsockname()[1]}")
        with quiet_hub_retries():
            assert constants.HF_HUB_OFFLINE is False  # reachable: online, as before
    with quiet_hub_retries():  # the port is closed now: connections are refused
        assert constants.HF_HUB_OFFLINE is True
    assert constants.HF_HUB_OFFLINE is False  # for this call only

    Image.new("RGB", (90, 120), "white").save(tmp_path / "photo.png")
    args = ["viz", "timm:test_vit", "--image", str(tmp_path / "photo.png"), "--out",
            str(tmp_path / "out"), "--visualizer", "rollout"]
    one_line_error(CliRunner().invoke(cli, args), "timm:test_vit: cannot get pretrained weights",
                   "--weights test_vit.pth")
    snapshot = tmp_path / "hub" / "models--timm--test_vit.r160_in1k" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    save_file(timm.create_model("test_vit").state_dict(), snapshot / "model.safetensors")
    result = CliRunner().invoke(cli, args)  # downloaded before, offline now
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(tmp_path / "out" / "rollout.png")]


def test_heat_maps_scale_per_panel_or_per_image_and_say_which():
    """`scale: image` divides every panel of an image by the largest value of its panels, so a
    near-uniform head stays dim beside a sharp one; `panel` makes each span the colours."""
    from zoo.viz.figures import RELATIVE, SHARED, scale_maps

    maps = torch.zeros(1, 2, 2, 2)
    maps[0, 0] = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # sharp
    maps[0, 1] = torch.full((2, 2), 0.25)  # uniform
    panel, label = scale_maps(maps, "panel")
    assert label == RELATIVE and panel[0, 1].max() == 1.0
    image, label = scale_maps(maps, "image")
    assert label == SHARED and image[0, 0].max() == 1.0 and image[0, 1].max() == 0.25
