"""CLIP models: the architectures openai-clip releases, and loading one in FP32 (pretrained
through `clip.load`, a local checkpoint, or random weights for smoke tests)."""

from __future__ import annotations

import importlib
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import torch
from PIL import Image

from zoo.device import Dist, pick_device
from zoo.errors import ZooError, first_line, suggest

if TYPE_CHECKING:
    from clip.model import CLIP

TOOLS_EXTRA = "pip install 'vit-zoo[tools]' (in a checkout: pip install -e '.[tools]')"


def tool_package(name: str) -> ModuleType:
    """A module of the packages only tools/ uses (openai-clip, open_clip), imported on first
    use: they are the `tools` extra, so zoo installs without them and says how to add them."""
    try:
        with warnings.catch_warnings():
            # openai-clip imports pkg_resources, which warns on every start: not the user's concern
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
            return importlib.import_module(name)
    except ModuleNotFoundError as e:
        raise ZooError(f"the CLIP tools need the package {e.name or name}: {TOOLS_EXTRA}") from e


def choose_device(name: str) -> torch.device:
    """The tools' --device, as zoo picks devices."""
    return pick_device(name, Dist(), f"--device {name}")


@dataclass(frozen=True)
class ClipArch:
    """The arguments of `clip.model.CLIP`, i.e. what `clip.model.build_model` infers from weights."""

    embed_dim: int
    image_resolution: int
    vision_layers: tuple[int, int, int, int] | int
    vision_width: int
    vision_patch_size: int | None
    transformer_width: int
    transformer_heads: int
    transformer_layers: int = 12
    context_length: int = 77
    vocab_size: int = 49408

    def build(self) -> CLIP:
        return tool_package("clip.model").CLIP(**asdict(self)).eval()


# CLIP paper, Tables 19 (ResNets) and 20 (ViTs); tests check every entry against
# clip.model.build_model's shape inference and against open_clip's model configs.
CLIP_ARCHS: dict[str, ClipArch] = {
    "RN50": ClipArch(1024, 224, (3, 4, 6, 3), 64, None, 512, 8),
    "RN101": ClipArch(512, 224, (3, 4, 23, 3), 64, None, 512, 8),
    "RN50x4": ClipArch(640, 288, (4, 6, 10, 6), 80, None, 640, 10),
    "RN50x16": ClipArch(768, 384, (6, 8, 18, 8), 96, None, 768, 12),
    "RN50x64": ClipArch(1024, 448, (3, 15, 36, 10), 128, None, 1024, 16),
    "ViT-B/32": ClipArch(512, 224, 12, 768, 32, 512, 8),
    "ViT-B/16": ClipArch(512, 224, 12, 768, 16, 512, 8),
    "ViT-L/14": ClipArch(768, 224, 24, 1024, 14, 768, 12),
    "ViT-L/14@336px": ClipArch(768, 336, 24, 1024, 14, 768, 12),
}


def clip_arch(name: str) -> ClipArch:
    if name not in CLIP_ARCHS:
        raise ZooError(f"unknown CLIP model '{name}'{suggest(name, CLIP_ARCHS)}; "
                       f"available: {', '.join(CLIP_ARCHS)}")
    return CLIP_ARCHS[name]


@dataclass
class LoadedClip:
    model: CLIP
    preprocess: Callable[[Image.Image], torch.Tensor]
    name: str
    source: str  # where the weights came from, for the report
    random_init: bool


def load_clip(name: str, *, device: torch.device, weights: Path | None = None,
              random_init: bool = False, seed: int = 0) -> LoadedClip:
    """CLIP `name` in fp32 on `device`: pretrained via `clip.load`, a local file, or random.

    `clip.load` keeps fp16 weights on CUDA; we always use fp32 so that both tools compare
    like with like and fp16_profile measures half precision explicitly.
    """
    arch, clip = clip_arch(name), tool_package("clip")
    if random_init:
        if weights is not None:
            raise ZooError("--random-init and --clip-weights exclude each other")
        torch.manual_seed(seed)
        model = arch.build()
        # The same transform clip.load returns (Resize/CenterCrop bicubic, CLIP's mean/std).
        preprocess = clip.clip._transform(arch.image_resolution)
        source = f"random init (seed {seed}), NOT pretrained"
    else:
        if weights is not None and not Path(weights).is_file():
            raise ZooError(f"--clip-weights {weights}: no such file")
        target = str(weights) if weights is not None else name
        try:
            model, preprocess = _load_clip_file(weights) if weights is not None else clip.load(name, device="cpu")
        except Exception as e:  # download (URLError, checksum) or unpickling failures
            if weights is not None:
                raise ZooError(f"could not load CLIP weights from {weights} ({first_line(e)})") from e
            url = clip.clip._MODELS.get(name, "the CLIP release file")
            raise ZooError(
                f"could not get CLIP {name} weights ({first_line(e)}); without network, download "
                f"{url} elsewhere and pass --clip-weights FILE or save it as ~/.cache/clip/{Path(url).name}, "
                "or use --random-init for a smoke test") from e
        _check_arch(model, name, arch, target)
        source = str(weights) if weights is not None else clip.clip._MODELS.get(name, name)
    return LoadedClip(model.float().eval().to(device), preprocess, name, source, random_init)


def _load_clip_file(path: Path) -> tuple[CLIP, Callable[[Image.Image], torch.Tensor]]:
    """OpenAI's released .pt files (TorchScript archives) via `clip.load`; a plain state dict
    (`torch.save(model.state_dict())`) via `clip.model.build_model`, because `clip.load` re-reads
    the file handle that its failed TorchScript attempt has advanced (openai/CLIP issue #396).
    build_model stores weights in FP16, so a state dict is loaded again into the FP32 model."""
    clip = tool_package("clip")
    if _is_torchscript(path):
        return clip.load(str(path), device="cpu", jit=False)
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    model = clip.model.build_model(dict(state)).float()
    model.load_state_dict(state)
    return model, clip.clip._transform(model.visual.input_resolution)


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with a code/ folder; `torch.save` writes none."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def _check_arch(model: CLIP, name: str, arch: ClipArch, source: str) -> None:
    """Weights from a file must be the architecture the user named (shapes, built on meta)."""
    with torch.device("meta"):
        reference = arch.build()
    want = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if want != got:
        raise ZooError(f"{source} is not a CLIP {name} checkpoint (its tensor shapes differ); "
                       "pass the matching --clip-model")
