"""The lesson-06 self-checks pass the reference and fail, in plain words, on the usual wrong answers."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from reference_impl.attention import eager_attention_forward
from reference_impl.masking import sliding_window_causal_mask_function
from reference_impl.workbook.checks._core import CheckFailed, ExerciseNotFinished
from reference_impl.workbook.checks.attention import check_sliding_window_mask


# ---- exercise 1: sliding-window mask ----
def test_sliding_window_check_passes_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    check_sliding_window_mask(sliding_window_causal_mask_function)
    assert capsys.readouterr().out == "✅ sliding-window mask: all checks passed\n"


def window_one_too_wide(w: int) -> Any:
    return lambda b, h, q, kv: (kv >= q - w) & (kv <= q)


def diagonal_masked(w: int) -> Any:
    return lambda b, h, q, kv: (kv > q - w) & (kv < q)


def not_causal(w: int) -> Any:
    return lambda b, h, q, kv: kv > q - w


def uses_python_if(w: int) -> Any:
    def fn(b: Any, h: Any, q: Any, kv: Any) -> bool:
        if kv <= q:
            return True
        return False

    return fn


@pytest.mark.parametrize(
    "wrong,message",
    [
        (window_one_too_wide, r"sliding_window=3: your window holds 4 keys, one too many"),
        (
            diagonal_masked,
            r"the diagonal is masked: a query must attend to itself \(`kv_idx <= q_idx`, not `<`\)",
        ),
        (not_causal, r"future keys are allowed"),
        (
            lambda w: sliding_window_causal_mask_function(w + 2),
            r"in yours, query 3 may attend to key 0; expected the opposite",
        ),
        (uses_python_if, r"raised RuntimeError: .* use only comparisons and arithmetic"),
        (lambda w: w, r"my_sliding_window_mask\(3\) returned int; it must return a mask function"),
        (lambda w: lambda b, h, q, kv: (kv <= q).int(), r"dtype torch.int32; expected a bool mask"),
    ],
)
def test_sliding_window_check_names_the_mistake(wrong: Any, message: str) -> None:
    with pytest.raises(CheckFailed, match=message):
        check_sliding_window_mask(wrong)


def test_sliding_window_check_draws_both_masks() -> None:
    with pytest.raises(CheckFailed) as info:
        check_sliding_window_mask(window_one_too_wide)
    assert "yours:\n0 ■ ⬚ ⬚ ⬚ ⬚ ⬚ ⬚" in str(info.value) and "expected:\n" in str(info.value)
    assert "4 ⬚ ■ ■ ■ ■ ⬚ ⬚" in str(info.value)  # yours: query 4 sees 4 keys (1..4)
    assert "4 ⬚ ⬚ ■ ■ ■ ⬚ ⬚" in str(info.value)  # expected: 3 keys (2..4)


def test_sliding_window_check_catches_an_off_by_one_only_visible_for_w_1() -> None:
    def special(w: int) -> Any:
        return sliding_window_causal_mask_function(w if w > 1 else 2)

    with pytest.raises(CheckFailed, match="sliding_window=1: your window holds 2 keys"):
        check_sliding_window_mask(special)


def test_sliding_window_stub_is_not_finished() -> None:
    def stub(w: int) -> Any:
        raise NotImplementedError

    def stub_inside(w: int) -> Any:
        def fn(b: Any, h: Any, q: Any, kv: Any) -> Any:
            raise NotImplementedError

        return fn

    for s in (stub, stub_inside):
        with pytest.raises(ExerciseNotFinished, match="'sliding-window mask' is not finished"):
            check_sliding_window_mask(s)


# ---- a recorder of the attention paid to the first key ----
class FirstKeyRecorder:
    def __init__(self) -> None:
        self.records: dict[int, torch.Tensor] = {}

    def __call__(self, module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        out, weights = eager_attention_forward(
            module, query, key, value, attention_mask, scaling, dropout, **kwargs
        )
        self.records[module.layer_idx] = weights[..., 0].detach()
        return out, weights


class WholeWeightsRecorder(FirstKeyRecorder):
    def __call__(self, module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        out, weights = eager_attention_forward(
            module, query, key, value, attention_mask, scaling, dropout, **kwargs
        )
        self.records[module.layer_idx] = weights.detach()
        return out, weights


class LastKeyRecorder(FirstKeyRecorder):
    def __call__(self, module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        out, weights = eager_attention_forward(
            module, query, key, value, attention_mask, scaling, dropout, **kwargs
        )
        self.records[module.layer_idx] = weights[..., -1].detach()
        return out, weights


class ChangesTheOutput(FirstKeyRecorder):
    def __call__(self, module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        out, weights = eager_attention_forward(
            module, query, key, value, attention_mask, 2 * scaling, dropout
        )
        self.records[module.layer_idx] = weights[..., 0].detach()
        return out, weights


def test_first_key_check_passes_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    from reference_impl.workbook.checks.attention import check_first_key_recorder

    check_first_key_recorder(FirstKeyRecorder)
    assert capsys.readouterr().out == "✅ first-key recorder: all checks passed\n"


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (WholeWeightsRecorder, r"keep the first key only"),
        (LastKeyRecorder, r"records\[0\] \(the weight on key 0\): \d+ of \d+ values differ"),
        (ChangesTheOutput, r"logits changed"),
    ],
)
def test_first_key_check_names_the_mistake(wrong: Any, message: str) -> None:
    from reference_impl.workbook.checks.attention import check_first_key_recorder

    with pytest.raises(CheckFailed, match=message):
        check_first_key_recorder(wrong)


# ---- predict the traps ----
RIGHT_TRAPS = {"A": True, "B": False, "C": False, "D": False, "E": True, "F": True}


def test_trap_check_passes_the_measured_outcomes(capsys: pytest.CaptureFixture[str]) -> None:
    from reference_impl.workbook.checks.attention import check_trap_predictions

    check_trap_predictions(lambda: RIGHT_TRAPS)
    assert capsys.readouterr().out == "✅ trap predictions: all checks passed\n"


def test_trap_check_explains_the_bool_mask_added_as_numbers() -> None:
    from reference_impl.workbook.checks.attention import check_trap_predictions

    with pytest.raises(CheckFailed, match=r"scenario D .*you predicted True.*True becomes \+1"):
        check_trap_predictions(lambda: {**RIGHT_TRAPS, "D": True})
    with pytest.raises(CheckFailed, match="one True/False per scenario"):
        check_trap_predictions(lambda: {"A": True})
