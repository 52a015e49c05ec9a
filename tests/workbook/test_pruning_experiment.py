"""The lesson-05 experiment: the offset-pair task, the shipped checkpoint, and the claim the lesson makes."""

from __future__ import annotations

import copy

import pytest
import torch

from reference_impl.pruning_heads import prune_heads
from reference_impl.pruning_importance import head_importance, select_heads_to_prune
from reference_impl.workbook.pruning_experiment import (
    CHECKPOINT,
    checkpoint_record,
    load_tiny_task_model,
    offset_pair_batch,
    predicted_latency_ratio,
    predicted_parameters,
    task_accuracy,
    task_loss,
)


def test_offset_pair_labels_read_one_and_three_positions_back() -> None:
    x, y = offset_pair_batch(3, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (3, 12)
    assert (y[:, :3] == -100).all()
    t = 5
    assert torch.equal(y[:, t], 8 * x[:, t - 1] + x[:, t - 3])


def test_shipped_checkpoint_is_small_loads_and_solves_the_task() -> None:
    assert CHECKPOINT.with_suffix(".pt").stat().st_size < 2 * 2**20
    assert checkpoint_record()["held_out_accuracy"] >= 0.99
    model = load_tiny_task_model()
    assert task_accuracy(model, offset_pair_batch(128, torch.Generator().manual_seed(7))) >= 0.99


@pytest.mark.slow
def test_pruning_half_the_heads_by_importance_keeps_the_accuracy() -> None:
    # The lesson's claim: 8 of 16 heads, least important first, cost (almost) nothing.
    model = load_tiny_task_model()
    scoring = [offset_pair_batch(64, torch.Generator().manual_seed(8 + i)) for i in range(4)]
    importance = head_importance(model, scoring, task_loss)
    pruned = copy.deepcopy(model)
    prune_heads(pruned, select_heads_to_prune(importance, 8))
    assert task_accuracy(pruned, offset_pair_batch(128, torch.Generator().manual_seed(7))) >= 0.99


def test_predictions_of_the_tradeoff() -> None:
    # GPT-2 small: C = 768, 12 layers; half the heads remove 12 * (4C² + 3C) / 2 parameters.
    assert predicted_parameters(124_439_808, 0.5, 768, 12) == 124_439_808 - 6 * (4 * 768**2 + 3 * 768)
    assert predicted_latency_ratio(0.0, 768, 128) == 1.0
    # heads own (8C² + 4TC) of (24C² + 4TC) FLOPs per token and layer
    assert predicted_latency_ratio(1.0, 768, 128) == pytest.approx(
        1 - (8 * 768 + 4 * 128) / (24 * 768 + 4 * 128)
    )
