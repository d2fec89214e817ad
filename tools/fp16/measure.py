"""Latency, throughput and memory of each mode at each batch size."""

from __future__ import annotations

import functools
import gc
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from zoo.errors import first_line
from zoo.train.trainer import progress as bar

from .precision import forward, model_for
from .settings import Mode


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
        for batch in bar(batch_sizes, progress, desc=mode.name):
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
