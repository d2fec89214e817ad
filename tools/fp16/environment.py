"""What a profile's speed depends on, recorded beside it: the GPU and its driver, cuDNN and
TF32, the CPU, torch's threads, and zoo's run record."""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import torch

from zoo import runs


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
