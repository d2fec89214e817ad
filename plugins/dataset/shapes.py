"""shapes: ten kinds of coloured shape on cluttered backgrounds, drawn procedurally.

No download, deterministic by seed, and a few thousand images per second is cheap: the
quickstart and most tests train on it. Each image has one object, whose mask comes back
too, so attention maps can be checked against where the object really is.
"""

from __future__ import annotations

import torch
from torch import Tensor

from zoo.data import SPLITS, TensorData, check_split
from zoo.registry import register

CLASSES = ["circle", "square", "triangle", "plus", "ring", "diamond", "frame", "hbar",
           "vbar", "x"]
# Measured on the default training split (seed 0, 10,000 images at 32x32).
MEAN = (0.3174, 0.3152, 0.3155)
STD = (0.2395, 0.2422, 0.2401)


def shape_mask(label: int, dx: Tensor, dy: Tensor, s: Tensor) -> Tensor:
    """Where shape `label` of half-size s covers offsets (dx, dy) from its centre."""
    ax, ay = dx.abs(), dy.abs()
    t = 0.3 * s  # stroke half-width of plus, ring, frame, bars and x
    box = torch.maximum(ax, ay)
    if label == 0:  # circle
        return dx**2 + dy**2 <= s**2
    if label == 1:  # square
        return box <= 0.8 * s
    if label == 2:  # triangle, apex up
        return (dy <= 0.75 * s) & (1.75 * ax <= dy + s)
    if label == 3:  # plus
        return ((ax <= t) & (ay <= s)) | ((ay <= t) & (ax <= s))
    if label == 4:  # ring
        r2 = dx**2 + dy**2
        return (r2 <= s**2) & (r2 >= (0.5 * s) ** 2)
    if label == 5:  # diamond
        return ax + ay <= 1.1 * s
    if label == 6:  # frame: a hollow square
        return (box <= 0.85 * s) & (box >= 0.45 * s)
    if label == 7:  # horizontal bar
        return (ax <= s) & (ay <= t)
    if label == 8:  # vertical bar
        return (ay <= s) & (ax <= t)
    # x: the plus turned by 45 degrees
    return (((dx - dy).abs() <= 1.4 * t) | ((dx + dy).abs() <= 1.4 * t)) & (box <= 0.75 * s)


def generate(n: int, img_size: int = 32, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """n images (uint8 [n, 3, S, S]), balanced labels [n] and object masks [n, S, S]."""
    g = torch.Generator().manual_seed(seed)
    S = img_size

    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=g)

    labels = (torch.arange(n) % len(CLASSES))[torch.randperm(n, generator=g)]
    u = S / 32  # sizes below are in pixels of a 32x32 image
    half = u * (6.5 + 4.5 * rand(n))  # object half-size: 6.5 to 11 px
    cx = half + 1 + (S - 2 * half - 2) * rand(n)
    cy = half + 1 + (S - 2 * half - 2) * rand(n)
    px = torch.arange(S, dtype=torch.float32) + 0.5
    X, Y = px.view(1, 1, S), px.view(1, S, 1)

    # Background: a random dark colour under a gentle linear light gradient.
    bg = 0.45 * rand(n, 3)
    angle = 2 * torch.pi * rand(n, 1, 1)
    ramp = ((X - S / 2) * angle.cos() + (Y - S / 2) * angle.sin()) / S  # [n, S, S] in +-0.7
    img = (0.15 * ramp).unsqueeze(1) + bg.view(n, 3, 1, 1)

    # Clutter: three faint one-pixel lines, far thinner and fainter than any object.
    for _ in range(3):
        lx, ly, la = S * rand(n, 1, 1), S * rand(n, 1, 1), torch.pi * rand(n, 1, 1)
        on = ((X - lx) * la.sin() - (Y - ly) * la.cos()).abs() < 0.5
        img.lerp_(rand(n, 3, 1, 1), 0.2 * on.unsqueeze(1))

    # The object: a random bright colour. One polarity (bright on dark) is what lets a small
    # ViT learn the set in a minute; with both, its linear patch embedding learns far slower.
    fg = 0.55 + 0.45 * rand(n, 3)
    masks = torch.zeros(n, S, S, dtype=torch.bool)
    dx, dy = X - cx.view(n, 1, 1), Y - cy.view(n, 1, 1)
    for c in range(len(CLASSES)):
        i = (labels == c).nonzero().squeeze(1)
        masks[i] = shape_mask(c, dx[i], dy[i], half[i].view(-1, 1, 1))
    img = torch.where(masks.unsqueeze(1), fg.view(n, 3, 1, 1), img)

    img += 0.1 * (rand(*img.shape) - 0.5)  # pixel noise, std 0.03
    images = img.clamp_(0, 1).mul_(255).round_().to(torch.uint8)
    return images, labels, masks


@register("dataset", "shapes")
def shapes(split: str, img_size: int, train_size: int = 10000, val_size: int = 2000,
           test_size: int = 2000, seed: int = 0) -> TensorData:
    """Ten procedural shape classes with object masks; no download, deterministic by seed.

    Classes: circle, square, triangle, plus, ring, diamond, frame (hollow square),
    horizontal bar, vertical bar, x: one bright object on a darker background. Colours,
    size (13 to 22 px across at 32x32), position, the background's light gradient, faint
    lines and pixel noise are random. Each split has its own seed, derived from (seed,
    split), so the splits are independent draws.
    """
    check_split(split, "shapes")
    n = {"train": train_size, "val": val_size, "test": test_size}[split]
    images, labels, masks = generate(n, img_size, seed * len(SPLITS) + SPLITS.index(split))
    return TensorData(images, labels, list(CLASSES), MEAN, STD, masks)
