"""Where a process runs: its rank under torchrun, its device, its seed.

The one home of device choice for training, evaluation and visualisation alike.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from zoo.errors import ZooError

if TYPE_CHECKING:  # torch loads on first use: recipes are validated without it (zoo list)
    import torch

DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")  # what a device option or train.device names


def is_main_process() -> bool:
    """Rank 0 under torchrun (read from its environment before any process group exists)."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass
class Dist:
    """Where this process sits under torchrun (rank 0 of 1 without it)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_pref: str) -> Dist:
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and device_pref != "cpu" else "gloo"
        dist.init_process_group(backend)
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def check_device_name(pref: str, where: str = "train.device") -> None:
    """`pref` is a device zoo knows by name (whether this machine has it is pick_device's)."""
    if not DEVICE.fullmatch(pref):
        raise ZooError(f"{where}: unknown device '{pref}'; use auto, cpu, cuda or cuda:N")


def pick_device(pref: str, d: Dist, where: str = "train.device") -> torch.device:
    """The device `pref` names (auto, cpu, cuda, cuda:N; under DDP each rank's own GPU);
    errors name `where`, the recipe key or option it came from."""
    import torch

    check_device_name(pref, where)
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ZooError(f"{where}: '{pref}' requested but CUDA is not available; use auto or cpu")
    index = d.local_rank if d.world > 1 else torch.device(pref).index or 0
    if index >= torch.cuda.device_count():
        raise ZooError(f"{where}: '{pref}', but this machine has {torch.cuda.device_count()} "
                       "CUDA device(s); use cuda:0 up to the last")
    device = torch.device("cuda", index)
    torch.cuda.set_device(device)
    return device


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed torch; `deterministic` also makes its kernels deterministic (slower, exact)."""
    import torch

    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def sync(device: torch.device) -> None:
    """Wait for the device (CUDA) to finish its queued work; a no-op on a CPU."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
