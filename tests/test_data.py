"""Datasets (CIFAR on-disk format, shapes, imagefolder) and the loaders."""

from __future__ import annotations

import hashlib
import sys
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import CIFAR10_NAMES, dump, write_cifar10
from zoo.data import FolderData, TensorData, build_datasets, normalize, to_float
from zoo.errors import ZooError
from zoo.loaders import DeviceLoader, MapLoader, epoch_order, make_loader
from zoo.registry import builtin_dir, load_file, registry

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture(scope="module", autouse=True)
def plugins():
    """The built-in dataset and augment plugins (not the other kinds: not needed here)."""
    for kind in ("dataset", "augment"):
        for f in sorted((builtin_dir() / kind).glob("*.py")):
            load_file(f)


def write_cifar100(root: Path, n: int = 30) -> None:
    """CIFAR-100's python layout: one train file, one test file, meta with fine names."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name, size in (("train", 2 * n), ("test", n)):
        dump(folder / name, {
            "filenames": [f"{i}.png" for i in range(size)], "batch_label": name,
            "fine_labels": [int(v) for v in rng.integers(0, 100, size)],
            "coarse_labels": [int(v) for v in rng.integers(0, 20, size)],
            "data": rng.integers(0, 256, (size, 3072), dtype=np.uint8),
        })
    dump(folder / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                           "coarse_label_names": [f"coarse{i}" for i in range(20)]})


def rows(images: torch.Tensor) -> set[bytes]:
    return {bytes(im.flatten().tolist()) for im in images}


def cifar(root: Path, name: str = "cifar10", **params) -> dict[str, TensorData]:
    spec = {name: {"download": False, **params}}
    return build_datasets(spec, ["train", "val", "test"], img_size=32, root=str(root))


def test_cifar10_reads_the_real_format(tmp_path):
    written = write_cifar10(tmp_path)
    data = cifar(tmp_path, val_size=10)
    train, val, test = data["train"], data["val"], data["test"]
    assert (len(train), len(val), len(test)) == (90, 10, 20)
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (3, 32, 32)
    assert train.labels.dtype == torch.int64 and train.classes == CIFAR10_NAMES
    # The test split is test_batch, pixel for pixel: rows of 3072 are R, G, B planes.
    data_t, labels_t = written["test_batch"]
    assert torch.equal(test.images, torch.from_numpy(data_t).view(-1, 3, 32, 32))
    assert test.labels.tolist() == labels_t
    # val is held out of the training batches: disjoint from train, together all of them.
    all_train = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    assert rows(train.images).isdisjoint(rows(val.images))
    assert rows(train.images) | rows(val.images) == rows(torch.from_numpy(all_train).view(-1, 3, 32, 32))
    # ...and the same images every time.
    assert torch.equal(cifar(tmp_path, val_size=10)["val"].images, val.images)


def test_cifar10_trains_on_every_training_image_by_default_and_has_no_val(tmp_path):
    """Published results train on all 50k; a val split exists only when asked for."""
    write_cifar10(tmp_path)
    splits = build_datasets({"cifar10": {"download": False}}, ["train", "test"], img_size=32,
                            root=str(tmp_path))
    assert (len(splits["train"]), len(splits["test"])) == (100, 20)
    with pytest.raises(ZooError, match=r"no val split.*eval_splits=\[test\]") as e:
        build_datasets({"cifar10": {"download": False}}, ["val"], img_size=32, root=str(tmp_path))
    assert "\n" not in str(e.value)


def test_cifar10_resizes_to_img_size(tmp_path):
    write_cifar10(tmp_path)
    data = build_datasets({"cifar10": {"download": False}}, ["test"], img_size=16, root=str(tmp_path))
    assert data["test"].images.shape == (20, 3, 16, 16)


def test_cifar100_reads_the_real_format(tmp_path):
    write_cifar100(tmp_path)
    data = cifar(tmp_path, "cifar100", val_size=6)
    assert (len(data["train"]), len(data["val"]), len(data["test"])) == (54, 6, 30)
    assert data["train"].classes[:2] == ["fine0", "fine1"] and len(data["train"].classes) == 100
    assert int(data["test"].labels.max()) < 100


def test_missing_cifar_says_where_to_put_it(tmp_path):
    with pytest.raises(ZooError) as e:
        cifar(tmp_path / "nowhere")
    msg = str(e.value)
    assert "\n" not in msg
    assert "cifar-10-python.tar.gz" in msg and "cifar-10-batches-py" in msg
    assert str(tmp_path / "nowhere") in msg and "download is false" in msg


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(tvu, "download_url", offline)
    with pytest.raises(ZooError) as e:
        build_datasets({"cifar10": {"download": True}}, ["train"], 32, str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg and "download failed" in msg and "cifar-10-python.tar.gz" in msg


def test_cifar_archive_in_root_is_extracted_without_download(tmp_path, monkeypatch):
    write_cifar10(tmp_path / "src")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    # a generated archive is not the published one: expect its own MD5 (tests/test_data_safety.py)
    plugin = sys.modules[registry("dataset").get("cifar10").obj.__module__]
    monkeypatch.setitem(plugin.ARCHIVE_MD5, archive.name, hashlib.md5(archive.read_bytes()).hexdigest())
    data = cifar(tmp_path, val_size=10)
    assert len(data["test"]) == 20 and (tmp_path / "cifar-10-batches-py" / "test_batch").is_file()


def test_corrupt_cifar_batch_names_the_file(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(ZooError, match="test_batch: not a readable CIFAR batch"):
        cifar(tmp_path, val_size=10)


# ---------------------------------------------------------------------------------------
# shapes


def shapes(split: str = "train", **params) -> TensorData:
    return build_datasets({"shapes": params}, [split], img_size=32, root="unused")[split]


def test_shapes_is_deterministic_by_seed_and_split():
    a, b = shapes(train_size=200), shapes(train_size=200)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert torch.equal(a.labels, b.labels)
    assert not torch.equal(shapes(train_size=200, seed=1).images, a.images)
    assert not torch.equal(shapes("val", val_size=200).images, a.images)


def test_shapes_classes_are_balanced():
    data = shapes(train_size=1000)
    assert len(data.classes) == 10 and len(set(data.classes)) == 10
    assert torch.bincount(data.labels, minlength=10).tolist() == [100] * 10


def test_shapes_masks_cover_the_objects():
    data = shapes(train_size=500)
    x = to_float(data.images)  # [N, 3, H, W]
    m = data.masks.unsqueeze(1).float()  # [N, 1, H, W]
    area = m.sum((1, 2, 3))
    assert data.masks.dtype == torch.bool and area.min() >= 30
    inside = (x * m).sum((2, 3)) / area[:, None]
    outside = (x * (1 - m)).sum((2, 3)) / (m.shape[2] * m.shape[3] - area[:, None])
    # The object is one flat colour (pixel noise only), brighter than the background.
    spread = ((x - inside[:, :, None, None]) ** 2 * m).sum((2, 3)) / area[:, None]
    assert spread.sqrt().max() < 0.05
    assert (inside - outside).mean(1).min() > 0.1


def test_shapes_makes_the_size_asked_for():
    data = shapes(train_size=10000)
    assert len(data) == 10000 and len(data.labels) == 10000


def test_shapes_size_follows_img_size():
    data = build_datasets("shapes", ["val"], img_size=48, root="unused")["val"]
    assert data.images.shape[1:] == (3, 48, 48) and data.masks.shape[1:] == (48, 48)


def test_unknown_split_is_an_error():
    with pytest.raises(ZooError, match="unknown split 'dev'"):
        build_datasets("shapes", ["dev"], img_size=32, root="unused")


# ---------------------------------------------------------------------------------------
# Loaders


def toy(n: int = 103) -> TensorData:
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()
    return TensorData(images, torch.arange(n), [str(i) for i in range(n)], (0.5,) * 3, (0.25,) * 3)


class AsDataset(torch.utils.data.Dataset):
    """A TensorData seen as a map-style dataset, to compare the two loaders."""

    def __init__(self, data: TensorData):
        self.data, self.classes, self.mean, self.std = data, data.classes, data.mean, data.std

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.data.images[i], int(self.data.labels[i])


def labels_of(batches) -> list[list[int]]:
    return [y.tolist() for _, y in batches]


def test_epoch_order_is_a_pure_function_of_seed_and_epoch():
    kw = dict(shuffle=True, batch_size=8, drop_last=True)
    assert torch.equal(epoch_order(100, epoch=3, seed=7, **kw), epoch_order(100, epoch=3, seed=7, **kw))
    assert not torch.equal(epoch_order(100, epoch=3, seed=7, **kw), epoch_order(100, epoch=4, seed=7, **kw))
    assert not torch.equal(epoch_order(100, epoch=3, seed=7, **kw), epoch_order(100, epoch=3, seed=8, **kw))
    assert epoch_order(10, epoch=0, seed=0, shuffle=False).tolist() == list(range(10))


@pytest.mark.parametrize("device", DEVICES)
def test_device_loader_batches(device):
    data = toy()
    loader = make_loader(data, batch_size=10, device=device, train=True, seed=1)
    assert isinstance(loader, DeviceLoader) and len(loader) == 10
    batches = list(loader.epoch(0))
    assert len(batches) == 10
    x, y = batches[0]
    assert x.dtype == torch.uint8 and y.dtype == torch.int64 and x.device.type == device
    assert torch.equal(x[:, 0, 0, 0].long(), y)  # images travel with their labels
    seen = torch.cat([y for _, y in batches]).tolist()
    assert len(set(seen)) == 100  # drop_last: 3 left over
    assert labels_of(loader.epoch(0)) == labels_of(batches)
    assert labels_of(loader.epoch(1)) != labels_of(batches)


@pytest.mark.parametrize("device", DEVICES)
def test_start_step_resumes_the_epoch_exactly(device):
    loader = make_loader(toy(), batch_size=10, device=device, train=True, seed=5)
    full = labels_of(loader.epoch(2))
    assert labels_of(loader.epoch(2, start_step=4)) == full[4:]
    assert labels_of(loader.epoch(2, start_step=len(loader))) == []
    with pytest.raises(ValueError):
        loader.epoch(2, start_step=len(loader) + 1)


def test_ddp_shards_are_disjoint_and_cover_the_data():
    data = toy(103)
    train = [sum(labels_of(make_loader(data, batch_size=4, device="cpu", train=True, seed=3,
                                       rank=r, world_size=3).epoch(0)), []) for r in range(3)]
    assert len({len(s) for s in train}) == 1  # every rank takes the same number of steps
    assert sum(map(len, train)) == len(set().union(*map(set, train)))  # disjoint
    assert len(set().union(*map(set, train))) == 3 * (103 // 3 // 4 * 4)
    evals = [sum(labels_of(make_loader(data, batch_size=4, device="cpu", train=False,
                                       rank=r, world_size=3).epoch(0)), []) for r in range(3)]
    assert sorted(sum(evals, [])) == list(range(103))  # each sample once, none padded


def test_eval_loader_keeps_order_and_last_batch():
    loader = make_loader(toy(23), batch_size=10, device="cpu", train=False)
    assert [len(b) for b in labels_of(loader.epoch(0))] == [10, 10, 3]
    assert sum(labels_of(loader.epoch(5)), []) == list(range(23))


def test_map_loader_matches_device_loader():
    data = toy()
    kw = dict(batch_size=10, device="cpu", train=True, seed=9, rank=1, world_size=2)
    dev = make_loader(data, **kw)
    mapped = make_loader(AsDataset(data), num_workers=0, **kw)
    assert isinstance(mapped, MapLoader) and len(mapped) == len(dev)
    assert labels_of(mapped.epoch(3, start_step=2)) == labels_of(dev.epoch(3, start_step=2))
    x, _ = next(mapped.epoch(0))
    assert x.dtype == torch.uint8 and x.shape == (10, 3, 4, 4)


def test_on_device_false_keeps_images_on_the_host():
    loader = make_loader(toy(), batch_size=10, device="cpu", train=True, on_device=False)
    assert loader.images.device.type == "cpu" and len(list(loader.epoch(0))) == 10


@pytest.mark.parametrize("device", DEVICES)
def test_to_float_and_normalize(device):
    x = torch.tensor([0, 51, 255], dtype=torch.uint8, device=device).view(1, 3, 1, 1)
    f = to_float(x)
    assert f.dtype == torch.float32 and torch.allclose(f.flatten().cpu(), torch.tensor([0.0, 0.2, 1.0]))
    n = normalize(f, (0.0, 0.2, 0.5), (1.0, 0.5, 0.25))
    assert torch.allclose(n.flatten().cpu(), torch.tensor([0.0, 0.0, 2.0]), atol=1e-6)


@pytest.mark.cuda
def test_device_loop_has_no_host_syncs():
    data = shapes(train_size=256)
    loader = make_loader(data, batch_size=64, device="cuda", train=True)
    normalize(to_float(data.images[:1].cuda()), data.mean, data.std)  # caches the stats
    batches = loader.epoch(0)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for x, _ in batches:
            normalize(to_float(x), data.mean, data.std)
    finally:
        torch.cuda.set_sync_debug_mode("default")


# ---------------------------------------------------------------------------------------
# imagefolder


def write_folder(root: Path, per_class: int = 5) -> None:
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            h, w = 20 + i, 30 - i  # not square: resized and centre-cropped
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(root / "dog" / "gray.png")  # L mode
    (root / "dog" / "notes.txt").write_text("not an image, not listed")


def folder(root: Path, split: str, **params):
    return build_datasets({"imagefolder": params}, [split], img_size=16, root=str(root))[split]


def test_imagefolder_reads_class_subfolders(tmp_path):
    write_folder(tmp_path)
    train, val = folder(tmp_path, "train", val_fraction=0.25), folder(tmp_path, "val", val_fraction=0.25)
    assert isinstance(train, FolderData) and train.classes == ["cat", "dog"]
    assert (len(train), len(val)) == (8, 3)
    assert {p for p, _ in train.samples}.isdisjoint({p for p, _ in val.samples})
    x, label = train[0]
    assert x.dtype == torch.uint8 and x.shape == (3, 16, 16) and label in (0, 1)
    assert len(train.mean) == 3 and len(train.std) == 3
    loader = make_loader(train, batch_size=4, device="cpu", train=True, num_workers=0)
    x, y = next(loader.epoch(0))
    assert x.shape == (4, 3, 16, 16) and y.dtype == torch.int64


def test_imagefolder_split_folders(tmp_path):
    write_folder(tmp_path / "train")
    write_folder(tmp_path / "val", per_class=2)
    assert len(folder(tmp_path, "val")) == 5
    with pytest.raises(ZooError, match="no test/"):
        folder(tmp_path, "test")


def test_imagefolder_missing_or_empty(tmp_path):
    with pytest.raises(ZooError, match="is not a folder"):
        folder(tmp_path / "missing", "train")
    with pytest.raises(ZooError, match="no class subfolders"):
        folder(tmp_path, "train")
    (tmp_path / "cat").mkdir()
    with pytest.raises(ZooError, match="no images"):
        folder(tmp_path, "train")


def test_unreadable_image_names_the_file_in_one_line(tmp_path):
    write_folder(tmp_path)
    bad = tmp_path / "cat" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    data = folder(tmp_path, "train", val_fraction=0.0)
    i = [p for p, _ in data.samples].index(bad)
    with pytest.raises(ZooError, match="broken.png: cannot read image"):
        data[i]
    loader = MapLoader(data, 64, "cpu", shuffle=False, drop_last=False, num_workers=1)
    with pytest.raises(ZooError) as e:
        list(loader.epoch(0))
    assert "\n" not in str(e.value) and "broken.png: cannot read image" in str(e.value)


def test_repeated_augmentation_gives_every_image_its_repeats_in_one_epoch():
    """data.repeats: each image `repeats` times per epoch, copies side by side (one batch
    on one process), the order still a pure function of (seed, epoch), evaluation untouched."""
    data = toy(40)
    loader = make_loader(data, batch_size=10, device="cpu", train=True, seed=3, repeats=3)
    assert len(loader) == 12  # 3 x 40 samples
    seen = sum(labels_of(loader.epoch(0)), [])
    assert sorted(seen) == sorted(list(range(40)) * 3)
    assert all(seen[i] == seen[i + 1] == seen[i + 2] for i in range(0, 120, 3))
    assert labels_of(loader.epoch(0, start_step=5)) == labels_of(loader.epoch(0))[5:]
    assert labels_of(loader.epoch(1)) != labels_of(loader.epoch(0))
    val = make_loader(data, batch_size=10, device="cpu", train=False, repeats=3)
    assert sorted(sum(labels_of(val.epoch(0)), [])) == list(range(40))


def test_repeated_augmentation_keeps_ddp_ranks_disjoint():
    """Across 2 ranks, each of the repeated samples goes to exactly one rank: together they
    see every image 3 times, and every rank takes the same number of steps."""
    data = toy(40)
    shards = [sum(labels_of(make_loader(data, batch_size=5, device="cpu", train=True, seed=3,
                                        rank=r, world_size=2, repeats=3).epoch(2)), [])
              for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 60
    assert sorted(shards[0] + shards[1]) == sorted(list(range(40)) * 3)
