"""Augmentation plugins: batched, per-image random, reproducible, on every device we have."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zoo.data import build_augment, build_datasets, to_float
from zoo.errors import ZooError
from zoo.registry import build, builtin_dir, load_file

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
OPS = ["random_crop", "hflip", "autoaugment", "randaugment", "color_jitter", "random_erasing",
       "mixup", "cutmix", "mixup_cutmix"]
MIXING = {"mixup", "cutmix", "mixup_cutmix"}


@pytest.fixture(scope="module", autouse=True)
def plugins():
    """The built-in dataset and augment plugins (not the other kinds: not needed here)."""
    for kind in ("dataset", "augment"):
        for f in sorted((builtin_dir() / kind).glob("*.py")):
            load_file(f)


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """32 real-looking images (shapes) in [0, 1] and their one-hot targets."""
    data = build_datasets({"shapes": {"val_size": 32}}, ["val"], img_size=32, root="")["val"]
    return to_float(data.images), F.one_hot(data.labels, 10).float()


def op(spec, img_size: int = 32):
    return build("augment", spec, path="data.augment[0]", num_classes=10, img_size=img_size)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", OPS)
def test_op_keeps_shapes_ranges_and_targets(name, device, batch):
    x, y = (t.to(device) for t in batch)
    out, t = op(name)(x, y)
    assert out.shape == x.shape and out.dtype == torch.float32 and out.device == x.device
    assert out.min() >= 0 and out.max() <= 1
    assert t.shape == y.shape and torch.allclose(t.sum(1), torch.ones(len(t), device=device))
    if name not in MIXING:
        assert torch.equal(t, y)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", OPS)
def test_op_is_reproducible_under_manual_seed(name, device, batch):
    x, y = (t.to(device) for t in batch)
    f = op(name)
    torch.manual_seed(0)
    a = f(x, y)
    torch.manual_seed(0)
    b = f(x, y)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = f(x, y)
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(set(OPS) - MIXING))
def test_op_draws_per_image(name, device, batch):
    x = batch[0][:1].expand(64, -1, -1, -1).contiguous().to(device)  # one image, 64 times
    torch.manual_seed(0)
    out, _ = op(name)(x, torch.ones(64, 1, device=device))
    distinct = {bytes(o.cpu().numpy().tobytes()) for o in out}
    assert len(distinct) >= {"hflip": 2, "autoaugment": 4, "randaugment": 4}.get(name, 8)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(MIXING - {"mixup_cutmix"}))  # that one: per batch
def test_mixing_draws_per_image(name, device, batch):
    x, y = (t.to(device) for t in batch)
    torch.manual_seed(0)
    _, t = op(name)(x, y)
    own = (t * y).sum(1)  # weight each image keeps of its own label
    assert len(set(own.round(decimals=4).tolist())) > 8


@pytest.mark.parametrize("device", DEVICES)
def test_random_crop_is_a_window_of_the_padded_image(device, batch):
    x = batch[0][:8].to(device)
    torch.manual_seed(1)
    for mode, pad_mode in (("reflect", "reflect"), ("zero", "constant")):
        out, _ = op({"random_crop": {"padding": 3, "mode": mode}})(x, batch[1][:8])
        padded = F.pad(x, (3, 3, 3, 3), mode=pad_mode)
        for o, p in zip(out, padded, strict=True):
            windows = [(i, j) for i in range(7) for j in range(7)
                       if torch.equal(p[:, i:i + 32, j:j + 32], o)]
            assert windows


@pytest.mark.parametrize("device", DEVICES)
def test_hflip_flips_some_images_and_keeps_the_rest(device, batch):
    x = batch[0].to(device)
    torch.manual_seed(0)
    out, _ = op("hflip")(x, batch[1])
    flipped = [torch.equal(o, i.flip(2)) for o, i in zip(out, x, strict=True)]
    kept = [torch.equal(o, i) for o, i in zip(out, x, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and any(flipped) and any(kept)


@pytest.mark.parametrize("device", DEVICES)
def test_random_erasing_blanks_one_box_per_image(device, batch):
    x = batch[0].to(device) * 0.5 + 0.25  # no pixel is 0 before erasing
    f = op({"random_erasing": {"p": 1.0, "value": "zero", "min_area": 0.05, "max_area": 0.2}})
    out, _ = f(x, batch[1])
    erased = (out == 0).all(1)  # [B, H, W]
    for e in erased:
        r, c = e.any(1).nonzero().squeeze(1), e.any(0).nonzero().squeeze(1)
        box = e[r.min():r.max() + 1, c.min():c.max() + 1]
        assert box.all()  # a solid rectangle
        assert 0.02 <= e.float().mean() <= 0.25  # its area, give or take rounding and clipping


@pytest.mark.parametrize("device", DEVICES)
def test_mixup_mixes_images_and_targets_with_one_weight(device):
    B = 16
    x = torch.linspace(0, 1, B, device=device).view(B, 1, 1, 1).expand(B, 3, 4, 4)
    y = torch.eye(B, device=device)
    torch.manual_seed(0)
    out, t = op({"mixup": {"alpha": 1.0}})(x, y)
    for i in range(B):
        j = int(torch.where(torch.arange(B, device=device) == i, -1.0, t[i]).argmax())
        lam = float(t[i, i]) if t[i, j] > 0 else 1.0
        expected = lam * x[i] + (1 - lam) * x[j]
        assert torch.allclose(out[i], expected, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_cutmix_targets_match_the_pasted_area(device):
    B = 16
    x = torch.arange(B, device=device, dtype=torch.float32).div(B).view(B, 1, 1, 1).expand(B, 3, 8, 8)
    y = torch.eye(B, device=device)
    torch.manual_seed(0)
    out, t = op("cutmix", img_size=8)(x, y)
    own = (out[:, 0] == x[:, 0]).flatten(1).float().mean(1)
    assert torch.allclose(t.diagonal(), own) and (own < 1).any()


@pytest.mark.parametrize("device", DEVICES)
def test_color_jitter_hue_keeps_grays_and_turns_colours(device):
    f = op({"color_jitter": {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.5}})
    gray = torch.rand(8, 1, 8, 8, device=device).expand(8, 3, 8, 8)
    out, _ = f(gray, torch.ones(8, 1))
    assert torch.allclose(out, gray, atol=1e-5)
    colour = torch.tensor([0.8, 0.3, 0.2], device=device).view(1, 3, 1, 1).expand(8, 3, 8, 8)
    out, _ = f(colour, torch.ones(8, 1))
    assert (out - colour).abs().amax() > 0.05


def test_build_augment_keeps_recipe_order_and_names_the_entry():
    aug = build_augment(["hflip", {"random_crop": {"padding": 2}}, "mixup"], 10, 32)
    assert aug.names == ["hflip", "random_crop", "mixup"]
    with pytest.raises(ZooError, match=r"data\.augment\[1\]: unknown augment 'hflp'"):
        build_augment(["random_crop", "hflp"], 10, 32)
    with pytest.raises(ZooError, match=r"data\.augment\[0\]\.pading: unknown parameter"):
        build_augment([{"random_crop": {"pading": 2}}], 10, 32)


@pytest.mark.parametrize("spec, message", [
    ({"random_crop": {"mode": "wrap"}}, "mode must be reflect or zero"),
    ({"random_crop": {"padding": 40}}, "padding must be"),
    ({"hflip": {"p": 2.0}}, "p must be in"),
    ({"autoaugment": {"policy": "cifar"}}, "policy must be one of"),
    ({"mixup": {"alpha": 0.0}}, "alpha > 0"),
    ({"random_erasing": {"value": "mean"}}, "value must be random or zero"),
])
def test_bad_parameters_are_one_line_errors(spec, message):
    with pytest.raises(ZooError, match=message):
        op(spec)


@pytest.mark.cuda
@pytest.mark.parametrize("name", sorted(set(OPS) - {"autoaugment", "randaugment"}))
def test_own_ops_do_not_sync_the_host(name, batch):
    """The two policies have their own no-sync tests in test_augment_policies.py."""
    x, y = (t.cuda() for t in batch)
    f = op({name: {"hue": 0.1}} if name == "color_jitter" else name)
    f(x, y)  # first call may move constants to the device
    torch.cuda.set_sync_debug_mode("error")
    try:
        f(x, y)
    finally:
        torch.cuda.set_sync_debug_mode("default")
