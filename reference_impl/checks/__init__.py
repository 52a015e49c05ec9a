"""Self-checks for the lessons' exercises: `check_...(your_code)` prints one success line or says what differs.

Each component has its module here (`checks/conv1d.py`, ...); every check is re-exported below.
"""

from reference_impl.checks._core import (
    CheckFailed,
    ExerciseNotFinished,
    check_tensor,
    first_difference,
    passed,
    student_call,
)
from reference_impl.checks.warmup import check_row_sums

__all__ = ["CheckFailed", "check_row_sums", "ExerciseNotFinished", "check_tensor", "first_difference", "passed", "student_call"]
