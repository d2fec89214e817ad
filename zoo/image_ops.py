"""Batched image ops for AutoAugment and RandAugment: every image draws its own, on the device.

Images are float [B, C, H, W] in [0, 1] (C = 1 or 3). Each op type runs once on the whole
batch, with per-image parameters whose neutral values leave an image exactly as it is, so a
batch in which every image has its own op, sign and magnitude costs a fixed set of kernels:
no host sync, no data-dependent shapes, nothing copied from the host per call (tables are
built once per device). The whole thing can be captured in a CUDA graph.

The ops and their magnitude bins are those of Cubuk et al. 2019 (AutoAugment) and 2020
(RandAugment) as torchvision defines them for float tensors (transforms.v2.AutoAugment and
RandAugment's augmentation space; v2.functional's _color.py and _geometry.py, after PIL's
ImageOps and ImageEnhance): the same maths, reimplemented batched, and tested against
torchvision image by image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
BLENDS = ("Brightness", "Color", "Contrast", "Sharpness")  # PIL ImageEnhance
OPS = ("Identity", *GEOMETRIC, *BLENDS, "Posterize", "Solarize", "AutoContrast", "Equalize",
       "Invert")
SIGNED = frozenset(GEOMETRIC + BLENDS)  # their magnitude is negated with probability 1/2

# Where a linear magnitude range ends (it starts at 0); translations scale with the image.
_SPAN = {"ShearX": 0.3, "ShearY": 0.3, "Rotate": 30.0, **dict.fromkeys(BLENDS, 0.9)}

# Per-image parameters of the colour ops and their neutral values (the image is unchanged).
NEUTRAL = {
    "factor": 1.0,  # Brightness, Color, Contrast: x * factor + ...
    "gray": 0.0,  # Color: ... + gray image * (1 - factor)
    "mean": 0.0,  # Contrast: ... + mean gray level * (1 - factor)
    "sharp": 0.0,  # Sharpness: ... + (1 - factor) * (smooth - x) inside the border
    "levels": 1.0, "posterize": 0.0,  # Posterize: 2^bits levels, on
    "threshold": 2.0,  # Solarize (Invert is Solarize at 0); 2 is above every pixel
    "autocontrast": 0.0, "equalize": 0.0,  # on
}
IDENTITY = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def magnitudes(op: str, num_bins: int, height: int, width: int) -> list[float] | None:
    """The op's magnitude bins (None: it has no magnitude), as torchvision's policies bin them.

    float32 linspace, like torchvision, so the values are bit-equal to the ones it uses.
    """
    span = {"TranslateX": 150 / 331 * width, "TranslateY": 150 / 331 * height}.get(op, _SPAN.get(op))
    if span is not None:
        return torch.linspace(0.0, span, num_bins).tolist()
    if op == "Posterize":  # bits kept: 8 down to 4
        return (8 - torch.arange(num_bins) / ((num_bins - 1) / 4)).round().tolist()
    if op == "Solarize":  # threshold: 1 down to 0
        return torch.linspace(1.0, 0.0, num_bins).tolist()
    return None


def _inverse_affine(angle: float = 0.0, tx: float = 0.0, ty: float = 0.0, shear_x: float = 0.0,
                    shear_y: float = 0.0, cx: float = 0.0, cy: float = 0.0) -> list[float]:
    """Output -> input map [a, b, c, d, e, f] of torchvision's affine, in centred pixels.

    The forward map is T(t) C R(angle) ShearY ShearX C^-1 (angles in degrees, centre c relative
    to the image centre); this is its inverse, in torchvision's order of double arithmetic,
    so the float32 matrices come out bit-equal.
    """
    rot, sx, sy = math.radians(angle), math.radians(shear_x), math.radians(shear_y)
    a = math.cos(rot - sy) / math.cos(sy)  # forward [[a, b], [c, d]], determinant 1
    b = -(a * math.tan(sx) + math.sin(rot))
    c = math.sin(rot - sy) / math.cos(sy)
    d = math.cos(rot) - c * math.tan(sx)
    m = [d, -b, 0.0, -c, a, 0.0]  # its inverse
    m[2] = cx - m[0] * (cx + tx) - m[1] * (cy + ty)
    m[5] = cy - m[3] * (cx + tx) - m[4] * (cy + ty)
    return m


def op_params(op: str, m: float, channels: int, height: int,
              width: int) -> tuple[dict[str, float], list[float]]:
    """The colour parameters (those not NEUTRAL) and the output -> input matrix with which `op`
    applies the signed magnitude m, as torchvision's AutoAugment calls its ops.

    Blends take the factor 1 + m; shears are by the angle atan(m) about the top-left corner,
    translations by int(m) pixels, rotations by m degrees counter-clockwise about the centre.
    """
    shear = math.degrees(math.atan(m))  # torchvision's shear argument is an angle
    corner = {"cx": -width * 0.5, "cy": -height * 0.5}
    geometric = {
        "ShearX": lambda: _inverse_affine(shear_x=shear, **corner),
        "ShearY": lambda: _inverse_affine(shear_y=shear, **corner),
        "TranslateX": lambda: _inverse_affine(tx=float(int(m))),
        "TranslateY": lambda: _inverse_affine(ty=float(int(m))),
        "Rotate": lambda: _inverse_affine(angle=-(m % 360)),
    }
    if op in geometric:
        return {}, geometric[op]()
    factor = 1.0 + m
    colour = {
        "Brightness": {"factor": factor},
        "Color": {"factor": factor, "gray": 1.0 - factor} if channels == 3 else {},  # as PIL
        "Contrast": {"factor": factor, "mean": 1.0 - factor},
        "Sharpness": {"sharp": 1.0 - factor},
        "Posterize": {"levels": float(1 << int(m)), "posterize": 1.0},
        "Solarize": {"threshold": m},
        "AutoContrast": {"autocontrast": 1.0},
        "Equalize": {"equalize": 1.0},
        "Invert": {"threshold": 0.0},  # 1 - x for every pixel
    }
    return colour.get(op, {}), IDENTITY


class OpSlot:
    """One step of a chain of ops, each image its own draw (Cubuk et al. 2019, 2020).

    `candidates` are (op, magnitude bin or None, number of bins, probability). Per image, the
    caller picks a candidate; it is applied with its probability (torch.rand <= p) and a
    signed op's magnitude is negated with probability 1/2, as torchvision's policies draw
    for one image. A draw is an entry index: 2c (+m) or 2c + 1 (-m) for candidate c, or
    2 * len(candidates) (not applied: Identity).
    """

    def __init__(self, candidates: Sequence[tuple[str, int | None, int, float]],
                 fill: float = 0.0):
        self.candidates = list(candidates)
        self.fill = fill  # what geometric ops show where they move the image away
        self.ops = frozenset(op for op, *_ in self.candidates)
        self._probs: dict[torch.device, Tensor] = {}
        self._tables: dict[tuple, tuple[Tensor, Tensor | None]] = {}

    def entries(self, height: int, width: int) -> list[tuple[str, float]]:
        """(op, signed magnitude) of each entry index; 0.0 for ops without a magnitude."""
        out = []
        for op, level, num_bins, _ in self.candidates:
            bins = magnitudes(op, num_bins, height, width)
            m = 0.0 if bins is None else bins[level]
            out += [(op, m), (op, -m if op in SIGNED else m)]
        return out + [("Identity", 0.0)]

    def draw(self, choice: Tensor) -> Tensor:
        """Entry index [B] for each image's chosen candidate `choice` [B] (long, on the device)."""
        dev = choice.device
        if dev not in self._probs:  # copied to the device once
            self._probs[dev] = torch.tensor([p for *_, p in self.candidates], device=dev)
        u = torch.rand(2, *choice.shape, device=dev)
        signed = 2 * choice + (u[1] <= 0.5)
        return torch.where(u[0] <= self._probs[dev][choice], signed, 2 * len(self.candidates))

    def apply(self, x: Tensor, entry: Tensor) -> Tensor:
        """x [B, C, H, W] with each image's drawn entry [B] applied."""
        params, grids = self.tables(*x.shape[1:], x.device, x.dtype)
        if grids is not None:
            x = warp(x, grids.index_select(0, entry), self.fill)
        p = params.index_select(0, entry).T.reshape(len(NEUTRAL), -1, 1, 1, 1)
        return colour_ops(x, dict(zip(NEUTRAL, p, strict=True)), self.ops)

    def tables(self, channels: int, height: int, width: int, device: torch.device,
               dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
        """Per entry: its colour parameters [E, len(NEUTRAL)] and sampling grid [E, H, W, 2]
        (None without geometric candidates); neutral and the identity's, but for its own op.

        Built once per image shape, device and dtype; a call only indexes them."""
        key = (channels, height, width, device, dtype)
        if key not in self._tables:
            params, grids = [], {}
            entries = self.entries(height, width)
            with torch.autocast(device.type, enabled=False):  # the grids' bmm in full precision
                for op, m in entries:
                    colour, matrix = op_params(op, m, channels, height, width)
                    params.append([colour.get(k, v) for k, v in NEUTRAL.items()])
                    grids[op, m] = sample_grid(matrix, height, width, device, dtype)
            self._tables[key] = (
                torch.tensor(params, dtype=dtype, device=device),
                torch.stack([grids[e] for e in entries]) if self.ops & set(GEOMETRIC) else None,
            )
        return self._tables[key]


def colour_ops(x: Tensor, p: dict[str, Tensor], ops: frozenset[str]) -> Tensor:
    """Each image's colour op from its parameters p (NEUTRAL's keys, each [B, 1, 1, 1]).

    Every op type in `ops` runs once on the whole batch, in turn; an op leaves the images
    with neutral parameters exactly as they are, so each image ends with its own op alone.
    """
    if ops & set(BLENDS):
        def weight(key: str, op: str) -> Tensor | None:
            return p[key] if op in ops else None

        x = enhance(x, p["factor"], gray=weight("gray", "Color"), mean=weight("mean", "Contrast"),
                    sharp=weight("sharp", "Sharpness"))
    if "Posterize" in ops:
        x = posterize(x, p["levels"], p["posterize"])
    if ops & {"Solarize", "Invert"}:
        x = solarize(x, p["threshold"])
    if "AutoContrast" in ops:
        x = autocontrast(x, p["autocontrast"])
    if "Equalize" in ops:
        x = equalize(x, p["equalize"])
    return x


# ---------------------------------------------------------------------------------------
# The ops, batched: x [B, C, H, W] in [0, 1], per-image parameters [B, 1, 1, 1].


def sample_grid(matrix: list[float], height: int, width: int, device: torch.device,
                dtype: torch.dtype) -> Tensor:
    """grid_sample's grid [H, W, 2] (corners excluded) for an output -> input map in centred
    pixels, computed as torchvision computes it for one image (centred pixel rows (x, y, 1)
    times the matrix scaled by 2 / size, one bmm), so that nearest sampling picks the same
    pixels even at half-pixel ties. The identity matrix samples every pixel from itself."""
    grid = torch.ones(height, width, 3, device=device, dtype=dtype)
    grid[..., 0] = torch.linspace((1 - width) * 0.5, (width - 1) * 0.5, width, device=device)
    grid[..., 1] = torch.linspace((1 - height) * 0.5, (height - 1) * 0.5, height,
                                  device=device)[:, None]
    theta = torch.tensor(matrix, device=device, dtype=dtype).view(1, 2, 3)
    half = torch.tensor([0.5 * width, 0.5 * height], device=device, dtype=dtype)
    return grid.view(1, height * width, 3).bmm(theta.transpose(1, 2) / half).view(height, width, 2)


def warp(x: Tensor, grid: Tensor, fill: float = 0.0) -> Tensor:
    """Each image resampled on its own grid [B, H, W, 2]: nearest neighbour, `fill` outside
    (0: torchvision's affine and rotate with fill=None; a grey level in [0, 1] otherwise)."""
    if not fill:
        return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    moved = F.grid_sample(x - fill, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return moved.add_(fill)


def _gray(x: Tensor) -> Tensor:
    """[B, 1, H, W] luma (ITU-R 601, torchvision's weights); a 1-channel image is its own."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(1)


def enhance(x: Tensor, factor: Tensor, gray: Tensor | None = None, mean: Tensor | None = None,
            sharp: Tensor | None = None) -> Tensor:
    """PIL ImageEnhance's Brightness, Color, Contrast and Sharpness in one pass.

    x * factor + gray image * gray + mean gray level * mean, and inside the one-pixel border
    + (smooth - x) * sharp, with PIL's SMOOTH filter (3x3 ones, 5 in the middle, over 13);
    clipped to [0, 1]. Each op is a blend of the image with a degenerate one (black, gray,
    mean gray, smoothed) by its factor f: Brightness (f, 0, 0, 0), Color (f, 1 - f, 0, 0),
    Contrast (f, 0, 1 - f, 0), Sharpness (1, 0, 0, 1 - f). None: that term is left out.
    """
    out = x * factor
    if gray is not None or mean is not None:
        g = _gray(x)
        if gray is not None:
            out.addcmul_(g, gray)
        if mean is not None:
            out.addcmul_(g.mean((1, 2, 3), keepdim=True), mean)
    if sharp is not None and min(x.shape[2:]) > 2:
        rows = x[..., :-2, :] + x[..., 1:-1, :] + x[..., 2:, :]  # 3x3 box sums, separably
        box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]
        towards = box.add_(x[..., 1:-1, 1:-1], alpha=-9)  # 13 * (smooth - x)
        out[..., 1:-1, 1:-1].addcmul_(towards, sharp / 13)
    return out.clamp_(0, 1)


def posterize(x: Tensor, levels: Tensor, on: Tensor) -> Tensor:
    """Keep `levels` (2^bits) levels per channel, floor(x * levels) / levels, where on is 1."""
    kept = torch.minimum((x * levels).floor_(), levels - 1).div_(levels)
    return torch.lerp(x, kept, on, out=kept)


def solarize(x: Tensor, threshold: Tensor) -> Tensor:
    """Invert the pixels at or above the threshold: |1 - x| there, |0 - x| elsewhere.

    Exact for x in [0, 1], in float arithmetic only (torch.where and bool casts are several
    times slower on CPU): sign(x - threshold) + 1, capped at 1, is 1 at or above it, else 0.
    """
    above = (x - threshold).sign_().add_(1).clamp_(max=1)
    return above.sub_(x).abs_()


def autocontrast(x: Tensor, on: Tensor) -> Tensor:
    """Stretch each channel to [0, 1] where on is 1; a flat channel is left as it is."""
    lo, hi = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)  # [B, C, 1, 1]
    use = (hi > lo) & (on > 0)
    return (x - torch.where(use, lo, 0.0)).div_(torch.where(use, hi - lo, 1.0)).clamp_(0, 1)


def equalize(x: Tensor, on: Tensor) -> Tensor:
    """Histogram equalisation per channel on 8-bit levels, with PIL's lookup table, where on is 1.

    As torchvision does for float images: x is cut to 8-bit levels (x * 255.999, truncated),
    equalised, and scaled back by 1/255; a channel whose pixels are too few outside its top
    level for a step (PIL's step 0) keeps its 8-bit levels. The table's integer maths runs in
    float32 (faster on CPU), exact for images under 2^24 pixels.
    """
    B, C, H, W = x.shape
    q = (x * (255 + 1.0 - 1e-3)).long().view(B * C, H * W)
    hist = torch.zeros(B * C, 256, dtype=torch.int32, device=x.device)
    hist.scatter_add_(1, q, torch.ones(1, dtype=torch.int32, device=x.device).expand_as(q))
    hist = hist.float()  # counts, exact below 2^24 pixels
    top = hist.gather(1, q.amax(1, keepdim=True))  # pixels at the highest level present
    step = ((H * W - top) / 255).floor_()  # [B*C, 1]
    below = hist.cumsum(1) - hist  # pixels below each level
    lut = ((below + (step / 2).floor_()) / step.clamp(min=1)).floor_().clamp_(0, 255)
    lut = torch.where(step > 0, lut, torch.arange(256.0, device=x.device))
    out = lut.to(x.dtype).mul_(1.0 / 255).gather(1, q).view(B, C, H, W)
    return torch.lerp(x, out, on, out=out)


def box_mask(top: Tensor, bottom: Tensor, left: Tensor, right: Tensor, height: int,
             width: int) -> Tensor:
    """bool [n, H, W]: rows top..bottom-1 and columns left..right-1 of each of n images
    (the bounds [n], on the device; boxes reaching past the image are clipped by it)."""
    n = top.shape[0]
    r = torch.arange(height, device=top.device).view(1, height, 1)
    c = torch.arange(width, device=top.device).view(1, 1, width)
    return ((r >= top.view(n, 1, 1)) & (r < bottom.view(n, 1, 1))
            & (c >= left.view(n, 1, 1)) & (c < right.view(n, 1, 1)))
