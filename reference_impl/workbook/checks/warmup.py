"""Self-check for the warm-up exercise of lessons/00_start_here.ipynb: how every self-check in the workbook
behaves."""

from __future__ import annotations

from collections.abc import Callable

import torch

from reference_impl.workbook.checks._core import CheckFailed, check_tensor, passed, student_call

__all__ = ["check_row_sums"]


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
