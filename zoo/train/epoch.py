"""The statistics of the epoch under way, summed on the device (no host copy per step) and
kept across a resume, so an interrupted epoch still reports all of its steps."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from zoo.device import Dist


class EpochStats:
    """Sums of loss * n, correct, n, grad norm and steps, and the epoch's training seconds."""

    def __init__(self, device: torch.device):
        self.sums = torch.zeros(5, device=device)
        self.seconds = 0.0

    def add(self, loss: torch.Tensor, correct: torch.Tensor, n: int, grad_norm: torch.Tensor) -> None:
        s = self.sums
        s[0] += loss * n
        s[1] += correct
        s[2] += n
        s[3] += grad_norm.float()
        s[4] += 1

    def running(self) -> tuple[float, float, float]:
        """(mean loss, accuracy, images) so far on this rank: one host copy."""
        loss, correct, n, _, _ = self.sums.tolist()
        return loss / n, correct / n, n

    def reduce(self, d: Dist) -> torch.Tensor:
        """The sums over ranks (every rank must call this); one rank keeps the global sums,
        the others start anew."""
        if d.world > 1:
            dist.all_reduce(self.sums)
            if not d.main:
                self.sums.zero_()
        return self.sums

    def close(self, d: Dist) -> dict[str, float]:
        """The epoch's training metrics over every rank and every segment; then start anew."""
        loss, correct, n, grad, steps = self.reduce(d).tolist()
        out = {
            "train_loss": loss / max(n, 1),
            "train_acc": correct / max(n, 1),
            "grad_norm": grad / max(steps, 1),
            "img_per_s": n / self.seconds if self.seconds > 0 else 0.0,
            "steps": int(round(steps / d.world)),
        }
        self.sums.zero_()
        self.seconds = 0.0
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"epoch_stats": self.sums.tolist(), "epoch_seconds": self.seconds}

    def load_state_dict(self, state: dict[str, Any], main: bool) -> None:
        sums = state["epoch_stats"] if main else [0.0] * 5  # counted on one rank
        self.sums = torch.tensor(sums, device=self.sums.device)
        self.seconds = float(state["epoch_seconds"])
