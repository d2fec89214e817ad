"""Training throughput: the input pipeline alone, then whole training steps.

`bench_pipeline` times what feeds every training step on CIFAR-10-shaped data (50,000
generated uint8 images, 32x32): DeviceLoader batches on the device -> to_float -> the
recipe's augment ops -> normalize. It reports the whole pipeline in images per second
(synchronised once, at the end) and each stage on its own (synchronised after every stage,
so the stages add up to a little more than the whole).

`bench_step` times full training steps of a recipe (default: the CIFAR-10 `vit_p4`) through
the real Trainer on the same generated data: loader, augmentation, forward, backward, AdamW,
EMA and schedule, with bf16 autocast on CUDA. It reports img/s, the epoch time that implies
for 50,000 images, and on CUDA the model FLOPs utilisation (MFU: achieved FLOP/s of the
forward and backward, counted by torch's FlopCounterMode, over the GPU's dense bf16 peak).

    .venv/bin/python benchmarks/bench_train.py                  # CPU: 3 epochs, median
    .venv/bin/python benchmarks/bench_train.py --device cuda --json train.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from zoo.data import TensorData, build_augment, normalize, to_float
from zoo.loaders import make_loader
from zoo.recipe import load_recipe
from zoo.registry import discover, register
from zoo.train.trainer import Trainer

# The CIFAR recipe's augmentations, without and with the mixing ops.
CIFAR_AUGMENT = ["random_crop", "hflip", "autoaugment"]
CIFAR_AUGMENT_MIX = CIFAR_AUGMENT + ["mixup", "cutmix"]
CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


def cifar_like(n: int = 50_000, seed: int = 0) -> TensorData:
    """n random uint8 images of CIFAR-10's shape (timings do not depend on the pixels)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g)
    return TensorData(images, labels, [str(i) for i in range(10)], *CIFAR_STATS)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_pipeline(device: str = "cpu", augment: list | None = None, batch_size: int = 512,
                   n: int = 50_000, steps: int = 0, warmup: int = 3, repeats: int = 3) -> dict:
    """Images/s of loader + to_float + augment + normalize; per-stage ms per batch.

    steps=0 times the rest of an epoch (n // batch_size batches) after `warmup` batches;
    the whole pipeline is timed `repeats` times (one epoch each) and the median reported.
    """
    dev = torch.device(device)
    augment = CIFAR_AUGMENT_MIX if augment is None else augment
    data = cifar_like(n)
    loader = make_loader(data, batch_size=batch_size, device=dev, train=True)
    aug = build_augment(augment, num_classes=10, img_size=32)
    steps = min(steps or len(loader), len(loader)) - warmup

    def batches(epoch: int):
        it = loader.epoch(epoch)
        return [next(it) for _ in range(warmup)], (next(it) for _ in range(steps))

    # Whole pipeline, as the trainer runs it.
    totals = []
    for epoch in range(repeats):
        head, rest = batches(epoch)
        for x, y in head:
            aug(to_float(x), F.one_hot(y, 10).float())
        sync(dev)
        t0 = time.perf_counter()
        for x, y in rest:
            xa, ya = aug(to_float(x), F.one_hot(y, 10).float())
            normalize(xa, data.mean, data.std)
        sync(dev)
        totals.append(time.perf_counter() - t0)
    total = statistics.median(totals)

    # Stage by stage, each synchronised, on the batches of another epoch.
    stages: dict[str, float] = {"loader": 0.0, "to_float": 0.0}
    stages.update({name: 0.0 for name in aug.names})
    stages["normalize"] = 0.0

    def timed(name: str, fn: Callable):
        sync(dev)
        t = time.perf_counter()
        out = fn()
        sync(dev)
        stages[name] += time.perf_counter() - t
        return out

    _, rest = batches(repeats)
    for _ in range(steps):
        x, y = timed("loader", lambda: next(rest))
        x = timed("to_float", lambda x=x: to_float(x))
        t = F.one_hot(y, 10).float()
        for name, op in zip(aug.names, aug.ops, strict=True):
            x, t = timed(name, lambda op=op, x=x, t=t: op(x, t))
        timed("normalize", lambda x=x: normalize(x, data.mean, data.std))

    return {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor()
        or platform.machine(),
        "threads": torch.get_num_threads(),
        "load_avg_1min": os.getloadavg()[0],  # other work on the machine skews CPU timings
        "torch": torch.__version__,
        "augment": aug.names,
        "batch_size": batch_size,
        "steps": steps,
        "images_per_s": steps * batch_size / total,
        "images_per_s_each": [steps * batch_size / t for t in totals],
        "ms_per_batch": 1000 * total / steps,
        "stage_ms_per_batch": {k: 1000 * v / steps for k, v in stages.items()},
        "stage_images_per_s": {k: steps * batch_size / v for k, v in stages.items() if v > 0},
    }


@register("dataset", "cifar_like")
def cifar_like_dataset(split: str, n: int = 50_000) -> TensorData:
    """Generated data of CIFAR-10's shape and size, for timing training steps."""
    return cifar_like(n if split == "train" else 1000, seed=0 if split == "train" else 1)


# Dense (not 2:4-sparse) bf16 tensor-core peaks from NVIDIA's data sheets, in TFLOP/s, by
# the exact name torch.cuda.get_device_name reports: an H100 PCIe is not an H100 SXM, so a
# name is never matched by a part of it. A GPU missing here gets no MFU; add its row.
PEAK_BF16_TFLOPS = {
    "NVIDIA H100 80GB HBM3": 989.4,  # H100 SXM5
    "NVIDIA H100 PCIe": 756.0,
    "NVIDIA H100 NVL": 835.0,
    "NVIDIA H200": 989.4,  # H200 SXM
    "NVIDIA H200 NVL": 835.0,
    "NVIDIA A100-SXM4-80GB": 312.0,
    "NVIDIA A100-SXM4-40GB": 312.0,
    "NVIDIA A100 80GB PCIe": 312.0,
    "NVIDIA A100-PCIE-40GB": 312.0,
    "NVIDIA L40S": 362.1,
    "NVIDIA L4": 121.0,
    "NVIDIA A10": 125.0,
}


def peak_tflops(name: str) -> float | None:
    """The dense bf16 peak of the GPU called `name`, or None if it is not in the table."""
    return PEAK_BF16_TFLOPS.get(name.strip())


VARIANTS = {  # how the step runs: (train.compile, train.cuda_graph)
    "eager": (False, False), "compiled": (True, False), "graph": (False, True),
    "compiled+graph": (True, True),
}


def bench_step(device: str = "cpu", recipe: str = "recipes/vit_p4.yaml", steps: int = 20,
               warmup: int = 5, batch_size: int = 128, variant: str = "eager",
               overrides: list[str] | None = None) -> dict:
    """Img/s of whole training steps of `recipe` through the Trainer, and MFU on CUDA.

    `variant` says how the step runs (VARIANTS); `setup_s` is the wall time until the step
    was ready: compiling, warming up and capturing the CUDA graph.
    """
    from torch.utils.flop_counter import FlopCounterMode

    dev = torch.device(device)
    amp = "bf16" if dev.type == "cuda" else "none"
    compile, graph = VARIANTS[variant]
    r = load_recipe(recipe, [
        "data.dataset=cifar_like", f"train.device={device}", f"train.amp={amp}",
        f"data.batch_size={batch_size}", f"train.compile={str(compile).lower()}",
        f"train.cuda_graph={str(graph).lower()}", "log.progress=false", *(overrides or []),
    ])
    trainer = Trainer(r, None)
    batches = trainer.train_loader.epoch(0)
    for _ in range(warmup):
        trainer.train_step(*next(batches))
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(*next(batches))
    sync(dev)
    elapsed = time.perf_counter() - t0

    x = torch.randn(batch_size, 3, 32, 32, device=dev)
    with FlopCounterMode(display=False) as counter, trainer.autocast():
        trainer.model(x).float().logsumexp(-1).sum().backward()
    trainer.optimizer.zero_grad(set_to_none=True)
    img_s = steps * batch_size / elapsed
    flops_per_img = counter.get_total_flops() / batch_size
    peak = peak_tflops(torch.cuda.get_device_name(dev)) if dev.type == "cuda" else None
    return {
        "recipe": recipe,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor()
        or platform.machine(),
        "threads": torch.get_num_threads(),
        "load_avg_1min": os.getloadavg()[0],
        "amp": amp,
        "variant": variant,
        "step_mode": trainer.runner.mode(),
        "batch_size": batch_size,
        "params": sum(p.numel() for p in trainer.model.parameters()),
        "images_per_s": img_s,
        "setup_s": trainer.runner.setup_s,
        "epoch_s_50k": 50_000 / img_s,
        "gflops_per_image_fwd_bwd": flops_per_img / 1e9,
        "mfu": flops_per_img * img_s / (peak * 1e12) if peak else None,
    }


def report_step(result: dict) -> str:
    mfu = f", MFU {100 * result['mfu']:.1f}%" if result["mfu"] is not None else ""
    return (f"{result['recipe']} training step ({result['step_mode']}, ready in "
            f"{result['setup_s']:.1f} s): {result['images_per_s']:,.0f} img/s "
            f"(batch {result['batch_size']}, amp {result['amp']}, "
            f"{result['gflops_per_image_fwd_bwd']:.3f} GFLOP/img), "
            f"{result['epoch_s_50k']:.0f} s per 50k-image epoch{mfu} "
            f"[{result['device']}, {result['threads']} threads, load {result['load_avg_1min']:.1f}]")


def report(result: dict) -> str:
    lines = [f"{' + '.join(result['augment']) or 'no augmentation'}: "
             f"{result['images_per_s']:,.0f} img/s, median of "
             f"{', '.join(f'{v:,.0f}' for v in result['images_per_s_each'])} "
             f"({result['ms_per_batch']:.2f} ms per batch of {result['batch_size']}, "
             f"{result['steps']} batches, {result['device']}, {result['threads']} threads, "
             f"load {result['load_avg_1min']:.1f})"]
    for name, ms in result["stage_ms_per_batch"].items():
        ips = result["stage_images_per_s"].get(name, float("inf"))
        lines.append(f"  {name:<16} {ms:8.2f} ms/batch {ips:12,.0f} img/s")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=512, help="pipeline batch size")
    p.add_argument("--n", type=int, default=50_000, help="images in the generated set")
    p.add_argument("--steps", type=int, default=0, help="batches to time (0: one epoch)")
    p.add_argument("--repeats", type=int, default=3, help="epochs timed; the median is shown")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--recipe", default="recipes/vit_p4.yaml", help="recipe for bench_step")
    p.add_argument("--train-steps", type=int, default=20, help="training steps to time")
    p.add_argument("--train-batch-size", type=int, default=128, help="training step batch size")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of --recipe for the training steps (repeatable)")
    p.add_argument("--variants", default="eager",
                   help=f"how the step runs, comma-separated: {', '.join(VARIANTS)}")
    p.add_argument("--no-pipeline", action="store_true", help="time the training steps only")
    p.add_argument("--no-step", action="store_true", help="time the input pipeline only")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    discover(strict=False)
    out: dict = {}
    if not args.no_pipeline:
        out["pipeline"] = [
            bench_pipeline(args.device, augment, args.batch_size, args.n, args.steps,
                           repeats=args.repeats)
            for augment in ([], CIFAR_AUGMENT, CIFAR_AUGMENT_MIX)
        ]
        print("\n\n".join(report(r) for r in out["pipeline"]))
    if not args.no_step:
        out["train_steps"] = []
        for variant in args.variants.split(","):
            if variant not in VARIANTS:
                p.error(f"--variants: unknown '{variant}'; choose from {', '.join(VARIANTS)}")
            out["train_steps"].append(bench_step(
                args.device, args.recipe, args.train_steps, batch_size=args.train_batch_size,
                variant=variant, overrides=args.overrides))
            print("\n" + report_step(out["train_steps"][-1]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
