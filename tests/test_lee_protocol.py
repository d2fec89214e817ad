"""Lee et al.'s training loop as their code runs it (SPT_LSA_ViT main.py and utils/), each
option against what their code computes."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from zoo.cli import cli
from zoo.loaders import epoch_order, make_loader
from zoo.model import build_model
from zoo.recipe import load_recipe
from zoo.registry import build, discover
from zoo.train.optim import lr_at, make_optimizer


def test_repeats_as_passes_are_independent_shuffles_one_after_another():
    """RASampler(len, batch, repetitions=1, len_factor=3): an epoch is three fresh passes;
    copies (DeiT's) put an image's three copies side by side instead."""
    passes = epoch_order(10, epoch=2, seed=5, shuffle=True, repeats=3, passes=True)
    assert len(passes) == 30
    for r in range(3):  # each third a permutation of its own
        assert sorted(passes[r * 10:(r + 1) * 10].tolist()) == list(range(10))
    assert not torch.equal(passes[:10], passes[10:20])
    copies = epoch_order(10, epoch=2, seed=5, shuffle=True, repeats=3)
    assert torch.equal(copies[0::3], copies[1::3]) and not torch.equal(passes[0::3], passes[1::3])
    # the passes of another epoch are other shuffles
    assert not torch.equal(passes, epoch_order(10, epoch=3, seed=5, shuffle=True, repeats=3, passes=True))
    # Lee's epoch at CIFAR size: 150,000 samples, 1171 whole batches of 128
    data = type("D", (), {"__len__": lambda self: 50_000})()
    loader = make_loader(data, batch_size=128, device="cpu", train=True, repeats=3, passes=True,
                         num_workers=0)
    assert len(loader) == 1171


def test_warmup_from_a_rate_then_cosine_as_their_scheduler():
    """CosineAnnealingWarmupRestarts from min_lr 1e-6: lr(t) = 1e-6 + (1e-3 - 1e-6) t / W."""
    w, total = 10, 100
    assert lr_at(0, total, w, 1e-3, 1e-6, warmup_lr=1e-6) == pytest.approx(1e-6)
    assert lr_at(5, total, w, 1e-3, 1e-6, warmup_lr=1e-6) == pytest.approx(1e-6 + (1e-3 - 1e-6) / 2)
    assert lr_at(w, total, w, 1e-3, 1e-6, warmup_lr=1e-6) == pytest.approx(1e-3)
    assert lr_at(0, total, w, 1e-3, 1e-6) == pytest.approx(1e-4)  # without: from lr / W


def test_decay_all_puts_every_parameter_under_weight_decay(tmp_path):
    discover()
    path = tmp_path / "r.yaml"
    path.write_text("model: {dim: 16, depth: 1, heads: 2}\n")
    model = build_model(load_recipe(path).model)
    n = len(list(model.parameters()))
    for decay, decayed in (("weights", lambda k: k < n), ("all", lambda k: k == n)):
        recipe = load_recipe(path, [f"train.decay={decay}"])
        groups = make_optimizer(model, recipe, torch.device("cpu")).param_groups
        assert decayed(sum(len(g["params"]) for g in groups if g["weight_decay"] > 0)), decay


def test_xavier_init_and_norm_eps_as_their_vit():
    """models/vit.py: Xavier-normal Linear weights, zero biases, [CLS] and positions N(0, 1);
    LayerNorm eps 1e-5."""
    discover()
    torch.manual_seed(0)
    cfg = dict(dim=192, depth=2, heads=12, mlp_ratio=2, qkv_bias=False, weight_init="xavier",
               norm_eps=1e-5, posemb={"learned_1d": {"std": 1.0}})
    model = build_model(cfg)
    fc = model.blocks[0].mlp.fc1.weight  # [384, 192]: xavier std sqrt(2 / (fan_in + fan_out))
    assert fc.std().item() == pytest.approx((2 / (192 + 384)) ** 0.5, rel=0.05)
    assert model.cls_token.std().item() == pytest.approx(1.0, rel=0.2)
    assert model.posemb.pos_embed.std().item() == pytest.approx(1.0, rel=0.05)
    assert model.blocks[0].norm1.eps == 1e-5 and model.norm.eps == 1e-5
    assert model.blocks[0].attn.qkv.bias is None
    default = build_model({k: v for k, v in cfg.items() if k not in ("weight_init", "posemb")})
    assert default.blocks[0].mlp.fc1.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_autoaugment_fills_what_geometric_ops_uncover_with_the_grey_asked():
    """DeepVoltaire's CIFAR10Policy fills shear, translate and rotate with (128, 128, 128)."""
    discover()
    aa = build("augment", {"autoaugment": {"fill": 128}}, num_classes=2, img_size=8)
    x = torch.zeros(1, 3, 8, 8)
    slot = aa.steps[0]
    translate = next(i for i, (op, m) in enumerate(slot.entries(8, 8)) if op == "TranslateY" and m)
    out = slot.apply(x, torch.tensor([translate]))
    assert out.max().item() == pytest.approx(128 / 255) and out.min().item() == 0.0
    black = build("augment", "autoaugment", num_classes=2, img_size=8).steps[0]
    assert black.apply(x, torch.tensor([translate])).max().item() == 0.0


def test_the_best_test_accuracy_is_reported_beside_the_final_one(tmp_path):
    """Labelled as chosen on the test set; `best` checkpoints still follow val only."""
    path = tmp_path / "r.yaml"
    path.write_text("model: {img_size: 16, patch_size: 8, dim: 16, depth: 1, heads: 2}\n"
                    "data: {dataset: {shapes: {train_size: 128, val_size: 64, test_size: 64}}, "
                    "batch_size: 32, eval_splits: [test]}\n"
                    "train: {epochs: 3, warmup_epochs: 0}\nlog: {progress: false}\n")
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(run)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_test_acc"] == max(r["test_acc"] for r in rows)
    assert summary["final_test_acc"] == rows[-1]["test_acc"]
    assert "(chosen on the test set, as the papers report it)" in result.output
    assert not (run / "checkpoints" / "best").exists()


def test_random_erasing_fills_with_a_constant_colour_when_asked():
    discover()
    op = build("augment", {"random_erasing": {"p": 1.0, "fill": [0.25, 0.5, 0.75]}}, num_classes=2,
               img_size=16)
    x, _ = op(torch.zeros(4, 3, 16, 16), torch.zeros(4, 2))
    erased = x.amax(dim=(2, 3))  # each image has one box of the colour
    assert torch.allclose(erased, torch.tensor([0.25, 0.5, 0.75]).expand(4, 3))
