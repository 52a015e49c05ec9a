"""The machinery every exercise self-check is built from.

A self-check runs a student's function or module next to the reference on several inputs and either prints one
fixed success line or raises, in plain words, what differs. Two exceptions, so a student (and a test) can tell
"not started" from "wrong":
- `ExerciseNotFinished`: the student's code still raises `NotImplementedError` (the student copy's
  placeholder);
- `CheckFailed` (an `AssertionError`): it runs but gives a wrong shape, dtype, value or gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch

__all__ = ["CheckFailed", "ExerciseNotFinished", "check_tensor", "first_difference", "passed", "student_call"]

T = TypeVar("T")


class ExerciseNotFinished(Exception):
    """The exercise's code still raises NotImplementedError: it has not been written yet."""


class CheckFailed(AssertionError):
    """The exercise's code runs but does not do what the reference does; the message says how."""


def student_call(exercise: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call the student's code; turn its `NotImplementedError` into `ExerciseNotFinished` naming the
    exercise."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as e:
        raise ExerciseNotFinished(
            f"Exercise '{exercise}' is not finished yet: replace `raise NotImplementedError` with your code."
        ) from e


def first_difference(
    got: object, expected: torch.Tensor, *, atol: float = 0.0, rtol: float = 0.0
) -> str | None:
    """Describe the first way `got` differs from `expected` (shape, dtype, then the first element), or
    None."""
    if not isinstance(got, torch.Tensor):
        return f"expected a torch.Tensor, got {type(got).__name__}"
    if got.shape != expected.shape:
        return f"shape is {tuple(got.shape)}, expected {tuple(expected.shape)}"
    if got.dtype != expected.dtype:
        return f"dtype is {got.dtype}, expected {expected.dtype}"
    g, e = got.detach().double(), expected.detach().double()
    bad = ~torch.isclose(g, e, atol=atol, rtol=rtol, equal_nan=True)
    if not bool(bad.any()):
        return None
    idx = tuple(int(i) for i in bad.nonzero()[0])
    where = f"index {list(idx)}" if idx else "the value"
    return (
        f"{int(bad.sum())} of {bad.numel()} values differ; first at {where}: "
        f"got {float(g[idx]):.6g}, expected {float(e[idx]):.6g}"
    )


def check_tensor(
    what: str, got: object, expected: torch.Tensor, *, atol: float = 0.0, rtol: float = 0.0
) -> None:
    """Raise `CheckFailed("<what>: <first difference>")` unless `got` matches `expected`."""
    problem = first_difference(got, expected, atol=atol, rtol=rtol)
    if problem is not None:
        raise CheckFailed(f"{what}: {problem}")


def passed(exercise: str) -> None:
    """Print the one fixed success line every self-check ends with."""
    print(f"✅ {exercise}: all checks passed")
