"""What the CLIP flags default to and offer, apart from torch: the command lines read it
when `zoo --help` lists them, the library when it runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_CLIP = "RN50"
PROMPT_MODES = ("auto", "ensemble", "single", "name")
DEFAULT_CACHE_DIR = Path("~/.cache/zoo/clip_text").expanduser()


@dataclass(frozen=True)
class ClipOptions:
    """The CLIP and run flags both tools take: which CLIP, its prompts, where to run it."""

    model: str = DEFAULT_CLIP
    weights: Path | None = None  # a local checkpoint instead of downloading
    random_init: bool = False
    prompts: str = "auto"
    cache_dir: Path | None = DEFAULT_CACHE_DIR  # text embeddings; None: no cache
    device: str = "auto"
    seed: int = 0  # of random_init
    progress: bool = True  # bars, where stderr is a terminal
