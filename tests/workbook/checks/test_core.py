"""Tests of reference_impl/workbook/checks/_core.py: the plain-words messages every exercise self-check is
built from."""

from __future__ import annotations

import pytest
import torch

import reference_impl.workbook.checks as checks
from reference_impl.workbook.checks._core import (
    CheckFailed,
    ExerciseNotFinished,
    check_tensor,
    first_difference,
    passed,
    student_call,
)

# --- first_difference / check_tensor: shape, then dtype, then the first element
# ---------------------------------


def test_equal_tensors_have_no_difference() -> None:
    x = torch.arange(6.0).reshape(2, 3)
    assert first_difference(x.clone(), x) is None
    check_tensor("output", x.clone(), x)  # does not raise


def test_a_wrong_shape_is_reported_with_both_shapes() -> None:
    got, expected = torch.zeros(3, 2), torch.zeros(2, 3)
    assert first_difference(got, expected) == "shape is (3, 2), expected (2, 3)"


def test_shape_is_reported_before_dtype() -> None:
    got, expected = torch.zeros(3, 2, dtype=torch.float64), torch.zeros(2, 3)
    assert first_difference(got, expected) == "shape is (3, 2), expected (2, 3)"


def test_a_wrong_dtype_is_reported_with_both_dtypes() -> None:
    got, expected = torch.zeros(2, 3, dtype=torch.float64), torch.zeros(2, 3)
    assert first_difference(got, expected) == "dtype is torch.float64, expected torch.float32"


def test_the_first_differing_index_its_values_and_the_count_are_reported() -> None:
    expected = torch.zeros(2, 3, 4)
    got = expected.clone()
    got[1, 2, 0] = 7.0
    got[1, 2, 3] = 9.0  # later in row-major order: not the one named
    assert (
        first_difference(got, expected)
        == "2 of 24 values differ; first at index [1, 2, 0]: got 7, expected 0"
    )


def test_a_transposed_answer_names_the_first_off_diagonal_element() -> None:
    expected = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    message = first_difference(expected.T.contiguous(), expected)
    assert message == "2 of 4 values differ; first at index [0, 1]: got 3, expected 2"


def test_a_zero_dimensional_tensor_is_called_the_value() -> None:
    assert first_difference(torch.tensor(1.5), torch.tensor(2.0)) == (
        "1 of 1 values differ; first at the value: got 1.5, expected 2"
    )


def test_tolerances_are_respected() -> None:
    expected = torch.ones(4)
    got = expected + 1e-4
    assert first_difference(got, expected) is not None  # bitwise by default
    assert first_difference(got, expected, atol=1e-3) is None
    assert first_difference(got, expected, rtol=1e-3) is None


def test_nan_where_nan_is_expected_is_equal() -> None:
    expected = torch.tensor([float("nan"), 1.0])
    assert first_difference(expected.clone(), expected) is None
    assert first_difference(torch.tensor([0.0, 1.0]), expected) is not None


def test_something_that_is_not_a_tensor_is_named_by_its_type() -> None:
    assert first_difference([1.0, 2.0], torch.ones(2)) == "expected a torch.Tensor, got list"  # type: ignore[arg-type]


def test_tensors_that_need_grad_are_compared_without_error() -> None:
    expected = torch.ones(3, requires_grad=True)
    assert first_difference(expected * 1, expected) is None


def test_check_tensor_raises_check_failed_prefixed_with_what_was_checked() -> None:
    with pytest.raises(CheckFailed) as info:
        check_tensor("output of my_conv1d", torch.zeros(2, 2), torch.zeros(2, 3))
    assert str(info.value) == "output of my_conv1d: shape is (2, 2), expected (2, 3)"


def test_check_failed_is_an_assertion_error_and_not_finished_is_not() -> None:
    # A wrong answer is a failed assertion; an unwritten one is a different thing, and the two are told apart.
    assert issubclass(CheckFailed, AssertionError)
    assert not issubclass(ExerciseNotFinished, AssertionError)
    assert not issubclass(ExerciseNotFinished, NotImplementedError)


# --- student_call: NotImplementedError becomes ExerciseNotFinished, naming the exercise
# --------------------------


def test_student_call_returns_what_the_student_code_returns() -> None:
    assert student_call("double", lambda x, *, k: k * x, 3, k=2) == 6


def test_not_implemented_becomes_exercise_not_finished_naming_the_exercise() -> None:
    def my_row_sums(x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    with pytest.raises(ExerciseNotFinished) as info:
        student_call("row sums", my_row_sums, torch.ones(2))
    assert str(info.value) == (
        "Exercise 'row sums' is not finished yet: replace `raise NotImplementedError` with your code."
    )
    assert isinstance(info.value.__cause__, NotImplementedError)


def test_not_implemented_raised_deep_inside_a_module_is_caught_too() -> None:
    class MyLayer(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.helper(x)

        def helper(self, x: torch.Tensor) -> torch.Tensor:
            raise NotImplementedError

    with pytest.raises(ExerciseNotFinished, match="Exercise 'my layer' is not finished yet"):
        student_call("my layer", MyLayer(), torch.ones(2))


def test_other_errors_from_student_code_pass_through_unchanged() -> None:
    def broken(x: torch.Tensor) -> torch.Tensor:
        raise ValueError("x has the wrong shape")

    with pytest.raises(ValueError, match="x has the wrong shape"):
        student_call("broken", broken, torch.ones(2))


# --- passed: exactly one fixed line
# ----------------------------------------------------------------------------


def test_success_prints_exactly_one_fixed_line(capsys: pytest.CaptureFixture[str]) -> None:
    passed("row sums")
    captured = capsys.readouterr()
    assert captured.out == "✅ row sums: all checks passed\n"
    assert captured.err == ""


def test_the_checks_package_re_exports_the_core() -> None:
    for name in (
        "CheckFailed",
        "ExerciseNotFinished",
        "check_tensor",
        "first_difference",
        "passed",
        "student_call",
    ):
        assert getattr(checks, name) is globals()[name], name
