"""`zoo clip-vs-resnet` (tools/compare/) and the CLIP code both tools share
(tools/clip_common/), on tiny random models."""

from __future__ import annotations

import ast
import csv
import importlib.metadata
import json
import math
import shlex
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import torch
from zoo_tools.clip_common import images, models, zeroshot
from zoo_tools.clip_common.settings import ClipOptions
from zoo_tools.compare import architecture, evaluation, galleries, labels, predict
from zoo_tools.compare import report as compare_report
from zoo_tools.compare import resnet as timm_resnet
from zoo_tools.compare import run as compare_run

import zoo.cli
import zoo.io
from tests.conftest import ROOT
from tests.helpers import record_atomic_writes, zoo_cli
from zoo.errors import ZooError

clip = models.tool_package("clip")  # through clip_common, which silences openai-clip's pkg_resources warning

# A CLIP small enough to build and run in milliseconds (ModifiedResNet image tower).
TINY = models.ClipArch(embed_dim=32, image_resolution=32, vision_layers=(1, 1, 1, 1), vision_width=8,
                   vision_patch_size=None, transformer_width=64, transformer_heads=1, transformer_layers=2)
TINY_RESNET = "test_resnet.r160_in1k"  # timm's 0.5 M-parameter ResNet test model, 1000 classes


@pytest.fixture
def tiny_clip(monkeypatch) -> str:
    monkeypatch.setitem(models.CLIP_ARCHS, "tiny", TINY)
    return "tiny"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """scikit-image's sample photos written as JPEG/PNG files (shrunk: speed, not content)."""
    folder = tmp_path_factory.mktemp("photos")
    out = {}
    for name, image in images.sample_photos():
        image.thumbnail((128, 128))
        out[name] = folder / f"{name}.{'png' if name == 'coffee' else 'jpg'}"
        image.save(out[name])
    return out


def _folder(tmp_path: Path, photos: dict[str, Path], layout: dict[str, str]) -> Path:
    """Copy photos to tmp_path/<relative path> for each `relpath: photo name`."""
    root = tmp_path / "images"
    for rel, name in layout.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(photos[name].read_bytes())
    return root


def _one_line_error(argv: list[str]) -> str:
    result = zoo_cli("clip-vs-resnet", *argv)
    err = [line for line in result.output.strip().splitlines() if not line.startswith("warning: ")]
    assert result.exit_code == 2 and len(err) == 1 and err[0].startswith("error: "), result.output
    return err[0]


# --- what both tools share -----------------------------------------------------------------

TOOLS = {"clip-vs-resnet": "zoo_tools.compare.run.compare", "fp16-profile": "zoo_tools.fp16.run.profile_clip"}


def test_tools_leave_files_devices_and_images_to_zoo():
    """One job, one home: files are written by zoo.io (atomically), the device is chosen by
    zoo.device, images are decoded by zoo.io.open_rgb; no tool does any of it on its own."""
    zoos = {"Image.open", "os.replace", "os.fdopen", "torch.cuda.is_available", "torch.cuda.set_device"}
    for path in sorted((ROOT / "tools").rglob("*.py")):
        tree = ast.parse(path.read_text())
        calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
        names = {ast.unparse(call.func) for call in calls}
        assert not names & zoos, (path.name, names & zoos)
        assert not [n for n in names if n.endswith((".write_text", ".write_bytes", ".savez"))], path.name
        writes = [call for call in calls if ast.unparse(call.func) == "open" and len(call.args) > 1]
        assert not writes, (path.name, [ast.unparse(c) for c in writes])  # open() only reads, mode left out
        imported = {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
        assert "tempfile" not in imported, path.name


@pytest.mark.parametrize("name", TOOLS)
def test_both_tools_take_zoos_run_flags(name, monkeypatch):
    """The CLIP and run flags reach the library as one ClipOptions, the same for both tools."""
    jobs = []
    monkeypatch.setattr(TOOLS[name], lambda job: jobs.append(job) or {
        "n_images": 0, "skipped": [], "latency": [], "figures": [], "interrupted": False})
    required = ["IMAGES", "--out", "OUT"] if name == "clip-vs-resnet" else []
    given = ["--device", "cuda:1", "--seed", "3", "--no-progress", "--clip-model", "RN101",
             "--clip-weights", "w.pt", "--random-init", "--prompts", "name", "--cache-dir", "cache"]
    for args in (given, []):
        assert zoo_cli(name, *required, *args).exit_code == 0
    assert jobs[0].clip == ClipOptions(model="RN101", weights=Path("w.pt"), random_init=True, prompts="name",
                                       cache_dir=Path("cache"), device="cuda:1", seed=3, progress=False)
    assert jobs[1].clip == ClipOptions()
    assert (jobs[1].clip.device, jobs[1].clip.seed, jobs[1].clip.progress) == ("auto", 0, True)


def test_a_command_that_cannot_be_loaded_is_listed_and_says_why(monkeypatch):
    """zoo loads the `zoo.commands` entry points to list them: one that is broken (a missing
    module, or not a click command) shows why in `zoo --help`, fails in one line when run,
    and leaves the other commands alone."""
    broken = {name: importlib.metadata.EntryPoint(name, value, "zoo.commands")
              for name, value in (("gone", "zoo_no_such_module:command"), ("plain", "os:getcwd"))}
    monkeypatch.setattr(zoo.cli, "installed_commands", lambda: broken)
    listed = zoo_cli("--help")
    text = " ".join(listed.output.split())
    assert listed.exit_code == 0 and "gone cannot load zoo_no_such_module:command" in text
    assert "plain cannot load os:getcwd" in text and "list List plugins" in text
    for name, why in (("gone", "ModuleNotFoundError: No module named 'zoo_no_such_module'"),
                      ("plain", "TypeError: os:getcwd is not a click command")):
        result = zoo_cli(name, "x", "--y")
        assert result.exit_code == 2 and result.output.splitlines() == [
            f"error: zoo {name}: cannot load {broken[name].value} ({why}); reinstall the package that "
            "declares it"]


@pytest.mark.parametrize("name", TOOLS)
def test_debug_shows_the_traceback(name, tmp_path):
    """--debug, after the command or before it, prints the traceback before the one line."""
    bad = ([str(tmp_path / "missing"), "--out", str(tmp_path / "out")] if name == "clip-vs-resnet"
           else ["--out", str(tmp_path / "out"), "--batch-sizes", "0"])
    for args in ([name, *bad], [name, *bad, "--debug"], ["--debug", name, *bad]):
        result = zoo_cli(*args)
        err = result.output.strip().splitlines()
        debug = "--debug" in args
        assert result.exit_code == 2 and err[-1].startswith("error: "), result.output
        assert (err[0] == "Traceback (most recent call last):") == debug and (len(err) == 1) != debug


def test_device_choice_is_zoos_with_errors_worded_for_the_flag(monkeypatch):
    """--device goes through zoo.device.pick_device: auto/cpu/cuda/cuda:N as before, and the
    chosen GPU becomes the current one; the errors say --device, not zoo's train.device."""
    cpu, cuda0, cuda1 = torch.device("cpu"), torch.device("cuda", 0), torch.device("cuda", 1)
    assert models.choose_device("cpu") == cpu
    assert models.choose_device("auto") == (cuda0 if torch.cuda.is_available() else cpu)
    with pytest.raises(ZooError) as exc:
        models.choose_device("tpu")
    assert str(exc.value) == "--device tpu: unknown device 'tpu'; use auto, cpu, cuda or cuda:N"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ZooError, match="^--device cuda:1: 'cuda:1' requested but CUDA is not available"):
        models.choose_device("cuda:1")
    current = []  # a GPU, faked: which device is chosen needs none
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert [models.choose_device(n) for n in ("cuda:1", "cuda", "auto")] == [cuda1, cuda0, cuda0] == current
    with pytest.raises(ZooError, match=r"^--device cuda:x: unknown device 'cuda:x'; use auto"):
        models.choose_device("cuda:x")
    with pytest.raises(ZooError, match=r"^--device cuda:2: 'cuda:2', but this machine has 2 CUDA"):
        models.choose_device("cuda:2")


# --- CLIP architectures and loading ---------------------------------------------------------


def test_arch_table_matches_clip_build_model_and_open_clip():
    """Every entry is what clip.model.build_model infers from such weights, and open_clip agrees."""
    from clip.model import build_model
    from open_clip import get_model_config

    assert set(models.CLIP_ARCHS) == set(clip.available_models())
    for name, arch in models.CLIP_ARCHS.items():
        with torch.device("meta"):  # shapes only: no memory, no time
            state = arch.build().state_dict()
            rebuilt = build_model(dict(state))
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in state.items()}
        assert arch.transformer_heads == arch.transformer_width // 64  # build_model's rule
        oc = get_model_config(name.replace("/", "-").replace("@336px", "-336"))
        vision, text = oc["vision_cfg"], oc["text_cfg"]
        layers = tuple(vision["layers"]) if isinstance(vision["layers"], list) else vision["layers"]
        assert (arch.embed_dim, arch.image_resolution, arch.vision_layers, arch.vision_width,
                arch.vision_patch_size) == (oc["embed_dim"], vision["image_size"], layers, vision["width"],
                                            vision["patch_size"]), name
        assert (arch.transformer_width, arch.transformer_heads, arch.transformer_layers, arch.context_length,
                arch.vocab_size) == (text["width"], text["heads"], text["layers"], text["context_length"],
                                     text["vocab_size"]), name


def test_unknown_clip_model_suggests():
    with pytest.raises(ZooError, match="did you mean RN50"):
        models.load_clip("RN5", device=torch.device("cpu"), random_init=True)


def test_download_failure_is_a_one_line_hint(monkeypatch):
    def offline(url, root):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(clip.clip, "_download", offline)
    with pytest.raises(ZooError, match="--clip-weights FILE") as exc:
        models.load_clip("RN50", device=torch.device("cpu"))
    assert "\n" not in str(exc.value)


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_clip_weights_file_loads_and_must_match_the_name(tmp_path, tiny_clip):
    torch.manual_seed(1)
    model = TINY.build()
    path = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), path)
    loaded = models.load_clip(tiny_clip, weights=path, device=torch.device("cpu"))
    assert loaded.model.dtype == torch.float32 and not loaded.random_init
    assert torch.equal(loaded.model.text_projection, model.text_projection)
    # OpenAI releases TorchScript archives; clip.load reads them (and keeps their values in FP16).
    scripted = tmp_path / "tiny_jit.pt"
    torch.jit.save(torch.jit.trace_module(model, {"encode_image": torch.randn(1, 3, 32, 32)}), scripted)
    loaded = models.load_clip(tiny_clip, weights=scripted, device=torch.device("cpu"))
    assert loaded.model.dtype == torch.float32
    torch.testing.assert_close(loaded.model.text_projection, model.text_projection, atol=1e-3, rtol=1e-3)
    with pytest.raises(ZooError, match="not a CLIP RN50 checkpoint"):
        models.load_clip("RN50", weights=path, device=torch.device("cpu"))
    with pytest.raises(ZooError, match="no such file"):
        models.load_clip("RN50", weights=tmp_path / "missing.pt", device=torch.device("cpu"))


# --- zero-shot head -------------------------------------------------------------------------


def test_encode_text_equals_clip_encode_text():
    torch.manual_seed(0)
    model = TINY.build()
    tokens = clip.tokenize(["a photo of a tabby cat.", "dog", "a low resolution photo of the golden retriever."])
    with torch.no_grad():
        torch.testing.assert_close(zeroshot.encode_text(model, tokens), model.encode_text(tokens), atol=1e-5, rtol=1e-5)


def test_zero_shot_logits_equal_clip_forward():
    """Our head + logits are CLIP's own model(image, text) logits for the same prompts."""
    torch.manual_seed(0)
    model = TINY.build()
    names = ["tench", "goldfish", "tabby cat", "space shuttle", "espresso"]
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        head = zeroshot.class_embeddings(model, names, ("a photo of a {}.",), batch_size=2, progress=False)
        ours = zeroshot.zero_shot_logits(model, images, head)
        theirs, _ = model(images, clip.tokenize([f"a photo of a {n}." for n in names]))
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_prompt_ensemble_averages_unit_vectors():
    per_prompt = torch.tensor([
        [[10.0, 0.0], [0.0, 1.0]],  # lengths must not weigh in: the mean of unit vectors
        [[3.0, 4.0], [6.0, 8.0]],   # same direction twice
    ])
    out = zeroshot.ensemble(per_prompt)
    torch.testing.assert_close(out, torch.tensor([[math.sqrt(0.5), math.sqrt(0.5)], [0.6, 0.8]]))
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2))


def test_ensemble_of_templates_on_a_model():
    torch.manual_seed(0)
    model = TINY.build()
    templates = ("a photo of a {}.", "a drawing of a {}.", "{}")
    with torch.no_grad():
        head = zeroshot.class_embeddings(model, ["tench", "goldfish"], templates, progress=False)
        for i, name in enumerate(["tench", "goldfish"]):
            emb = model.encode_text(clip.tokenize([t.format(name) for t in templates]))
            expected = torch.nn.functional.normalize(torch.nn.functional.normalize(emb, dim=-1).mean(0), dim=0)
            torch.testing.assert_close(head[i], expected, atol=1e-5, rtol=1e-5)


def test_prompt_modes():
    assert len(zeroshot.prompt_templates("ensemble")) == 80
    assert all("{}" in t for t in zeroshot.prompt_templates("ensemble"))
    assert zeroshot.prompt_templates("single") == ("a photo of a {}.",)
    assert zeroshot.resolve_prompts("auto", random_init=False) == "ensemble"
    assert zeroshot.resolve_prompts("auto", random_init=True) == "single"
    with pytest.raises(ZooError, match="did you mean single"):
        zeroshot.resolve_prompts("singel", random_init=False)


def test_text_embeddings_are_cached_per_weights(tmp_path, tiny_clip, monkeypatch):
    cpu = torch.device("cpu")
    loaded = models.load_clip(tiny_clip, random_init=True, device=cpu)
    written = record_atomic_writes(monkeypatch, zeroshot)
    first = zeroshot.zero_shot_head(loaded, "name", cache_dir=tmp_path, progress=False)
    files = list(tmp_path.iterdir())
    assert first.shape == (1000, TINY.embed_dim) and files == written  # one file, written atomically
    assert files[0].name.startswith("tiny-random-name-")

    def fail(*args, **kwargs):
        raise AssertionError("cache miss")

    monkeypatch.setattr(zeroshot, "class_embeddings", fail)
    torch.testing.assert_close(zeroshot.zero_shot_head(loaded, "name", cache_dir=tmp_path, progress=False), first)
    other = models.load_clip(tiny_clip, random_init=True, device=cpu, seed=1)  # other weights: other key
    with pytest.raises(AssertionError, match="cache miss"):
        zeroshot.zero_shot_head(other, "name", cache_dir=tmp_path, progress=False)


# --- labels and input layouts ---------------------------------------------------------------


@pytest.fixture(scope="module")
def classes() -> labels.ImageNetClasses:
    return labels.ImageNetClasses()


def test_imagenet_class_lookup(classes):
    assert classes.wnids[0] == "n01440764" and classes.names[0] == "tench"
    tabby = classes.wnids.index("n02123045")
    assert classes.index("n02123045") == classes.index("tabby cat") == classes.index("Tabby_Cat") == tabby
    assert classes.index("281") == 281
    assert classes.wnids[classes.index("golden_retriever")] == "n02099601"
    assert classes.wnids[classes.index("missile")] == "n03773504"  # CLIP names it twice; WordNet decides
    with pytest.raises(ZooError, match="did you mean goldfish"):
        classes.index("goldfsh")
    with pytest.raises(ZooError, match="not one of the 1000"):
        classes.index("n99999999")


def test_flat_folder_is_unlabelled(tmp_path, photos, classes):
    root = _folder(tmp_path, photos, {"a.jpg": "chelsea", "b.png": "coffee"})
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.jpg").write_bytes(photos["rocket"].read_bytes())
    samples = labels.collect_samples(root, classes)
    assert [(s.rel, s.label) for s in samples] == [("a.jpg", None), ("b.png", None)]


def test_imagefolder_with_wnids_and_names(tmp_path, photos, classes):
    root = _folder(tmp_path, photos, {"n02123045/cat.jpg": "chelsea", "espresso/cup.png": "coffee",
                                      "space_shuttle/r.jpg": "rocket"})
    found = {s.rel: classes.wnids[s.label] for s in labels.collect_samples(root, classes)}
    assert found == {"n02123045/cat.jpg": "n02123045", "espresso/cup.png": "n07920052",
                      "space_shuttle/r.jpg": "n04266014"}
    (root / "holidays").mkdir()
    (root / "holidays" / "x.jpg").write_bytes(photos["rocket"].read_bytes())
    with pytest.raises(ZooError, match="--unlabelled"):
        labels.collect_samples(root, classes)
    assert all(s.label is None for s in labels.collect_samples(root, classes, unlabelled=True))


def test_labels_csv(tmp_path, photos, classes):
    root = _folder(tmp_path, photos, {"a.jpg": "chelsea", "sub/b.png": "coffee", "c.jpg": "rocket"})
    table = tmp_path / "labels.csv"
    table.write_text("path,label\na.jpg,n02123045\nsub/b.png,espresso\n\nc.jpg,\n")
    samples = labels.collect_samples(root, classes, table)
    assert [(s.rel, s.label) for s in samples] == [("a.jpg", classes.index("tabby cat")),
                                                   ("sub/b.png", classes.index("espresso")), ("c.jpg", None)]
    bad = {
        "a.jpg,tabby cat,extra\n": "labels.csv:1: expected 'path,label', got 3 fields",
        "path,label\nmissing.jpg,tench\n": "labels.csv:2: no such image",
        "a.jpg,not a class\n": "labels.csv:1: 'not a class' is not an ImageNet class",
        "\n\n": "no rows",
    }
    for text, message in bad.items():
        table.write_text(text)
        with pytest.raises(ZooError, match=message):
            labels.collect_samples(root, classes, table)


def test_empty_or_missing_folder(tmp_path, classes):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ZooError, match="no images found"):
        labels.collect_samples(tmp_path / "empty", classes)
    with pytest.raises(ZooError, match="not a folder"):
        labels.collect_samples(tmp_path / "nope", classes)


# --- metrics and galleries ------------------------------------------------------------------


def _pred(label, clip_top1, clip_p, resnet_top1, resnet_p, name="x") -> predict.Prediction:
    rest = [900, 901, 902, 903]
    return predict.Prediction(name, Path(name), label, [clip_top1, *rest], [clip_p, 0.1, 0.1, 0.1, 0.1],
                          [resnet_top1, *rest], [resnet_p, 0.1, 0.1, 0.1, 0.1])


def test_gallery_split_on_fabricated_predictions():
    preds = [
        _pred(1, 1, 0.3, 2, 0.9, "clip_right_low_conf"),
        _pred(1, 1, 0.8, 2, 0.1, "clip_right_high_conf"),
        _pred(1, 2, 0.9, 1, 0.2, "resnet_right"),
        _pred(1, 1, 0.5, 1, 0.5, "both_right"),
        _pred(1, 3, 0.5, 4, 0.5, "both_wrong"),
        _pred(None, 5, 0.7, 6, 0.4, "unlabelled_clip_surer"),
        _pred(None, 5, 0.2, 6, 0.4, "unlabelled_resnet_surer"),
        _pred(None, 5, 0.9, 5, 0.1, "unlabelled_agree"),
        _pred(None, 5, 0.4, 6, 0.4, "unlabelled_tie"),
    ]
    split = galleries.split_galleries(preds)
    assert [p.rel for p in split["clip_better"]] == ["clip_right_high_conf", "unlabelled_clip_surer",
                                                     "clip_right_low_conf"]
    assert [p.rel for p in split["resnet_better"]] == ["unlabelled_resnet_surer", "resnet_right"]


def test_accuracy_and_agreement_matrix(classes):
    preds = [
        _pred(1, 1, 0.9, 1, 0.9),  # both right
        _pred(1, 1, 0.9, 2, 0.9),  # only CLIP
        _pred(2, 3, 0.9, 2, 0.9),  # only ResNet
        _pred(2, 3, 0.9, 900, 0.9),  # both wrong; label 2 not in top-5 of either
        _pred(None, 3, 0.9, 3, 0.9),  # unlabelled: ignored
    ]
    acc = evaluation.accuracy(preds, classes)
    assert acc["n_labelled"] == 4
    assert acc["agreement"] == {"both_right": 1, "only_clip": 1, "only_resnet": 1, "both_wrong": 1}
    assert acc["clip"]["top1"] == 0.5 and acc["resnet"]["top1"] == 0.5
    assert [(c["wnid"], c["n"], c["clip_top1"], c["resnet_top1"]) for c in acc["per_class"]] == [
        (classes.wnids[1], 2, 1.0, 0.5), (classes.wnids[2], 2, 0.0, 0.5)]
    assert evaluation.accuracy(preds[-1:], classes) is None


# --- architecture ---------------------------------------------------------------------------


def test_design_facts_come_from_the_module_trees():
    import timm

    with torch.device("meta"):
        clip_rn50 = models.CLIP_ARCHS["RN50"].build().visual
        clip_vit = models.CLIP_ARCHS["ViT-B/32"].build().visual
        resnet = timm.create_model("resnet50", pretrained=False)
    facts = architecture.design_facts(clip_rn50)
    assert facts[0].startswith("stem: 3 convolution(s)") and "AvgPool2d(2)" in facts[0]
    assert "no strided convolution" in facts[2] and "7 AvgPool2d" in facts[2]
    assert "attention pooling, 32 heads" in facts[3] and "1024-d embedding" in facts[3]
    facts = architecture.design_facts(resnet)
    assert facts[0].startswith("stem: 1 convolution(s) (7x7/s2") and "MaxPool2d" in facts[0]
    assert "3 of 1x1, 3 of 3x3" in facts[2]
    assert facts[3] == "head: global avg pooling -> linear 2048 -> 1000"
    assert architecture.design_facts(clip_vit)[0].startswith("patch embedding: 32x32/s32")


def test_unknown_timm_models():
    cpu = torch.device("cpu")
    with pytest.raises(ZooError, match="unknown timm model 'resnet5O'"):
        timm_resnet.load_resnet("resnet5O", device=cpu, random_init=True)
    with pytest.raises(ZooError, match="resnet50 has: .*resnet50.a1_in1k"):
        timm_resnet.load_resnet("resnet50.nope", device=cpu, random_init=True)


def test_resnet_download_failure_is_a_one_line_hint(monkeypatch):
    import timm

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'\nsecond line")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(ZooError, match="--resnet-weights FILE") as exc:
        timm_resnet.load_resnet("resnet50.a1_in1k", device=torch.device("cpu"))
    assert "\n" not in str(exc.value)


# --- end to end -----------------------------------------------------------------------------


def test_end_to_end_tiny_models(tmp_path, photos, tiny_clip, monkeypatch):
    """`zoo clip-vs-resnet` on a real folder; stderr is no terminal here, so no progress bars
    although --no-progress is not given; the report quotes the command as typed."""
    root = _folder(tmp_path, photos, {"n02123045/cat.jpg": "chelsea", "espresso/cup.png": "coffee",
                                      "space_shuttle/r.jpg": "rocket", "astronaut.jpg": "astronaut"})
    (root / "espresso" / "broken.jpg").write_bytes(b"not a jpeg at all")
    out = tmp_path / "out"
    written = record_atomic_writes(monkeypatch, zeroshot, compare_report, compare_run)
    args = [str(root), "--out", str(out), "--clip-model", tiny_clip, "--resnet", TINY_RESNET,
            "--random-init", "--cache-dir", str(tmp_path / "cache"), "--workers", "0", "--seed", "3",
            "--batch-size", "2", "--device", "cpu", "--gallery-max", "2"]
    result = zoo_cli("clip-vs-resnet", *args)
    assert result.exit_code == 0, result.output
    assert "warning: skipped espresso/broken.jpg" in result.output
    assert "text prompts" not in result.output and "batch/s" not in result.output
    assert "\r" not in result.output
    # Every file but the figures is written atomically: a kill never leaves half a summary.
    assert {p for p in out.rglob("*") if p.is_file() and p.suffix != ".png"} == {
        out / "predictions.csv", out / "summary.json", out / "report.md"} == {p for p in written if out in p.parents}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["clip_source"] == summary["config"]["resnet_source"] == "random init (seed 3), NOT pretrained"
    assert summary["config"]["command"] == shlex.join(["zoo", "clip-vs-resnet", *args])
    assert summary["skipped"][0]["path"] == "espresso/broken.jpg" and summary["n_images"] == 4
    assert f"4 images, 1 skipped; report: {out / 'report.md'}" in result.output
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == 4 and float(rows[0]["clip_p1"]) >= float(rows[0]["clip_p2"])
    assert {r["label_wnid"] for r in rows} == {"n02123045", "n07920052", "n04266014", ""}
    assert summary["accuracy"]["n_labelled"] == 3
    text = (out / "report.md").read_text()
    assert "RANDOM WEIGHTS" in text and "## Architecture" in text
    assert f"Command: `{summary['config']['command']}`" in text
    for gallery, files in summary["gallery_files"].items():
        assert len(files) == min(2, summary["galleries"][gallery])
        for png in files:
            assert (out / png).read_bytes()[:4] == b"\x89PNG" and f"]({png})" in text


def test_progress_bars_show_on_a_terminal_only(tiny_clip, capsys, monkeypatch):
    """The bars are zoo's (zoo.train.trainer.progress): drawn where stderr is a terminal,
    left out of pipes and log files, and off on a terminal with progress=False."""
    model = TINY.build()
    shown = {}
    for tty, progress in ((False, True), (True, True), (True, False)):
        monkeypatch.setattr(sys.stderr, "isatty", lambda tty=tty: tty)
        zeroshot.class_embeddings(model, ["tench", "goldfish"], ("{}",), batch_size=1,
                                  progress=progress)
        shown[tty, progress] = "text prompts" in capsys.readouterr().err
    assert shown == {(False, True): False, (True, True): True, (True, False): False}


def test_bad_input_gives_one_line_errors(tmp_path, photos, tiny_clip):
    (tmp_path / "empty").mkdir()
    base = ["--out", str(tmp_path / "out"), "--random-init", "--device", "cpu"]
    assert "no images found" in _one_line_error([str(tmp_path / "empty"), *base])
    root = _folder(tmp_path, photos, {"a.jpg": "chelsea"})
    assert "unknown CLIP model 'RN51'" in _one_line_error([str(root), *base, "--clip-model", "RN51"])
    assert "unknown timm model" in _one_line_error(
        [str(root), *base, "--clip-model", tiny_clip, "--resnet", "resnet_fifty"])
    assert "--device tpu: unknown device 'tpu'" in _one_line_error([str(root), *base, "--device", "tpu"])
    table = tmp_path / "bad.csv"
    table.write_text("a.jpg\n")
    assert "bad.csv:1: expected 'path,label'" in _one_line_error([str(root), *base, "--labels", str(table)])
    assert "'--batch-size': 0 is not in the range x>=1" in _one_line_error(
        [str(root), *base, "--batch-size", "0"])
    assert "No such option '--bogus'" in _one_line_error([str(root), *base, "--bogus"])
    assert "Missing option '--out'" in _one_line_error([str(root)])
    (root / "a.jpg").write_bytes(b"garbage")
    assert "none of the 1 images could be read" in _one_line_error(
        [str(root), *base, "--clip-model", tiny_clip, "--resnet", TINY_RESNET, "--workers", "0",
         "--no-progress", "--cache-dir", str(tmp_path / "cache")])


def test_zoo_help_says_what_each_tool_does_without_loading_torch():
    """`zoo --help` lists both tools with a line of their own, and loads neither torch nor CLIP."""
    code = ("import sys; from zoo.cli import cli\n"
            "try: cli(['--help'], prog_name='zoo')\n"
            "except SystemExit: pass\n"
            "print(sorted({'torch', 'clip', 'timm'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    listed = {line.split()[0]: " ".join(line.split()[1:]) for line in done.stdout.splitlines()
              if line.startswith("  ") and line.split()}
    assert listed["clip-vs-resnet"] == "CLIP zero-shot vs an ImageNet ResNet-50 on your images."
    assert listed["fp16-profile"] == "CLIP in FP32, FP16 and AMP: speed, memory, predictions."
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_script_runs_as_a_subprocess(tmp_path, photos):
    """The real command line from a checkout: full-size RN50 CLIP and ResNet-50, random weights,
    on CPU; the report quotes the command as it was typed."""
    root = _folder(tmp_path, photos, {f"{n}.jpg": n for n in photos})
    out = tmp_path / "out"
    script = str(ROOT / "tools" / "clip_vs_resnet.py")
    args = [str(root), "--out", str(out), "--random-init", "--prompts", "name", "--device", "cpu",
            "--workers", "0", "--no-progress", "--cache-dir", str(tmp_path / "cache")]
    done = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for name in ("predictions.csv", "summary.json", "report.md", "clip_better", "resnet_better"):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["random_init"] and summary["architecture"]["resnet"]["params"] > 20e6
    assert summary["config"]["command"] == shlex.join(["python", script, *args])

    bad = subprocess.run([sys.executable, script, str(tmp_path / "missing"), "--out", str(out)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing'}: "
                                                                       "not a folder of images"]
