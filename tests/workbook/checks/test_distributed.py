"""The lesson 07 self-checks pass the right answers and say, in plain words, what is wrong with the usual
wrong ones."""

from __future__ import annotations

import math

import pytest

from reference_impl.workbook.checks._core import CheckFailed, ExerciseNotFinished
from reference_impl.workbook.checks.distributed import (
    check_ddp_runs,
    check_hook_and_gather_counts,
    check_shard_bytes,
)


def right_counts(num_layers, target):
    return (2 if target == "__call__" else 1) * num_layers, 2 * num_layers + 1


def doubled_gathers(num_layers, target):
    hooks, gathers = right_counts(num_layers, target)
    return hooks, gathers + (num_layers if target == "__call__" else 0)


def hooks_doubled_for_forward_too(num_layers, target):
    return (num_layers if target is None else 2 * num_layers), 2 * num_layers + 1


def right_shards(model, world_size):
    return sum(
        math.ceil(p.shape[0] / world_size) * (p.numel() // p.shape[0]) * p.element_size()
        for p in model.parameters()
    )


def no_padding(model, world_size):
    return sum(p.numel() * p.element_size() for p in model.parameters()) // world_size


def unfinished(*args):
    raise NotImplementedError


def test_the_right_counts_pass(capsys):
    check_hook_and_gather_counts(right_counts)
    assert capsys.readouterr().out == "✅ hook and all-gather counts: all checks passed\n"


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (
            doubled_gathers,
            r"L=1, checkpoint around __call__: all_gathers=4, expected 3 \(FSDP2 skips its own",
        ),
        (hooks_doubled_for_forward_too, r"L=1, checkpoint around forward: hook_calls=2, expected 1"),
    ],
)
def test_wrong_counts_are_explained(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        check_hook_and_gather_counts(wrong)


def test_the_right_shard_bytes_pass(capsys):
    check_shard_bytes(right_shards)
    assert capsys.readouterr().out == "✅ shard bytes: all checks passed\n"


def test_shards_without_padding_are_explained():
    with pytest.raises(CheckFailed, match=r"N=3: .*pads dim 0 up to a multiple of N"):
        check_shard_bytes(no_padding)


def test_unfinished_exercises_say_so():
    with pytest.raises(ExerciseNotFinished):
        check_hook_and_gather_counts(unfinished)
    with pytest.raises(ExerciseNotFinished):
        check_shard_bytes(unfinished)


def right_ddp_prediction(use_reentrant, find_unused_parameters, static_graph):
    return not (use_reentrant and find_unused_parameters and not static_graph)


def reentrant_always_fails(use_reentrant, find_unused_parameters, static_graph):
    return not use_reentrant


@pytest.mark.slow
def test_the_right_ddp_prediction_passes_against_two_real_ranks(capsys):
    check_ddp_runs(right_ddp_prediction)
    assert capsys.readouterr().out == "✅ which DDP settings run: all checks passed\n"


@pytest.mark.slow
def test_a_wrong_ddp_prediction_names_the_settings_that_ran():
    with pytest.raises(
        CheckFailed,
        match=r"use_reentrant=True, find_unused_parameters=False, static_graph=False: "
        r"you predicted a failure, but the step ran",
    ):
        check_ddp_runs(reentrant_always_fails)
    with pytest.raises(
        CheckFailed,
        match=r"find_unused_parameters=True, static_graph=False: you predicted it runs, "
        r"but both ranks failed with RuntimeError: Expected to mark a variable ready only once",
    ):
        check_ddp_runs(lambda *settings: True)
