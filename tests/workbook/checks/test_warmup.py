"""Self-checks of lesson 00: the peak prediction accepts the right numbers and names the wrong one."""

from __future__ import annotations

import pytest

from reference_impl.workbook.checks import CheckFailed, ExerciseNotFinished, check_peak_prediction


def test_the_right_prediction_passes(capsys: pytest.CaptureFixture[str]) -> None:
    check_peak_prediction(lambda n: (12 * n, 4 * n))
    assert "peak prediction: all checks passed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (
            lambda n: (8 * n, 4 * n),
            "you predict peak 8192 bytes, measured 12288",
        ),  # forgot that x*3 joins x*2
        (lambda n: (3 * n, n), "4 bytes"),  # counted elements, not bytes
        (lambda n: 12 * n, "return a pair"),
    ],
)
def test_a_wrong_prediction_is_named(wrong, message: str) -> None:
    with pytest.raises(CheckFailed, match=message):
        check_peak_prediction(wrong)


def test_an_unfinished_prediction_says_so() -> None:
    def not_yet(n: int) -> tuple[int, int]:
        raise NotImplementedError

    with pytest.raises(ExerciseNotFinished):
        check_peak_prediction(not_yet)
