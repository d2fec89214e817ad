"""timm's augmentation conventions: the mixup/CutMix switch and RandAugment's magnitude scale.

mixup_cutmix: per batch exactly one of mixup and CutMix, as timm's Mixup switches them. Each
output batch is read back from its pixels: mixup is one convex blend of x and x.flip(0)
everywhere, CutMix is x with one box pasted from x.flip(0); anything else (both at once) is
neither. The targets must carry the weight the pixels show.

randaugment: `scale: 10` reads a magnitude as timm's `rand-m` does (timm as the oracle).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from timm.data import auto_augment

from zoo.errors import ZooError
from zoo.registry import build, builtin_dir, load_file

B, H, W = 8, 16, 16


@pytest.fixture(scope="module", autouse=True)
def plugins() -> None:
    for f in sorted((builtin_dir() / "augment").glob("*.py")):
        load_file(f)


def op(**params: float) -> Callable:
    return augment({"mixup_cutmix": params})


def augment(spec: str | dict) -> Callable:
    return build("augment", spec, path="data.augment[0]", num_classes=B, img_size=H)


def images(device: str = "cpu") -> torch.Tensor:
    """Image i near level i / B: an image and its partner B-1-i differ by >= 0.5/B everywhere."""
    noise = torch.rand(B, 3, H, W, generator=torch.Generator().manual_seed(0)) * 0.5
    return ((torch.arange(B).view(B, 1, 1, 1) + noise) / B).to(device)


def read(x: torch.Tensor, out: torch.Tensor) -> tuple[str, float]:
    """('mixup' | 'cutmix' | 'none', share of its own image each output keeps) from pixels.

    mixup: out = lam x + (1 - lam) x.flip(0) at every pixel of every image, one lam.
    cutmix: every pixel is exactly x's or x.flip(0)'s, those of x.flip(0) one rectangle
    shared by the batch. Both ops on one batch fit neither.
    """
    other = x.flip(0)
    if torch.equal(out, x):
        return "none", 1.0
    pasted = (out == other) & (out != x)  # [B, C, H, W]
    if ((out == x) | pasted).all():
        mask = pasted[0, 0]
        rows, cols = mask.any(1), mask.any(0)
        spans = [int(v.nonzero().max() - v.nonzero().min() + 1) for v in (rows, cols)]
        is_box = torch.equal(mask, rows[:, None] & cols[None]) and spans == [int(rows.sum()),
                                                                             int(cols.sum())]
        if is_box and (pasted == mask).all():
            return "cutmix", 1 - float(mask.float().mean())
    w = (out - other) / (x - other)  # each pixel's share of its own image
    if float(w.max() - w.min()) < 1e-4 and 0 < float(w.mean()) < 1:
        return "mixup", float(w.mean())
    return "both or other", math.nan


def test_each_batch_is_one_op_and_targets_carry_the_pixels_share():
    x, y = images(), torch.eye(B)
    f = op()
    seen = set()
    torch.manual_seed(0)
    for _ in range(60):
        out, t = f(x, y)
        kind, own = read(x, out)
        assert kind in ("mixup", "cutmix", "none"), kind
        seen.add(kind)
        torch.testing.assert_close(t.diagonal(), torch.full((B,), own), rtol=0, atol=1e-5)
        torch.testing.assert_close(t.flip(0).diagonal(), torch.full((B,), 1 - own), rtol=0,
                                   atol=1e-5)  # the rest goes to the partner, B-1-i
    assert {"mixup", "cutmix"} <= seen


@pytest.mark.parametrize("switch_prob, only", [(0.0, "mixup"), (1.0, "cutmix")])
def test_switch_prob_0_and_1_give_one_kind(switch_prob, only):
    x, y = images(), torch.eye(B)
    f = op(switch_prob=switch_prob)
    torch.manual_seed(0)
    kinds = {read(x, f(x, y)[0])[0] for _ in range(40)}
    assert kinds <= {only, "none"} and only in kinds


def test_frequencies_follow_switch_prob_and_p():
    """Over 400 batches: CutMix on switch_prob * p of them, nothing on 1 - p (5 sigma)."""
    n, switch_prob, p = 400, 0.3, 0.6
    x, y = images(), torch.eye(B)
    f = op(switch_prob=switch_prob, p=p)
    torch.manual_seed(0)
    kinds = [read(x, f(x, y)[0])[0] for _ in range(n)]
    for kind, prob in (("cutmix", switch_prob * p), ("none", 1 - p)):
        sigma = math.sqrt(n * prob * (1 - prob))
        assert abs(kinds.count(kind) - n * prob) < 5 * sigma, (kind, kinds.count(kind))
    assert "both or other" not in kinds


def test_reproducible_under_manual_seed():
    x, y = images(), torch.eye(B)
    f = op()
    torch.manual_seed(0)
    a = [f(x, y) for _ in range(5)]
    torch.manual_seed(0)
    b = [f(x, y) for _ in range(5)]
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize("params, message", [
    ({"mixup_alpha": 0.0}, "alphas > 0"),
    ({"switch_prob": 1.5}, r"switch_prob, p in \[0, 1\]"),
    ({"p": -0.1}, r"switch_prob, p in \[0, 1\]"),
])
def test_bad_parameters_are_one_line_errors(params, message):
    with pytest.raises(ZooError, match=message) as e:
        op(**params)
    assert "\n" not in str(e.value)


@pytest.mark.cuda
def test_draws_on_the_device_without_host_sync():
    x, y = images("cuda"), torch.eye(B, device="cuda")
    f = op()
    f(x, y)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(4):
            f(x, y)
    finally:
        torch.cuda.set_sync_debug_mode("default")


# --------------------------------------------------------------------------- RandAugment scale


def test_randaugment_magnitude_9_of_10_is_27_of_30():
    """timm's rand-m9 (scale 10) is torchvision's magnitude 27 (scale 30): same ops, same draws."""
    timm_m9, tv_m27 = (augment({"randaugment": {"magnitude": m, "scale": s}})
                       for m, s in ((9, 10), (27, 30)))
    for (op_a, m_a), (op_b, m_b) in zip(timm_m9.step.entries(H, W), tv_m27.step.entries(H, W),
                                        strict=True):
        assert op_a == op_b and m_a == pytest.approx(m_b, rel=1e-6, abs=1e-7), (op_a, m_a, m_b)
    x = images()
    outs = []
    for f in (timm_m9, tv_m27, augment("randaugment")):  # the last: torchvision's m9, 30%
        torch.manual_seed(0)
        outs.append(f(x, torch.eye(B))[0])
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])


def test_randaugment_scale_10_gives_timms_strengths():
    """For the ops whose full strength timm and torchvision share (rotate 30 degrees, shear 0.3,
    the enhance ops 1 +- 0.9 in timm's `inc1` set), every magnitude 0..10 on scale 10 is
    timm's level (timm.data.auto_augment.LEVEL_TO_ARG, _LEVEL_DENOM 10)."""
    blends = ("Brightness", "Color", "Contrast", "Sharpness")
    timm_ops = {"Rotate": "Rotate", "ShearX": "ShearX", "ShearY": "ShearY",
                **{op: op + "Increasing" for op in blends}}
    for level in range(11):
        entries = dict(augment({"randaugment": {"magnitude": level, "scale": 10}})
                       .step.entries(H, W))
        for ours, theirs in timm_ops.items():
            (arg,) = auto_augment.LEVEL_TO_ARG[theirs](level, {})
            strength = abs(arg - 1) if theirs.endswith("Increasing") else abs(arg)
            assert abs(entries[ours]) == pytest.approx(strength, rel=1e-6, abs=1e-6), (ours, level)


@pytest.mark.parametrize("params, message", [
    ({"magnitude": 27, "scale": 10}, r"magnitude in \[0, 10\]"),
    ({"magnitude": 0, "scale": 0}, "scale >= 1"),
])
def test_randaugment_bad_scale_is_a_one_line_error(params, message):
    with pytest.raises(ZooError, match=message) as e:
        augment({"randaugment": params})
    assert "\n" not in str(e.value) and "timm's scale is 10" in str(e.value)
