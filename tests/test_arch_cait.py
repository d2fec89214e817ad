"""arch cait (plugins/arch/cait.py): CaiT with LayerScale and talking heads, equal to timm's
Cait by logits both ways at Lee et al.'s CIFAR size; Lee et al.'s variant by its parameter
count; LSA's mask; and trained, evaluated, exported and resumed through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from tests.conftest import ROOT
from tests.helpers import assert_exports_match, assert_one_line_error, stop_at
from zoo import checkpoint, registry
from zoo.cli import cli
from zoo.errors import ZooError
from zoo.kinds import NEEDS
from zoo.model import build_model

QUICKSTART = str(ROOT / "recipes" / "quickstart.yaml")
CIFAR = {"mlp_ratio": 2}  # with zoo's defaults: img 32, patch 4, dim 192; cait's depth 24, 4 heads
LEE = {"head_dim": 64, "talking_bias": False, "class_attn_context": "patches",
       "class_attn_talking": True, "init_schedule": "layer_index", "cls_drop_path": 0.1}
SMALL = {"dim": 48, "patch_size": 8, "mlp_ratio": 2}
LACKS = ("cait's [CLS] token attends only in its class-attention layers, after self-attention "
         "over the patches alone: no [CLS] + patch maps to draw")


def cait(params: dict | None = None, **model) -> torch.nn.Module:
    return build_model({"arch": {"cait": params or {}}, **model})


def plugin() -> ModuleType:
    """plugins/arch/cait.py as loaded by the registry (to_timm, from_timm)."""
    registry.discover()
    return sys.modules[registry.registry("arch").get("cait").obj.__module__]


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def scrambled(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter drawn from N(0, 0.3), in eval mode: LayerScale gammas of 1e-5 would
    hide whatever the blocks do, zero biases whatever they add."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval()


# --------------------------------------------------------------------------- timm's Cait


def test_timm_cait_converts_to_ours_with_its_logits_and_count():
    from timm.models.cait import Cait

    torch.manual_seed(0)
    tm = scrambled(Cait(img_size=32, patch_size=4, num_classes=10, embed_dim=192, depth=24,
                        num_heads=4, mlp_ratio=2, mlp_ratio_token_only=2, init_values=1e-5))
    ours = plugin().from_timm(tm).eval()
    assert count(ours) == count(tm) == 7_757_770
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tm(x), rtol=1e-5, atol=1e-5)


def test_ours_converts_to_timm_cait_with_its_logits_and_count():
    ours = scrambled(cait(**CIFAR), seed=1)
    tm = plugin().to_timm(ours).eval()
    assert count(tm) == count(ours) == 7_757_770
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(tm(x), ours(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.features(x), tm.forward_head(tm.forward_features(x),
                                                                     pre_logits=True))


def test_training_gradients_equal_timms():
    """Without drop path, train mode: the loss gradients of every tensor match timm's (the
    head mixing as one batched matmul, LayerScale as one addcmul, backward too)."""
    ours = scrambled(cait({"depth": 3}, **SMALL, qkv_bias=False)).train()
    tm = plugin().to_timm(ours).train()
    x = torch.randn(4, 3, 32, 32)
    ours(x).square().sum().backward()
    tm(x).square().sum().backward()
    theirs = dict(tm.named_parameters())
    for name, p in ours.named_parameters():
        key = name.replace("patch_embed.", "patch_embed.proj.")
        key = key.replace("cls_blocks.", "blocks_token_only.")
        torch.testing.assert_close(p.grad, theirs[key].grad, rtol=1e-4, atol=1e-5, msg=name)


def test_without_talking_heads_biases_timm_holds_it_with_zero_biases():
    ours = scrambled(cait({"depth": 2, "talking_bias": False}, **SMALL))
    tm = plugin().to_timm(ours).eval()
    assert torch.equal(tm.blocks[1].attn.proj_w.bias, torch.zeros(4))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(tm(x), ours(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("params", "model", "fragment"), [
    ({}, {"tokenizer": "spt"}, "tokenizer 'spt'"),
    ({}, {"attention": "lsa"}, "attention 'lsa'"),
    ({"head_dim": 16}, {}, "head_dim 16"),
    ({"class_attn_context": "patches"}, {}, "class_attn_context 'patches'"),
    ({"class_attn_talking": True}, {}, "class_attn_talking"),
    ({}, {"dim": 28, "heads": 4, "mlp_dim": 61}, "mlp hidden size 61"),  # int(28 * (61 / 28)) = 60
])
def test_to_timm_refuses_what_timm_cannot_hold_in_one_line(params, model, fragment):
    ours = cait({"depth": 1, "cls_depth": 1, **params}, **{**SMALL, **model})
    with pytest.raises(ZooError, match="^to_timm: timm's Cait cannot hold ") as e:
        plugin().to_timm(ours)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_from_timm_refuses_what_ours_does_not_have():
    from timm.models.cait import Cait

    tm = Cait(img_size=32, patch_size=8, num_classes=10, embed_dim=48, depth=1, num_heads=4,
              global_pool="avg", mlp_ratio_token_only=2)
    with pytest.raises(ZooError, match="^from_timm: our CaiT has no global_pool 'avg'; a class-"
                                       "attention MLP of 96 \\(its patch MLP: 192\\)$"):
        plugin().from_timm(tm)


# --------------------------------------------------------------------------- Lee et al.'s CaiT


def test_lee_et_als_cait_has_their_parameter_count_and_shapes():
    """9,020,618 (their models/cait.py on CIFAR-10), 9,058,066 with SPT and LSA (SL-CaiT)."""
    lee = cait(LEE, **CIFAR, qkv_bias=False, drop_path=0.1)
    assert count(lee) == 9_020_618
    shapes = {n: tuple(p.shape) for n, p in lee.named_parameters()}
    assert shapes["blocks.0.attn.qkv.weight"] == (768, 192) and shapes["pos_embed"] == (1, 64, 192)
    assert shapes["cls_blocks.1.attn.proj_l.weight"] == (4, 4)
    assert shapes["cls_blocks.0.attn.k.weight"] == (256, 192)
    assert not {"blocks.0.attn.qkv.bias", "blocks.0.attn.proj_l.bias"} & shapes.keys()
    gammas = torch.stack([b.gamma_1 for b in lee.blocks] + [b.gamma_2 for b in lee.cls_blocks])
    want = torch.tensor([0.1] * 18 + [1e-5] * 6 + [0.1] * 2)[:, None].expand(-1, 192)
    assert torch.equal(gammas, want)
    assert {b.drop_path.p for b in [*lee.blocks, *lee.cls_blocks]} == {0.1}
    sl = cait(LEE, **CIFAR, qkv_bias=False, drop_path=0.1, tokenizer="spt", attention="lsa")
    assert count(sl) == 9_058_066


def test_the_papers_cait_drops_paths_only_in_the_patch_blocks():
    model = cait({"depth": 3}, **SMALL, drop_path=0.2)
    assert [b.drop_path.p for b in model.blocks] == [0.2] * 3
    assert all(b.drop_path is None for b in model.cls_blocks)
    blocks = [*model.blocks, *model.cls_blocks]
    gammas = torch.cat([g for b in blocks for g in (b.gamma_1, b.gamma_2)])
    assert torch.equal(gammas, torch.full_like(gammas, 1e-5))


def reference_lsa(attn: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Talking-heads LSA written out head by head: logits tau_h q_h k_h^T mixed by proj_l, the
    diagonal at -inf, softmax, mixed by proj_w, times v, projected."""
    b, n, _ = x.shape
    h = attn.heads
    q, k, v = attn.qkv(x).reshape(b, n, 3, h, -1).unbind(2)
    logits = torch.stack([attn.scale[i] * q[:, :, i] @ k[:, :, i].transpose(1, 2)
                          for i in range(h)], -1)
    logits = attn.proj_l(logits)  # [b, n, n, heads]: Linear over the last (head) axis
    eye = torch.eye(n, dtype=torch.bool)[None, :, :, None]
    probs = attn.proj_w(logits.masked_fill(eye, float("-inf")).softmax(dim=2))
    out = torch.cat([probs[..., i] @ v[:, :, i] for i in range(h)], -1)
    return attn.proj(out)


def test_lsa_masks_each_patch_from_itself_after_the_head_mixing():
    model = scrambled(cait({"depth": 1}, **SMALL, attention="lsa"))
    attn = model.blocks[0].attn
    with torch.no_grad():
        attn.scale.copy_(torch.tensor([0.5, 1.0, 1.5, 2.0]))
    x = torch.randn(2, 16, 48)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), reference_lsa(attn, x), rtol=1e-5, atol=1e-5)
    names = {n for n, _ in model.named_parameters() if n.endswith("attn.scale")}
    assert names == {"blocks.0.attn.scale", "cls_blocks.0.attn.scale", "cls_blocks.1.attn.scale"}


def test_class_attention_reads_normalised_tokens_or_the_patches_as_they_are():
    """"all" (the paper) normalises [cls; patches] per token, so patches scaled by 3 attend
    alike; "patches" (Lee et al.) reads them un-normalised, so the [CLS] update changes."""
    x, cls = torch.randn(2, 16, 48), torch.randn(2, 1, 48)
    for context, same in (("all", True), ("patches", False)):
        block = scrambled(cait({"depth": 1, "class_attn_context": context}, **SMALL)).cls_blocks[0]
        with torch.no_grad():
            a, b = block(x, cls), block(3 * x, cls)
        assert torch.allclose(a, b, atol=1e-4) == same, context


# --------------------------------------------------------------------------- the arch contract


def test_other_image_sizes_resize_the_position_table():
    model = cait({"depth": 1}, **SMALL).eval()
    table = model.patch_posemb()
    assert table.shape == (16, 48)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 48, 48)).shape == (2, 10)
        assert model.patch_posemb((6, 6)).shape == (36, 48)
        assert torch.equal(model.patch_posemb((4, 4)), table)


def test_num_classes_0_gives_the_normalised_cls_token():
    model = cait({"depth": 1}, **SMALL, num_classes=0).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), model.features(x)) and model(x).shape == (2, 48)


def test_it_has_a_position_table_but_no_attention_maps():
    from matplotlib.figure import Figure

    model = cait({"depth": 1}, **SMALL)
    reasons = {need: model.lacks(need) for need in NEEDS}
    assert reasons["position_table"] is None
    assert reasons["attention_maps"] == LACKS and "[CLS]" in reasons["cls_token"]
    with pytest.raises(ZooError, match="unknown visualizer need 'maps'"):
        model.lacks("maps")
    draw = registry.build("visualizer", "posemb_similarity")
    images = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    figures = draw(model, images, images.float(), ["a"])
    assert isinstance(figures["posemb_similarity"], Figure)


def test_weight_decay_skips_the_position_table_and_cls_token():
    assert cait({"depth": 1}, **SMALL).no_weight_decay() == {"pos_embed", "cls_token"}


@pytest.mark.parametrize(("arch", "extra", "fragment"), [
    ("{cait: {depth: 0}}", [], "model.arch.depth: 0 must be at least 1"),
    ("{cait: {init_schedule: deep}}", [], "model.arch.init_schedule: 'deep' is not one of"),
    ("{cait: {class_attn_context: cls}}", [], "model.arch.class_attn_context: 'cls' is not one of"),
    ("{cait: {heads: 5}}", [], "model.arch.heads: 5 does not divide model.dim 64"),
    ("{cait: {init_values: 0}}", [], "model.arch: init_values must be > 0"),
    ("{cait: {head_dim: many}}", [], "model.arch.head_dim: expected int or null"),
    ("cait", ["model.attention=diff"], "model.attention: arch 'cait' has its own talking-heads"),
    ("cait", ["model.pool=mean"], "model.pool: arch 'cait' takes no pool plugin"),
])
def test_bad_settings_are_one_line(arch, extra, fragment):
    sets = [a for s in [f"model.arch={arch}", *extra] for a in ("--set", s)]
    proc = subprocess.run([sys.executable, "-m", "zoo", "run", QUICKSTART, *sets, "--dry-run"],
                          capture_output=True, text=True, timeout=120)
    assert_one_line_error(proc, fragment)


# --------------------------------------------------------------------------- through the CLI

TINY = "model.arch={cait: {depth: 2, cls_depth: 1}}"
SMALL_DATA = "data.dataset={shapes: {train_size: 128, val_size: 64}}"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The quickstart as a user runs it with a two-block cait, on fewer images."""
    out = tmp_path_factory.mktemp("cait") / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "zoo", "run", QUICKSTART, "--set", "model.arch=cait", "--set", TINY,
         "--set", "train.epochs=1", "--set", SMALL_DATA, "--set", "log.progress=false",
         "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out, proc


def test_a_dry_run_says_what_cait_does_not_use_and_what_it_cannot_draw():
    proc = subprocess.run([sys.executable, "-m", "zoo", "run", QUICKSTART, "--set", TINY,
                           "--dry-run"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    warnings = [" ".join(line.split()) for line in proc.stdout.splitlines()
                if line.startswith("warning:")]
    assert warnings[:3] == [f"warning: model.{k}: arch 'cait' does not use it (zoo list arch shows "
                            "what it reads)" for k in ("depth", "heads", "posemb")]
    assert [w.split(":")[1] for w in warnings[3:]] == [" visualizer 'cls_attention' skipped",
                                                       " visualizer 'rollout' skipped"]


def test_the_quickstart_trains_and_skips_each_attention_figure_in_one_warning(run):
    out, proc = run
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: visualizer '{name}' skipped: {LACKS}"
                        for name in ("cls_attention", "rollout")]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["params"] == count(
        cait({"depth": 2, "cls_depth": 1}, dim=64, heads=4, patch_size=8, mlp_ratio=2))
    weights = load_file(out / "checkpoints" / "last" / checkpoint.MODEL_FILE)
    assert "blocks.1.attn.proj_w.weight" in weights


def test_zoo_eval_gives_the_runs_own_val_accuracy(run):
    out, _ = run
    result = CliRunner().invoke(cli, ["eval", str(out), "--split", "val"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "eval_val.json").read_text())
    assert report["images"] == 64
    assert report["acc"] == pytest.approx(json.loads((out / "summary.json").read_text())
                                          ["final_val_acc"], abs=1e-9)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_export_torchscript_and_onnx_give_the_models_logits(run, tmp_path):
    out, _ = run
    assert_exports_match(out, tmp_path, torch.randn(3, 3, 32, 32))


RESUME = [TINY.replace("cls_depth: 1", "cls_depth: 1, cls_drop_path: 0.1"), "model.drop_path=0.1",
          "model.attention=lsa", "train.epochs=2", "data.batch_size=32",
          "data.dataset={shapes: {train_size: 128, val_size: 32}}", "train.deterministic=true",
          "train.device=cpu", "log.progress=false", "log.tensorboard=false", "log.visualizers=[]"]


def test_an_interrupted_run_resumes_to_the_uninterrupted_weights(tmp_path):
    """Stopped inside epoch 2 (drop path drawing in both kinds of block, LSA) and resumed
    with `zoo run --resume`: the weights and optimizer moments of the run never stopped."""
    from zoo.recipe import load_recipe
    from zoo.train.trainer import Interrupted, Trainer

    ref = tmp_path / "ref"
    sets = [a for s in RESUME for a in ("--set", s)]
    result = CliRunner().invoke(cli, ["run", QUICKSTART, *sets, "--out", str(ref)])
    assert result.exit_code == 0, result.output
    registry.discover()
    recipe = load_recipe(QUICKSTART, RESUME)
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    (stopped / "recipe.yaml").write_text(recipe.to_yaml())
    trainer = Trainer(recipe, stopped)
    stop_at(trainer, 6)  # 4 steps an epoch
    with pytest.raises(Interrupted):
        trainer.fit()
    result = CliRunner().invoke(cli, ["run", "--resume", str(stopped)])
    assert result.exit_code == 0, result.output
    a, b = (load_file(r / "checkpoints" / "last" / checkpoint.MODEL_FILE) for r in (stopped, ref))
    assert a.keys() == b.keys() and "blocks.0.attn.scale" in a
    for k in a:
        assert torch.equal(a[k], b[k]), k
    moments = [checkpoint.load_state(r / "checkpoints" / "last" / checkpoint.STATE_FILE)
               ["optimizer"]["state"] for r in (stopped, ref)]
    for k in moments[1]:
        assert torch.equal(moments[0][k]["exp_avg_sq"], moments[1][k]["exp_avg_sq"]), k
