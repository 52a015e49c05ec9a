"""The lesson-05 self-checks pass the reference, name the classic mistakes, and tell 'not started' from
'wrong'."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reference_impl.pruning import find_pruneable_heads_and_indices, prune_linear_layer
from reference_impl.pruning_importance import select_heads_to_prune
from reference_impl.workbook.checks._core import CheckFailed, ExerciseNotFinished
from reference_impl.workbook.checks.pruning import (
    check_heads_to_prune,
    check_kept_indices,
    check_prune_linear,
)


def _not_started(*args, **kwargs):
    raise NotImplementedError


# ---------------------------------------------------------------- kept indices


def kept_reference(heads, n_heads, head_size, already):
    return find_pruneable_heads_and_indices(heads, n_heads, head_size, already)[1]


def kept_without_shift(heads, n_heads, head_size, already):
    mask = torch.ones(n_heads, head_size)
    for head in set(heads) - already:
        if head < n_heads:
            mask[head] = 0  # original number used as position: wrong once heads were pruned
    return torch.arange(n_heads * head_size)[mask.view(-1).eq(1)]


def kept_unsorted(heads, n_heads, head_size, already):
    return kept_reference(heads, n_heads, head_size, already).flip(0)


def kept_the_removed_ones(heads, n_heads, head_size, already):
    kept = set(kept_reference(heads, n_heads, head_size, already).tolist())
    return torch.tensor([j for j in range(n_heads * head_size) if j not in kept])


def test_check_kept_indices_passes_the_reference(capsys) -> None:
    check_kept_indices(kept_reference)
    assert capsys.readouterr().out == "✅ kept indices: all checks passed\n"


def test_check_kept_indices_accepts_a_list() -> None:
    check_kept_indices(lambda *a: kept_reference(*a).tolist())


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (
            kept_without_shift,
            r"already_pruned=\[1\].*head h now sits at position h minus the pruned heads below it",
        ),
        (kept_unsorted, r"the right indices in the wrong order .* return them ascending"),
        (
            kept_the_removed_ones,
            r"you returned the units to remove \[2, 3\]; return the units to keep \[0, 1, 4, 5\]",
        ),
        (lambda *a: kept_reference(*a).float(), r"dtype is torch.float32; return integer positions"),
    ],
    ids=["indices not shifted", "unsorted", "removed instead of kept", "float"],
)
def test_check_kept_indices_names_the_mistake(wrong, message) -> None:
    with pytest.raises(CheckFailed, match=message):
        check_kept_indices(wrong)


def test_check_kept_indices_unfinished() -> None:
    with pytest.raises(ExerciseNotFinished, match="kept indices"):
        check_kept_indices(_not_started)


# ---------------------------------------------------------------- prune a Linear


def prune_keeping_bias_whole(layer, index, dim):
    new = nn.Linear(*reversed(layer.weight.index_select(dim, index).shape), bias=layer.bias is not None)
    new = new.to(layer.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(layer.weight.index_select(dim, index))
        if layer.bias is not None:
            new.bias = nn.Parameter(layer.bias.detach().clone())  # wrong for dim=0: the bias is not sliced
    return new


def prune_slicing_bias_always(layer, index, dim):
    new = prune_linear_layer(layer, index, dim)
    if layer.bias is not None and dim == 1:
        new.bias = nn.Parameter(
            layer.bias.detach()[index].clone()
        )  # the "bias kept when pruning columns" mistake
    return new


def prune_losing_dtype(layer, index, dim):
    return prune_linear_layer(layer, index, dim).float()  # what transformers' version does to bf16


def prune_in_place(layer, index, dim):
    with torch.no_grad():
        layer.weight.mul_(1.0).add_(0.5)
    return prune_linear_layer(layer, index, dim)


def prune_wrong_dim(layer, index, dim):
    return (
        prune_linear_layer(layer, index, 1 - dim) if layer.weight.shape[1 - dim] > int(index.max()) else None
    )


def test_check_prune_linear_passes_the_reference(capsys) -> None:
    check_prune_linear(prune_linear_layer)
    assert capsys.readouterr().out == "✅ prune a Linear: all checks passed\n"


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (
            prune_keeping_bias_whole,
            r"dim=0: bias kept whole \(shape \(4,\)\) when pruning rows.*bias\[index\]",
        ),
        (prune_slicing_bias_always, r"dim=1: bias sliced \(shape \(3,\)\) when pruning columns.*stays whole"),
        (prune_losing_dtype, r"bfloat16.*weight: dtype is torch.float32, expected torch.bfloat16"),
        (prune_in_place, r"the original layer's weight was changed"),
        (prune_wrong_dim, r"dim=0: weight: shape is \(4, 3\), expected \(3, 6\)"),
    ],
    ids=["bias whole on rows", "bias sliced on columns", "dtype lost", "original changed", "wrong dim"],
)
def test_check_prune_linear_names_the_mistake(wrong, message) -> None:
    with pytest.raises(CheckFailed, match=message):
        check_prune_linear(wrong)


def test_check_prune_linear_unfinished() -> None:
    with pytest.raises(ExerciseNotFinished, match="prune a Linear"):
        check_prune_linear(_not_started)


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
