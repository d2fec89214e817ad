"""vit-zoo: study Vision Transformers by training them.

The public API, imported lazily so that `import zoo` stays cheap:
`register`, `build`, `discover`, `load_recipe`, `build_model`, `from_timm`, `to_timm`,
`ZooError`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "ZooError": "zoo.errors",
    "register": "zoo.registry",
    "build": "zoo.registry",
    "discover": "zoo.registry",
    "load_recipe": "zoo.recipe",
    "Recipe": "zoo.recipe",
    "build_model": "zoo.model",
    "ViT": "zoo.model",
    "from_timm": "zoo.convert",
    "to_timm": "zoo.convert",
}

__all__ = list(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
