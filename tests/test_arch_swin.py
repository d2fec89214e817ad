"""arch swin (plugins/arch/swin.py, zoo/layers/window.py): the Swin Transformer, equal to timm's
SwinTransformer both ways at Lee et al.'s CIFAR config, with their parameter counts for Swin
and SL-Swin; shifted windows, the relative bias and LSA pinned; bad sizes in one line; trained,
evaluated, exported and resumed through the CLI like any arch."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from torch import nn

from tests.conftest import ROOT
from tests.helpers import assert_exports_match, assert_one_line_error, stop_at
from zoo import checkpoint, registry
from zoo.cli import cli
from zoo.errors import ZooError
from zoo.kinds import NEEDS
from zoo.layers import DropPath
from zoo.layers.window import WindowAttention, relative_position_index, shift_mask
from zoo.model import build_model

QUICKSTART = str(ROOT / "recipes" / "quickstart.yaml")
SMALL_DATA = "data.dataset={shapes: {train_size: 256, val_size: 64}}"
LEE = {"window": 4, "depths": [2, 6, 4], "heads": [3, 6, 12]}  # their models/create_model.py
CIFAR = {"patch_size": 2, "mlp_ratio": 2, "drop_path": 0.1}


def swin_module():
    registry.discover()
    return sys.modules[registry.registry("arch").get("swin").obj.__module__]


def lee(**arch: object) -> nn.Module:
    return build_model({"arch": {"swin": {**LEE, **arch.pop("swin", {})}}, **CIFAR, **arch})


def scrambled(model: nn.Module) -> nn.Module:
    """Weights drawn wide (unit-gain matrices, N(0, 1) bias tables, norms off 1 and 0), so
    that every score matters: attention far from uniform, each bias and mask visible."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.normal_(0, 1)
            elif p.ndim >= 2:
                p.normal_(0, p[0].numel() ** -0.5)
            else:
                p.normal_(0, 0.1)
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.add_(1)
    return model


def test_equals_timm_both_ways_at_lee_cifar_config():
    """7,048,612 parameters as timm's; the same logits on the same weights, ours -> timm and
    timm -> ours, in eval mode; in train mode (no drop path) the same gradients too."""
    sw = swin_module()
    torch.manual_seed(0)
    ours = scrambled(lee())
    assert sum(p.numel() for p in ours.parameters()) == 7_048_612
    tm = sw.to_timm(ours)
    assert sum(p.numel() for p in tm.parameters()) == 7_048_612
    x = torch.randn(4, 3, 32, 32)
    ours.eval(), tm.eval()
    with torch.no_grad():
        want = tm(x)
        assert want.std() > 0.5  # logits of O(1): an error of 1e-5 is one of rounding only
        torch.testing.assert_close(ours(x), want, rtol=0, atol=1e-5)
        back = sw.from_timm(scrambled(tm))  # timm's own draw, into ours
        torch.testing.assert_close(back.eval()(x), tm(x), rtol=0, atol=1e-5)
    assert back.cfg.arch == {"swin": {"embed_dim": 96, **LEE}}
    assert (back.cfg.patch_size, back.cfg.mlp_ratio, back.cfg.drop_path) == (2, 2.0, 0.1)
    tm, ours = sw.to_timm(back), back  # in train mode, drop path off in both
    for m in (*ours.modules(), *tm.modules()):
        if hasattr(m, "drop_prob"):
            m.drop_prob = 0.0
        elif isinstance(m, DropPath):
            m.p = 0.0
    ours.train(), tm.train()
    ours(x).square().sum().backward()
    tm(x).square().sum().backward()
    grads = {sw.rename(n, sw.OURS_TO_TIMM): p.grad for n, p in ours.named_parameters()}
    assert grads.keys() == dict(tm.named_parameters()).keys()
    for name, p in tm.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_lee_swin_and_sl_swin_have_their_parameter_counts():
    """Lee et al.'s Swin always adds an absolute table: 7,073,188; SL-Swin (SPT embedding and
    merging, LSA) 8,562,166: the counts their code prints for CIFAR-10."""
    assert sum(p.numel() for p in lee(swin={"ape": True}).parameters()) == 7_073_188
    sl = lee(swin={"ape": True}, tokenizer="spt", attention="lsa")
    assert sum(p.numel() for p in sl.parameters()) == 8_562_166
    shapes = {n: tuple(p.shape) for n, p in sl.named_parameters()}
    assert shapes["absolute_pos_embed"] == (1, 256, 96)
    assert shapes["layers.1.downsample.tokens.proj.weight"] == (192, 1920)  # LN(20C), Linear(20C, 2C)
    assert shapes["layers.2.blocks.3.attn.scale"] == (12,)
    assert not any(n.startswith("patch_norm") for n in shapes)  # SPT has its own norm


def test_windows_shifts_and_masks_per_block_at_the_cifar_config():
    """Grids 16, 8, 4: window 4 everywhere, shift 2 in odd blocks of stages 0 and 1; stage 2 is
    one window (clamped), so no shift and no mask; the masks are 0 or -100."""
    model = lee()
    blocks = [b.attn for s in model.layers for b in s.blocks]
    assert [(a.res, a.window, a.shift) for a in blocks] == [
        (16, 4, 0), (16, 4, 2), *[(8, 4, 0), (8, 4, 2)] * 3, *[(4, 4, 0)] * 4]
    assert [None if a.mask is None else tuple(a.mask.shape) for a in blocks[:4]] == [
        None, (16, 1, 16, 16), None, (4, 1, 16, 16)]
    assert all(a.mask is None for a in blocks[8:])
    assert set(blocks[1].mask.unique().tolist()) == {-100.0, 0.0}
    assert [p.p if hasattr(p, "p") else 0.0 for p in (b.drop_path for s in model.layers
                                                      for b in s.blocks)] == pytest.approx(
        torch.linspace(0, 0.1, 12).tolist())


def test_relative_position_index_and_shift_mask_by_hand():
    """Index of a 2x2 window: offsets (dy + 1) * 3 + (dx + 1). Grid 4, window 2, shift 1: the
    first window lies inside one region (nothing masked); the last holds one token of each
    of four regions (every pair across regions masked)."""
    assert relative_position_index(2).tolist() == [[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3],
                                                   [8, 7, 5, 4]]
    mask = shift_mask(4, 2, 1)
    assert mask.shape == (4, 4, 4)
    assert torch.equal(mask[0], torch.zeros(4, 4))
    assert torch.equal(mask[3], -100 * (1 - torch.eye(4)))
    # window 1 (top right): columns 2 | 3 are two regions, the rows one
    assert torch.equal(mask[1], torch.tensor([[0, -100, 0, -100], [-100, 0, -100, 0],
                                              [0, -100, 0, -100], [-100, 0, -100, 0]]).float())


def reference_window_attention(attn: WindowAttention, x: torch.Tensor, lsa: bool) -> torch.Tensor:
    """The shifted-window attention written out as Lee et al.'s swin.py orders it, one window at
    a time: roll, q (times the scale), q k^T + bias, + shift mask, [diagonal -inf], softmax, v."""
    w, s, h = attn.window, attn.shift, attn.heads
    b, res, _, c = x.shape
    d = c // h
    x = torch.roll(x, (-s, -s), (1, 2))
    table = attn.relative_position_bias_table
    out = torch.empty_like(x)
    for wi, (r0, c0) in enumerate((r, cc) for r in range(0, res, w) for cc in range(0, res, w)):
        tok = x[:, r0:r0 + w, c0:c0 + w].reshape(b, w * w, c)
        q, k, v = (t.reshape(b, w * w, h, d).transpose(1, 2) for t in attn.qkv(tok).chunk(3, -1))
        q = q * (attn.scale.view(h, 1, 1) if lsa else d ** -0.5)
        idx = [[(ya - yb + w - 1) * (2 * w - 1) + (xa - xb + w - 1)
                for yb in range(w) for xb in range(w)] for ya in range(w) for xa in range(w)]
        scores = q @ k.transpose(-2, -1) + table[torch.tensor(idx)].permute(2, 0, 1)
        if s:
            scores = scores + shift_mask(res, w, s)[wi]
        if lsa:
            scores = scores.masked_fill(torch.eye(w * w, dtype=torch.bool), float("-inf"))
        o = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, w, w, c)
        out[:, r0:r0 + w, c0:c0 + w] = attn.proj(o)
    return torch.roll(out, (s, s), (1, 2))


@pytest.mark.parametrize("lsa", [False, True])
@pytest.mark.parametrize(("res", "window", "shift"), [(8, 4, 2), (8, 4, 0), (6, 3, 1)])
def test_window_attention_equals_the_written_out_one(lsa, res, window, shift):
    torch.manual_seed(0)
    attn = scrambled(WindowAttention(12, 3, res, window, shift, lsa=lsa)).eval()
    x = torch.randn(2, res, res, 12)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), reference_window_attention(attn, x, lsa),
                                   rtol=1e-5, atol=1e-5)


def test_lsa_temperature_starts_at_head_dim_and_a_one_token_window_keeps_its_own_score():
    """The temperature per head starts at head_dim^-0.5 (1/2 for heads of 4); a window of one
    token (the 1x1 grid of a last stage) has no other to look at: finite outputs, not NaN."""
    assert WindowAttention(12, 3, 4, 2, 1, lsa=True).scale.tolist() == [0.5] * 3
    one = WindowAttention(8, 2, 1, 1, 0, lsa=True)
    assert one.mask is None and one(torch.randn(2, 1, 1, 8)).isfinite().all()
    model = build_model({"arch": {"swin": {"embed_dim": 8, "depths": [1, 1, 1], "heads": [1, 1, 1]}},
                         "patch_size": 8, "attention": "lsa"})  # grids 4, 2, 1
    assert [s.blocks[0].attn.res for s in model.layers] == [4, 2, 1]
    assert model(torch.randn(2, 3, 32, 32)).isfinite().all()


def test_patch_merging_takes_x0_x1_x2_x3():
    """On a 4x4 ramp of one channel, the first merged token reads (0,0), (1,0), (0,1), (1,1):
    values 0, 4, 1, 5 (the paper's and timm's order)."""
    sw = swin_module()
    merge = sw.PatchMerging(1)
    seen = {}
    merge.norm.register_forward_hook(lambda m, args, out: seen.setdefault("x", args[0]))
    merge(torch.arange(16.0).view(1, 4, 4, 1))
    assert seen["x"][0, 0, 0].tolist() == [0, 4, 1, 5]
    assert merge.reduction.bias is None and merge.norm.normalized_shape == (4,)


@pytest.mark.parametrize(("sets", "fragments"), [
    (["model.arch={swin: {window: 3}}", "model.patch_size=2"],
     ["model.arch.swin.window: 3 does not divide the 16x16 token grid of stage 0",
      "patch_size 2"]),
    (["model.arch={swin: {window: 3, depths: [2, 2], heads: [3, 6]}}", "model.patch_size=4"],
     ["model.arch.swin.window: 3 does not divide the 8x8 token grid of stage 0"]),
    (["model.arch={swin: {window: 4, depths: [2, 2], heads: [3, 6]}}", "model.patch_size=4",
      "model.img_size=48"], ["model.arch.swin.window: 4 does not divide the 6x6 token grid of "
                             "stage 1 (img_size 48, patch_size 4); choose a divisor of 6"]),
    (["model.arch={swin: {heads: [3, 5, 12, 24]}}"], ["model.arch.swin.heads: 5 heads do not "
                                                     "divide stage 1's width 192"]),
    (["model.arch={swin: {depths: [2, 2], heads: [3]}}"], ["model.arch.swin: depths and heads"]),
    (["model.arch={swin: {depths: [2, 0]}}"], ["model.arch.swin: depths and heads"]),
    (["model.arch={swin: {window: 0}}"], ["model.arch.swin: embed_dim and window must be"]),
    (["model.arch={swin: {window: big}}"], ["model.arch.window: expected int"]),
    (["model.arch=swin", "model.attention=diff"], ["model.attention: arch 'swin' has its own"]),
    (["model.arch=swin", "model.tokenizer=conv"], ["model.tokenizer: arch 'swin' takes patch"]),
    (["model.arch=swin", "model.pool=mean"], ["model.pool: arch 'swin' takes no pool plugin"]),
])
def test_bad_sizes_are_one_line(sets, fragments):
    args = [a for s in sets for a in ("--set", s)]
    result = CliRunner().invoke(cli, ["run", QUICKSTART, *args, "--dry-run"])
    assert_one_line_error(result, *fragments)


def test_lacks_every_visualizer_need_with_a_reason():
    for model in (lee(), lee(swin={"ape": True})):
        reasons = {need: model.lacks(need) for need in NEEDS}
        assert all(isinstance(r, str) and r.startswith("swin") for r in reasons.values()), reasons
        assert "windowed" in reasons["attention_maps"] and "[CLS]" in reasons["cls_token"]
    with pytest.raises(ZooError, match="unknown visualizer need 'maps'"):
        model.lacks("maps")


def test_weight_decay_skips_the_position_tables():
    model = lee(swin={"ape": True})
    skip = model.no_weight_decay()
    assert "absolute_pos_embed" in skip and "layers.1.blocks.3.attn.relative_position_bias_table" in skip
    assert len(skip) == 1 + 12 and all(dict(model.named_parameters())[n].ndim == 2 or n ==
                                       "absolute_pos_embed" for n in skip)


def test_features_another_size_and_num_classes_0():
    model = build_model({"arch": {"swin": {"embed_dim": 8, "depths": [1, 1], "heads": [1, 2],
                                           "window": 2}}, "num_classes": 0}).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 16) and torch.equal(out, model.features(x))
    with pytest.raises(ZooError, match=r"swin was built for 32x32 images .* got \(64, 64\)"):
        model(torch.randn(1, 3, 64, 64))


def test_the_converters_refuse_what_the_other_side_lacks():
    sw = swin_module()
    with pytest.raises(ZooError, match=r"cannot hold an absolute position table \(ape\); "
                                       r"tokenizer 'spt'; attention 'lsa'"):
        sw.to_timm(lee(swin={"ape": True}, tokenizer="spt", attention="lsa"))
    with pytest.raises(ZooError, match="from_timm: expected a timm SwinTransformer, got Linear"):
        sw.from_timm(nn.Linear(2, 2))
    from timm.models.swin_transformer import SwinTransformer
    kw = dict(img_size=32, patch_size=8, window_size=4, embed_dim=16, depths=(2, 2), num_heads=(1, 1))
    other = SwinTransformer(**kw, head_dim=8, global_pool="max", drop_rate=0.1,
                            norm_layer=partial(nn.LayerNorm, eps=1e-6))
    with pytest.raises(ZooError, match=r"our Swin has no global_pool 'max'; attention wider or "
                                       r"narrower than the stage; LayerNorm eps 1e-06 \(ours: 1e-5\); "
                                       r"head dropout 0.1$"):
        sw.from_timm(other)
    with pytest.raises(ZooError, match=r"windows and shifts per block \[\(\(4, 4\), \(0, 0\)\), "
                                       r"\(\(4, 4\), \(2, 2\)\), .* ours are: .*\(\(2, 2\), \(0, 0\)\)\]"):
        sw.from_timm(SwinTransformer(**kw, always_partition=True))  # windows of 4 on a 2x2 grid


def test_a_timm_swin_of_other_sizes_converts_with_its_windows_clamped():
    """Swin-T's shape on 64 px images, patch 4: grids 16, 8, 4, 2 with window 7 pad in timm
    (7 does not divide 16) and are refused by ours; window 8 is taken, clamped from stage 1."""
    from timm.models.swin_transformer import SwinTransformer
    sw = swin_module()
    kw = dict(img_size=64, patch_size=4, embed_dim=16, depths=(2, 2, 2, 1), num_heads=(1, 2, 2, 4),
              num_classes=5, mlp_ratio=4.0)
    with pytest.raises(ZooError, match="model.arch.swin.window: 7 does not divide the 16x16"):
        sw.from_timm(SwinTransformer(window_size=7, **kw))
    tm = scrambled(SwinTransformer(window_size=8, **kw)).eval()
    ours = sw.from_timm(tm).eval()
    assert [(b.attn.window, b.attn.shift) for s in ours.layers for b in s.blocks] == [
        (8, 0), (8, 4), (8, 0), (8, 0), (4, 0), (4, 0), (2, 0)]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tm(x), rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- through the CLI


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The quickstart as a user runs it with `--set model.arch=swin` (Swin-T's defaults: 4x4
    tokens of 8 px, so one window per stage), on fewer images."""
    out = tmp_path_factory.mktemp("swin") / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "zoo", "run", QUICKSTART, "--set", "model.arch=swin",
         "--set", "train.epochs=1", "--set", SMALL_DATA, "--set", "log.progress=false",
         "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out, proc


# SL-Swin, small: 4x4 tokens in windows of 2 (shifted by 1), then 2x2; SPT, LSA, ape, drop path
SL_SWIN = ["model.arch={swin: {embed_dim: 16, depths: [2, 2], heads: [1, 2], window: 2, ape: true}}",
           "model.tokenizer=spt", "model.attention=lsa", "model.drop_path=0.1", "train.epochs=2",
           "data.batch_size=32", "data.dataset={shapes: {train_size: 128, val_size: 32}}",
           "train.deterministic=true", "train.device=cpu", "log.progress=false",
           "log.tensorboard=false", "log.visualizers=[]"]


@pytest.fixture(scope="module")
def sl_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sl_swin") / "run"
    result = CliRunner().invoke(cli, ["run", QUICKSTART, *(a for s in SL_SWIN for a in ("--set", s)),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_the_quickstart_trains_and_skips_each_attention_figure_in_one_warning(run):
    out, proc = run
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: visualizer '{name}' skipped: swin's attention is windowed "
                        "(each token sees its window only): it has no global attention maps"
                        for name in ("cls_attention", "rollout")]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 4
    assert summary["params"] == sum(p.numel() for p in build_model(
        {"arch": "swin", "patch_size": 8}).parameters())
    assert not list((out / "figures").glob("*.png"))
    assert math.isfinite(summary["final_val_loss"])


def test_zoo_eval_gives_the_runs_own_val_accuracy(run):
    out, _ = run
    result = CliRunner().invoke(cli, ["eval", str(out), "--split", "val"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "eval_val.json").read_text())
    assert report["images"] == 64
    assert report["acc"] == pytest.approx(json.loads((out / "summary.json").read_text())
                                          ["final_val_acc"], abs=1e-9)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("which", ["run", "sl_run"])
def test_export_torchscript_and_onnx_give_the_models_logits(which, request, tmp_path):
    """Both formats, at another batch size than the export's example: Swin-T as the quickstart
    builds it, and the small SL-Swin with shifted windows (a mask per window), LSA and SPT."""
    out = request.getfixturevalue(which)
    out = out[0] if isinstance(out, tuple) else out
    assert_exports_match(out, tmp_path, torch.randn(3, 3, 32, 32))


def test_an_interrupted_run_resumes_to_the_uninterrupted_weights(sl_run, tmp_path):
    """SL-Swin stopped inside epoch 2 and resumed with `zoo run --resume`: the weights (drop
    path drawn on the way) and the optimizer moments are those of the run that was not stopped."""
    from zoo.recipe import load_recipe
    from zoo.train.trainer import Interrupted, Trainer

    registry.discover()
    recipe = load_recipe(QUICKSTART, SL_SWIN)
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    (stopped / "recipe.yaml").write_text(recipe.to_yaml())
    trainer = Trainer(recipe, stopped)
    stop_at(trainer, 6)  # 4 steps an epoch
    with pytest.raises(Interrupted):
        trainer.fit()
    assert checkpoint.load_state(stopped / "checkpoints" / "last" / checkpoint.STATE_FILE)["step"] == 6
    result = CliRunner().invoke(cli, ["run", "--resume", str(stopped)])
    assert result.exit_code == 0, result.output
    a, b = (load_file(r / "checkpoints" / "last" / checkpoint.MODEL_FILE) for r in (stopped, sl_run))
    assert a.keys() == b.keys() and "layers.0.blocks.1.attn.scale" in a
    for k in a:
        assert torch.equal(a[k], b[k]), k
    moments = [checkpoint.load_state(r / "checkpoints" / "last" / checkpoint.STATE_FILE)
               ["optimizer"]["state"] for r in (stopped, sl_run)]
    for k in moments[1]:
        assert torch.equal(moments[0][k]["exp_avg_sq"], moments[1][k]["exp_avg_sq"]), k


def test_an_odd_grid_merges_as_timms_with_a_zero_row_and_column():
    """The quickstart's shape under Swin-T's four stages: 4x4 tokens, then 2, 1 and 1 (the
    last merging pads the 1x1 grid to 2x2 with zeros), every window clamped to its grid."""
    from timm.models.swin_transformer import SwinTransformer
    tm = scrambled(SwinTransformer(img_size=32, patch_size=8, embed_dim=8, depths=(1, 1, 1, 1),
                                   num_heads=(1, 1, 2, 2), window_size=7, num_classes=3)).eval()
    ours = swin_module().from_timm(tm).eval()
    assert [s.blocks[0].attn.res for s in ours.layers] == [4, 2, 1, 1]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tm(x), rtol=0, atol=1e-5)
