"""The small-data ViT parts, each against a by-the-paper computation on fixed inputs."""

from __future__ import annotations

import torch

from zoo.registry import build, discover


def lsa_by_the_paper(x: torch.Tensor, qkv: torch.nn.Linear, proj: torch.nn.Linear,
                     tau: torch.Tensor) -> torch.Tensor:
    """Lee et al. 2021, Eq. 4-6, written out: R = tau * Q K^T per head, R_ii = -inf, softmax, @ V."""
    b, n, c = x.shape
    h = tau.numel()
    q, k, v = qkv(x).reshape(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
    scores = torch.einsum("bhid,bhjd->bhij", q, k) * tau.view(1, h, 1, 1)
    scores[:, :, torch.arange(n), torch.arange(n)] = float("-inf")
    out = torch.einsum("bhij,bhjd->bhid", scores.softmax(-1), v)
    return proj(out.permute(0, 2, 1, 3).reshape(b, n, c))


def test_lsa_masks_the_diagonal_and_learns_one_temperature_per_head():
    discover()
    torch.manual_seed(0)
    attn = build("attention", "lsa", dim=16, heads=4).eval()
    assert torch.allclose(attn.scale, torch.full((4,), 4 ** -0.5))  # 1/sqrt(d), d = 16 / 4
    with torch.no_grad():
        attn.scale.copy_(torch.tensor([0.1, 0.5, 1.0, 2.0]))  # tau as training would move it
    x = torch.randn(2, 7, 16)
    ref = lsa_by_the_paper(x, attn.qkv, attn.proj, attn.scale.detach())
    fused = attn(x)
    explicit, maps = attn(x, return_attn=True)
    assert torch.allclose(fused, ref, atol=1e-5) and torch.allclose(explicit, ref, atol=1e-5)
    assert torch.all(maps["attn"].diagonal(dim1=-2, dim2=-1) == 0)
    assert torch.allclose(maps["attn"].sum(-1), torch.ones(2, 4, 7))
    attn(x).sum().backward()
    assert attn.scale.grad is not None and attn.scale.grad.abs().min() > 0


def test_seqpool_is_a_softmax_weighted_sum_of_the_normalised_tokens():
    """Hassani et al. 2021, Eq. 2-3: x_L' = softmax(g(x_L)^T) x_L on the normed tokens."""
    discover()
    torch.manual_seed(0)
    pool = build("pool", "seqpool", dim=8)
    norm = torch.nn.LayerNorm(8)
    torch.nn.init.normal_(norm.weight)
    x = torch.randn(3, 5, 8)
    xl = norm(x)
    weights = torch.softmax(xl @ pool.attention.weight.T + pool.attention.bias, dim=1)  # [3, 5, 1]
    ref = (weights.transpose(1, 2) @ xl).squeeze(1)
    assert torch.allclose(pool(x, 0, norm), ref, atol=1e-6)
    assert not pool.cls_token


def test_a_pool_without_cls_builds_a_model_without_one():
    from zoo.model import build_model

    discover()
    cfg = dict(img_size=16, patch_size=4, dim=16, depth=1, heads=2, num_classes=3)
    with_cls, seq = build_model(cfg), build_model({**cfg, "pool": "seqpool"})
    mean_no_cls = build_model({**cfg, "pool": {"mean": {"cls_token": False}}})
    assert (with_cls.num_prefix_tokens, seq.num_prefix_tokens, mean_no_cls.num_prefix_tokens) == (1, 0, 0)
    assert seq.cls_token is None and "cls_token" not in dict(seq.named_parameters())
    assert seq.posemb.pos_embed.shape[1] == 16  # a position per patch, none for [CLS]
    maps = seq.attention_maps(torch.randn(2, 3, 16, 16))
    assert maps[0].shape == (2, 2, 16, 16)
    assert seq.lacks("cls_token") == "this model has no [CLS] token (pool: seqpool)"
    assert with_cls.lacks("cls_token") is None
    # one parameter vector of 16 fewer ([CLS]) and of 16 fewer positions, one Linear(16, 1) more
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(seq) == count(with_cls) - 16 - 16 + 17


def test_spt_stacks_the_four_diagonal_half_patch_shifts_then_norms_and_projects():
    """Lee et al.'s SPT on a 4x4 ramp, patch 2: token 0 flattens (row, column, channel) over
    [image, left-up, right-up, left-down, right-down], zero outside the image."""
    discover()
    torch.manual_seed(0)
    spt = build("tokenizer", "spt", in_chans=1, dim=6, patch_size=2, img_size=4)
    img = torch.arange(1.0, 17.0).view(1, 1, 4, 4)
    token0 = torch.tensor([1, 0, 0, 0, 6, 2, 0, 0, 5, 7, 5, 0, 2, 0, 10, 6, 1, 3, 9, 11.0])
    out = spt(img)
    assert out.shape == (1, 2, 2, 6) and spt.grid(4, 4) == (2, 2)
    assert torch.allclose(out[0, 0, 0], spt.proj(spt.norm(token0)), atol=1e-6)


def test_parameter_counts_match_lee_et_al():
    """Their ViT, SL-ViT's parts, on CIFAR-10 (counted from their code: models/vit.py with
    SPT and LSA): 2,692,426; + SPT 2,729,770; + LSA as well 2,729,878."""
    from zoo.model import build_model

    discover()
    lee = dict(img_size=32, patch_size=4, dim=192, depth=9, heads=12, mlp_ratio=2, qkv_bias=False)
    count = lambda cfg: sum(p.numel() for p in build_model(cfg).parameters())  # noqa: E731
    assert count(lee) == 2_692_426
    assert count({**lee, "tokenizer": "spt"}) == 2_729_770
    assert count({**lee, "tokenizer": "spt", "attention": "lsa"}) == 2_729_878


def test_the_conv_tokenizer_is_conv_relu_maxpool_per_layer():
    """CCT's tokenizer (Hassani et al. 2021, Eq. 1) written out with torch.nn.functional."""
    import torch.nn.functional as F

    discover()
    torch.manual_seed(0)
    tok = build("tokenizer", {"conv": {"layers": 2, "channels": 8}}, in_chans=3, dim=16,
                patch_size=4, img_size=32)
    img = torch.randn(2, 3, 32, 32)
    x = img
    for stage in tok:
        x = F.max_pool2d(F.relu(F.conv2d(x, stage[0].weight, stride=1, padding=1)), 3, 2, 1)
    assert torch.allclose(tok(img), x.permute(0, 2, 3, 1), atol=1e-6)
    assert tok.grid(32, 32) == (8, 8) and tok.grid(31, 17) == tuple(tok(torch.zeros(1, 3, 31, 17)).shape[1:3])


def test_cct_and_cvt_parameter_counts_match_hassani_et_al():
    """CCT-7/3x1 3,760,139 and CVT-7/4 3,716,619 on CIFAR-10 (their code, cct_7_3x1_32 and
    cvt_7_4_32: learnable positions, no qkv bias, SeqPool, no [CLS])."""
    from zoo.model import build_model

    discover()
    common = dict(img_size=32, dim=256, depth=7, heads=4, mlp_ratio=2, qkv_bias=False, pool="seqpool")
    count = lambda cfg: sum(p.numel() for p in build_model(cfg).parameters())  # noqa: E731
    assert count({**common, "tokenizer": "conv"}) == 3_760_139
    assert count({**common, "patch_size": 4}) == 3_716_619
