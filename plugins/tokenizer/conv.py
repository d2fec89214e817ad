"""conv: a small convolutional stem as tokenizer (CCT's)."""

from torch import Tensor, nn

from zoo.registry import register


@register("tokenizer", "conv")
class ConvTokenizer(nn.Sequential):
    """The convolutional tokenizer of CCT (Hassani et al. 2021, "Escaping the Big Data
    Paradigm with Compact Transformers", Eq. 1): `layers` x [conv kernel x kernel, ReLU,
    3x3 max-pool stride 2], the last with `dim` channels, the ones before with `channels`.

    As their code (Compact-Transformers src/utils/tokenizer.py) builds it: conv stride
    max(1, kernel // 2 - 1) and padding max(1, kernel // 2), no conv bias, max-pool padding 1,
    Kaiming-normal conv weights; every output pixel is a token. CCT-7/3x1 is one layer of
    kernel 3: 32x32 images give a 16x16 grid.
    """

    def __init__(self, in_chans: int, dim: int, layers: int = 1, kernel: int = 3,
                 channels: int = 64, max_pool: bool = True):
        self.kernel, self.stride, self.pad = kernel, max(1, kernel // 2 - 1), max(1, kernel // 2)
        self.max_pool = max_pool
        widths = [in_chans] + [channels] * (layers - 1) + [dim]
        stages = []
        for cin, cout in zip(widths, widths[1:], strict=False):
            conv = nn.Conv2d(cin, cout, kernel, stride=self.stride, padding=self.pad, bias=False)
            nn.init.kaiming_normal_(conv.weight)
            pool = nn.MaxPool2d(3, stride=2, padding=1) if max_pool else nn.Identity()
            stages.append(nn.Sequential(conv, nn.ReLU(), pool))
        super().__init__(*stages)

    def grid(self, h: int, w: int) -> tuple[int, int]:
        def out(n: int) -> int:
            for _ in self:
                n = (n + 2 * self.pad - self.kernel) // self.stride + 1
                n = (n + 2 - 3) // 2 + 1 if self.max_pool else n
            return n

        return out(h), out(w)

    def forward(self, img: Tensor) -> Tensor:
        """[B, C, H, W] -> [B, gh, gw, dim]."""
        return super().forward(img).permute(0, 2, 3, 1)
