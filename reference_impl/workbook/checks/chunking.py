"""Self-checks for the exercises of lessons/03_chunking_equivalence.ipynb.

- `check_my_query_chunked_attention(my_attention)`: attention `softmax(q k^T / sqrt(D)) v` over chunks of
  queries;
- `check_my_chunked_checkpointed_ffn(my_ffn)`: chunking plus `torch.utils.checkpoint` per chunk, so training
  memory drops too.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from reference_impl.chunking import apply_chunking_to_forward
from reference_impl.workbook.checks._core import (
    CheckFailed,
    check_tensor,
    first_difference,
    passed,
    student_call,
)
from reference_impl.workbook.measure import PeakMemory, tensor_bytes

__all__ = [
    "check_my_chunked_checkpointed_ffn",
    "check_my_largest_chunk",
    "check_my_query_chunked_attention",
]


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, D) @ (B, H, D, S) -> (B, H, T, S)
    return scores.softmax(dim=-1) @ v  # (B, H, T, S) @ (B, H, S, D) -> (B, H, T, D)


def check_my_query_chunked_attention(my_attention: Callable[..., torch.Tensor]) -> None:
    """Check `my_attention(q, k, v, chunk_size)`: `softmax(q k^T / sqrt(D)) v` computed over chunks of
    queries.

    q, k, v are `(B, H, T, D)`. The result must match unchunked attention, and the full `(B, H, T, S)` score
    matrix must never exist: the peak memory must stay below its size.
    """
    exercise = "my_query_chunked_attention"
    generator = torch.Generator().manual_seed(0)
    B, H, T, D = 2, 2, 64, 8
    q, k, v = (torch.randn(B, H, T, D, generator=generator) for _ in range(3))
    for chunk_size in (16, 4, T):
        with torch.no_grad():
            got = student_call(exercise, my_attention, q, k, v, chunk_size)
        expected = _attention(q, k, v)
        problem = first_difference(got, expected, atol=1e-5, rtol=1e-5)
        if problem is None:
            continue
        block_diagonal = apply_chunking_to_forward(_attention, chunk_size, -2, q, k, v)
        if first_difference(got, block_diagonal, atol=1e-5, rtol=1e-5) is None:
            raise CheckFailed(
                f"chunk_size={chunk_size}: each query attended only to the keys of its own chunk "
                f"({problem}): chunk the queries only; every query chunk needs all keys and values"
            )
        raise CheckFailed(f"chunk_size={chunk_size}: output {problem}")

    chunk_size = 4
    scores_bytes = B * H * T * T * q.element_size()  # one full (B, H, T, S) score matrix
    with torch.no_grad(), PeakMemory(baseline=[q, k, v]) as mem:
        student_call(exercise, my_attention, q, k, v, chunk_size)
    peak = mem.peak_bytes - sum(tensor_bytes(t) for t in (q, k, v))
    if peak >= scores_bytes:
        raise CheckFailed(
            f"chunk_size={chunk_size}: peak memory was {peak / 1024:.0f} KiB, at least one full (B, H, T, S) "
            f"score matrix ({scores_bytes / 1024:.0f} KiB): the queries are not processed {chunk_size} at a "
            "time; call apply_chunking_to_forward with chunk_dim=-2 and a function of the query chunk"
        )
    passed(exercise)


class _FeedForward(torch.nn.Module):
    """BERT's feed-forward block: LayerNorm(x + W2 gelu(W1 x)), C -> 4C -> C."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.dense_in = torch.nn.Linear(c, 4 * c)
        self.dense_out = torch.nn.Linear(4 * c, c)
        self.norm = torch.nn.LayerNorm(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.dense_out(torch.nn.functional.gelu(self.dense_in(x))))


def _training_peak(fn: Callable[[], torch.Tensor], before: list[torch.Tensor]) -> int:
    """Peak activation bytes of fn() and its backward, above the tensors in `before`; grads reset after."""
    with PeakMemory(baseline=before) as mem:
        out = fn()
        if isinstance(out, torch.Tensor) and out.requires_grad:
            out.backward(torch.ones_like(out))
    return mem.peak_bytes - sum(tensor_bytes(t) for t in before)


def check_my_chunked_checkpointed_ffn(my_ffn: Callable[..., torch.Tensor]) -> None:
    """Check `my_ffn(forward_fn, chunk_size, x)`: chunked along dim 1 with each chunk under `checkpoint`.

    Output and gradients must equal the plain block's; the training peak (forward plus backward, measured
    exactly) must be under half of the plain block's, which neither chunking alone nor checkpointing the whole
    chunked call reaches.
    """
    exercise = "my_chunked_checkpointed_ffn"
    torch.manual_seed(0)
    block = _FeedForward(16)
    params = list(block.parameters())
    x = torch.randn(2, 128, 16, generator=torch.Generator().manual_seed(1), requires_grad=True)  # (B, T, C)

    got = student_call(exercise, my_ffn, block.forward, 8, x)
    expected = block(x)
    check_tensor("output", got, expected.detach(), atol=1e-6, rtol=1e-5)
    if not got.requires_grad:
        raise CheckFailed("the output does not require grad: no gradient can flow back to x and the weights")
    grads = torch.autograd.grad(got, (x, *params), torch.ones_like(got), allow_unused=True)
    expected_grads = torch.autograd.grad(expected, (x, *params), torch.ones_like(expected))
    names = ["x", *(name for name, _ in block.named_parameters())]
    for name, g, e in zip(names, grads, expected_grads, strict=True):
        if g is None:
            raise CheckFailed(f"no gradient reached {name}")
        check_tensor(f"gradient of {name}", g, e, atol=1e-5, rtol=1e-4)

    before = [x, *params]
    plain = _training_peak(lambda: block(x), before)
    ours = _training_peak(lambda: student_call(exercise, my_ffn, block.forward, 8, x), before)
    for t in before:
        t.grad = None
    if ours >= 0.5 * plain:
        raise CheckFailed(
            f"training peak (forward + backward) was {ours / 1024:.0f} KiB, {ours / plain:.0%} of the plain "
            f"block's {plain / 1024:.0f} KiB, expected under 50%: chunking alone keeps every chunk's "
            "intermediates for backward, and checkpointing the whole chunked call recomputes all chunks at "
            "once; checkpoint each chunk's call (torch.utils.checkpoint.checkpoint(forward_fn, chunk, "
            "use_reentrant=False))"
        )
    passed(exercise)


def _ffn_peak_units(c: int, T: int) -> float:
    """Lesson 03's predicted FFN inference peak in units of B·T·C: max(1 + 7c/T, 2) chunked by c, 8 unchunked
    (0)."""
    return 8.0 if c == 0 else max(1 + 7 * c / T, 2.0)


def _reference_largest_chunk(T: int, budget: float) -> int | None:
    if budget >= 8:
        return 0
    fitting = [c for c in range(1, T + 1) if T % c == 0 and _ffn_peak_units(c, T) <= budget]
    return max(fitting) if fitting else None


def _measured_ffn_peak_units(T: int, c: int) -> float:
    """The inference peak of a Linear-GELU-Linear FFN (4x wide) chunked by c along T, measured, in units of
    B·T·C."""
    C = 4
    torch.manual_seed(0)
    ffn = torch.nn.Sequential(torch.nn.Linear(C, 4 * C), torch.nn.GELU(), torch.nn.Linear(4 * C, C))
    x = torch.randn(1, T, C)
    with torch.no_grad(), PeakMemory() as mem:
        apply_chunking_to_forward(ffn.forward, c, 1, x)
    return mem.peak_bytes / tensor_bytes(x)


def check_my_largest_chunk(my_largest_chunk: Callable[[int, float], int | None]) -> None:
    """Check `my_largest_chunk(T, budget)`: the largest chunk size whose FFN inference peak fits `budget`
    units.

    The peak is lesson 03's max(1 + 7c/T, 2) units of `B·T·C` for a chunk size c that divides T, 8 unchunked.
    Expected: 0 (no chunking) when the unchunked 8 units fit, None when not even the floor of 2 fits, else the
    largest divisor c of T that fits. The check also measures the formula once on a small FFN with
    `PeakMemory`.

    Raises:
        ExerciseNotFinished: the function still raises NotImplementedError.
        CheckFailed: a wrong answer; the message names T, the budget and the peak of both chunk sizes.
    """
    exercise = "my_largest_chunk"
    measured, predicted = _measured_ffn_peak_units(64, 16), _ffn_peak_units(16, 64)
    if abs(measured - predicted) > 0.01:  # pragma: no cover - guards the formula the exercise is graded by
        raise CheckFailed(
            f"{exercise}: the measured peak {measured:.3f} disagrees with the formula {predicted:.3f}"
        )
    for T, budget in [
        (128, 8.0),
        (128, 4.5),
        (128, 4.4),
        (96, 3.0),
        (128, 2.0),
        (128, 1.9),
        (100, 5.0),
        (7, 2.5),
    ]:
        got = student_call(exercise, my_largest_chunk, T, budget)
        want = _reference_largest_chunk(T, budget)
        if got == want:
            continue
        if isinstance(got, int) and got > 0 and T % got:
            about = f" ({got} does not divide T={T})"
        elif isinstance(got, int) and 0 <= got <= T:
            about = f" (peak {_ffn_peak_units(got, T):.3g} units)"
        else:
            about = ""
        want_peak = "" if want is None else f" (peak {_ffn_peak_units(want, T):.3g} units)"
        raise CheckFailed(
            f"{exercise}(T={T}, budget={budget}) returned {got!r}{about}; expected {want!r}{want_peak}"
        )
    passed(exercise)
