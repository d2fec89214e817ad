"""Throughput of zoo's ViT and Diff-ViT against timm's, at identical configs.

Training step (forward + backward + AdamW step) and inference (forward under
inference_mode), in images per second. Both sides are built at the CIFAR recipes' drop path
(recipes/base/cifar10.yaml: 0.1, ramped linearly over the blocks by zoo and timm alike), so
the training step measures what training runs; inference runs in eval mode, without it.
Each measurement times `--steps` steps of one model; the models of a pair are measured back
to back, in alternating order (ABBA), `--repeats` times, and the table shows medians, so
drift and background load hit both sides alike.
On CUDA the steps run under bf16 autocast and are timed after a synchronize.
`--clock process` times CPU runs by this process's CPU time instead of the wall clock: with
`--threads 1` that is the wall time an idle machine would show, and it barely moves when
other jobs share the CPU (the wall clock then measures the other jobs as much as ours).

    .venv/bin/python benchmarks/bench_models.py                  # CIFAR size, CPU or CUDA
    .venv/bin/python benchmarks/bench_models.py --repeats 3 --steps 1 --batch 32  # quick
    .venv/bin/python benchmarks/bench_models.py --threads 1 --clock process       # shared CPU
    .venv/bin/python benchmarks/bench_models.py --sdpa-on-cpu                     # Diff-ViT: SDPA on CPU
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from collections.abc import Callable

import timm
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from zoo.model import build_model

# CIFAR size: 32x32, patch 4 (64 patches + [CLS]), dim 192, depth 9, MLP ratio 2, and the
# drop path of recipes/base/cifar10.yaml
CONFIG = dict(img_size=32, patch_size=4, num_classes=10, dim=192, depth=9, mlp_ratio=2.0,
              drop_path=0.1)
HEADS = {"ViT": 12, "Diff-ViT": 6}  # a Diff-ViT has half the heads, as many parameters


def make_models(name: str, device: torch.device, sdpa_on_cpu: bool = False) -> tuple[nn.Module, nn.Module]:
    """(ours, timm's) for the pair `name`, with equal parameter counts."""
    diff = name == "Diff-ViT"
    ours = build_model({**CONFIG, "heads": HEADS[name], "attention": "diff" if diff else "mhsa"})
    if diff and sdpa_on_cpu:
        for block in ours.blocks:
            block.attn.sdpa_on_cpu = True
    theirs = VisionTransformer(
        img_size=CONFIG["img_size"], patch_size=CONFIG["patch_size"],
        num_classes=CONFIG["num_classes"], embed_dim=CONFIG["dim"], depth=CONFIG["depth"],
        num_heads=HEADS[name], mlp_ratio=CONFIG["mlp_ratio"], qkv_bias=True,
        drop_path_rate=CONFIG["drop_path"], attn_layer="diff" if diff else "attn",
    )
    n_ours, n_theirs = (sum(p.numel() for p in m.parameters()) for m in (ours, theirs))
    assert n_ours == n_theirs, f"{name}: {n_ours} vs {n_theirs} parameters"
    return ours.to(device), theirs.to(device)


def train_step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, amp) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        model.train()
        with amp():
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def infer_step_fn(model: nn.Module, x: torch.Tensor, amp) -> Callable[[], None]:
    def step() -> None:
        model.eval()
        with torch.inference_mode(), amp():
            model(x)

    return step


def timed(step: Callable[[], None], steps: int, batch: int, device: torch.device,
          clock: Callable[[], float]) -> float:
    """Images per second over `steps` calls of `step`."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = clock()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * batch / (clock() - t0)


def measure(pair: dict[str, Callable[[], None]], args, device: torch.device) -> dict[str, list[float]]:
    """Interleaved img/s of both sides of a pair, `args.repeats` times each, ABBA order."""
    for step in pair.values():
        for _ in range(args.warmup):
            step()
    runs: dict[str, list[float]] = {k: [] for k in pair}
    names = list(pair)
    clock = time.process_time if args.clock == "process" else time.perf_counter
    for r in range(args.repeats):
        for k in names if r % 2 == 0 else names[::-1]:
            runs[k].append(timed(pair[k], args.steps, args.batch, device, clock))
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=7, help="measurements per model (median)")
    ap.add_argument("--steps", type=int, default=2, help="steps per measurement")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--clock", choices=["wall", "process"], default="wall",
                    help="wall clock, or this process's CPU time (CPU only; see above)")
    ap.add_argument("--no-infer", action="store_true", help="skip the inference rows")
    ap.add_argument("--sdpa-on-cpu", action="store_true",
                    help="zoo's Diff-ViT takes its fused SDPA path on CPU too (sdpa_on_cpu)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args()

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if args.clock == "process" and device.type != "cpu":
        ap.error("--clock process measures CPU runs only")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if device.type == "cuda":
        def amp():
            return torch.autocast("cuda", dtype=torch.bfloat16)
        name = torch.cuda.get_device_name(device)
    else:
        amp = contextlib.nullcontext
        name = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    x = torch.randn(args.batch, 3, CONFIG["img_size"], CONFIG["img_size"], device=device)
    y = torch.randint(0, CONFIG["num_classes"], (args.batch,), device=device)

    rows = []
    modes = ["train"] + ([] if args.no_infer else ["infer"])
    for pair in HEADS:
        ours, theirs = make_models(pair, device, args.sdpa_on_cpu)
        for mode in modes:
            if mode == "train":
                steps = {"zoo": train_step_fn(ours, x, y, amp), "timm": train_step_fn(theirs, x, y, amp)}
            else:
                steps = {"zoo": infer_step_fn(ours, x, amp), "timm": infer_step_fn(theirs, x, amp)}
            runs = measure(steps, args, device)
            ratios = [a / b for a, b in zip(runs["zoo"], runs["timm"], strict=True)]
            rows.append({
                "model": pair, "mode": mode,
                "zoo_img_s": statistics.median(runs["zoo"]),
                "timm_img_s": statistics.median(runs["timm"]),
                "ratio": statistics.median(ratios),
                "ratio_min": min(ratios), "ratio_max": max(ratios),
                "runs": runs,
            })
        del ours, theirs

    # the price of differential attention: Diff-ViT time / ViT time, per implementation
    cost = {}
    for mode in modes:
        vit, dif = (next(r for r in rows if r["model"] == m and r["mode"] == mode) for m in HEADS)
        cost[mode] = {k: vit[f"{k}_img_s"] / dif[f"{k}_img_s"] for k in ("zoo", "timm")}

    meta = {
        "device": name, "amp": "bf16" if device.type == "cuda" else "none",
        "torch": torch.__version__, "timm": timm.__version__, "config": CONFIG, "heads": HEADS,
        "batch": args.batch, "repeats": args.repeats, "steps": args.steps, "warmup": args.warmup,
        "clock": args.clock, "sdpa_on_cpu": args.sdpa_on_cpu,
    }
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows, "diff_cost": cost}, indent=2))
        return
    print(f"# {name}; amp {meta['amp']}; torch {torch.__version__}, timm {timm.__version__}; "
          f"batch {args.batch}, drop path {CONFIG['drop_path']}, {args.repeats} repeats x {args.steps} "
          f"steps (median), {args.clock} clock" + ("; Diff-ViT SDPA on CPU" if args.sdpa_on_cpu else ""))
    print("| model    | mode  | zoo img/s | timm img/s | zoo/timm (min-max) |")
    print("|----------|-------|-----------|------------|--------------------|")
    for r in rows:
        print(f"| {r['model']:<8} | {r['mode']:<5} | {r['zoo_img_s']:9.1f} | {r['timm_img_s']:10.1f} | "
              f"{r['ratio']:.3f} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f}) |")
    for mode, c in cost.items():
        print(f"Diff-ViT time / ViT time ({mode}): zoo {c['zoo']:.3f}, timm {c['timm']:.3f}")


if __name__ == "__main__":
    main()
