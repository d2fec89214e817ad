"""Both architectures, counted from the models built in the run: parameters, FLOPs of one
forward pass, a per-child layer table, and what the module tree says about their design."""

from __future__ import annotations

import re
from collections import Counter

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..clip_common.models import LoadedClip, tool_package
from .resnet import LoadedResnet


def _conv(m: nn.Conv2d) -> str:
    return f"{m.kernel_size[0]}x{m.kernel_size[1]}/s{m.stride[0]} {m.in_channels}->{m.out_channels}"


def _head_part(m: nn.Module) -> str:
    if hasattr(m, "num_heads") and hasattr(m, "positional_embedding"):  # CLIP AttentionPool2d
        tokens = m.positional_embedding.shape[0]
        return (f"attention pooling, {m.num_heads} heads over {tokens - 1} feature vectors plus their mean "
                f"as the query token, width {m.k_proj.in_features} -> {m.c_proj.out_features}-d embedding")
    if hasattr(m, "pool_type"):  # timm SelectAdaptivePool2d
        return f"global {m.pool_type} pooling"
    if isinstance(m, nn.Linear):
        return f"linear {m.in_features} -> {m.out_features}"
    return type(m).__name__


def design_facts(visual: nn.Module) -> list[str]:
    """What the module tree says about stem, downsampling and head (no hand-written claims)."""
    if isinstance(visual, tool_package("clip.model").VisionTransformer):
        conv, blocks = visual.conv1, visual.transformer.resblocks
        grid = visual.input_resolution // conv.stride[0]
        return [f"patch embedding: {_conv(conv)} ({grid}x{grid} patches + a class token)",
                f"{len(blocks)} transformer blocks of width {visual.transformer.width}",
                f"head: LayerNorm on the class token, linear projection to {visual.output_dim}-d embedding"]
    children = list(visual.named_children())
    stages = [i for i, (n, _) in enumerate(children) if re.fullmatch(r"layer\d+", n)]
    if not stages:
        return [f"{type(visual).__name__}: no layer1..4 stages found"]
    stem = [m for _, m in children[: stages[0]]]
    body = [children[i][1] for i in stages]
    convs = [m for m in stem if isinstance(m, nn.Conv2d)]
    pools = [type(m).__name__ + f"({m.kernel_size})" for m in stem if isinstance(m, (nn.AvgPool2d, nn.MaxPool2d))]
    inner = [m for stage in body for m in stage.modules()]
    strided = Counter(f"{m.kernel_size[0]}x{m.kernel_size[1]}" for m in inner
                      if isinstance(m, nn.Conv2d) and max(m.stride) > 1)
    avgpools = [m for m in inner if isinstance(m, nn.AvgPool2d)]
    facts = [f"stem: {len(convs)} convolution(s) ({', '.join(_conv(c) for c in convs)})"
             + (f", then {', '.join(pools)}" if pools else ""),
             f"{len(body)} residual stages of {', '.join(str(len(s)) for s in body)} blocks"]
    if strided:
        facts.append("downsampling in the stages: strided convolutions ("
                     + ", ".join(f"{n} of {k}" for k, n in sorted(strided.items())) + ")")
    else:
        facts.append("downsampling in the stages: no strided convolution; "
                     f"{len(avgpools)} AvgPool2d layers average before stride-1 convolutions instead "
                     "(anti-aliased downsampling, 'rect-2 blur pooling', Zhang 2019)")
    facts.append("head: " + " -> ".join(_head_part(m) for _, m in children[stages[-1] + 1:]))
    return facts


def describe(model: nn.Module, resolution: int, device: torch.device) -> dict:
    """Parameters, FLOPs (FlopCounterMode: one multiply-add = 2 FLOPs) and a per-child layer table."""
    rows = []

    def hook(name: str):
        def record(module, _inputs, output):
            shape = list(output.shape) if isinstance(output, torch.Tensor) else "-"
            rows.append({"layer": name, "type": type(module).__name__, "output": shape,
                         "params": sum(p.numel() for p in module.parameters())})
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_children()]
    x = torch.zeros(1, 3, resolution, resolution, device=device)
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for h in handles:
            h.remove()
    return {"params": sum(p.numel() for p in model.parameters()), "flops": counter.get_total_flops(),
            "resolution": resolution, "layers": rows, "facts": design_facts(model)}


def architecture(clip_: LoadedClip, resnet: LoadedResnet, device: torch.device) -> dict:
    visual = clip_.model.visual
    clip_desc = describe(visual, visual.input_resolution, device)
    clip_desc["params_total"] = sum(p.numel() for p in clip_.model.parameters())
    clip_desc["params_text"] = clip_desc["params_total"] - clip_desc["params"]
    return {"clip_image_encoder": clip_desc, "resnet": describe(resnet.model, resnet.input_size, device)}
