"""Layers shared by the model, the archs and the plugins: one concept per file (as timm's
`layers/`), importing nothing above zoo.errors, so every model and plugin may use them."""

from zoo.layers.drop_path import DropPath
from zoo.layers.mlp import MLP
from zoo.layers.pos_grid import resize_grid, resize_table

__all__ = ["MLP", "DropPath", "resize_grid", "resize_table"]
