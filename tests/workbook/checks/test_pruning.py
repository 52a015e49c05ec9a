"""The lesson-05 self-checks pass the reference, name the classic mistakes, and tell 'not started' from
'wrong'."""

from __future__ import annotations

import pytest
import torch

from reference_impl.pruning_importance import select_heads_to_prune
from reference_impl.workbook.checks._core import CheckFailed, ExerciseNotFinished
from reference_impl.workbook.checks.pruning import (
    check_heads_to_prune,
)


def _not_started(*args, **kwargs):
    raise NotImplementedError


# ---------------------------------------------------------------- heads to prune


def heads_forgetting_to_keep_one(importance, n):
    return (
        select_heads_to_prune(torch.nan_to_num(importance, nan=float("inf")), n, keep_per_layer=1)
        if n < 5
        else {0: [0, 1, 2, 3], 1: [0]}
    )


def heads_including_nan(importance, n):
    return select_heads_to_prune(
        torch.nan_to_num(importance, nan=-1.0), n
    )  # pruned heads look least important


def heads_most_important(importance, n):
    return select_heads_to_prune(-importance, n)


def test_check_heads_to_prune_passes_the_reference(capsys) -> None:
    check_heads_to_prune(select_heads_to_prune)
    assert capsys.readouterr().out == "✅ heads to prune: all checks passed\n"


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (heads_forgetting_to_keep_one, r"every head of layer 0 chosen; keep at least one head per layer"),
        (heads_including_nan, r"head 0 of layer 0 is pruned already \(nan\); never choose it"),
        (
            heads_most_important,
            r"budget 3: got \{0: \[0\], 1: \[1, 3\]\}, expected the least important heads \{0: \[1\], 1: "
            r"\[0, 2\]\}",
        ),
        (lambda imp, n: select_heads_to_prune(imp, max(n - 1, 0)), r"chose 2 heads .* expected 3"),
        (lambda imp, n: [0, 1], r"expected a dict \{layer: \[heads\]\}, got list"),
    ],
    ids=["empties a layer", "chooses pruned heads", "most important", "too few", "not a dict"],
)
def test_check_heads_to_prune_names_the_mistake(wrong, message) -> None:
    with pytest.raises(CheckFailed, match=message):
        check_heads_to_prune(wrong)


def test_check_heads_to_prune_unfinished() -> None:
    with pytest.raises(ExerciseNotFinished, match="heads to prune"):
        check_heads_to_prune(_not_started)


# --- the c_attn columns that survive two prunings ---


def test_surviving_columns_check_passes_the_right_list_and_names_the_q_only_mistake(capsys) -> None:
    from reference_impl.workbook.checks.pruning import check_surviving_c_attn_columns

    right = [4, 5, 6, 7, 16, 17, 18, 19, 28, 29, 30, 31]  # heads 2 and 3 remain, in each of q | k | v
    check_surviving_c_attn_columns(lambda: right)
    assert "passed" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match="q columns only"):
        check_surviving_c_attn_columns(lambda: right[:4])


def test_surviving_columns_check_names_numbers_read_as_positions() -> None:
    from reference_impl.workbook.checks.pruning import check_surviving_c_attn_columns

    heads = [2, 3, 5]  # positions 1, 2, 3 after the first pruning
    wrong = [third * 12 + h * 2 + u for third in range(3) for h in heads for u in range(2)]
    with pytest.raises(CheckFailed, match="as positions"):
        check_surviving_c_attn_columns(lambda: wrong)
    with pytest.raises(ExerciseNotFinished):
        check_surviving_c_attn_columns(_not_started)


# --- pruning with importance re-scored after every step ---


def rescored_reference(model, batches, n, step):
    import copy

    from reference_impl.pruning_heads import prune_heads
    from reference_impl.pruning_importance import head_importance
    from reference_impl.workbook.pruning_experiment import task_loss

    model, order = copy.deepcopy(model), []
    for _ in range(n // step):
        chosen = select_heads_to_prune(head_importance(model, batches, task_loss), step)
        order += [(layer, head) for layer in sorted(chosen) for head in chosen[layer]]
        prune_heads(model, chosen)
    return order


def scored_once(model, batches, n, step):
    from reference_impl.pruning_importance import head_importance
    from reference_impl.workbook.pruning_experiment import task_loss

    chosen = select_heads_to_prune(head_importance(model, batches, task_loss), n)
    return [(layer, head) for layer in sorted(chosen) for head in chosen[layer]]


def test_rescored_order_check_passes_the_reference_and_names_scoring_once(capsys) -> None:
    from reference_impl.workbook.checks.pruning import check_rescored_order

    check_rescored_order(rescored_reference)
    assert "passed" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match="re-score the pruned model"):
        check_rescored_order(scored_once)


def test_rescored_order_check_refuses_pruning_the_given_model() -> None:
    from reference_impl.pruning_heads import prune_heads
    from reference_impl.workbook.checks.pruning import check_rescored_order

    def in_place(model, batches, n, step):
        order = rescored_reference(model, batches, n, step)
        prune_heads(model, {0: [0]})
        return order

    with pytest.raises(CheckFailed, match="prune a copy"):
        check_rescored_order(in_place)
