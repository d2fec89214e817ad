"""vit: zoo's own Vision Transformer (zoo/model.py), the default arch."""

from zoo.model import ViT
from zoo.registry import register
from zoo.schema import ModelConfig


@register("arch", "vit")
def vit(cfg: ModelConfig) -> ViT:
    """zoo's ViT (zoo/model.py; Dosovitskiy et al. 2020), the default arch.

    Built from every model key: its sizes, and the tokenizer, attention, posemb and pool
    plugins inside it."""
    return ViT(cfg)
