"""CLIP code shared by the scripts in tools/: loading, the ImageNet zero-shot head, images.

`clip_vs_resnet.py` and `fp16_profile.py` both import this module (as `tools.clip_common`),
so a CLIP model is loaded, its zero-shot classifier is built, and their shared flags are
parsed, in exactly one way. Devices, files, images and the error exit are zoo's.

- CLIP: Radford et al., "Learning Transferable Visual Models From Natural Language
  Supervision", ICML 2021 (arXiv:2103.00020), through the `openai-clip` package.
- Zero-shot head: the 1000 ImageNet classes with CLIP's curated class names and its 80
  prompt templates, taken from `open_clip.zero_shot_metadata` (a copy of OpenAI's
  "Prompt_Engineering_for_ImageNet.ipynb"), combined by prompt ensembling (paper, Sec. 3.1.4).
- ImageNet-1k WordNet ids in class-index order: `timm.data.ImageNetInfo` (timm's
  `imagenet_synsets.txt`, the sorted ILSVRC-2012 synsets that torchvision/timm indices use).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib
import io
import json
import re
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, NoReturn

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from zoo.device import Dist, pick_device
from zoo.errors import ZooError, first_line, suggest
from zoo.io import atomic_write

if TYPE_CHECKING:
    from clip.model import CLIP


DEFAULT_CACHE_DIR = Path("~/.cache/zoo/clip_text").expanduser()
PROMPT_MODES = ("auto", "ensemble", "single", "name")
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


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are ZooErrors: one line `error: ...` and exit 2."""

    def error(self, message: str) -> NoReturn:
        raise ZooError(message)


def add_shared_args(p: argparse.ArgumentParser, *, random_init_help: str) -> None:
    """The CLIP flags both tools take, and the run flags under the names zoo's commands use."""
    p.add_argument("--clip-model", default="RN50", help="one of clip.available_models() (default RN50)")
    p.add_argument("--clip-weights", type=Path, help="local CLIP checkpoint (.pt) instead of downloading")
    p.add_argument("--random-init", action="store_true", help=random_init_help)
    p.add_argument("--prompts", default="auto", choices=PROMPT_MODES,
                   help="zero-shot prompts: auto = the 80-template ensemble, or single for --random-init")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help="text-embedding cache")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of --random-init (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def choose_device(name: str) -> torch.device:
    """The tools' --device, as zoo picks devices."""
    return pick_device(name, Dist(), f"--device {name}")


# --- CLIP architectures ---------------------------------------------------------------------


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


# --- ImageNet zero-shot head ----------------------------------------------------------------


@functools.cache
def imagenet_wnids() -> tuple[str, ...]:
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo().label_names())


@functools.cache
def imagenet_descriptions() -> tuple[str, ...]:
    """WordNet lemmas per class, e.g. 'tench, Tinca tinca' (timm's imagenet_synset_to_lemma.txt)."""
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo().label_descriptions())


@functools.cache
def imagenet_classnames() -> tuple[str, ...]:
    """CLIP's curated ImageNet class names, in class-index order."""
    return tuple(tool_package("open_clip.zero_shot_metadata").IMAGENET_CLASSNAMES)


def prompt_templates(mode: str) -> tuple[str, ...]:
    """`{}`-templates: CLIP's 80 (ensemble), "a photo of a {}." (single), or the bare name."""
    if mode == "ensemble":
        templates = tool_package("open_clip.zero_shot_metadata").OPENAI_IMAGENET_TEMPLATES
        return tuple(t("{}") for t in templates)
    if mode == "single":
        return ("a photo of a {}.",)
    if mode == "name":
        return ("{}",)
    raise ZooError(f"unknown prompt mode '{mode}'{suggest(mode, PROMPT_MODES)}")


def resolve_prompts(mode: str, random_init: bool) -> str:
    """`auto`: the 80-template ensemble for real weights; one template for random weights,
    whose predictions mean nothing anyway and where 80x the text-encoder work only costs time."""
    if mode == "auto":
        return "single" if random_init else "ensemble"
    prompt_templates(mode)  # validates
    return mode


def encode_text(model: CLIP, tokens: torch.Tensor) -> torch.Tensor:
    """`model.encode_text(tokens)`, computed only up to the longest prompt's end token.

    CLIP's text transformer is causal (`CLIP.build_attention_mask`) and the text feature is
    read at the end-of-text token, so positions after it never influence the result: cutting
    them is exact, and ImageNet prompts use about 9 of the 77 positions.
    """
    n = int(tokens.argmax(dim=-1).max()) + 1  # end-of-text has the largest token id
    tokens = tokens[:, :n]
    x = model.token_embedding(tokens).type(model.dtype) + model.positional_embedding[:n].type(model.dtype)
    x = x.permute(1, 0, 2)  # [B, n, width] -> [n, B, width], as CLIP's Transformer expects
    mask = model.build_attention_mask()[:n, :n].to(device=x.device, dtype=x.dtype)
    for block in model.transformer.resblocks:  # ResidualAttentionBlock.forward with an [n, n] mask
        h = block.ln_1(x)
        x = x + block.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        x = x + block.mlp(block.ln_2(x))
    x = model.ln_final(x.permute(1, 0, 2)).type(model.dtype)
    return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ model.text_projection


def ensemble(per_prompt: torch.Tensor) -> torch.Tensor:
    """[C, T, D] prompt embeddings -> [C, D]: normalise each, average over T, re-normalise
    (CLIP paper Sec. 3.1.4; averaging in embedding space lets the ensemble cost one matmul)."""
    mean = F.normalize(per_prompt.float(), dim=-1).mean(dim=1)
    return F.normalize(mean, dim=-1)


@torch.inference_mode()
def class_embeddings(model: CLIP, classnames: tuple[str, ...] | list[str], templates: tuple[str, ...],
                     *, batch_size: int = 256, progress: bool = True) -> torch.Tensor:
    """[C, D] unit-norm text embeddings, one per class, ensembled over `templates`."""
    device = model.positional_embedding.device
    prompts = [t.replace("{}", c) for c in classnames for t in templates]
    tokens = tool_package("clip").tokenize(prompts)
    # Longest first: batches of similar length waste little on padding, and OOM shows up at once.
    order = torch.argsort(tokens.argmax(dim=-1), descending=True)
    out = torch.empty(len(prompts), model.text_projection.shape[1])
    for chunk in tqdm(order.split(batch_size), desc="text prompts", unit="batch",
                      disable=not progress, leave=False):
        out[chunk] = encode_text(model, tokens[chunk].to(device)).float().cpu()
    return ensemble(out.view(len(classnames), len(templates), -1))


def text_fingerprint(model: CLIP) -> str:
    """sha256 of the text-tower weights: the cache key part that says which weights these are."""
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        if key.startswith("visual."):
            continue
        h.update(f"{key}:{value.dtype}:{tuple(value.shape)}".encode())
        h.update(value.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def zero_shot_head(loaded: LoadedClip, prompts: str, *, cache_dir: Path | None = DEFAULT_CACHE_DIR,
                   progress: bool = True) -> torch.Tensor:
    """[1000, D] ImageNet class embeddings for `loaded`, cached on disk.

    The cache file name says model, weights kind and prompt mode; its key hashes the text-tower
    weights, the templates and the class names, so other weights or prompts never hit it.
    """
    templates = prompt_templates(prompts)
    classnames = imagenet_classnames()
    key = hashlib.sha256(json.dumps({
        "model": loaded.name, "random_init": loaded.random_init, "text_weights": text_fingerprint(loaded.model),
        "templates": templates, "classnames": classnames, "format": 1,
    }).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", loaded.name)
    kind = "random" if loaded.random_init else "pretrained"
    path = cache_dir / f"{slug}-{kind}-{prompts}-{key}.pt" if cache_dir is not None else None
    device = loaded.model.positional_embedding.device
    if path is not None and path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)["embeddings"].to(device)
        except Exception as e:  # a damaged cache file is rebuilt, not fatal
            print(f"warning: ignoring unreadable text-embedding cache {path} ({first_line(e)})", file=sys.stderr)
    emb = class_embeddings(loaded.model, classnames, templates, progress=progress)
    if path is not None:
        try:
            buffer = io.BytesIO()
            torch.save({"embeddings": emb, "model": loaded.name, "prompts": prompts}, buffer)
            atomic_write(path, buffer.getvalue())
        except OSError as e:
            print(f"warning: could not write text-embedding cache {path} ({first_line(e)})", file=sys.stderr)
    return emb.to(device)


def zero_shot_logits(model: CLIP, images: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """[B, C] logits: scaled cosine similarity of image and class embeddings, as `CLIP.forward`."""
    features = F.normalize(model.encode_image(images).float(), dim=-1)
    return model.logit_scale.exp().float() * features @ head.float().t()


# --- images ---------------------------------------------------------------------------------

SAMPLE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")  # photos bundled with scikit-image


@functools.cache
def image_extensions() -> frozenset[str]:
    """Every file extension PIL can open in this install."""
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def list_images(root: Path) -> list[Path]:
    """Image files under `root` (recursive, sorted, hidden files and folders skipped)."""
    exts = image_extensions()
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() in exts and path.is_file():
            found.append(path)
    return found


def sample_photos() -> Iterator[tuple[str, Image.Image]]:
    """scikit-image's bundled sample photos (no download): a fixed, real set of images."""
    import skimage.data

    for name in SAMPLE_PHOTOS:
        yield name, Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
