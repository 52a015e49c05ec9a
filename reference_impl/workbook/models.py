"""Lesson-only models: small layers whose memory and behaviour can be counted by hand.

These serve the lessons, not the re-implementations: `GatedBlock` is no transformers layer, it is a
`GradientCheckpointingLayer` simple enough that lesson 01 can predict its saved bytes exactly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from reference_impl.checkpointing import GradientCheckpointingLayer

__all__ = ["GatedBlock"]


class GatedBlock(GradientCheckpointingLayer):
    r"""A residual gated layer for deep, narrow stacks whose memory can be counted by hand.

    y = x + tanh(x W^T) * sigmoid(x W^T), W of shape (C, C), no bias.

    Kept for backward without checkpointing, per layer, each the size of x (B, C): x (for the matmul's weight
    gradient), tanh's output and sigmoid's output (each needed by its own derivative and by the product's):
    a = 3 units. The matmul's output h is not kept; a selective policy that saves matmul outputs keeps it: 2
    units (x and h), with the three pointwise ops recomputed.
    """

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, hidden_size, bias=False)
        nn.init.normal_(self.linear.weight, std=1.0 / math.sqrt(hidden_size))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        h = self.linear(hidden_states)  # (B, C) -> (B, C)
        return hidden_states + torch.tanh(h) * torch.sigmoid(h)
