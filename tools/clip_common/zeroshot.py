"""The ImageNet zero-shot head of a CLIP model: the 1000 class names in prompt templates,
through the text tower, one unit vector per class (cached on disk), and image logits."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from zoo.errors import ZooError, first_line, suggest
from zoo.io import atomic_write
from zoo.train.trainer import progress as bar

from .models import LoadedClip, tool_package
from .settings import DEFAULT_CACHE_DIR, PROMPT_MODES

if TYPE_CHECKING:
    from clip.model import CLIP


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
    for chunk in bar(order.split(batch_size), progress, desc="text prompts", unit="batch"):
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
