"""The ImageNet classifier CLIP is compared with: a timm model, pretrained, from a local
file, or random, with its own eval transform."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from zoo.convert import check_timm_name
from zoo.errors import ZooError, first_line
from zoo.io import quiet_hub_retries


@dataclass
class LoadedResnet:
    model: nn.Module
    transform: object
    tag: str  # resolved 'architecture.pretrained_tag'
    source: str
    input_size: int


def load_resnet(tag: str, *, device: torch.device, weights: Path | None = None,
                random_init: bool = False, seed: int = 0) -> LoadedResnet:
    """timm classifier `tag` (pretrained, local file, or random) with its own eval transform."""
    import timm
    import timm.data

    arch = tag.split(".")[0]
    check_timm_name(tag, "--resnet")
    if random_init and weights is not None:
        raise ZooError("--random-init and --resnet-weights exclude each other")
    kwargs = {}
    if weights is not None:
        if not Path(weights).is_file():
            raise ZooError(f"--resnet-weights {weights}: no such file")
        kwargs["pretrained_cfg_overlay"] = {"file": str(weights)}
    torch.manual_seed(seed)
    try:
        with quiet_hub_retries():
            model = timm.create_model(tag, pretrained=not random_init, **kwargs)
    except Exception as e:  # hub download, missing cache, or a file that does not fit
        if weights is not None:
            raise ZooError(f"could not load {tag} weights from {weights} ({first_line(e)})") from e
        raise ZooError(
            f"could not get pretrained weights for {tag} ({first_line(e)}); without network, download "
            f"model.safetensors from https://huggingface.co/timm/{tag} elsewhere and pass "
            "--resnet-weights FILE, or use --random-init for a smoke test") from e
    if model.num_classes != 1000:
        raise ZooError(f"{tag} has {model.num_classes} classes; the comparison needs an ImageNet-1k classifier")
    config = timm.data.resolve_data_config({}, model=model)
    cfg = model.pretrained_cfg
    resolved = f"{cfg.get('architecture', arch)}.{cfg['tag']}" if cfg.get("tag") else arch
    if random_init:
        source = f"random init (seed {seed}), NOT pretrained"
    else:
        source = str(weights) if weights is not None else f"hf-hub:{cfg.get('hf_hub_id', resolved)}"
    return LoadedResnet(model.eval().to(device), timm.data.create_transform(**config), resolved, source,
                        int(config["input_size"][-1]))
