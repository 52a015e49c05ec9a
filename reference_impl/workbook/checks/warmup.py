"""Self-check for the warm-up exercise of lessons/00_start_here.ipynb: how every self-check in the workbook
behaves."""

from __future__ import annotations

from collections.abc import Callable

import torch

from reference_impl.workbook.checks._core import CheckFailed, check_tensor, passed, student_call

__all__ = ["check_peak_prediction", "check_row_sums"]


def check_row_sums(fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Check `fn(x)` returns the sum of each row of a (..., C) tensor, i.e. `x.sum(dim=-1)`, keeping the
    dtype.

    Raises:
        ExerciseNotFinished: `fn` still raises NotImplementedError.
        CheckFailed: wrong shape, dtype or values; the message names the input and the first difference.
    """
    exercise = "row sums"
    g = torch.Generator().manual_seed(0)
    for shape in [(3, 4), (2, 3, 5), (1, 7)]:
        x = torch.randn(shape, generator=g)
        got = student_call(exercise, fn, x.clone())
        if not isinstance(got, torch.Tensor):
            raise CheckFailed(
                f"{exercise}: for an input of shape {shape} you returned a {type(got).__name__}, expected a "
                "tensor"
            )
        check_tensor(f"{exercise}, input of shape {shape}", got, x.sum(dim=-1), atol=1e-6, rtol=1e-6)
    passed(exercise)


def check_peak_prediction(fn: Callable[[int], tuple[int, int]]) -> None:
    """Check `fn(n)` predicts `(peak, alive)` bytes of `y = (x * 2) + (x * 3)` for an fp32 `x` of `n`
    elements.

    The truth is measured with `PeakMemory` (x allocated before the block, so not counted): the two products
    and their sum are alive at once, then the products are freed.

    Raises:
        ExerciseNotFinished: `fn` still raises NotImplementedError.
        CheckFailed: a prediction differs from the measurement; the message names `n` and both numbers.
    """
    from reference_impl.workbook.measure import PeakMemory

    exercise = "peak prediction"
    for n in (1024, 3000, 1):
        x = torch.randn(n)
        with PeakMemory() as mem:
            y = (x * 2) + (x * 3)
        measured = {"peak": mem.peak_bytes, "alive": mem.current_bytes}  # read while y is still alive
        del y
        got = student_call(exercise, fn, n)
        if not (isinstance(got, tuple) and len(got) == 2):
            raise CheckFailed(f"{exercise}: return a pair (peak_bytes, alive_bytes), got {got!r}")
        for (what, truth), predicted in zip(measured.items(), got, strict=True):
            if predicted != truth:
                hint = " (an fp32 element is 4 bytes)" if predicted * 4 == truth else ""
                raise CheckFailed(
                    f"{exercise}: for n={n} you predict {what} {predicted} bytes, measured {truth}{hint}"
                )
    passed(exercise)
