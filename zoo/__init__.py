"""vit-zoo: study Vision Transformers by training them.

The public API, imported lazily so that `import zoo` stays cheap:
`register`, `build`, `discover`, `load_recipe`, `build_model`, `from_timm`, `to_timm`,
`ZooError`.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# OpenMP threads that wait by spinning make a shared CPU crawl: on a 2-core VM with other jobs
# running (load average 4.2-4.7), a quickstart step took 1,074-1,557 ms with spinning waits
# and 355-444 ms with passive ones. Set before torch loads its OpenMP runtime (importing zoo
# first, as `zoo` and `python -m zoo` do); the user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
