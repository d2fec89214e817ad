"""AutoAugment and RandAugment as batched per-image ops (zoo.image_ops), with torchvision as
the oracle: its policy tables, magnitude bins and draws (v2.AutoAugment, v2.RandAugment) and
its ops (v2.functional), image by image. On CUDA: no host sync, capturable in a CUDA graph."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from zoo.errors import ZooError
from zoo.image_ops import OPS, SIGNED, OpSlot, magnitudes
from zoo.registry import build, builtin_dir, load_file

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
POLICIES = ["cifar10", "imagenet", "svhn"]
NEAREST = v2.InterpolationMode.NEAREST
# Blends may round differently from torchvision by an ulp or two (same formula, other float
# steps): it smooths with a conv, we with box sums (Sharpness); it takes one image's mean,
# we a batched mean that may sum in another order (Contrast); it blends with a Python float
# via add_(alpha=...), we with a per-image tensor via addcmul_, each fused or not by the
# kernel at hand (Color, exact on this CPU). Every other op is bit-equal.
BLEND_ATOL = {"Color": 1e-6, "Contrast": 1e-6, "Sharpness": 1e-6}


@pytest.fixture(scope="module", autouse=True)
def plugins():
    for f in sorted((builtin_dir() / "augment").glob("*.py")):
        load_file(f)


def op(spec, img_size: int = 32):
    return build("augment", spec, path="data.augment[0]", num_classes=10, img_size=img_size)


def tv_op(img: torch.Tensor, name: str, m: float) -> torch.Tensor:
    """torchvision's op `name` at signed magnitude m on one image, through v2.functional with
    the arguments v2.AutoAugment/RandAugment pass (transforms/v2/_auto_augment.py)."""
    affine = dict(scale=1.0, interpolation=NEAREST, fill=None)
    shear = math.degrees(math.atan(m))
    return {
        "Identity": lambda: img,
        "ShearX": lambda: TF.affine(img, angle=0.0, translate=[0, 0], shear=[shear, 0.0],
                                    center=[0, 0], **affine),
        "ShearY": lambda: TF.affine(img, angle=0.0, translate=[0, 0], shear=[0.0, shear],
                                    center=[0, 0], **affine),
        "TranslateX": lambda: TF.affine(img, angle=0.0, translate=[int(m), 0], shear=[0.0, 0.0],
                                        **affine),
        "TranslateY": lambda: TF.affine(img, angle=0.0, translate=[0, int(m)], shear=[0.0, 0.0],
                                        **affine),
        "Rotate": lambda: TF.rotate(img, angle=m, interpolation=NEAREST, fill=None),
        "Brightness": lambda: TF.adjust_brightness(img, 1.0 + m),
        "Color": lambda: TF.adjust_saturation(img, 1.0 + m),
        "Contrast": lambda: TF.adjust_contrast(img, 1.0 + m),
        "Sharpness": lambda: TF.adjust_sharpness(img, 1.0 + m),
        "Posterize": lambda: TF.posterize(img, int(m)),
        "Solarize": lambda: TF.solarize(img, 1.0 * m),
        "AutoContrast": lambda: TF.autocontrast(img),
        "Equalize": lambda: TF.equalize(img),
        "Invert": lambda: TF.invert(img),
    }[name]()


def images(n: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """n float images as a batch reaches the ops: on 8-bit levels (as loaded) or between them
    (after an earlier op), some of low contrast (AutoContrast and Equalize have work), some
    flat (their edge cases)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, c, h, w), generator=g).float().div_(255)
    x[1::5] = (x[1::5] * 60 + 90).round_().div_(255)
    x[3::5] = torch.rand(x[3::5].shape, generator=g)
    x[2::9] = 0.4
    return x


def chi_square(observed: Counter, expected: dict) -> tuple[float, int]:
    """Pearson's statistic over the expected outcomes, and their degrees of freedom; an
    outcome the oracle gives probability 0 must not occur at all."""
    n = sum(observed.values())
    assert set(observed) <= set(expected), set(observed) - set(expected)
    stat = sum((observed[k] - n * p) ** 2 / (n * p) for k, p in expected.items())
    return stat, len(expected) - 1


def bound(df: int) -> float:
    """About 6 standard deviations above the chi-square mean: a correct sampler under the
    fixed seed passes, a wrong probability, sign or pairing overshoots it by far."""
    return df + 6 * math.sqrt(2 * df)


def step_outcomes(name: str, p: float, level: int | None, num_bins: int, h: int, w: int,
                  space: dict) -> dict:
    """torchvision's outcomes of one policy step: (op, signed magnitude) -> probability; not
    applied is ('Identity', 0.0)."""
    fn, signed = space[name]
    bins = fn(num_bins, h, w)
    m = 0.0 if bins is None else float(bins[level])
    out = Counter({("Identity", 0.0): 1 - p})
    for sign in ((1, -1) if signed else (1,)):
        out[name, sign * m] += p / (2 if signed else 1)
    return out


def test_policies_and_bins_are_torchvisions():
    for policy in POLICIES:
        assert op({"autoaugment": {"policy": policy}}).policy == \
            v2.AutoAugment(v2.AutoAugmentPolicy(policy))._policies
    assert [c[0] for c in op("randaugment").step.candidates] == \
        list(v2.RandAugment._AUGMENTATION_SPACE)
    for space, num_bins in ((v2.AutoAugment._AUGMENTATION_SPACE, 10),
                            (v2.RandAugment._AUGMENTATION_SPACE, 31)):
        for name, (fn, signed) in space.items():
            assert name in OPS and (name in SIGNED) == signed
            for h, w in ((32, 32), (20, 28)):
                bins = fn(num_bins, h, w)
                assert magnitudes(name, num_bins, h, w) == (None if bins is None else
                                                            bins.float().tolist()), name


@pytest.mark.parametrize("policy", POLICIES)
def test_autoaugment_draws_each_image_from_the_policy(policy):
    """Per image: one of the 25 sub-policies, each step applied with its probability, signed
    magnitudes negated half the time; the joint outcome of both steps, over 100k images,
    against the distribution torchvision's tables and bins define."""
    f, space = op({"autoaugment": {"policy": policy}}), v2.AutoAugment._AUGMENTATION_SPACE
    tv = v2.AutoAugment(v2.AutoAugmentPolicy(policy))._policies
    expected = Counter()
    for sub in tv:
        first, second = (step_outcomes(*s, 10, 32, 32, space) for s in sub)
        for a, pa in first.items():
            for b, pb in second.items():
                expected[a, b] += pa * pb / len(tv)
    torch.manual_seed(0)
    draws = f.draw(100_000, torch.device("cpu"))
    names = [step.entries(32, 32) for step in f.steps]
    observed = Counter(zip(*([names[i][e] for e in d.tolist()] for i, d in enumerate(draws)),
                           strict=True))
    stat, df = chi_square(observed, {k: p for k, p in expected.items() if p > 0})
    assert stat < bound(df), (stat, df)


@pytest.mark.parametrize("num_ops, magnitude", [(2, 9), (1, 30)])
def test_randaugment_draws_each_image_its_own_ops(num_ops, magnitude):
    """Per image and step: one of the 14 ops uniformly, signed ones negated half the time,
    steps independent; the joint outcome over 60k images against torchvision's space."""
    f, space = op({"randaugment": {"num_ops": num_ops, "magnitude": magnitude}}), \
        v2.RandAugment._AUGMENTATION_SPACE
    step = Counter()
    for name in space:
        for k, p in step_outcomes(name, 1.0, magnitude, 31, 32, 32, space).items():
            step[k] += p / len(space)
    expected = {(): 1.0}
    for _ in range(num_ops):
        expected = {a + (b,): pa * pb for a, pa in expected.items() for b, pb in step.items()
                    if pb > 0}
    torch.manual_seed(0)
    names = f.step.entries(32, 32)
    draws = f.draw(60_000, torch.device("cpu"))
    observed = Counter(zip(*([names[e] for e in d.tolist()] for d in draws), strict=True))
    stat, df = chi_square(observed, expected)
    assert stat < bound(df), (stat, df)


@pytest.mark.parametrize("name", ["autoaugment", "randaugment"])
def test_plugins_apply_their_draws_in_order(name):
    """A call is draw() then each step's apply(), so the draws tested above are the ones used."""
    f, x = op(name), images(16, 3, 32, 32)
    torch.manual_seed(3)
    out, _ = f(x, torch.ones(16, 1))
    torch.manual_seed(3)
    steps = f.steps if name == "autoaugment" else [f.step] * f.num_ops
    expected = x
    for step, entry in zip(steps, f.draw(16, x.device), strict=True):
        expected = step.apply(expected, entry)
    assert torch.equal(out, expected) and not torch.equal(out, x)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 20, 28), (3, 17, 23)])
def test_each_image_gets_torchvisions_op(shape, device):
    """Every op at every AutoAugment bin (10) and at RandAugment magnitudes 9 and 30 (31 bins),
    both signs, each image of one batch a different one: equal to v2.functional on that image
    alone (exactly, but for blends: BLEND_ATOL)."""
    h, w = shape[1:]
    candidates = []
    for name in OPS:
        if magnitudes(name, 10, h, w) is None:
            candidates.append((name, None, 10, 1.0))
        else:
            candidates += [(name, level, 10, 1.0) for level in range(10)]
            candidates += [(name, level, 31, 1.0) for level in (9, 30)]
    slot = OpSlot(candidates)
    entries = slot.entries(h, w)
    x = images(len(entries), *shape).to(device)
    out = slot.apply(x, torch.arange(len(entries), device=device))
    policy_op, checked = v2.AutoAugment()._apply_image_or_video_transform, {"Identity"}
    for i, (name, m) in enumerate(entries):
        expected = tv_op(x[i], name, m)
        if name not in checked:  # the oracle is the op torchvision's policies apply
            assert torch.equal(expected, policy_op(x[i], name, m, NEAREST, {"others": None}))
            checked.add(name)
        atol = BLEND_ATOL.get(name, 0.0)
        assert torch.allclose(out[i], expected, rtol=0, atol=atol), (name, m)
        assert atol or torch.equal(out[i], expected), (name, m)


@pytest.mark.parametrize("name", ["autoaugment", "randaugment"])
def test_plugins_take_grayscale_images(name):
    x = images(32, 1, 32, 32)
    torch.manual_seed(0)
    out, _ = op(name)(x, torch.ones(32, 1))
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1 and not torch.equal(out, x)


@pytest.mark.parametrize("spec, message", [
    ({"randaugment": {"num_ops": -1}}, "need num_ops >= 0"),
    ({"randaugment": {"magnitude": 31}}, r"magnitude in \[0, 30\]"),
    ({"autoaugment": {"chunk": 16}}, "unknown parameter"),
])
def test_bad_parameters_are_one_line_errors(spec, message):
    with pytest.raises(ZooError, match=message) as e:
        op(spec)
    assert "\n" not in str(e.value)


@pytest.mark.cuda
@pytest.mark.parametrize("spec", ["autoaugment", {"autoaugment": {"policy": "svhn"}},
                                  "randaugment"])
def test_policies_do_not_sync_the_host(spec):
    f, x = op(spec), images(64, 3, 32, 32).cuda()
    y = torch.ones(64, 1, device="cuda")
    f(x, y)  # the first call builds the tables on the device
    torch.cuda.set_sync_debug_mode("error")
    try:
        f(x, y)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["autoaugment", "randaugment"])
def test_policies_run_inside_a_cuda_graph(name):
    """Captured once, every replay draws anew: two replays differ, and within one replay the
    same image comes out in many ways (per-image draws)."""
    f = op(name)
    x = images(1, 3, 32, 32).expand(64, -1, -1, -1).contiguous().cuda()
    y = torch.ones(64, 1, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capture: tables built, kernels chosen
        for _ in range(2):
            f(x, y)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out, _ = f(x, y)
    graph.replay()
    first = out.clone()
    graph.replay()
    assert not torch.equal(first, out)
    assert len({bytes(o.cpu().numpy().tobytes()) for o in first}) >= 8
    assert 0 <= first.min() and first.max() <= 1
