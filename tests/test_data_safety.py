"""Data never runs code, only plugin files do: CIFAR archives and pickles, image files, labels.csv.

Every hostile file is built in tmp_path; whatever it would write if obeyed lands in tmp_path
too, so a regression fails a test without harming the machine.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import shlex
import struct
import subprocess
import sys
import tarfile
import types
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.cifar_files import write_cifar10
from zoo.data import FolderData, TensorData, build_datasets
from zoo.errors import ZooError
from zoo.registry import builtin_dir, load_file, registry

ARCHIVE = "cifar-10-python.tar.gz"
BATCHES = "cifar-10-batches-py"


@pytest.fixture(scope="module", autouse=True)
def dataset_plugins() -> None:
    """The built-in dataset plugins, loaded by path as zoo loads them."""
    for f in sorted((builtin_dir() / "dataset").glob("*.py")):
        load_file(f)


@pytest.fixture
def cifar_mod() -> types.ModuleType:
    """The cifar plugin's module: its functions and constants."""
    return sys.modules[registry("dataset").get("cifar10").obj.__module__]


def cifar10(root: Path, splits: tuple[str, ...] = ("train", "test")) -> dict[str, TensorData]:
    spec = {"cifar10": {"download": False, "val_size": 0}}
    return build_datasets(spec, list(splits), img_size=32, root=str(root))


def one_line_error(fn: Callable[[], object]) -> str:
    with pytest.raises(ZooError) as e:
        fn()
    assert "\n" not in str(e.value)
    return str(e.value)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


# ---------------------------------------------------------------------------------------
# The archive: published MD5, members checked


def real_archive(root: Path) -> Path:
    """A small cifar-10-python.tar.gz in the official layout, in root/."""
    src = write_cifar10(root / "src", n_train=10, n_test=4, learnable=False)
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / ARCHIVE, "w:gz") as tar:
        tar.add(src, arcname=BATCHES)
    return root / ARCHIVE


def hostile_archive(root: Path, outside: Path, case: str) -> Path:
    """An archive whose `case` member(s) would write into `outside` if obeyed."""
    members: list[tuple[tarfile.TarInfo, bytes]] = []

    def add(name: str, data: bytes = b"", **fields: object) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        for key, value in fields.items():
            setattr(info, key, value)
        members.append((info, data))

    add(f"{BATCHES}/readme.html", b"<p>fine</p>")
    if case == "dotdot":
        add(f"{BATCHES}/../../outside/evil", b"pwned")
    elif case == "absolute":
        add(str(outside / "evil"), b"pwned")
    elif case == "symlink":  # a link out, then a file written through it
        add(f"{BATCHES}/link", type=tarfile.SYMTYPE, linkname=str(outside))
        add(f"{BATCHES}/link/evil", b"pwned")
    elif case == "hardlink":  # a link to an outside file, then that file overwritten
        add(f"{BATCHES}/hl", type=tarfile.LNKTYPE, linkname=str(outside / "secret"))
        add(f"{BATCHES}/hl", b"pwned")
    elif case == "fifo":
        add(f"{BATCHES}/pipe", type=tarfile.FIFOTYPE)
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / ARCHIVE, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data))
    return root / ARCHIVE


@pytest.fixture(params=["data_filter", "own_checks_only"])
def tar_filter(request, monkeypatch) -> str:
    """Run with tarfile's PEP 706 filter, and as on Python < 3.11.4 (our checks alone)."""
    if request.param == "own_checks_only":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    return request.param


def test_generated_archive_extracts_and_loads_when_its_md5_is_the_expected_one(
        tmp_path, cifar_mod, monkeypatch, tar_filter):
    archive = real_archive(tmp_path / "data")
    monkeypatch.setitem(cifar_mod.ARCHIVE_MD5, ARCHIVE, md5(archive))
    data = cifar10(archive.parent)
    assert (len(data["train"]), len(data["test"])) == (10, 4)
    assert (archive.parent / BATCHES / "batches.meta").is_file()


def test_archive_with_a_wrong_md5_is_refused_before_extraction(tmp_path):
    archive = real_archive(tmp_path / "data")
    msg = one_line_error(lambda: cifar10(archive.parent))
    assert str(archive) in msg and "MD5" in msg and md5(archive) in msg
    assert "c58f30108f718f92721af3b95e74349a" in msg and "delete it" in msg
    assert not (archive.parent / BATCHES).exists()


def test_real_users_get_the_published_md5(cifar_mod):
    # https://www.cs.toronto.edu/~kriz/cifar.html; torchvision checks downloads against it too
    import torchvision.datasets as tvd

    assert cifar_mod.ARCHIVE_MD5[ARCHIVE] == "c58f30108f718f92721af3b95e74349a" == tvd.CIFAR10.tgz_md5
    assert cifar_mod.ARCHIVE_MD5[tvd.CIFAR100.filename] == tvd.CIFAR100.tgz_md5


@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink", "hardlink", "fifo"])
def test_hostile_archive_members_are_refused_and_nothing_is_written(
        tmp_path, cifar_mod, monkeypatch, tar_filter, case):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("keep")
    root = tmp_path / "data"
    archive = hostile_archive(root, outside, case)
    monkeypatch.setitem(cifar_mod.ARCHIVE_MD5, ARCHIVE, md5(archive))  # past the MD5 check

    msg = one_line_error(lambda: cifar10(root))
    assert str(archive) in msg and "member" in msg and "nothing was extracted" in msg
    assert sorted(os.listdir(outside)) == ["secret"] and (outside / "secret").read_text() == "keep"
    assert sorted(os.listdir(tmp_path)) == ["data", "outside"]
    assert os.listdir(root) == [ARCHIVE]  # refused whole: not even the harmless readme


# ---------------------------------------------------------------------------------------
# The pickled batches: a restricted unpickler


class Call:
    """Pickles as a call of `fn(*args)`: what a crafted CIFAR file would carry."""

    def __init__(self, fn: Callable, *args: object):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def touching(kind: str, marker: Path) -> Call:
    """A pickled call that creates `marker`, through os.system, exec or subprocess."""
    code = f"open({str(marker)!r}, 'w').close()"
    if kind == "os.system":
        return Call(os.system, f"touch {shlex.quote(str(marker))}")
    if kind == "exec":
        return Call(exec, code)
    return Call(subprocess.call, [sys.executable, "-c", code])


@pytest.mark.parametrize("kind", ["os.system", "exec", "subprocess"])
@pytest.mark.parametrize("target", ["data_batch_3", "test_batch", "batches.meta"])
def test_batch_files_that_would_run_code_are_refused(tmp_path, kind, target):
    # the payload is live: plain pickle runs it
    live = tmp_path / "live"
    pickle.loads(pickle.dumps({"x": touching(kind, live)}, protocol=2))
    assert live.exists()

    folder = write_cifar10(tmp_path / "data", n_train=10, n_test=4, learnable=False)
    marker = tmp_path / "marker"
    with open(folder / target, "rb") as f:
        entry = pickle.load(f)
    entry["batch_label" if target != "batches.meta" else "label_names"] = touching(kind, marker)
    with open(folder / target, "wb") as f:
        pickle.dump(entry, f, protocol=2)

    msg = one_line_error(lambda: cifar10(tmp_path / "data"))
    assert str(folder / target) in msg and "refused global" in msg
    assert not marker.exists()


class Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2's str (SHORT_BINSTRING/BINSTRING), as the official
    CIFAR files (cPickle, Python 2, numpy 1.x) hold them."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: str | bytes) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        n = len(raw)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(head + raw)
        self.memoize(raw)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str


def test_batches_in_the_official_python2_numpy1_format_load(tmp_path):
    folder = write_cifar10(tmp_path, n_train=10, n_test=4, learnable=False)
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                 "test_batch", "batches.meta"]:
        with open(folder / name, "rb") as f:
            entry = pickle.load(f)
        buf = io.BytesIO()
        Py2Pickler(buf, protocol=2).dump(entry)
        raw = buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        assert b"_codecs" not in raw  # no Python 3 bytes: only what Python 2 wrote
        (folder / name).write_bytes(raw)
    with open(folder / "test_batch", "rb") as f:
        expected = pickle.load(f, encoding="latin1")
    data = cifar10(tmp_path)
    assert data["train"].classes[0] == "airplane" and len(data["train"]) == 10
    assert torch.equal(data["test"].images.flatten(1), torch.from_numpy(expected["data"]))
    assert data["test"].labels.tolist() == expected["labels"]


@pytest.mark.parametrize("entry", [
    {"data": [[0] * 3072], "labels": [1]},
    {"data": np.zeros((2, 3072), np.float32), "labels": [1, 2]},
    {"data": np.zeros((2, 100), np.uint8), "labels": [1, 2]},
    {"data": np.zeros((2, 3072), np.uint8), "labels": [1]},
    {"data": np.zeros((2, 3072), np.uint8), "labels": ["a", "b"]},
    ["not", "a", "dict"],
])
def test_batches_of_the_wrong_shape_are_one_line_errors(tmp_path, entry):
    folder = write_cifar10(tmp_path, n_train=10, n_test=4, learnable=False)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(entry, f, protocol=2)
    msg = one_line_error(lambda: cifar10(tmp_path, ("test",)))
    assert str(folder / "test_batch") in msg and "download it again" in msg


# ---------------------------------------------------------------------------------------
# Images (imagefolder decodes through zoo.data.FolderData) and tools' labels.csv.


def header_only_png(path: Path, width: int, height: int) -> None:
    """A PNG of a few dozen bytes whose header claims width x height pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def imagefolder(root: Path, img_size: int = 16) -> FolderData:
    spec = {"imagefolder": {"val_fraction": 0.0}}
    return build_datasets(spec, ["train"], img_size=img_size, root=str(root))["train"]


def test_16_bit_png_is_scaled_to_8_bit(tmp_path):
    (tmp_path / "a").mkdir()
    values = np.random.default_rng(0).integers(0, 65536, (16, 16)).astype(np.uint16)
    values[0, :4] = [0, 257, 257 * 128, 65535]
    Image.fromarray(values).save(tmp_path / "a" / "deep.png")
    assert Image.open(tmp_path / "a" / "deep.png").mode.startswith("I")
    x, _ = imagefolder(tmp_path)[0]
    expected = np.round(values / 257.0)
    assert x[:, 0, :4].tolist() == [[0, 1, 128, 255]] * 3
    assert np.abs(x.numpy().astype(int) - expected[None]).max() <= 1


def test_images_over_the_pixel_cap_are_refused_before_decoding(tmp_path, monkeypatch):
    import zoo.io

    (tmp_path / "a").mkdir()
    huge = tmp_path / "a" / "huge.png"
    header_only_png(huge, 10_000, 10_000)  # 100 megapixels: PIL itself only warns
    data = imagefolder(tmp_path)
    msg = one_line_error(lambda: data[0])
    assert str(huge) in msg and "10000x10000" in msg and "megapixel limit" in msg
    header_only_png(huge, 15_000, 15_000)  # 225 megapixels: PIL refuses it before zoo looks
    assert one_line_error(lambda: imagefolder(tmp_path)[0]) == msg.replace(
        "10000x10000 image (100 megapixels)", "image (225 megapixels)")

    Image.fromarray(np.zeros((20, 20), np.uint8)).save(huge)  # now 400 pixels
    assert imagefolder(tmp_path)[0][0].shape == (3, 16, 16)
    monkeypatch.setattr(zoo.io, "MAX_IMAGE_PIXELS", 399)  # the cap is the stated constant
    assert "20x20" in one_line_error(lambda: imagefolder(tmp_path)[0])


@pytest.fixture
def cvr() -> types.ModuleType:
    """Imported on first use: the tool loads openai-clip, open_clip and timm."""
    from zoo_tools.compare import labels as clip_vs_resnet

    return clip_vs_resnet


@pytest.mark.parametrize("row", ["../outside.png", "{abs}"])
def test_labels_csv_paths_stay_in_the_image_folder(tmp_path, cvr, row):
    root = tmp_path / "images"
    root.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "outside.png")
    table = tmp_path / "labels.csv"
    table.write_text(f"path,label\n{row.format(abs=tmp_path / 'outside.png')},tench\n")
    msg = one_line_error(lambda: cvr.collect_samples(root, cvr.ImageNetClasses(), table))
    assert f"{table}:2:" in msg and "outside" in msg


def test_labels_csv_with_a_utf8_bom_is_read(tmp_path, cvr):
    root = tmp_path / "images"
    root.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "a.png")
    table = tmp_path / "labels.csv"
    table.write_bytes("path,label\na.png,tench\n".encode("utf-8-sig"))
    classes = cvr.ImageNetClasses()
    samples = cvr.collect_samples(root, classes, table)
    assert [(s.rel, s.label) for s in samples] == [("a.png", classes.index("tench"))]
