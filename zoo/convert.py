"""timm interop: turn a timm VisionTransformer into our ViT (and back) with identical outputs.

So that any pretrained timm ViT (AugReg, DINO, ...) can be studied and visualized with zoo's
code. Supported: the plain ViT of Dosovitskiy et al. 2020 as timm builds it by default
(class token, learned 1D position table or none, pre-norm blocks, GELU MLP,
`global_pool` 'token' or 'avg'), with standard or differential attention (timm's
`attn_layer='diff'`, Ye et al. 2025), with or without qkv bias. Anything else is refused by
name rather than converted approximately. Dropout and stochastic-depth rates are not carried
over: they do not change outputs in eval mode; set them in the config you fine-tune with.
"""

from __future__ import annotations

import math
import re
from typing import Any

from torch import Tensor, nn

from zoo.errors import ZooError, clip, suggest
from zoo.model import LN_EPS, ViT, build_model
from zoo.registry import spec_name

# state-dict key renames, timm -> ours (the reverse is applied by to_timm)
_TIMM_TO_OURS = [
    (r"^patch_embed\.proj\.", "patch_embed."),
    (r"^pos_embed$", "posemb.pos_embed"),
    (r"^fc_norm\.", "norm."),
    (r"\.attn\.sub_norm\.", ".attn.subln."),
]
_OURS_TO_TIMM = [
    (r"^patch_embed\.", "patch_embed.proj."),
    (r"^posemb\.pos_embed$", "pos_embed"),
    (r"\.attn\.subln\.", ".attn.sub_norm."),
]


def _rename(key: str, rules: list[tuple[str, str]]) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


def _unsupported(tm: nn.Module) -> list[str]:
    """Every feature of the timm model that our ViT does not have, in words."""
    from timm.layers import PatchEmbed

    bad = []
    if tm.num_reg_tokens:
        bad.append(f"register tokens (reg_tokens={tm.num_reg_tokens})")
    if not tm.has_class_token:
        bad.append("no class token (class_token=False)")
    if tm.no_embed_class:
        bad.append("position table without a class-token slot (no_embed_class=True)")
    if tm.global_pool not in ("token", "avg"):
        bad.append(f"global_pool={tm.global_pool!r} (supported: 'token', 'avg')")
    if getattr(tm, "pool_include_prefix", False):
        bad.append("pooling over prefix tokens (pool_include_prefix=True)")
    if not isinstance(tm.norm_pre, nn.Identity):
        bad.append("a norm before the blocks (pre_norm=True)")
    if not isinstance(tm.patch_drop, nn.Identity):
        bad.append("patch dropout (patch_drop_rate > 0)")
    final = tm.norm if tm.global_pool == "token" else tm.fc_norm
    other = tm.fc_norm if tm.global_pool == "token" else tm.norm
    if not isinstance(final, nn.LayerNorm) or not isinstance(other, nn.Identity):
        bad.append(
            "final norm placement (ours: after pooling, i.e. final_norm=True with fc_norm "
            "left at its default)"
        )
    pe = tm.patch_embed
    if not isinstance(pe, PatchEmbed) or not isinstance(pe.norm, nn.Identity):
        bad.append("a patch embedding other than timm's PatchEmbed without norm")
    else:
        if pe.proj.bias is None:
            bad.append("patch embedding without bias")
        if pe.patch_size[0] != pe.patch_size[1] or pe.img_size[0] != pe.img_size[1]:
            bad.append(f"non-square patches/images ({pe.patch_size}, {pe.img_size})")
        if pe.dynamic_img_pad:
            bad.append("dynamic_img_pad=True")
    for m in tm.modules():
        if isinstance(m, nn.LayerNorm) and (m.eps != LN_EPS or m.weight is None or m.bias is None):
            bad.append(f"LayerNorm other than affine with eps={LN_EPS} (found eps={m.eps})")
            break
    kinds = {type(b.attn) for b in tm.blocks}
    if len(kinds) > 1:
        bad.append("mixed attention types across blocks")
    for i, b in enumerate(tm.blocks):
        bad += _unsupported_in_block(b, f"blocks.{i}", tm.embed_dim)
        if bad:
            break
    return bad


def _unsupported_in_block(b: nn.Module, where: str, dim: int) -> list[str]:
    """What block `where` has that ours does not, in words."""
    from timm.layers import DiffAttention, LayerScale, Mlp
    from timm.models.vision_transformer import Attention, Block

    bad = []
    if type(b) is not Block:
        return [f"{where}: block type {type(b).__name__} (supported: Block)"]
    if isinstance(b.ls1, LayerScale) or isinstance(b.ls2, LayerScale):
        bad.append(f"{where}: layer scale (init_values)")
    a = b.attn
    if type(a) not in (Attention, DiffAttention):
        bad.append(f"{where}: attention type {type(a).__name__} (supported: Attention, DiffAttention)")
    else:
        if a.qkv.out_features != 3 * dim or a.proj.in_features != dim:
            bad.append(f"{where}: attention width other than dim (attn_head_dim)")
        if not (isinstance(a.q_norm, nn.Identity) and isinstance(a.k_norm, nn.Identity)):
            bad.append(f"{where}: qk_norm=True")
        if not isinstance(a.norm, nn.Identity):
            bad.append(f"{where}: scale_attn_norm=True")
        if getattr(a, "gate", None) is not None:
            bad.append(f"{where}: gated attention")
        if a.proj.bias is None:
            bad.append(f"{where}: proj_bias=False")
        if isinstance(a, DiffAttention) and a.dual_lambda:
            bad.append(f"{where}: dual_lambda=True (ours: the paper's four lambda vectors)")
    m = b.mlp
    if type(m) is not Mlp or not isinstance(m.norm, nn.Identity):
        bad.append(f"{where}: MLP other than timm's Mlp without norm")
    elif type(m.act) is not nn.GELU or m.act.approximate != "none":
        bad.append(f"{where}: MLP activation {m.act} (ours: exact GELU)")
    elif m.fc1.bias is None or m.fc2.bias is None:
        bad.append(f"{where}: MLP without bias")
    return bad


def check_timm_name(name: str, where: str) -> None:
    """`name` is a timm architecture, and its `.tag` (if any) one of its pretrained weights;
    a one-line ZooError at `where` otherwise, with the closest name or the tags there are."""
    import timm

    arch = name.split(".")[0]
    if not timm.is_model(arch):
        raise ZooError(f"{where}: unknown timm model '{clip(name)}'{suggest(arch, timm.list_models())}")
    if "." in name and not timm.list_pretrained(name):
        known = ", ".join(timm.list_pretrained(f"{arch}.*")) or "none"
        raise ZooError(f"{where}: unknown pretrained tag '{clip(name)}'; {arch} has: {known}")


def how_to_get(name: str, option: str) -> str:
    """How to get timm's pretrained NAME as a file where there is a network, for `option`."""
    file = name.replace("/", "_") + ".pth"
    use = f"pass {option}" if option.startswith("--") else f"set {option}:"
    return (f"where there is a network run `python -c \"import timm, torch; torch.save(timm."
            f"create_model('{name}', pretrained=True).state_dict(), '{file}')\"` and {use} {file}")


def timm_vit(name: str, weights: str | None, option: str) -> nn.Module:
    """timm's NAME in eval mode: pretrained through timm (the hub), or, offline, with the
    timm state dict in the file `weights` (given by `option`). A file saved from a variant
    of NAME (fewer blocks, another head or image size) builds the model it fits; width,
    heads and everything else are NAME's."""
    import timm

    from zoo.io import quiet_hub_retries, read_state_dict

    check_timm_name(name, f"timm:{name}")
    if weights is None:
        try:
            with quiet_hub_retries():
                return timm.create_model(name, pretrained=True).eval()
        except Exception as e:  # no network, no cache: hub, HTTP and file errors alike
            raise ZooError(f"timm:{name}: cannot get pretrained weights ({type(e).__name__}); "
                           f"{how_to_get(name, option)}") from e
    state = read_state_dict(weights, option if option.startswith("--") else f"{option}:")
    try:
        tm = timm.create_model(name, **_timm_sizes(state))
        tm.load_state_dict(state)
    except (RuntimeError, ValueError, AssertionError) as e:  # shapes or sizes that do not fit
        last = str(e).strip().splitlines()[-1].strip() if str(e).strip() else type(e).__name__
        raise ZooError(f"{option} {weights}: does not fit timm:{name} ({clip(last, 120)})") from e
    return tm.eval()


def _timm_sizes(state: dict[str, Tensor]) -> dict[str, int]:
    """The sizes a timm ViT's tensors tell (depth, classes, patch and image size), so that a
    file saved from a variant of NAME (fewer blocks, another head, another image size)
    builds the model it fits; the width, heads and everything else are NAME's."""
    sizes = {"depth": len({k.split(".")[1] for k in state if k.startswith("blocks.")}),
             "num_classes": len(state["head.weight"]) if "head.weight" in state else 0}
    kernel, table = state.get("patch_embed.proj.weight"), state.get("pos_embed")
    if kernel is not None and table is not None and kernel.ndim == 4 and table.ndim == 3:
        grid = math.isqrt(table.shape[1] - 1)  # after one class token, as from_timm requires
        sizes.update(patch_size=kernel.shape[-1], img_size=grid * kernel.shape[-1])
    return sizes


def from_timm(timm_model: nn.Module) -> ViT:
    """Our ViT with the config and weights of a timm `VisionTransformer`; same outputs.

    Raises ZooError naming every timm feature our ViT does not have.
    """
    from timm.layers import DiffAttention
    from timm.models.vision_transformer import VisionTransformer

    tm = timm_model
    if not isinstance(tm, VisionTransformer):
        raise ZooError(f"from_timm: expected a timm VisionTransformer, got {type(tm).__name__}")
    bad = _unsupported(tm)
    if bad:
        raise ZooError("from_timm: unsupported timm ViT features: " + "; ".join(bad))

    blocks = list(tm.blocks)
    a0 = blocks[0].attn
    dim = tm.embed_dim
    hidden = blocks[0].mlp.fc1.out_features
    cfg = {
        "img_size": tm.patch_embed.img_size[0],
        "patch_size": tm.patch_embed.patch_size[0],
        "in_chans": tm.patch_embed.proj.in_channels,
        "num_classes": tm.num_classes,
        "dim": dim,
        "depth": len(blocks),
        "heads": a0.num_heads,
        "mlp_ratio": hidden / dim,
        "mlp_dim": None if int(dim * (hidden / dim)) == hidden else hidden,
        "qkv_bias": a0.qkv.bias is not None,
        "pool": "cls" if tm.global_pool == "token" else "mean",
        "attention": "diff" if isinstance(a0, DiffAttention) else "mhsa",
        "posemb": "none" if tm.pos_embed is None else "learned_1d",
    }
    ours = build_model(cfg)
    if isinstance(a0, DiffAttention):  # lambda_init: the paper's schedule (ours by default), or one value
        inits = [b.attn.lambda_init for b in blocks]
        if not all(math.isclose(a.attn.lambda_init, v) for a, v in zip(ours.blocks, inits, strict=True)):
            if any(not math.isclose(v, inits[0]) for v in inits):
                raise ZooError("from_timm: per-layer lambda_init values follow neither the paper's "
                               f"schedule nor one constant: {inits}")
            ours = build_model({**cfg, "attention": {"diff": {"lambda_init": inits[0]}}})
    state = {_rename(k, _TIMM_TO_OURS): v for k, v in tm.state_dict().items()}
    _load(ours, state, "from_timm")
    p = next(tm.parameters())
    return ours.to(device=p.device, dtype=p.dtype)


def to_timm(model: ViT) -> nn.Module:
    """The timm `VisionTransformer` equal to our ViT (learned_1d or no posemb; mhsa or diff)."""
    from timm.models.vision_transformer import VisionTransformer

    cfg = model.cfg
    name, posemb = spec_name(cfg.attention), spec_name(cfg.posemb)
    hidden = model.blocks[0].mlp.fc1.out_features
    bad = []
    if name not in ("mhsa", "diff"):
        bad.append(f"attention '{name}'")
    if posemb not in ("learned_1d", "none"):
        bad.append(f"posemb '{posemb}' (timm has a learned 1D table or none)")
    if int(cfg.dim * (hidden / cfg.dim)) != hidden:
        bad.append(f"mlp_dim {hidden} (timm's hidden size is int(dim * mlp_ratio))")
    if bad:
        raise ZooError("to_timm: no timm equivalent for " + "; ".join(bad))
    tm = VisionTransformer(
        img_size=cfg.img_size, patch_size=cfg.patch_size, in_chans=cfg.in_chans,
        num_classes=cfg.num_classes, global_pool="token" if spec_name(cfg.pool) == "cls" else "avg",
        embed_dim=cfg.dim, depth=cfg.depth, num_heads=cfg.heads, mlp_ratio=hidden / cfg.dim,
        qkv_bias=cfg.qkv_bias, pos_embed="learn" if posemb == "learned_1d" else "none",
        attn_layer="diff" if name == "diff" else "attn",
    )
    rules = _OURS_TO_TIMM + ([(r"^norm\.", "fc_norm.")] if spec_name(cfg.pool) == "mean" else [])
    _load(tm, {_rename(k, rules): v for k, v in model.state_dict().items()}, "to_timm")
    if name == "diff":
        for ours, theirs in zip(model.blocks, tm.blocks, strict=True):
            theirs.attn.lambda_init = ours.attn.lambda_init
    p = next(model.parameters())
    return tm.to(device=p.device, dtype=p.dtype)


def _load(model: nn.Module, state: dict[str, Any], who: str) -> None:
    """load_state_dict that reports a mapping gap as a ZooError naming the keys."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ZooError(f"{who}: weights do not map: missing {missing}, unexpected {unexpected}")
