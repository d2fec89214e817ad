"""FP32, FP16 and AMP (FP16/BF16 autocast) for CLIP's image encoder: speed, memory, predictions.

    python tools/fp16_profile.py --out OUT [--clip-model RN50] [--random-init] [--device auto]
        [--batch-sizes 1,8,32,128,256] [--modes fp32,fp16,amp-fp16,amp-bf16] [--images DIR]

Modes: `fp32`; `fp16`, a `.half()` copy of the encoder (weights and activations in FP16);
`amp-fp16` / `amp-bf16`, FP32 weights under `torch.autocast`, which runs matmuls and
convolutions in the low-precision type and keeps precision-sensitive ops in FP32
(Micikevicius et al., "Mixed Precision Training", arXiv:1710.03740; bfloat16: Kalamkar et al.,
"A Study of BFLOAT16 for Deep Learning Training", arXiv:1905.12322).

Latency is timed with CUDA events after warm-up (wall clock on CPU); memory comes from the CUDA
caching allocator and NVML. How predictions move is measured with CLIP's ImageNet zero-shot head
(shared with clip_vs_resnet.py) against FP32. On a CPU the defaults are CPU-sized (batch sizes
1,4; 2 warm-up and 5 timed calls). Ctrl-C writes the rows measured so far and exits with 130.
See docs/fp16.md for every column.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import gc
import math
import platform
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # `python tools/fp16_profile.py`: import tools and zoo from this checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from tqdm import tqdm  # noqa: E402

from tools.clip_common import (  # noqa: E402
    SAMPLE_PHOTOS,
    ArgumentParser,
    add_shared_args,
    choose_device,
    list_images,
    load_clip,
    resolve_prompts,
    sample_photos,
    zero_shot_head,
)
from zoo import runs  # noqa: E402
from zoo.errors import ZooError, exit_on_user_error, first_line, suggest  # noqa: E402
from zoo.io import atomic_write, open_rgb, write_json  # noqa: E402

MiB = 2**20
# (batch sizes, warm-up calls, timed calls) when the user gives none. On a CPU one RN50 forward
# at batch 256 takes minutes, so CPU runs get a size that finishes in a few minutes.
DEFAULTS = {"cuda": ("1,8,32,128,256", 10, 50), "cpu": ("1,4", 2, 5)}
RANDOM_BANNER = ("RANDOM WEIGHTS (--random-init): timings and memory are real, "
                 "but the prediction-impact numbers are not meaningful")


@dataclass(frozen=True)
class Mode:
    name: str
    weights: torch.dtype  # what the weights and the input batch are cast to
    autocast: torch.dtype | None
    description: str


MODES = {m.name: m for m in (
    Mode("fp32", torch.float32, None, "FP32 weights and math"),
    Mode("fp16", torch.float16, None, "a .half() copy: FP16 weights and activations"),
    Mode("amp-fp16", torch.float32, torch.float16, "FP32 weights, torch.autocast(dtype=float16)"),
    Mode("amp-bf16", torch.float32, torch.bfloat16, "FP32 weights, torch.autocast(dtype=bfloat16)"),
)}


def parse_batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError as e:
        raise ZooError(f"--batch-sizes {text!r}: expected comma-separated positive integers, e.g. 1,8,32") from e
    if not sizes or min(sizes) < 1:
        raise ZooError(f"--batch-sizes {text!r}: expected comma-separated positive integers, e.g. 1,8,32")
    return sizes


def parse_modes(text: str) -> list[Mode]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    for name in names:
        if name not in MODES:
            raise ZooError(f"--modes: unknown mode '{name}'{suggest(name, MODES)}; choose from {', '.join(MODES)}")
    if not names:
        raise ZooError(f"--modes: give at least one of {', '.join(MODES)}")
    return [MODES[n] for n in dict.fromkeys(names)]


# --- running a mode -------------------------------------------------------------------------


def model_for(model: nn.Module, mode: Mode) -> nn.Module:
    """The module to run in `mode`; FP16 works on a copy so the caller's model never changes."""
    return copy.deepcopy(model).to(mode.weights) if mode.weights != torch.float32 else model


@contextlib.contextmanager
def precision(mode: Mode, device: torch.device) -> Iterator[None]:
    if mode.autocast is None:
        yield
    else:
        with torch.autocast(device.type, dtype=mode.autocast):
            yield


def forward(model: nn.Module, x: torch.Tensor, mode: Mode, device: torch.device) -> torch.Tensor:
    with torch.inference_mode(), precision(mode, device):
        return model(x.to(mode.weights))


# --- timing and memory ----------------------------------------------------------------------


def latency_stats(ms: list[float]) -> dict[str, float]:
    """Median and 90th percentile (numpy's linear interpolation between order statistics)."""
    a = np.asarray(ms, dtype=np.float64)
    return {"median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)),
            "mean_ms": float(a.mean()), "min_ms": float(a.min()), "n": int(a.size)}


def throughput(batch: int, median_ms: float) -> float:
    """Images per second at the median latency."""
    return batch / (median_ms / 1000.0)


def param_bytes(model: nn.Module) -> int:
    """Bytes held by parameters and buffers (BatchNorm statistics, masks)."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def activation_bytes(peak_allocated: int, resident: int) -> int:
    """Peak allocated minus what was allocated before the batch existed (the resident weights):
    the input, intermediate and output tensors, and autocast's cast copies of the weights."""
    return max(peak_allocated - resident, 0)


def time_forward(fn: Callable[[], object], *, warmup: int, repeats: int, device: torch.device) -> list[float]:
    """Milliseconds per call: CUDA events on the GPU (no host overhead), perf_counter on CPU."""
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for _ in range(repeats):
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000.0)
    return times


def device_memory_used(device: torch.device) -> tuple[int | None, str]:
    """Memory in use on the whole GPU, as nvidia-smi shows it (NVML), else from the CUDA driver."""
    if device.type != "cuda":
        return None, "n/a"
    try:
        return torch.cuda.device_memory_used(device), "nvml"
    except Exception:  # pynvml missing, or NVML unusable in this container
        free, total = torch.cuda.mem_get_info(device)
        return total - free, "torch.cuda.mem_get_info"


def profile(model: nn.Module, modes: list[Mode], batch_sizes: list[int], *, resolution: int,
            device: torch.device, warmup: int, repeats: int, progress: bool = True) -> Iterator[dict]:
    """One row per (mode, batch size), yielded once measured, so that a Ctrl-C keeps the rows
    before it. A mode this build cannot run is reported, not raised."""
    cuda = device.type == "cuda"
    generator = torch.Generator(device=device).manual_seed(0)
    for mode in modes:
        m = model_for(model, mode)
        failure = None
        for batch in tqdm(batch_sizes, desc=mode.name, disable=not progress, leave=False):
            row = {"mode": mode.name, "batch": batch, "params_bytes": param_bytes(m), "status": failure or "ok"}
            if failure is not None:
                yield row
                continue
            if cuda:
                gc.collect()
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
                resident = torch.cuda.memory_allocated(device)
            try:
                x = torch.randn(batch, 3, resolution, resolution, device=device, generator=generator)
                call = functools.partial(forward, m, x, mode, device)
                ms = time_forward(call, warmup=warmup, repeats=repeats, device=device)
            except torch.cuda.OutOfMemoryError:
                row["status"] = "out of memory"
            except (RuntimeError, NotImplementedError) as e:  # e.g. an op without a Half kernel on CPU
                failure = row["status"] = f"unsupported: {first_line(e)}"
            else:
                stats = latency_stats(ms)
                row.update(stats, img_per_s=throughput(batch, stats["median_ms"]))
                if cuda:
                    peak = torch.cuda.max_memory_allocated(device)
                    used, source = device_memory_used(device)
                    act = activation_bytes(peak, resident)
                    row.update(peak_allocated_bytes=peak, peak_reserved_bytes=torch.cuda.max_memory_reserved(device),
                               device_used_bytes=used, device_used_source=source, activation_bytes=act,
                               mode_bytes=row["params_bytes"] + act)
            finally:
                x = call = None  # freed before the next batch size measures what is resident
            yield row
        del m
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()


# --- prediction impact ----------------------------------------------------------------------


def agreement(ref_emb: torch.Tensor, emb: torch.Tensor, head: torch.Tensor, logit_scale: float) -> dict:
    """How a mode's zero-shot predictions differ from FP32's on the same images.

    top1_agreement: share of images with the same top-1 class; max/mean_abs_prob_change: the
    largest change of any class probability in an image, max and mean over images;
    kl_mean: KL(p_fp32 || p_mode) in nats, mean over images; cosine_*: of the image embeddings.
    """
    ref_emb, emb, head = ref_emb.double(), emb.double(), head.double()
    ref_logits = logit_scale * F.normalize(ref_emb, dim=-1) @ head.t()
    logits = logit_scale * F.normalize(emb, dim=-1) @ head.t()
    ref_logp, logp = ref_logits.log_softmax(dim=-1), logits.log_softmax(dim=-1)
    change = (logp.exp() - ref_logp.exp()).abs().amax(dim=-1)
    cosine = F.cosine_similarity(ref_emb, emb, dim=-1)
    return {
        "n_images": int(emb.shape[0]),
        "top1_agreement": float((ref_logits.argmax(-1) == logits.argmax(-1)).double().mean()),
        "max_abs_prob_change": float(change.max()),
        "mean_abs_prob_change": float(change.mean()),
        "kl_mean": float((ref_logp.exp() * (ref_logp - logp)).sum(dim=-1).mean()),
        "cosine_mean": float(cosine.mean()),
        "cosine_min": float(cosine.min()),
        "non_finite_embeddings": int((~torch.isfinite(emb)).any(dim=-1).sum()),
    }


def embed(model: nn.Module, images: torch.Tensor, mode: Mode, device: torch.device, batch: int = 32) -> torch.Tensor:
    return torch.cat([forward(model, chunk.to(device), mode, device).float().cpu() for chunk in images.split(batch)])


def prediction_impact(model: nn.Module, modes: list[Mode], images: torch.Tensor, head: torch.Tensor,
                      logit_scale: float, device: torch.device) -> Iterator[tuple[str, dict]]:
    """(mode, agreement with FP32) per mode, yielded as measured (a Ctrl-C keeps the earlier ones)."""
    ref = embed(model, images, MODES["fp32"], device)
    for mode in modes:
        m = model_for(model, mode)
        try:
            yield mode.name, agreement(ref, embed(m, images, mode, device), head, logit_scale)
        except (RuntimeError, NotImplementedError) as e:
            yield mode.name, {"status": f"unsupported: {first_line(e)}"}
        del m


def evaluation_images(folder: Path | None, preprocess, resolution: int) -> tuple[torch.Tensor, str]:
    """The images predictions are compared on, and a sentence saying what they are."""
    if folder is not None:
        if not folder.is_dir():
            raise ZooError(f"--images {folder}: not a folder")
        tensors = []
        for path in list_images(folder):
            try:
                tensors.append(preprocess(open_rgb(path, exif=True)))
            except Exception as e:  # an unreadable file is skipped, like in clip_vs_resnet
                print(f"warning: skipped {path}: {first_line(e)}", file=sys.stderr)
        if not tensors:
            raise ZooError(f"--images {folder}: no readable images")
        return torch.stack(tensors), f"{len(tensors)} images from {folder}"
    try:
        photos = list(sample_photos())
    except ImportError:
        generator = torch.Generator().manual_seed(0)
        return (torch.randn(8, 3, resolution, resolution, generator=generator),
                "8 random tensors (scikit-image is not installed; pass --images DIR for real photos)")
    return (torch.stack([preprocess(im) for _, im in photos]),
            f"scikit-image sample photos ({', '.join(SAMPLE_PHOTOS)})")


# --- environment and outputs ----------------------------------------------------------------


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _driver_version() -> str:
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else version
    except Exception:  # no pynvml or no NVML: ask nvidia-smi
        pass
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20, check=True)
            return out.stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            pass
    return "n/a"


def environment(device: torch.device) -> dict:
    """zoo's run record (versions, host, commit; the command is in config) plus what speed
    depends on: the profiled GPU and its driver, cuDNN and TF32, the CPU, torch's threads."""
    cuda = device.type == "cuda"
    env = {k: v for k, v in runs.environment().items() if k != "argv"}
    return {
        **env,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if cuda else "n/a",
        "driver": _driver_version() if cuda else "n/a",
        "cudnn": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else "n/a",
        # PyTorch lets cuDNN convolutions use TF32 by default, so "fp32" convs may run in TF32.
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cpu": _cpu_name(),
        "torch_threads": torch.get_num_threads(),
    }


def _mib(row: dict, key: str) -> str:
    return f"{row[key] / MiB:.1f}" if row.get(key) is not None else "n/a"


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, fmt)


def latency_table(rows: list[dict]) -> list[str]:
    lines = ["| mode | batch | median ms | p90 ms | img/s | peak alloc MiB | peak reserved MiB | "
             "device used MiB | params MiB | activations MiB | params+act MiB | status |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['batch']} | {_num(r.get('median_ms'), '.2f')} | "
                     f"{_num(r.get('p90_ms'), '.2f')} | {_num(r.get('img_per_s'), '.1f')} | "
                     f"{_mib(r, 'peak_allocated_bytes')} | {_mib(r, 'peak_reserved_bytes')} | "
                     f"{_mib(r, 'device_used_bytes')} | {_mib(r, 'params_bytes')} | "
                     f"{_mib(r, 'activation_bytes')} | {_mib(r, 'mode_bytes')} | {r['status']} |")
    return lines


def render_markdown(results: dict) -> str:
    cfg, env = results["config"], results["environment"]
    lines = ["# CLIP image encoder: FP32 vs FP16 vs AMP", ""]
    if cfg["random_init"]:
        lines += [f"> **{RANDOM_BANNER}.**", ""]
    if results["interrupted"]:
        lines += ["> **Interrupted (Ctrl-C)**: only the rows measured before it are here.", ""]
    lines += [f"Model: CLIP `{cfg['clip_model']}` image encoder ({cfg['weights']}), input "
              f"{cfg['resolution']}x{cfg['resolution']}, warm-up {cfg['warmup']}, repeats {cfg['repeats']}, "
              f"timing: {cfg['timing']}.", "",
              f"Command: `{cfg['command']}`", "", "## Environment", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in env.items()]
    lines += ["", "## Latency and memory", "", *latency_table(results["latency"]), "",
              "Memory columns are CUDA-only (n/a on CPU); MiB = 2^20 bytes. activations = peak allocated minus "
              "what was allocated before the batch was created; params+act = what the mode itself needs. "
              "Peak alloc/reserved are process-wide: in `fp16` mode they include the FP32 encoder kept "
              "resident as the reference, so compare modes on params+act.", "",
              "![latency](latency.png)", "", "![memory](memory.png)", "",
              "## Prediction impact (vs FP32)", "",
              f"Images: {results['images']}. Zero-shot over the 1000 ImageNet classes, prompts: {cfg['prompts']}.", ""]
    if cfg["random_init"]:
        lines += ["With random weights these numbers are **not meaningful**.", ""]
    lines += ["| mode | top-1 agreement | max abs Δp | mean abs Δp | KL mean (nats) | cosine mean | cosine min | status |",
              "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, m in results["prediction_impact"].items():
        if "status" in m:
            lines.append(f"| {name} | | | | | | | {m['status']} |")
            continue
        lines.append(f"| {name} | {_num(m['top1_agreement'], '.3f')} | {_num(m['max_abs_prob_change'], '.2e')} | "
                     f"{_num(m['mean_abs_prob_change'], '.2e')} | {_num(m['kl_mean'], '.2e')} | "
                     f"{_num(m['cosine_mean'], '.6f')} | {_num(m['cosine_min'], '.6f')} | ok |")
    lines += ["", "Modes: " + "; ".join(f"`{k}`: {v}" for k, v in results["modes"].items()) + ".", ""]
    return "\n".join(lines)


def plot(rows: list[dict], out: Path, device: torch.device, random_init: bool) -> None:
    """latency.png (median with p90 bars, and throughput) and memory.png, against batch size."""
    from matplotlib.figure import Figure

    modes = list(dict.fromkeys(r["mode"] for r in rows))
    fig = Figure(figsize=(11, 4))
    ax_lat, ax_thr = fig.subplots(1, 2)
    for mode in modes:
        ok = [r for r in rows if r["mode"] == mode and r["status"] == "ok"]
        if not ok:
            continue
        b = [r["batch"] for r in ok]
        med = np.array([r["median_ms"] for r in ok])
        p90 = np.array([r["p90_ms"] for r in ok])
        ax_lat.errorbar(b, med, yerr=[np.zeros_like(med), p90 - med], marker="o", capsize=3, label=mode)
        ax_thr.plot(b, [r["img_per_s"] for r in ok], marker="o", label=mode)
    batches = sorted({r["batch"] for r in rows})
    for ax, ylabel in ((ax_lat, "latency ms (median, bar to p90)"), (ax_thr, "images / s")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(f"CLIP image encoder on {device}" + (" - RANDOM WEIGHTS" if random_init else ""))
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=100)

    fig = Figure(figsize=(11, 4))
    ax_mode, ax_peak = fig.subplots(1, 2)
    if device.type != "cuda":
        for ax in (ax_mode, ax_peak):
            ax.text(0.5, 0.5, "memory is measured on CUDA only\n(n/a on CPU)", ha="center", va="center")
            ax.set_axis_off()
    else:
        for mode in modes:
            ok = [r for r in rows if r["mode"] == mode and r["status"] == "ok"]
            if ok:
                b = [r["batch"] for r in ok]
                ax_mode.plot(b, [r["mode_bytes"] / MiB for r in ok], marker="o", label=mode)
                ax_peak.plot(b, [r["peak_allocated_bytes"] / MiB for r in ok], marker="o", label=mode)
        for ax, ylabel in ((ax_mode, "params + activations MiB"), (ax_peak, "peak allocated MiB (process)")):
            ax.set_xscale("log", base=2)
            ax.set_xticks(batches, [str(b) for b in batches])
            ax.set_xlabel("batch size")
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend()
    fig.suptitle(f"CLIP image encoder memory on {device}" + (" - RANDOM WEIGHTS" if random_init else ""))
    fig.tight_layout()
    fig.savefig(out / "memory.png", dpi=100)


def _jsonable(obj):
    """Non-finite floats (an FP16 overflow) become null: results.json stays valid JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    return obj


def build_parser() -> ArgumentParser:
    cuda_batches, cuda_warmup, cuda_repeats = DEFAULTS["cuda"]
    cpu_batches, cpu_warmup, cpu_repeats = DEFAULTS["cpu"]
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("fp16_profile"), help="output folder")
    p.add_argument("--batch-sizes", help=f"default {cuda_batches} on CUDA, {cpu_batches} on CPU")
    p.add_argument("--modes", default=",".join(MODES), help=f"subset of {','.join(MODES)}")
    p.add_argument("--warmup", type=int,
                   help=f"untimed calls per batch size (default {cuda_warmup} on CUDA, {cpu_warmup} on CPU)")
    p.add_argument("--repeats", type=int,
                   help=f"timed calls per batch size (default {cuda_repeats} on CUDA, {cpu_repeats} on CPU)")
    p.add_argument("--images", type=Path, help="images for the prediction comparison "
                   "(default: scikit-image sample photos)")
    add_shared_args(p, random_init_help="random weights (timing only)")
    return p


def run_sizes(args: argparse.Namespace, device: torch.device) -> tuple[list[int], int, int]:
    """Batch sizes, warm-up and timed calls: the user's, else the DEFAULTS of this device type."""
    batches, warmup, repeats = DEFAULTS["cuda" if device.type == "cuda" else "cpu"]
    sizes = parse_batch_sizes(args.batch_sizes if args.batch_sizes is not None else batches)
    warmup = args.warmup if args.warmup is not None else warmup
    repeats = args.repeats if args.repeats is not None else repeats
    if warmup < 0 or repeats < 1:
        raise ZooError("--warmup must be 0 or more and --repeats at least 1")
    return sizes, warmup, repeats


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    modes = parse_modes(args.modes)
    device = choose_device(args.device)  # also the current CUDA device, which events and peak counters follow
    batch_sizes, warmup, repeats = run_sizes(args, device)
    cuda = device.type == "cuda"
    prompts = resolve_prompts(args.prompts, args.random_init)
    loaded = load_clip(args.clip_model, weights=args.clip_weights, random_init=args.random_init,
                       device=device, seed=args.seed)
    visual = loaded.model.visual
    resolution = visual.input_resolution
    images, images_note = evaluation_images(args.images, loaded.preprocess, resolution)
    head = zero_shot_head(loaded, prompts, cache_dir=args.cache_dir, progress=not args.no_progress)
    logit_scale = float(loaded.model.logit_scale.detach().exp())
    env = environment(device)
    rows: list[dict] = []
    impact: dict[str, dict] = {}
    interrupted = False
    try:
        for row in profile(visual, modes, batch_sizes, resolution=resolution, device=device, warmup=warmup,
                           repeats=repeats, progress=not args.no_progress):
            rows.append(row)
        for name, metrics in prediction_impact(visual, modes, images, head.cpu(), logit_scale, device):
            impact[name] = metrics
    except KeyboardInterrupt:  # Ctrl-C: write what was measured before it
        interrupted = True
    results = {
        "config": {
            "clip_model": args.clip_model, "weights": loaded.source, "random_init": args.random_init,
            "resolution": resolution, "batch_sizes": batch_sizes, "warmup": warmup, "repeats": repeats,
            "timing": "CUDA events" if cuda else "time.perf_counter (wall clock)", "prompts": prompts,
            "command": shlex.join(["python", "tools/fp16_profile.py", *(sys.argv[1:] if argv is None else argv)]),
        },
        "note": RANDOM_BANNER if args.random_init else None,
        "interrupted": interrupted,
        "environment": env,
        "modes": {m.name: m.description for m in modes},
        "latency": rows,
        "images": images_note,
        "prediction_impact": impact,
    }
    write_json(args.out / "results.json", _jsonable(results))
    atomic_write(args.out / "results.md", render_markdown(results))
    plot(rows, args.out, device, args.random_init)
    print("\n".join(latency_table(rows)))
    print(f"written: {args.out / 'results.md'}, results.json, latency.png, memory.png")
    if interrupted:
        print(f"interrupted: wrote what was measured before Ctrl-C ({len(rows)} of "
              f"{len(modes) * len(batch_sizes)} latency rows, {len(impact)} of {len(modes)} prediction-impact "
              f"rows) to {args.out}", file=sys.stderr)
        sys.exit(130)
    return results


if __name__ == "__main__":
    main()
