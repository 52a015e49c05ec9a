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

__all__ = ["CheckFailed", "ExerciseNotFinished", "check_tensor", "first_difference", "passed", "student_call"]
