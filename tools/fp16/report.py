"""The profile's files for people: results.md, latency.png, and memory.png where there is
memory to show (CUDA); results.json stays valid JSON."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from . import RANDOM_BANNER

MiB = 2**20


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


def _memory_figure(results: dict) -> str:
    if "memory.png" in results["figures"]:
        return "![memory](memory.png)"
    return ("No memory.png: memory is measured by the CUDA caching allocator, and this profile "
            f"ran on {results['environment']['device']}.")


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
              "![latency](latency.png)", "", _memory_figure(results), "",
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


def figure_files(device: torch.device) -> list[str]:
    """The figures a profile on `device` draws: memory.png only where memory is measured (CUDA)."""
    return ["latency.png", "memory.png"] if device.type == "cuda" else ["latency.png"]


def plot(rows: list[dict], out: Path, device: torch.device, random_init: bool) -> None:
    """The figure_files, against batch size: latency.png (median with p90 bars, and throughput)
    and memory.png (params + activations, and peak allocated). A memory.png left in `out` by
    an earlier run is removed where this one has none: it would describe another run."""
    from matplotlib.figure import Figure

    ok = {m: [r for r in rows if r["mode"] == m and r["status"] == "ok"]
          for m in dict.fromkeys(r["mode"] for r in rows)}
    batches = sorted({r["batch"] for r in rows})
    title = " - RANDOM WEIGHTS" if random_init else ""
    fig = Figure(figsize=(11, 4))
    ax_lat, ax_thr = fig.subplots(1, 2)
    for mode, done in ok.items():
        if done:
            b = [r["batch"] for r in done]
            med = np.array([r["median_ms"] for r in done])
            p90 = np.array([r["p90_ms"] for r in done])
            ax_lat.errorbar(b, med, yerr=[np.zeros_like(med), p90 - med], marker="o", capsize=3, label=mode)
            ax_thr.plot(b, [r["img_per_s"] for r in done], marker="o", label=mode)
    _batch_axes(ax_lat, batches, "latency ms (median, bar to p90)", log=True)
    _batch_axes(ax_thr, batches, "images / s", log=True)
    _save(fig, f"CLIP image encoder on {device}{title}", out / "latency.png")
    if "memory.png" not in figure_files(device):
        (out / "memory.png").unlink(missing_ok=True)
        return
    fig = Figure(figsize=(11, 4))
    ax_mode, ax_peak = fig.subplots(1, 2)
    for mode, done in ok.items():
        if done:
            b = [r["batch"] for r in done]
            ax_mode.plot(b, [r["mode_bytes"] / MiB for r in done], marker="o", label=mode)
            ax_peak.plot(b, [r["peak_allocated_bytes"] / MiB for r in done], marker="o", label=mode)
    _batch_axes(ax_mode, batches, "params + activations MiB", log=False)
    _batch_axes(ax_peak, batches, "peak allocated MiB (process)", log=False)
    _save(fig, f"CLIP image encoder memory on {device}{title}", out / "memory.png")


def _batch_axes(ax, batches: list[int], ylabel: str, *, log: bool) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both" if log else "major", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()


def _save(fig, title: str, path: Path) -> None:
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def jsonable(obj):
    """Non-finite floats (an FP16 overflow) become null: results.json stays valid JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [jsonable(v) for v in obj]
    return obj
