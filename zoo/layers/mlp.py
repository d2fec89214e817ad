"""The transformer block's feed-forward network."""

from __future__ import annotations

from torch import Tensor, nn


class MLP(nn.Module):
    """The block's feed-forward net: Linear -> GELU -> Linear, dropout after each Linear."""

    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
