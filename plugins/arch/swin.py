"""swin: the Swin Transformer, a hierarchy of windowed-attention stages.

Liu et al. 2021, "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows"
(https://arxiv.org/abs/2103.14030). Read top to bottom:

    image [B, 3, H, W]
      -> patch embedding: tokenizer `patch` (a conv) + LayerNorm, or `spt`     [B, h, w, C]
      -> (+ an absolute position table, `ape`), dropout
      -> stage 0: depths[0] blocks at C; stage i > 0: patch merging (2x2 tokens -> one,
         channels 2x), then depths[i] blocks. A block: x + attn(norm1(x)), x + mlp(norm2(x)),
         attn over windows (zoo.layers.window), shifted by half a window every other block
      -> final norm, mean over the tokens, linear head -> [B, classes]

Tokens stay on their grid, channels last [B, H, W, C], from the embedding to the pool.
`to_timm` / `from_timm` convert to and from timm's `SwinTransformer` with the same logits.
"""

from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo import registry
from zoo.errors import ZooError
from zoo.kinds import NEEDS
from zoo.layers import MLP, DropPath
from zoo.layers.init import init_linears
from zoo.layers.window import WindowAttention
from zoo.registry import register
from zoo.schema import ModelConfig

WHERE = "model.arch.swin"
TOKENIZERS = ("patch", "spt")
LACKS = {
    "attention_maps": "swin's attention is windowed (each token sees its window only): it has "
                      "no global attention maps",
    "cls_token": "swin has no [CLS] token: it averages its last stage's tokens",
    "position_table": "swin's positions are relative biases inside each window, and its "
                      "optional absolute table feeds the first stage only: no per-patch table "
                      "of the tokens it pools",
}


class Block(nn.Module):
    """Pre-norm Swin block: x + drop_path(attn(norm1(x))), x + drop_path(mlp(norm2(x)))."""

    def __init__(self, dim: int, heads: int, res: int, window: int, shift: int, hidden: int,
                 cfg: ModelConfig, lsa: bool, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, res, window, shift, cfg.qkv_bias,
                                    cfg.attn_dropout, cfg.dropout, lsa)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, hidden, cfg.dropout)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, H, W, C] -> [B, H, W, C]."""
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def even(x: Tensor) -> Tensor:
    """A grid [B, H, W, C] with a zero row / column added where H / W is odd (as timm's merging)."""
    h, w = x.shape[1] % 2, x.shape[2] % 2
    return F.pad(x, (0, 0, 0, w, 0, h)) if h or w else x  # F.pad copies even when it adds nothing


class PatchMerging(nn.Module):
    """2x2 neighbouring tokens -> one of twice the channels (Liu et al. 2021, Sec. 3.1): the
    four concatenated as x0 (0, 0), x1 (1, 0), x2 (0, 1), x3 (1, 1) (row, column offsets),
    LayerNorm(4C), Linear(4C -> 2C) without bias. An odd grid gets a zero row/column (timm)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, H, W, C] -> [B, ceil(H/2), ceil(W/2), 2C]."""
        x = even(x)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


class TokenMerging(nn.Module):
    """A tokenizer applied to the grid of tokens (SL-Swin's patch merging: SPT over 2x2
    tokens of C channels -> 2C), zero-padded to even sides as PatchMerging."""

    def __init__(self, spec: Any, dim: int, res: int):
        super().__init__()
        self.tokens = registry.build("tokenizer", spec, path="model.tokenizer", in_chans=dim,
                                     dim=2 * dim, patch_size=2, img_size=res + res % 2)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, H, W, C] -> [B, ceil(H/2), ceil(W/2), 2C]."""
        x = even(x)
        return self.tokens(x.permute(0, 3, 1, 2))


class Stage(nn.Module):
    """Patch merging (stages after the first), then blocks alternating plain and shifted
    windows; the window clamps to the grid where the grid is no larger (then no shift)."""

    def __init__(self, cfg: ModelConfig, dim: int, res: int, depth: int, heads: int,
                 window: int, rates: list[float], merge: nn.Module | None, stage: int):
        super().__init__()
        self.downsample = merge
        if window >= res:
            window, shift = res, 0
        elif res % window:
            raise ZooError(f"{WHERE}.window: {window} does not divide the {res}x{res} token grid "
                           f"of stage {stage} (img_size {cfg.img_size}, patch_size "
                           f"{cfg.patch_size}); choose a divisor of {res}, or {res} or more")
        else:
            shift = window // 2
        lsa, hidden = registry.spec_name(cfg.attention) == "lsa", int(dim * cfg.mlp_ratio)
        self.blocks = nn.Sequential(*(
            Block(dim, heads, res, window, shift if i % 2 else 0, hidden, cfg, lsa, rates[i])
            for i in range(depth)))

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x if self.downsample is None else self.downsample(x))


def check(cfg: ModelConfig, embed_dim: int, depths: list[int], heads: list[int],
          window: int) -> None:
    """A size Swin cannot take is a one-line error naming its key."""
    if embed_dim < 1 or window < 1:
        raise ZooError(f"{WHERE}: embed_dim and window must be at least 1, got {embed_dim} "
                       f"and {window}")
    if not depths or min(depths) < 1 or len(heads) != len(depths) or min(heads) < 1:
        raise ZooError(f"{WHERE}: depths and heads need one count (at least 1) per stage, as "
                       f"depths [2, 2, 6, 2], heads [3, 6, 12, 24]; got {depths} and {heads}")
    for i, h in enumerate(heads):
        if (embed_dim * 2**i) % h:
            raise ZooError(f"{WHERE}.heads: {h} heads do not divide stage {i}'s width "
                           f"{embed_dim * 2**i} (embed_dim {embed_dim} x 2^{i})")
    name, params = registry.parse_spec(cfg.attention, "model.attention")
    if name not in ("mhsa", "lsa") or params:
        raise ZooError(f"model.attention: arch 'swin' has its own window attention and takes "
                       f"mhsa (plain) or lsa (Lee et al.'s), without parameters, not {cfg.attention!r}")
    if registry.spec_name(cfg.tokenizer) not in TOKENIZERS:
        raise ZooError(f"model.tokenizer: arch 'swin' takes patch (a conv and LayerNorm) or spt "
                       f"(SL-Swin: it merges patches too), not {cfg.tokenizer!r}")


@register("arch", "swin")
class Swin(nn.Module):
    """Swin Transformer (Liu et al. 2021); the defaults are Swin-T's (embed_dim 96, depths
    [2, 2, 6, 2], heads [3, 6, 12, 24], window 7; patch 4 and mlp_ratio 4 in model: keys).

    A stage's window clamps to its grid where the grid is no larger (as timm), so small
    images work; a window that neither covers nor divides a stage's grid is an error. Lee et
    al.'s CIFAR Swin (SPT_LSA_ViT models/swin.py) is `patch_size: 2, mlp_ratio: 2, drop_path:
    0.1` with `{swin: {window: 4, depths: [2, 6, 4], heads: [3, 6, 12], ape: true}}`;
    `tokenizer: spt, attention: lsa` make it SL-Swin (SPT embeds the patches and merges them).

    - embed_dim: stage 0's width, doubled by each merging; depths, heads: per stage
    - window: tokens per window side; every other block shifts by window // 2
    - ape: an absolute position table (trunc_normal 0.02) added to the embedded patches
    model.dropout drops after the embedding, the attention's projection and in the MLP (the
    paper's drop_rate), model.attn_dropout the attention probabilities.
    Init as timm and the paper's code: Linear trunc_normal 0.02 with zero bias, conv and norm
    PyTorch's (Lee et al. keep PyTorch's default Linear init). LayerNorm eps 1e-5.
    """

    uses = ("patch_size", "mlp_ratio", "drop_path", "drop_path_schedule", "qkv_bias", "dropout",
            "attn_dropout", "tokenizer", "attention")

    def __init__(self, cfg: ModelConfig, embed_dim: int = 96, depths: list[int] = (2, 2, 6, 2),
                 heads: list[int] = (3, 6, 12, 24), window: int = 7, ape: bool = False):
        super().__init__()
        check(cfg, embed_dim, list(depths), list(heads), window)
        self.cfg, self.num_classes = cfg, cfg.num_classes
        self.embed_dim, self.window = embed_dim, window  # as asked (stages may clamp the window)
        self.patch_embed = registry.build(
            "tokenizer", cfg.tokenizer, path="model.tokenizer", in_chans=cfg.in_chans,
            dim=embed_dim, patch_size=cfg.patch_size, img_size=cfg.img_size)
        spt = registry.spec_name(cfg.tokenizer) == "spt"
        self.patch_norm = nn.Identity() if spt else nn.LayerNorm(embed_dim)
        self.grid_size = tuple(self.patch_embed.grid(cfg.img_size, cfg.img_size))
        res = self.grid_size[0]
        self.absolute_pos_embed = nn.Parameter(torch.zeros(1, res * res, embed_dim)) if ape else None
        self.pos_drop = nn.Dropout(cfg.dropout)
        total = sum(depths)  # stochastic depth: 0 -> drop_path over all blocks (or constant)
        rates = (torch.linspace(0, cfg.drop_path, total).tolist()
                 if cfg.drop_path_schedule == "linear" else [cfg.drop_path] * total)
        stages, dim, first = [], embed_dim, 0
        for i, (depth, h) in enumerate(zip(depths, heads, strict=True)):
            merge = None
            if i:
                merge = TokenMerging(cfg.tokenizer, dim, res) if spt else PatchMerging(dim)
                dim, res = 2 * dim, (res + 1) // 2
            stages.append(Stage(cfg, dim, res, depth, h, window, rates[first:first + depth],
                                merge, i))
            first += depth
        self.layers = nn.Sequential(*stages)
        self.num_features = dim
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, cfg.num_classes) if cfg.num_classes else nn.Identity()
        if self.absolute_pos_embed is not None:
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        init_linears(self)  # the tokenizer's Linear too

    def forward(self, img: Tensor) -> Tensor:
        """Images [B, C, H, W] -> logits [B, num_classes] (features if num_classes is 0)."""
        return self.head(self.features(img))

    def features(self, img: Tensor) -> Tensor:
        """Images at the built size -> the normalised tokens of the last stage, averaged [B, F]."""
        x = self.patch_norm(self.patch_embed(img))  # [B, h, w, C]
        if tuple(x.shape[1:3]) != self.grid_size:
            raise ZooError(f"swin was built for {self.cfg.img_size}x{self.cfg.img_size} images "
                           f"(its windows and masks fit that grid), got {tuple(img.shape[-2:])}")
        if self.absolute_pos_embed is not None:
            x = x + self.absolute_pos_embed.view(1, *self.grid_size, -1)
        x = self.norm(self.layers(self.pos_drop(x)))
        return x.mean(dim=(1, 2))

    def lacks(self, need: str) -> str | None:
        """Every visualizer need, with its reason: windowed attention, no [CLS], no table
        of the tokens it pools."""
        if need not in NEEDS:
            raise ZooError(f"unknown visualizer need '{need}'; known: {', '.join(NEEDS)}")
        return LACKS[need]

    def no_weight_decay(self) -> set[str]:
        """The relative position tables and the absolute one (the paper's code skips both,
        timm the tables); zoo's optimizer also exempts every vector (norms, biases, LSA
        temperatures; Lee et al. decay everything: `train.decay: all`)."""
        return {n for n, _ in self.named_parameters()
                if n.endswith("relative_position_bias_table") or n == "absolute_pos_embed"}


TIMM_TO_OURS = [(r"^patch_embed\.proj\.", "patch_embed."), (r"^patch_embed\.norm\.", "patch_norm."),
                (r"^head\.fc\.", "head.")]
OURS_TO_TIMM = [(r"^patch_embed\.", "patch_embed.proj."), (r"^patch_norm\.", "patch_embed.norm."),
                (r"^head\.", "head.fc.")]


def rename(key: str, rules: list[tuple[str, str]]) -> str:
    """A state-dict key in the other model's names (TIMM_TO_OURS or OURS_TO_TIMM); the rest,
    blocks included, are named alike."""
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


def _load(model: nn.Module, state: dict[str, Tensor], rules: list[tuple[str, str]],
          who: str) -> None:
    """The renamed state into `model`, every key taken and every key filled, else one line."""
    renamed = {rename(k, rules): v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(renamed, strict=False)
    if missing or unexpected:
        raise ZooError(f"{who}: weights do not map: missing {missing}, unexpected {unexpected}")


def to_timm(model: Swin) -> nn.Module:
    """timm's `SwinTransformer` holding `model`'s weights (its logits); a one-line error for
    what timm's cannot hold (an absolute table, SPT, LSA, a constant drop-path rate). timm
    has no dropout after the embedding: with model.dropout, training draws differ there."""
    from timm.models.swin_transformer import SwinTransformer

    cfg = model.cfg
    bad = [what for what, wrong in (
        ("an absolute position table (ape)", model.absolute_pos_embed is not None),
        (f"tokenizer '{registry.spec_name(cfg.tokenizer)}'", registry.spec_name(cfg.tokenizer) != "patch"),
        ("attention 'lsa'", registry.spec_name(cfg.attention) != "mhsa"),
        ("drop_path_schedule 'uniform'", cfg.drop_path_schedule != "linear" and cfg.drop_path > 0),
    ) if wrong]
    if bad:
        raise ZooError("to_timm: timm's SwinTransformer cannot hold " + "; ".join(bad))
    stages = list(model.layers)
    tm = SwinTransformer(
        img_size=cfg.img_size, patch_size=cfg.patch_size, in_chans=cfg.in_chans,
        num_classes=cfg.num_classes, embed_dim=model.embed_dim,
        depths=tuple(len(s.blocks) for s in stages),
        num_heads=tuple(s.blocks[0].attn.heads for s in stages), window_size=model.window,
        mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias, proj_drop_rate=cfg.dropout,
        attn_drop_rate=cfg.attn_dropout, drop_path_rate=cfg.drop_path)
    _load(tm, model.state_dict(), OURS_TO_TIMM, "to_timm")
    w = next(model.parameters())
    return tm.to(device=w.device, dtype=w.dtype)


def from_timm(tm: nn.Module) -> Swin:
    """Our Swin with the config and weights of a timm `SwinTransformer` (its logits); a
    one-line error naming what it has that ours does not."""
    from timm.models.swin_transformer import SwinTransformer

    if not isinstance(tm, SwinTransformer):
        raise ZooError(f"from_timm: expected a timm SwinTransformer, got {type(tm).__name__}")
    pe, stages = tm.patch_embed, list(tm.layers)
    b0, dim = stages[0].blocks[0], tm.embed_dim
    bad = [what for what, wrong in (
        (f"global_pool '{tm.global_pool}'", tm.global_pool != "avg"),
        ("non-square patches or images", pe.patch_size[0] != pe.patch_size[1] or pe.img_size[0] != pe.img_size[1]),
        ("attention wider or narrower than the stage", b0.attn.qkv.out_features != 3 * dim),
        (f"LayerNorm eps {tm.norm.eps} (ours: 1e-5)", getattr(tm.norm, "eps", None) != 1e-5),
        (f"head dropout {tm.head.drop.p}", tm.head.drop.p > 0),
    ) if wrong]
    if bad:
        raise ZooError("from_timm: our Swin has no " + "; ".join(bad))
    params = {"embed_dim": dim, "depths": [len(s.blocks) for s in stages],
              "heads": [s.blocks[0].attn.num_heads for s in stages],
              "window": b0.window_size[0]}  # clamped at stage 0 only where it covers the grid
    last = stages[-1].blocks[-1]
    cfg = ModelConfig(arch={"swin": params}, img_size=pe.img_size[0], patch_size=pe.patch_size[0],
                      in_chans=pe.proj.in_channels, num_classes=tm.num_classes,
                      mlp_ratio=b0.mlp.fc1.out_features / dim, qkv_bias=b0.attn.qkv.bias is not None,
                      dropout=b0.mlp.drop1.p, attn_dropout=b0.attn.attn_drop.p,
                      drop_path=round(getattr(last.drop_path1, "drop_prob", 0.0), 6))  # timm: float32
    ours = Swin(cfg, **params)
    theirs = [(tuple(b.window_size), tuple(b.shift_size)) for s in stages for b in s.blocks]
    mine = [((b.attn.window,) * 2, (b.attn.shift,) * 2) for s in ours.layers for b in s.blocks]
    if mine != theirs:
        raise ZooError(f"from_timm: windows and shifts per block {theirs} are not one window "
                       f"clamped per stage as ours are: {mine}")
    _load(ours, tm.state_dict(), TIMM_TO_OURS, "from_timm")
    w = next(tm.parameters())
    return ours.to(device=w.device, dtype=w.dtype)
