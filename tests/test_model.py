"""The from-scratch ViT and Diff-ViT: timm equality, attention paths, plugins, training.

timm is the oracle here: a random timm ViT (standard or diff attention) converted with
`from_timm` must give timm's logits. The last section trains every attention x posemb
combination for a few steps.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch.nn.attention import SDPBackend, sdpa_kernel

from zoo import registry
from zoo.convert import from_timm, to_timm
from zoo.errors import ZooError
from zoo.layers import DropPath
from zoo.model import ViT, build_model

SMALL = dict(img_size=16, patch_size=4, num_classes=5, dim=32, depth=3, heads=4, mlp_ratio=2.0)
POSEMBS = ["none", "learned_1d", "learned_2d", "sinusoidal", {"sinusoidal": {"dims": 1}}]


@pytest.fixture(autouse=True)
def one_thread():
    """Small models run faster on one thread, and stay fast when other jobs share the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def timm_vit(**kw) -> VisionTransformer:
    """A small timm ViT with every weight random (timm starts cls/pos near zero)."""
    args = dict(img_size=16, patch_size=4, num_classes=5, embed_dim=32, depth=3, num_heads=4,
                mlp_ratio=2.0)
    model = VisionTransformer(**{**args, **kw}).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model


def images(n: int = 2, size: int = 16) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------- timm interop


@pytest.mark.parametrize("attn", ["attn", "diff"])
@pytest.mark.parametrize("pool", ["token", "avg"])
@pytest.mark.parametrize("qkv_bias", [True, False])
def test_from_timm_gives_timms_logits(attn: str, pool: str, qkv_bias: bool) -> None:
    heads = 2 if attn == "diff" else 4
    theirs = timm_vit(attn_layer=attn, num_heads=heads, global_pool=pool, qkv_bias=qkv_bias)
    ours = from_timm(theirs).eval()
    assert ours.cfg.attention == ("diff" if attn == "diff" else "mhsa")
    assert ours.cfg.pool == ("cls" if pool == "token" else "mean")
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(to_timm(ours).eval()(x), theirs(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("attn", ["attn", "diff"])
def test_from_timm_resizes_positions_like_timm(attn: str) -> None:
    theirs = timm_vit(attn_layer=attn, num_heads=2, dynamic_img_size=True)
    ours = from_timm(theirs).eval()
    x = images(size=24)  # a 6x6 grid for a table trained on 4x4
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=0)


def test_from_timm_without_head_or_position_table() -> None:
    theirs = timm_vit(num_classes=0, pos_embed="none")
    ours = from_timm(theirs).eval()
    assert ours.cfg.posemb == "none" and ours.patch_posemb() is None
    with torch.no_grad():
        torch.testing.assert_close(ours(images()), theirs(images()), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(reg_tokens=2), "register tokens"),
        (dict(class_token=False, global_pool="avg"), "no class token"),
        (dict(init_values=1e-5), "layer scale"),
        (dict(qk_norm=True), "qk_norm"),
        (dict(global_pool="max"), "global_pool='max'"),
    ],
)
def test_from_timm_names_what_it_cannot_convert(kw: dict, words: str) -> None:
    with pytest.raises(ZooError, match="unsupported") as e:
        from_timm(timm_vit(**kw))
    assert words in str(e.value)


# --------------------------------------------------------------------------- attention


@pytest.mark.parametrize("attention, heads", [("mhsa", 4), ("diff", 2)])
def test_fused_and_explicit_paths_agree(attention: str, heads: int) -> None:
    """Outputs and gradients of the SDPA path equal those of our written-out path."""
    registry.discover()
    torch.manual_seed(0)
    attn = registry.build("attention", attention, dim=32, heads=heads, layer=2, depth=3,
                          qkv_bias=True, attn_drop=0.0)
    attn.sdpa_on_cpu = True  # diff runs its explicit path on CPU unless told otherwise
    x = torch.randn(3, 17, 32, requires_grad=True)
    fused = attn(x)
    (gx_fused,) = torch.autograd.grad(fused.square().sum(), x)
    explicit, maps = attn(x, return_attn=True)
    (gx_explicit,) = torch.autograd.grad(explicit.square().sum(), x)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx_fused, gx_explicit, atol=1e-5, rtol=1e-5)
    assert maps["attn"].shape == (3, heads, 17, 17)
    if attention == "diff":  # and the default CPU forward (explicit) is the same function
        attn.sdpa_on_cpu = False
        torch.testing.assert_close(attn(x), fused, atol=1e-5, rtol=1e-5)


def diff_attention(attn_drop: float = 0.0, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """Differential attention with 3 heads of width 2 x 8 and random lambda vectors."""
    registry.discover()
    torch.manual_seed(0)
    attn = registry.build("attention", "diff", dim=48, heads=3, layer=2, depth=3, qkv_bias=True,
                          attn_drop=attn_drop)
    attn.sdpa_on_cpu = True
    return attn.to(dtype)


@pytest.mark.parametrize("attn_drop, train", [(0.0, True), (0.3, False)], ids=["p0", "eval"])
def test_diff_fused_path_equals_explicit_in_float64(attn_drop: float, train: bool) -> None:
    """The one-call SDPA path (4h heads of width d) is the explicit path: outputs, the input
    gradient and every parameter gradient agree to float64 rounding, with attention dropout
    off (p = 0 in training, or p > 0 in eval mode)."""
    attn = diff_attention(attn_drop, torch.float64).train(train)
    x = torch.randn(2, 17, 48, dtype=torch.float64, requires_grad=True)
    grads = []
    for return_attn in (False, True):
        out = attn(x, return_attn=return_attn)
        out = out[0] if return_attn else out
        grads.append((out, *torch.autograd.grad(out.square().sum(), [x, *attn.parameters()])))
    names = ["out", "x", *(n for n, _ in attn.named_parameters())]
    for name, fused, explicit in zip(names, *grads, strict=True):
        torch.testing.assert_close(fused, explicit, atol=1e-12, rtol=1e-10, msg=name)


def test_diff_fused_path_is_one_flash_call_without_indexing() -> None:
    """Equal head widths let SDPA's flash kernel run (it refuses values wider than keys);
    the backward graph has one SDPA node and no zero-filling select backward."""
    attn = diff_attention()
    x = torch.randn(2, 17, 48, requires_grad=True)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # raises "No available kernel" otherwise
        out = attn(x)
        out.sum().backward()
    nodes, todo = set(), [out.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is not None and fn not in nodes:
            nodes.add(fn)
            todo.extend(f for f, _ in fn.next_functions)
    names = [type(fn).__name__ for fn in nodes]
    assert sum("ScaledDotProduct" in n for n in names) == 1, names
    assert not any("Select" in n or "Index" in n for n in names), names


def test_lambda_init_follows_the_paper_per_layer() -> None:
    model = build_model({**SMALL, "depth": 4, "heads": 2, "attention": "diff"})
    expected = [0.8 - 0.6 * math.exp(-0.3 * (layer - 1)) for layer in range(1, 5)]
    got = [b.attn.lambda_init for b in model.blocks]
    assert got == pytest.approx(expected)
    assert got[0] == pytest.approx(0.2)
    # lambda = exp(q1.k1) - exp(q2.k2) + lambda_init, the vectors drawn from N(0, 0.1)
    a = model.blocks[2].attn
    with torch.no_grad():
        lam = math.exp(a.lambda_q1 @ a.lambda_k1) - math.exp(a.lambda_q2 @ a.lambda_k2) + got[2]
        assert 0.05 < float(torch.cat([a.lambda_q1, a.lambda_k2]).std()) < 0.2
    assert float(model.lambdas()[2]) == pytest.approx(lam, abs=1e-6)
    fixed = build_model({**SMALL, "heads": 2, "attention": {"diff": {"lambda_init": 0.5}}})
    assert {b.attn.lambda_init for b in fixed.blocks} == {0.5}
    assert build_model(SMALL).lambdas() == []


def test_diff_vit_with_half_the_heads_has_nearly_the_vits_parameters() -> None:
    """CIFAR size. Extra per layer: four lambda vectors (4d) + the RMSNorm scale (2d).

    Tolerance: 0.1% of the ViT's parameters (the real gap is 864 of 2.7M, 0.03%).
    """
    cifar = dict(img_size=32, patch_size=4, dim=192, depth=9, mlp_ratio=2.0)
    vit = build_model({**cifar, "heads": 12, "attention": "mhsa"})
    dif = build_model({**cifar, "heads": 6, "attention": "diff"})
    n_vit, n_dif = (sum(p.numel() for p in m.parameters()) for m in (vit, dif))
    d = 192 // 6 // 2
    assert n_dif - n_vit == 9 * 6 * d
    assert abs(n_dif - n_vit) / n_vit < 1e-3


@pytest.mark.parametrize("attention, heads", [("mhsa", 4), ("diff", 2)])
def test_attention_maps_rows_sum_to_one_or_one_minus_lambda(attention: str, heads: int) -> None:
    model = build_model({**SMALL, "heads": heads, "attention": attention}).eval()
    with torch.no_grad():
        maps = model.attention_maps(images())
        details = model.attention_maps(images(), details=True)
    assert len(maps) == 3
    for layer, attn in enumerate(maps):
        assert attn.shape == (2, heads, 17, 17)
        rows = attn.sum(-1)
        if attention == "mhsa":
            torch.testing.assert_close(rows, torch.ones_like(rows))
        else:
            lam = details[layer]["lam"]
            assert float(lam) == pytest.approx(float(model.lambdas()[layer]))
            torch.testing.assert_close(rows, (1 - lam).expand_as(rows))
            for key in ("attn1", "attn2"):
                torch.testing.assert_close(details[layer][key].sum(-1), torch.ones_like(rows))
            diff = details[layer]["attn1"] - lam * details[layer]["attn2"]
            torch.testing.assert_close(attn, diff)


def test_bad_plugin_parameter_names_its_recipe_path() -> None:
    with pytest.raises(ZooError) as e:
        build_model({**SMALL, "heads": 2, "attention": {"diff": {"lamda_init": 0.5}}})
    assert "model.attention.lamda_init" in str(e.value)
    assert "lambda_init" in str(e.value).replace("lamda_init", "")


def test_bad_model_key_and_values_are_zoo_errors() -> None:
    with pytest.raises(ZooError, match=r"model\.depht.*did you mean depth"):
        build_model({"depht": 3})
    with pytest.raises(ZooError, match="model.pool"):
        build_model({**SMALL, "pool": "max"})
    with pytest.raises(ZooError, match="2 \\* heads"):
        build_model({**SMALL, "heads": 4, "dim": 36, "attention": "diff"})
    with pytest.raises(ZooError, match="not a multiple of the patch size"):
        build_model(SMALL)(images(size=18))


# --------------------------------------------------------------------------- the model


@pytest.mark.parametrize("posemb", POSEMBS, ids=str)
@pytest.mark.parametrize("patch", [2, 4, 8])
def test_every_posemb_with_patch_sizes_and_a_changed_image_size(posemb, patch: int) -> None:
    model = build_model({**SMALL, "patch_size": patch, "posemb": posemb}).eval()
    grid = 16 // patch
    assert model.grid_size == (grid, grid)
    table = model.patch_posemb()
    if posemb == "none":
        assert table is None
    else:
        assert table.shape == (grid * grid, 32)
    with torch.no_grad():
        assert model(images()).shape == (2, 5)
        out = model(images(size=24))  # another grid: learned tables are resized
        assert out.shape == (2, 5) and torch.isfinite(out).all()
        maps = model.attention_maps(images(size=24))
    assert maps[0].shape[-1] == 1 + (24 // patch) ** 2


def test_positions_matter_and_sinusoids_are_fixed() -> None:
    """Swapping the patch rows changes the output, unless there is no posemb (a token set)."""
    x = images()
    swapped = torch.cat([x[..., 8:, :], x[..., :8, :]], dim=-2)  # 2x2 grid of 8x8 patches
    for posemb in POSEMBS:
        model = build_model({**SMALL, "patch_size": 8, "posemb": posemb}).eval()
        with torch.no_grad():
            same = torch.allclose(model(x), model(swapped), atol=1e-6)
        assert same == (posemb == "none"), posemb
    sin = build_model({**SMALL, "posemb": "sinusoidal"})
    assert not any(n.startswith("posemb") for n, _ in sin.named_parameters())
    assert "posemb.table" not in sin.state_dict()  # recomputed, not saved


def test_model_helpers_for_the_trainer_and_visualizers() -> None:
    model = build_model({**SMALL, "heads": 2, "attention": "diff", "drop_path": 0.2})
    assert isinstance(model, ViT)
    assert (model.cfg.patch_size, model.num_prefix_tokens, model.num_classes) == (4, 1, 5)
    skip = model.no_weight_decay()
    assert {"cls_token", "posemb.pos_embed", "norm.weight", "blocks.0.attn.lambda_q1",
            "blocks.0.attn.subln.weight", "blocks.0.attn.qkv.bias"} <= skip
    assert "blocks.0.attn.qkv.weight" not in skip and "head.weight" not in skip
    rates = [getattr(b.drop_path, "p", 0.0) for b in model.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2])  # linear up to drop_path
    model.train()
    torch.manual_seed(0)
    x = images(8)
    assert not torch.equal(model(x), model(x))  # stochastic depth drops branches
    model.eval()
    assert torch.equal(model(x), model(x))


def test_drop_path_drops_whole_samples_and_keeps_the_expectation() -> None:
    """Each sample's branch is zeroed with probability p or scaled by 1/(1 - p) as a whole."""
    drop = DropPath(0.25).train()
    torch.manual_seed(0)
    x = torch.rand(4000, 3, 5) + 1.0  # no zeros: a dropped sample is all zeros
    x.requires_grad_(True)
    out = drop(x)
    (grad,) = torch.autograd.grad(out.sum(), x)
    kept = out.flatten(1).ne(0).any(dim=1)  # [B]
    assert not out[~kept].any()
    torch.testing.assert_close(out[kept], x[kept] / 0.75)
    torch.testing.assert_close(grad, (kept.float() / 0.75)[:, None, None].expand_as(x))
    assert float(1 - kept.float().mean()) == pytest.approx(0.25, abs=0.03)  # 5 sigma
    assert float((out / x).detach().mean()) == pytest.approx(1.0, abs=0.05)  # E[out] = x
    assert drop.eval()(x) is x and DropPath(0.0).train()(x) is x


@pytest.mark.parametrize("attention, heads, sdpa", [("mhsa", 4, False), ("diff", 2, False),
                                                    ("diff", 2, True)])
def test_bf16_autocast_trains(attention: str, heads: int, sdpa: bool) -> None:
    """Mixed precision as the trainer runs it (bf16 autocast; CPU here, CUDA there)."""
    model = build_model({**SMALL, "heads": heads, "attention": attention,
                         "posemb": "sinusoidal"})
    for block in model.blocks:
        block.attn.sdpa_on_cpu = sdpa
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(images(size=24)), torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(loss) and model.cls_token.grad is not None


def test_plugins_describe_themselves_for_zoo_list() -> None:
    registry.discover()
    info = {p.name: p.describe() for p in registry.registry("posemb").plugins.values()}
    assert set(info) >= {"none", "learned_1d", "learned_2d", "sinusoidal"}
    assert info["sinusoidal"]["params"] == {"dims": 2, "temperature": 10000.0}
    assert info["learned_1d"]["params"] == {"std": 0.02}
    diff = registry.registry("attention").get("diff").describe()
    assert diff["params"] == {"lambda_init": None}
    assert "Differential" in diff["doc"]


# --------------------------------------------------------------------------- training (slow-ish)


@pytest.mark.parametrize("attention, heads", [("mhsa", 4), ("diff", 2)])
def test_short_training_lowers_the_loss_for_every_posemb(attention: str, heads: int) -> None:
    """TRAINING TEST: AdamW on one fixed synthetic batch; each combination must learn it."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, 8, 8, generator=g)
    y = torch.randint(0, 4, (32,), generator=g)
    for posemb in POSEMBS:
        torch.manual_seed(0)
        model = build_model(dict(img_size=8, patch_size=2, num_classes=4, dim=32, depth=2,
                                 heads=heads, mlp_ratio=2.0, attention=attention, posemb=posemb))
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        losses = []
        for _ in range(60):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.5 * losses[0], (attention, posemb, losses[0], losses[-1])
