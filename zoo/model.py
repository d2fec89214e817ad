"""The Vision Transformer, from scratch, in one file.

Dosovitskiy et al. 2020, "An Image is Worth 16x16 Words: Transformers for Image Recognition
at Scale" (https://arxiv.org/abs/2010.11929). Read top to bottom:

    image [B, 3, H, W]
      -> tokenizer plugin (`patch`: a conv with stride = kernel = patch)   [B, N, C], N = gh * gw
      -> prepend the [CLS] token, where the pool reads one            [B, 1 + N, C]
      -> positional-embedding plugin (`posemb`), dropout
      -> depth x pre-norm Block: x + attn(norm(x)), x + mlp(norm(x))
      -> pool plugin with the final norm ([CLS], mean, seqpool), linear head -> [B, classes]

Tokenizer, attention, positional embedding and pool are plugins chosen by name in the
recipe (registry kinds of those names; the built-in ones live in plugins/<kind>/). Their
contracts are Protocols in zoo.kinds. Attention maps come from `ViT.attention_maps`,
which runs the plugins' explicit path; the normal forward neither returns nor keeps them.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import torch
from torch import Tensor, nn

from zoo import registry
from zoo.errors import ZooError
from zoo.kinds import NEEDS, Attention, Pool, PosEmb, Tokenizer
from zoo.layers import MLP, DropPath
from zoo.layers.init import init_linears
from zoo.schema import ModelConfig, from_dict

LN_EPS = 1e-6  # model.norm_eps's default, as in the ViT reference code (big_vision) and timm


class Block(nn.Module):
    """Pre-norm encoder block (Dosovitskiy et al. 2020, Eq. 2-3), attention from the registry."""

    def __init__(self, cfg: ModelConfig, layer: int, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.attn: Attention = registry.build(
            "attention", cfg.attention, path="model.attention", dim=cfg.dim, heads=cfg.heads,
            layer=layer, depth=cfg.depth, qkv_bias=cfg.qkv_bias, attn_drop=cfg.attn_dropout,
        )
        self.drop = nn.Dropout(cfg.dropout)  # after the attention's output projection
        self.norm2 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.mlp = MLP(cfg.dim, cfg.mlp_dim or int(cfg.dim * cfg.mlp_ratio), cfg.dropout)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, maps: list[dict[str, Tensor]] | None = None) -> Tensor:
        """x: [B, N, C] -> [B, N, C]; with a `maps` list, append this layer's attention maps."""
        if maps is None:
            a = self.attn(self.norm1(x))
        else:
            a, m = self.attn(self.norm1(x), return_attn=True)
            maps.append(m)
        x = x + self.drop_path(self.drop(a))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ViT(nn.Module):
    """Vision Transformer with pluggable tokenizer, attention, positional embedding and pool."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.num_classes = cfg.num_classes
        self.patch_embed: Tokenizer = registry.build(
            "tokenizer", cfg.tokenizer, path="model.tokenizer", in_chans=cfg.in_chans,
            dim=cfg.dim, patch_size=cfg.patch_size, img_size=cfg.img_size,
        )
        self.grid_size = tuple(self.patch_embed.grid(cfg.img_size, cfg.img_size))  # as built
        self.pool: Pool = registry.build("pool", cfg.pool, path="model.pool", dim=cfg.dim)
        self.num_prefix_tokens = int(bool(self.pool.cls_token))  # the [CLS] token, if any
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim)) if self.num_prefix_tokens else None
        self.posemb: PosEmb = registry.build(
            "posemb", cfg.posemb, path="model.posemb", dim=cfg.dim, grid_size=self.grid_size,
            num_prefix_tokens=self.num_prefix_tokens,
        )
        self.pos_drop = nn.Dropout(cfg.dropout)
        # stochastic depth: linearly from 0 at the first block to drop_path at the last (DeiT),
        # or drop_path in every block (Lee et al. 2021)
        rates = (torch.linspace(0, cfg.drop_path, cfg.depth).tolist()
                 if cfg.drop_path_schedule == "linear" else [cfg.drop_path] * cfg.depth)
        self.blocks = nn.ModuleList(Block(cfg, i + 1, rates[i]) for i in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.dim, cfg.num_classes) if cfg.num_classes else nn.Identity()

        self.init_weights(cfg.weight_init)

    def init_weights(self, scheme: str) -> None:
        """One rule for every Linear, the plugins' too, and the [CLS] token: `trunc_normal`,
        std 0.02 (timm, DeiT), or `xavier`: Xavier-normal Linear weights and a [CLS] token
        from N(0, 1), as Lee et al.'s models/vit.py (their position table, also N(0, 1), is
        the posemb plugin's: learned_1d's `std`). Biases start at zero."""
        if self.cls_token is not None and scheme == "xavier":
            nn.init.normal_(self.cls_token)
        elif self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        init_linears(self, scheme)

    def encode(self, img: Tensor, maps: list[dict[str, Tensor]] | None = None) -> Tensor:
        """Images [B, C, H, W] -> tokens [B, prefix + N, dim] after the last block (before
        the norm).

        H and W may differ from the training size (as the tokenizer allows); learned
        positional embeddings are then resized. A `maps` list collects each layer's maps.
        """
        x = self.patch_embed(img)  # [B, gh, gw, C]
        grid = (x.shape[1], x.shape[2])
        x = x.flatten(1, 2)  # [B, N, C], a view: the cat below is the only copy
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # [B, 1+N, C]
        x = self.pos_drop(self.posemb(x, grid))
        for block in self.blocks:
            x = block(x, maps)
        return x

    def forward(self, img: Tensor) -> Tensor:
        """Images [B, C, H, W] -> logits [B, num_classes] (pooled features if num_classes is 0)."""
        return self.head(self.features(img))

    def features(self, img: Tensor) -> Tensor:
        """Images -> the pooled, normalised vector the head reads [B, dim] (kNN, probes)."""
        return self.pool(self.encode(img), self.num_prefix_tokens, self.norm)

    def attention_maps(self, img: Tensor, details: bool = False) -> list[Any]:
        """Per-layer attention probabilities [B, heads, T, T] over the prefix ([CLS]) and
        the patch tokens, T = prefix + N.

        With `details`, per-layer dicts instead: `attn` and, for differential attention, the
        two softmax maps `attn1`, `attn2` and the scalar `lam`. Runs under the caller's grad
        mode (wrap it in `torch.no_grad()` for visualization).
        """
        self.check_maps()
        maps: list[dict[str, Tensor]] = []
        self.encode(img, maps)
        return maps if details else [m["attn"] for m in maps]

    def check_maps(self) -> None:
        """The attention plugin can hand out its maps, else a one-line error saying why."""
        if why := self.lacks("attention_maps"):
            raise ZooError(why)

    def lacks(self, need: str) -> str | None:
        """Why this model cannot serve `need`, or None: what a visualizer's `needs` names
        (zoo.kinds.Visualizer). `attention_maps`: its attention plugin has `return_attn`."""
        if need not in NEEDS:
            raise ZooError(f"unknown visualizer need '{need}'; known: {', '.join(NEEDS)}")
        if need == "position_table":  # posemb_similarity notes a model with posemb none itself
            return None
        if need == "cls_token":
            return None if self.num_prefix_tokens else (
                f"this model has no [CLS] token (pool: {registry.spec_name(self.cfg.pool)})")
        params = inspect.signature(self.blocks[0].attn.forward).parameters
        if "return_attn" in params or any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return None
        return (f"attention '{registry.spec_name(self.cfg.attention)}' has no return_attn, so "
                "its attention maps cannot be drawn (its forward would take return_attn=False "
                "and, when true, return (out, {'attn': probabilities [B, heads, N, N]}))")

    def lambdas(self) -> list[Tensor]:
        """Each layer's differential-attention lambda (scalars, detached); [] for plain attention."""
        return [b.attn.lam().detach() for b in self.blocks if hasattr(b.attn, "lam")]

    def no_weight_decay(self) -> set[str]:
        """Parameters to exempt from weight decay: every vector (norms, biases, lambda
        vectors), the [CLS] token and the positional-embedding tables."""
        return {
            n for n, p in self.named_parameters()
            if p.ndim <= 1 or n == "cls_token" or n.startswith("posemb.")
        }

    def patch_posemb(self) -> Tensor | None:
        """Per-patch positional embeddings [gh*gw, C] of the trained grid (None if the plugin has none)."""
        return self.posemb.patch_embeddings()


ANY_ARCH = ("arch", "img_size", "in_chans", "num_classes", "init", "init_weights")


PLUGINS_ASKED = ("tokenizer", "attention", "pool")  # an arch that ignores one set is refused


def build_model(cfg: ModelConfig | dict[str, Any]) -> nn.Module:
    """Validate a ModelConfig (or a recipe's `model:` mapping) and build the model its
    `arch` names: this file's ViT for `vit` (the default), else a plugin of kind arch."""
    data = dataclasses.asdict(cfg) if isinstance(cfg, ModelConfig) else cfg
    model_cfg = from_dict({"model": data}, source="build_model").model
    refused = [k for k in ignored_keys(model_cfg) if k in PLUGINS_ASKED]
    if refused:
        name = registry.spec_name(model_cfg.arch)
        raise ZooError(f"model.{refused[0]}: arch '{name}' takes no {refused[0]} plugin (it "
                       f"reads {', '.join(registry.registry('arch').get(name).obj.uses) or 'only the image and class sizes'}); "
                       f"drop model.{refused[0]} or use an arch that takes it (zoo list arch)")
    return registry.build("arch", model_cfg.arch, path="model.arch", cfg=model_cfg)


def ignored_keys(cfg: ModelConfig) -> list[str]:
    """The model keys set away from their defaults that the arch does not read (those its
    `uses` leaves out; vit, without `uses`, reads them all)."""
    name, _ = registry.parse_spec(cfg.arch, "model.arch")
    uses = getattr(registry.registry("arch").get(name, "model.arch").obj, "uses", None)
    if uses is None:
        return []
    default = ModelConfig()
    return [f.name for f in dataclasses.fields(ModelConfig)
            if f.name not in (*ANY_ARCH, *uses) and getattr(cfg, f.name) != getattr(default, f.name)]
