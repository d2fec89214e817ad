"""cait: Class-Attention in Image Transformers, a ViT that trains deep (LayerScale, talking heads).

Touvron et al. 2021, "Going deeper with Image Transformers" (https://arxiv.org/abs/2103.17239),
with timm's `Cait` (timm.models.cait) as the structure and the test oracle:

    image -> tokenizer plugin (patch: a conv; spt: shifted patches)      [B, N, C]
      -> + a learned position table over the patches only (no [CLS] slot)
      -> depth x LayerScale block: x + g1 * attn(norm1(x)), x + g2 * mlp(norm2(x)), with
         g1, g2 per channel, attn = talking-heads self-attention, one drop-path rate in all
      -> cls_depth x class-attention block: the [CLS] token, entering only now, attends to
         [cls; patches] (both normalised); the patch tokens are not updated
      -> final norm on [CLS], linear head

Talking heads (Shazeer et al. 2020): the logits are mixed across heads by a heads x heads
linear map (proj_l) before the softmax, the probabilities by another (proj_w) after it.

`to_timm` / `from_timm` convert to and from timm's Cait with the same logits.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor, nn

from zoo import registry
from zoo.errors import ZooError
from zoo.kinds import NEEDS
from zoo.layers import MLP, DropPath, resize_grid
from zoo.layers.init import init_linears
from zoo.layers.talking_heads import ClassAttention, TalkingHeadsAttention
from zoo.model import LN_EPS
from zoo.registry import register
from zoo.schema import ModelConfig

SCHEDULES = ("constant", "layer_index")
CONTEXTS = ("all", "patches")
LACKS = {
    "attention_maps": "cait's [CLS] token attends only in its class-attention layers, after "
                      "self-attention over the patches alone: no [CLS] + patch maps to draw",
    "cls_token": "cait's [CLS] token has no self-attention maps: it enters in the class-attention "
                 "layers, whose maps are not served",
}


def layer_scaled(x: Tensor, branch: Tensor, gamma: Tensor, drop: DropPath | None) -> Tensor:
    """x + drop_path(gamma * branch) in one pass: a sample's drop goes into its gamma [B, 1, C]."""
    if drop is not None and drop.training:
        gamma = drop(gamma.expand(x.shape[0], 1, -1))
    return torch.addcmul(x, branch, gamma)


class LayerScaleBlock(nn.Module):
    """Pre-norm block whose two branches are scaled per channel (LayerScale, init `init`)."""

    def __init__(self, dim: int, attn: nn.Module, hidden: int, init: float, drop_path: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=LN_EPS), nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = attn
        self.mlp = MLP(dim, hidden, 0.0)
        self.gamma_1 = nn.Parameter(torch.full((dim,), init))
        self.gamma_2 = nn.Parameter(torch.full((dim,), init))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else None

    def forward(self, x: Tensor) -> Tensor:
        x = layer_scaled(x, self.attn(self.norm1(x)), self.gamma_1, self.drop_path)
        return layer_scaled(x, self.mlp(self.norm2(x)), self.gamma_2, self.drop_path)


class ClassBlock(LayerScaleBlock):
    """A LayerScale block on the [CLS] token alone, its attention reading `context` "all"
    (norm1 of [cls; patches]) or "patches" (the patch tokens as they are)."""

    def __init__(self, dim: int, attn: nn.Module, hidden: int, init: float, drop_path: float,
                 context: str):
        super().__init__(dim, attn, hidden, init, drop_path)
        self.context = context

    def forward(self, x: Tensor, cls: Tensor) -> Tensor:  # type: ignore[override]
        """Patch tokens x [B, N, C], cls [B, 1, C] -> the new cls [B, 1, C]."""
        if self.context == "all":
            u = self.norm1(torch.cat([cls, x], dim=1))
            a = self.attn(u[:, :1], u)
        else:
            a = self.attn(self.norm1(cls), x)
        cls = layer_scaled(cls, a, self.gamma_1, self.drop_path)
        return layer_scaled(cls, self.mlp(self.norm2(cls)), self.gamma_2, self.drop_path)


def layer_scale_init(schedule: str, init_values: float, layer: int) -> float:
    """LayerScale's initial gamma for 1-based `layer`: `init_values` everywhere ("constant"),
    or the paper's depth rule read per layer index as Lee et al.'s code does ("layer_index":
    0.1 up to layer 18, 1e-5 up to 24, 1e-6 beyond; the class layers count from 1 again)."""
    if schedule == "constant":
        return init_values
    return 0.1 if layer <= 18 else 1e-5 if layer <= 24 else 1e-6


@register("arch", "cait")
class CaiT(nn.Module):
    """CaiT (Touvron et al. 2021): LayerScale blocks, talking-heads attention, class attention.

    The defaults are the paper's and timm's structure (cait_xxs24: depth 24, 4 heads,
    LayerScale 1e-5). Beyond them, to express Lee et al.'s variant:

    - head_dim: attention width per head (None: dim / heads, as timm)
    - init_values / init_schedule: LayerScale's first gamma, "constant" or "layer_index"
    - class_attn_context: "all" ([cls; patches], normalised: the paper) or "patches" (the
      patch tokens un-normalised); class_attn_talking: talking heads there too
    - talking_bias: biases in proj_l and proj_w (timm's); cls_drop_path: drop path in the
      class-attention blocks (the paper: none)

    `attention: lsa` (Lee et al. 2021's Locality Self-Attention) gives every attention a
    learned temperature per head (as their code) and, in the patch layers, sets each token's
    score with itself to -inf right before the softmax, after proj_l: the paper's diagonal
    mask. Their CaiT code writes -1e-9 there, before proj_l, which masks nothing (and -inf
    before the mixing would mix into NaN).

    Lee et al.'s CaiT (SPT_LSA_ViT models/cait.py) is `{head_dim: 64, talking_bias: false,
    class_attn_context: patches, class_attn_talking: true, init_schedule: layer_index,
    cls_drop_path: 0.1}` with `model.qkv_bias: false`: their 9,020,618 parameters on
    CIFAR-10. Still unlike their code: the LSA mask above; LayerNorm eps 1e-6 (theirs 1e-5);
    timm's init (trunc_normal 0.02 for every Linear, the table and [CLS]; theirs xavier_normal,
    and randn with std 1 for the table, [CLS] and the talking-heads matrices). Their patch
    Linear is our conv, the same map.
    """

    uses = ("dim", "patch_size", "mlp_ratio", "mlp_dim", "drop_path", "qkv_bias", "tokenizer",
            "attention")

    def __init__(self, cfg: ModelConfig, depth: int = 24, heads: int = 4,
                 head_dim: int | None = None, cls_depth: int = 2, init_values: float = 1e-5,
                 init_schedule: str = "constant",
                 class_attn_context: str = "all", class_attn_talking: bool = False,
                 talking_bias: bool = True, cls_drop_path: float = 0.0):
        super().__init__()
        head_dim = check(cfg, locals())
        self.cfg, self.num_classes = cfg, cfg.num_classes
        self.patch_embed = registry.build(
            "tokenizer", cfg.tokenizer, path="model.tokenizer", in_chans=cfg.in_chans,
            dim=cfg.dim, patch_size=cfg.patch_size, img_size=cfg.img_size)
        self.grid_size = tuple(self.patch_embed.grid(cfg.img_size, cfg.img_size))
        gh, gw = self.grid_size
        self.pos_embed = nn.Parameter(torch.zeros(1, gh * gw, cfg.dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        lsa = registry.spec_name(cfg.attention) == "lsa"
        hidden, dim = cfg.mlp_dim or int(cfg.dim * cfg.mlp_ratio), cfg.dim
        self.blocks = nn.Sequential(*(LayerScaleBlock(
            dim, TalkingHeadsAttention(dim, heads, head_dim, cfg.qkv_bias, talking_bias, lsa),
            hidden, layer_scale_init(init_schedule, init_values, i + 1), cfg.drop_path)
            for i in range(depth)))
        self.cls_blocks = nn.ModuleList(ClassBlock(
            dim, ClassAttention(dim, heads, head_dim, cfg.qkv_bias, class_attn_talking,
                                talking_bias, lsa),
            hidden, layer_scale_init(init_schedule, init_values, i + 1), cls_drop_path,
            class_attn_context) for i in range(cls_depth))
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.head = nn.Linear(dim, cfg.num_classes) if cfg.num_classes else nn.Identity()
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        init_linears(self)  # the tokenizer's and the talking heads' too (as timm)

    def forward(self, img: Tensor) -> Tensor:
        """Images [B, C, H, W] -> logits [B, num_classes] (features if num_classes is 0)."""
        return self.head(self.features(img))

    def features(self, img: Tensor) -> Tensor:
        """Images -> the normalised [CLS] token after the class-attention blocks [B, dim]."""
        x = self.patch_embed(img)  # [B, gh, gw, C], often a permuted view of a conv's output
        # a row-major residual stream: the norms and the residual adds read it in order
        pos = self.patch_posemb((x.shape[1], x.shape[2]))
        x = self.blocks(x.flatten(1, 2).contiguous() + pos)
        # a tensor of its own: a view of the parameter made under no_grad would still
        # require grad, which module hooks (FLOP counting) reject
        cls = self.cls_token.repeat(x.shape[0], 1, 1)
        for block in self.cls_blocks:
            cls = block(x, cls)
        return self.norm(cls[:, 0])

    def patch_posemb(self, grid: tuple[int, int] | None = None) -> Tensor:
        """The position table [gh*gw, C] of the trained grid, or resized to `grid`."""
        table = self.pos_embed[0]
        if grid is None or tuple(grid) == self.grid_size:
            return table
        return resize_grid(table.view(*self.grid_size, -1), grid).flatten(0, 1)

    def lacks(self, need: str) -> str | None:
        """Why it cannot serve a visualizer's `need`: no attention maps over [CLS] and the
        patches; the position table it has."""
        if need not in NEEDS:
            raise ZooError(f"unknown visualizer need '{need}'; known: {', '.join(NEEDS)}")
        return LACKS.get(need)

    def no_weight_decay(self) -> set[str]:
        """The position table and [CLS] (timm's and the paper's choice); zoo's optimizer also
        exempts every vector (norms, biases, LayerScale gammas, LSA temperatures)."""
        return {"pos_embed", "cls_token"}


def check(cfg: ModelConfig, args: dict[str, Any]) -> int:
    """A one-line error for a value CaiT cannot take, naming its key; the head width."""
    where = "model.arch"
    for key in ("depth", "heads", "cls_depth"):
        if args[key] < 1:
            raise ZooError(f"{where}.{key}: {args[key]} must be at least 1")
    if args["init_values"] <= 0 or not 0 <= args["cls_drop_path"] < 1:
        raise ZooError(f"{where}: init_values must be > 0 and cls_drop_path in [0, 1), got "
                       f"{args['init_values']} and {args['cls_drop_path']}")
    for key, allowed in (("init_schedule", SCHEDULES), ("class_attn_context", CONTEXTS)):
        if args[key] not in allowed:
            raise ZooError(f"{where}.{key}: '{args[key]}' is not one of {', '.join(allowed)}")
    name, params = registry.parse_spec(cfg.attention, "model.attention")
    if name not in ("mhsa", "lsa") or params:
        raise ZooError(f"model.attention: arch 'cait' has its own talking-heads attention and "
                       f"takes mhsa (plain) or lsa (Lee et al.'s), without parameters, not "
                       f"{cfg.attention!r}")
    if args["head_dim"] is not None:
        if args["head_dim"] < 1:
            raise ZooError(f"{where}.head_dim: {args['head_dim']} must be at least 1 or null")
        return args["head_dim"]
    if cfg.dim % args["heads"]:
        raise ZooError(f"{where}.heads: {args['heads']} does not divide model.dim {cfg.dim}; "
                       "set head_dim or another number of heads")
    return cfg.dim // args["heads"]


_TIMM_TO_OURS = [(r"^patch_embed\.proj\.", "patch_embed."),
                 (r"^blocks_token_only\.", "cls_blocks.")]
_OURS_TO_TIMM = [(r"^patch_embed\.", "patch_embed.proj."),
                 (r"^cls_blocks\.", "blocks_token_only.")]


def _renamed(state: dict[str, Tensor], rules: list[tuple[str, str]]) -> dict[str, Tensor]:
    out = {}
    for key, value in state.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def _load(model: nn.Module, state: dict[str, Tensor], who: str) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ZooError(f"{who}: weights do not map: missing {missing}, unexpected {unexpected}")


def to_timm(model: CaiT) -> nn.Module:
    """timm's `Cait` holding `model`'s weights, with its logits; a one-line error for the
    settings timm cannot hold (without talking-heads biases, timm's are set to zero)."""
    from timm.models.cait import Cait

    cfg, tokenizer = model.cfg, registry.spec_name(model.cfg.tokenizer)
    attn, hidden = model.blocks[0].attn, model.blocks[0].mlp.fc1.out_features
    width = attn.qkv.out_features // 3
    bad = [what for what, wrong in (
        (f"tokenizer '{tokenizer}' (it has a conv patch embedding)", tokenizer != "patch"),
        ("attention 'lsa' (its temperature is fixed, nothing masked)", attn.mask_self),
        (f"head_dim {width // attn.heads} (its heads are dim / heads wide)", width != cfg.dim),
        ("class_attn_context 'patches'", model.cls_blocks[0].context != "all"),
        ("class_attn_talking", model.cls_blocks[0].attn.proj_l is not None),
        (f"mlp hidden size {hidden} (timm's is int(dim * mlp_ratio))",
         int(cfg.dim * (hidden / cfg.dim)) != hidden),
    ) if wrong]
    if bad:
        raise ZooError("to_timm: timm's Cait cannot hold " + "; ".join(bad))
    tm = Cait(img_size=cfg.img_size, patch_size=cfg.patch_size, in_chans=cfg.in_chans,
              num_classes=cfg.num_classes, embed_dim=cfg.dim, depth=len(model.blocks),
              num_heads=attn.heads, mlp_ratio=hidden / cfg.dim, qkv_bias=cfg.qkv_bias,
              drop_path_rate=cfg.drop_path, depth_token_only=len(model.cls_blocks),
              mlp_ratio_token_only=hidden / cfg.dim)
    state = _renamed(model.state_dict(), _OURS_TO_TIMM)
    for key, value in tm.state_dict().items():  # without talking-heads biases: timm's are zero
        if key.endswith(("proj_l.bias", "proj_w.bias")):
            state.setdefault(key, torch.zeros_like(value))
    _load(tm, state, "to_timm")
    w = next(model.parameters())
    return tm.to(device=w.device, dtype=w.dtype)


def from_timm(tm: nn.Module) -> CaiT:
    """Our CaiT with the config and weights of a timm `Cait` (its logits); a one-line error
    naming what it has that ours does not."""
    from timm.models.cait import Cait, ClassAttn, TalkingHeadAttn

    if not isinstance(tm, Cait):
        raise ZooError(f"from_timm: expected a timm Cait, got {type(tm).__name__}")
    pe, b0, c0 = tm.patch_embed, tm.blocks[0], tm.blocks_token_only[0]
    dim, hidden, cls_hidden = tm.embed_dim, b0.mlp.fc1.out_features, c0.mlp.fc1.out_features
    layers = (isinstance(b0.attn, TalkingHeadAttn) and isinstance(c0.attn, ClassAttn)
              and all(isinstance(b.mlp.act, nn.GELU) for b in (b0, c0)))
    bad = [what for what, wrong in (
        (f"global_pool '{tm.global_pool}'", tm.global_pool != "token"),
        ("a norm in the patch embedding", not isinstance(pe.norm, nn.Identity)),
        ("non-square patches or images", len({*pe.patch_size}) > 1 or len({*pe.img_size}) > 1),
        ("layers other than TalkingHeadAttn, ClassAttn and a GELU Mlp", not layers),
        (f"a class-attention MLP of {cls_hidden} (its patch MLP: {hidden})", cls_hidden != hidden),
        (f"LayerNorm eps {tm.norm.eps} (ours: {LN_EPS})", tm.norm.eps != LN_EPS),
    ) if wrong]
    if bad:
        raise ZooError("from_timm: our CaiT has no " + "; ".join(bad))
    params = {"depth": len(tm.blocks), "heads": b0.attn.num_heads,
              "cls_depth": len(tm.blocks_token_only)}
    exact = int(dim * (hidden / dim)) == hidden
    cfg = ModelConfig(arch={"cait": params}, img_size=pe.img_size[0], patch_size=pe.patch_size[0],
                      in_chans=pe.proj.in_channels, num_classes=tm.num_classes, dim=dim,
                      mlp_ratio=hidden / dim, mlp_dim=None if exact else hidden,
                      qkv_bias=b0.attn.qkv.bias is not None,
                      drop_path=getattr(b0.drop_path, "drop_prob", 0.0))
    ours = CaiT(cfg, **params)
    _load(ours, _renamed(tm.state_dict(), _TIMM_TO_OURS), "from_timm")
    w = next(tm.parameters())
    return ours.to(device=w.device, dtype=w.dtype)
