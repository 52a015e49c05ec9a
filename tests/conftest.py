"""Shared pytest set-up: deterministic torch, a Hypothesis profile that suits 2 slow cores, and fixtures."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# Hypothesis: no per-example deadline (2 shared cores make timings meaningless), a fixed budget per property.
settings.register_profile(
    "ci",
    max_examples=int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.load_profile("ci")

torch.set_num_threads(1)  # two xdist workers on two cores: one thread each


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
