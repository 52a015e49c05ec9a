"""The chunking self-checks pass the reference, fail typical wrong answers in plain words, and spot unfinished
work."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from reference_impl.chunking import apply_chunking_to_forward
from reference_impl.workbook.checks._core import CheckFailed, ExerciseNotFinished
from reference_impl.workbook.checks.chunking import (
    check_my_chunked_checkpointed_ffn,
    check_my_largest_chunk,
    check_my_query_chunked_attention,
)

SUCCESS = {
    "my_apply_chunking": "✅ my_apply_chunking: all checks passed\n",
    "my_query_chunked_attention": "✅ my_query_chunked_attention: all checks passed\n",
    "my_chunked_checkpointed_ffn": "✅ my_chunked_checkpointed_ffn: all checks passed\n",
}


def not_started(*args: object) -> torch.Tensor:
    raise NotImplementedError


# ------------------------------------------------------------------------------------------------------------
# Exercise 2: my_query_chunked_attention


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(dim=-1) @ v


def query_chunked_attention(q, k, v, chunk_size):  # type: ignore[no-untyped-def]
    def one_chunk(q_chunk: torch.Tensor) -> torch.Tensor:
        return attention(q_chunk, k, v)

    return apply_chunking_to_forward(one_chunk, chunk_size, -2, q)


def chunking_keys_too(q, k, v, chunk_size):  # type: ignore[no-untyped-def]
    return apply_chunking_to_forward(attention, chunk_size, -2, q, k, v)


def chunking_the_head_dim(q, k, v, chunk_size):  # type: ignore[no-untyped-def]
    return apply_chunking_to_forward(attention, 4, -1, q, k, v)


def not_chunking_at_all(q, k, v, chunk_size):  # type: ignore[no-untyped-def]
    return attention(q, k, v)


def test_check_my_query_chunked_attention_passes_the_solution(capsys: pytest.CaptureFixture[str]) -> None:
    check_my_query_chunked_attention(query_chunked_attention)
    assert capsys.readouterr().out == SUCCESS["my_query_chunked_attention"]


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (
            chunking_keys_too,
            r"chunk_size=16: each query attended only to the keys of its own chunk .*chunk the queries only",
        ),
        (
            chunking_the_head_dim,
            r"chunk_size=16: output \d+ of 2048 values differ; first at index \[0, 0, 0, 0\]",
        ),
        (
            not_chunking_at_all,
            r"chunk_size=4: peak memory was \d+ KiB, at least one full "
            r"\(B, H, T, S\) score matrix \(64 KiB\)",
        ),
    ],
)
def test_check_my_query_chunked_attention_names_what_is_wrong(
    wrong: Callable[..., torch.Tensor], message: str
) -> None:
    with pytest.raises(CheckFailed, match=message):
        check_my_query_chunked_attention(wrong)


def test_check_my_query_chunked_attention_spots_an_unfinished_exercise() -> None:
    with pytest.raises(ExerciseNotFinished, match="my_query_chunked_attention"):
        check_my_query_chunked_attention(not_started)


# ------------------------------------------------------------------------------------------------------------
# Exercise 3: my_chunked_checkpointed_ffn


def chunked_checkpointed_ffn(forward_fn, chunk_size, x):  # type: ignore[no-untyped-def]
    def checkpointed(chunk: torch.Tensor) -> torch.Tensor:
        return checkpoint(forward_fn, chunk, use_reentrant=False)

    return apply_chunking_to_forward(checkpointed, chunk_size, 1, x)


def chunked_only(forward_fn, chunk_size, x):  # type: ignore[no-untyped-def]
    return apply_chunking_to_forward(forward_fn, chunk_size, 1, x)


def checkpoint_around_the_chunked_call(forward_fn, chunk_size, x):  # type: ignore[no-untyped-def]
    def chunked(h: torch.Tensor) -> torch.Tensor:
        return apply_chunking_to_forward(forward_fn, chunk_size, 1, h)

    return checkpoint(chunked, x, use_reentrant=False)


def detached(forward_fn, chunk_size, x):  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return apply_chunking_to_forward(forward_fn, chunk_size, 1, x)


def test_check_my_chunked_checkpointed_ffn_passes_the_solution(capsys: pytest.CaptureFixture[str]) -> None:
    check_my_chunked_checkpointed_ffn(chunked_checkpointed_ffn)
    assert capsys.readouterr().out == SUCCESS["my_chunked_checkpointed_ffn"]


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (
            chunked_only,
            r"training peak \(forward \+ backward\) was \d+ KiB, \d+% of the plain block's \d+ KiB, expected "
            r"under 50%",
        ),
        (checkpoint_around_the_chunked_call, r"training peak .* checkpoint each chunk's call"),
        (detached, r"the output does not require grad"),
    ],
)
def test_check_my_chunked_checkpointed_ffn_names_what_is_wrong(
    wrong: Callable[..., torch.Tensor], message: str
) -> None:
    with pytest.raises(CheckFailed, match=message):
        check_my_chunked_checkpointed_ffn(wrong)


def test_check_my_chunked_checkpointed_ffn_spots_an_unfinished_exercise() -> None:
    with pytest.raises(ExerciseNotFinished, match="my_chunked_checkpointed_ffn"):
        check_my_chunked_checkpointed_ffn(not_started)


def reference_largest_chunk(T: int, budget: float) -> int | None:
    if budget >= 8:
        return 0
    fits = [c for c in range(1, T + 1) if T % c == 0 and max(1 + 7 * c / T, 2.0) <= budget]
    return max(fits) if fits else None


def test_largest_chunk_passes_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    check_my_largest_chunk(reference_largest_chunk)
    assert capsys.readouterr().out == "✅ my_largest_chunk: all checks passed\n"


@pytest.mark.parametrize(
    "wrong, message",
    [
        # Ignores that the chunk size must divide T: 7 * c / T <= budget - 1 solved for c, rounded down.
        (
            lambda T, b: 0 if b >= 8 else (int((b - 1) * T / 7) if b >= 2 else None),
            r"budget=4.4\) returned 62 \(62 does not divide T=128\)",
        ),
        # Forgets the floor of 2 units: promises a chunk for a budget below it.
        (
            lambda T, b: reference_largest_chunk(T, max(b, 2.0)),
            r"budget=1.9\) returned 16 \(peak 2 units\); expected None",
        ),
        # Chunks even when the unchunked peak fits.
        (
            lambda T, b: reference_largest_chunk(T, min(b, 7.9)),
            r"budget=8.0\) returned 64 \(peak 4.5 units\); expected 0",
        ),
    ],
)
def test_largest_chunk_names_the_wrong_answer(wrong: Callable[..., object], message: str) -> None:
    with pytest.raises(CheckFailed, match=message):
        check_my_largest_chunk(wrong)


def test_largest_chunk_not_started() -> None:
    with pytest.raises(ExerciseNotFinished):
        check_my_largest_chunk(not_started)
