"""autoaugment: AutoAugment (Cubuk et al., CVPR 2019) through torchvision, per chunk of images."""

from __future__ import annotations

from torch import Tensor

from zoo.data import per_chunk
from zoo.errors import ZooError
from zoo.registry import register

POLICIES = ("cifar10", "imagenet", "svhn")


@register("augment", "autoaugment")
class AutoAugment:
    """AutoAugment (Cubuk et al. 2019): a searched policy of paired image ops.

    torchvision.transforms.v2.AutoAugment draws one sub-policy per call; we call it on each
    `chunk` images of the shuffled batch, so every image sees the policy's distribution and
    shares its draw only within its chunk (chunk 1: strictly per image, several times slower).
    """

    def __init__(self, policy: str = "cifar10", chunk: int = 16):
        from torchvision.transforms import v2

        if policy not in POLICIES:
            raise ZooError(f"augment 'autoaugment': policy must be one of {', '.join(POLICIES)}, "
                           f"got '{policy}'")
        if chunk < 1:
            raise ZooError(f"augment 'autoaugment': chunk must be at least 1, got {chunk}")
        self.transform = v2.AutoAugment(v2.AutoAugmentPolicy(policy))
        self.chunk = chunk

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return per_chunk(self.transform, x, self.chunk), y
