"""resnet18: the CIFAR ResNet-18, a convolutional baseline for the ViTs, whose state dict is
torchvision's resnet18's (module names and shapes alike)."""

from torch import Tensor, nn

from zoo.errors import ZooError
from zoo.kinds import NEEDS
from zoo.registry import register
from zoo.schema import ModelConfig

STEMS = {"cifar": "3x3 stride 1, no max-pool", "imagenet": "7x7 stride 2, then a 3x3 max-pool"}


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm, added to the input (He et al. 2016, Fig. 2):
    relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)). The shortcut is the identity, or a
    strided 1x1 convolution and batch norm (`downsample`, option B) where the shape changes."""

    def __init__(self, inp: int, out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.downsample = None
        if stride != 1 or inp != out:
            self.downsample = nn.Sequential(nn.Conv2d(inp, out, 1, stride, bias=False),
                                            nn.BatchNorm2d(out))

    def forward(self, x: Tensor) -> Tensor:
        """[B, inp, H, W] -> [B, out, H / stride, W / stride]."""
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + shortcut)


def check(width: int, blocks: list[int] | tuple[int, ...], stem: str) -> None:
    """A width, block counts or stem that builds no ResNet is a one-line error."""
    if width < 1:
        raise ZooError(f"model.arch.width: must be at least 1, got {width}")
    if not isinstance(blocks, list | tuple) or not blocks or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in blocks):
        raise ZooError("model.arch.blocks: expected a non-empty list of block counts per stage, "
                       f"each at least 1, such as [2, 2, 2, 2]; got {blocks!r}")
    if stem not in STEMS:
        raise ZooError(f"model.arch.stem: '{stem}' is not a resnet18 stem; choose "
                       + " or ".join(f"{k} ({v})" for k, v in STEMS.items()))


@register("arch", "resnet18")
class ResNet(nn.Module):
    """ResNet-18 for CIFAR (He et al. 2016, "Deep Residual Learning for Image Recognition"):
    BasicBlocks [2, 2, 2, 2] at width x (1, 2, 4, 8), global average pool, fc.

    The stem is kuangliu/pytorch-cifar's (a 3x3 stride-1 convolution, no max-pool: feature
    maps 32, 16, 8, 4 at 32 px); `stem: imagenet` is torchvision's (7x7 stride 2 and a
    max-pool). Each stage after the first halves the map on its first block's conv1 and has
    a 1x1 downsample shortcut. Names, shapes and init are torchvision's `resnet18`: its
    state dict loads as is (kaiming-normal fan-out convolutions, batch norm 1 and 0, fc
    PyTorch's default). Other `blocks` make other BasicBlock ResNets ([3, 4, 6, 3]: ResNet-34).
    """

    uses = ()  # no model key beyond the sizes every arch reads: its own are below

    def __init__(self, cfg: ModelConfig, width: int = 64,
                 blocks: list[int] | tuple[int, ...] = (2, 2, 2, 2), stem: str = "cifar"):
        super().__init__()
        check(width, blocks, stem)
        self.cfg = cfg
        self.num_classes = cfg.num_classes
        cifar = stem == "cifar"
        self.conv1 = nn.Conv2d(cfg.in_chans, width, 3 if cifar else 7, 1 if cifar else 2,
                               1 if cifar else 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if cifar else nn.MaxPool2d(3, 2, 1)
        inp = width
        for i, n in enumerate(blocks):  # layer1, layer2, ...: stage i at width * 2^i
            out = width * 2**i
            stage = [BasicBlock(inp, out, 1 if i == 0 else 2)]
            stage += [BasicBlock(out, out, 1) for _ in range(n - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
            inp = out
        self.stages = len(blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inp, cfg.num_classes) if cfg.num_classes else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, img: Tensor) -> Tensor:
        """Images [B, C, H, W] -> the globally averaged last feature map [B, width * 8]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(img))))
        for i in range(self.stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.avgpool(x).flatten(1)

    def forward(self, img: Tensor) -> Tensor:
        """Images [B, C, H, W] -> logits [B, num_classes] (features where num_classes is 0)."""
        return self.fc(self.features(img))

    def lacks(self, need: str) -> str | None:
        """Every visualizer need: a CNN has no attention, no [CLS] token, no position table."""
        reasons = {
            "attention_maps": "resnet18 is a CNN: it has no attention, so no attention maps",
            "cls_token": "resnet18 has no [CLS] token: it averages its last feature map",
            "position_table": "resnet18 has no positional embedding: its convolutions take none",
        }
        if need not in NEEDS:
            raise ZooError(f"unknown visualizer need '{need}'; known: {', '.join(NEEDS)}")
        return reasons[need]

    def no_weight_decay(self) -> set[str]:
        """Batch-norm scales and shifts and the fc bias (every vector) are exempt, as timm's
        optimizer factory and zoo's ViT do; kuangliu/pytorch-cifar decays every parameter
        (SGD, 5e-4): `train.decay: all` does that."""
        return {n for n, p in self.named_parameters() if p.ndim <= 1}
