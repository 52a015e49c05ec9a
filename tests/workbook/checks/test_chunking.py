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
    check_my_chunking,
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
# Exercise 1: my_apply_chunking


def chunking_along_the_wrong_dim(forward_fn, chunk_size, chunk_dim, *xs):  # type: ignore[no-untyped-def]
    if chunk_size == 0:
        return forward_fn(*xs)
    wrong = 0 if chunk_dim != 0 else 1
    num_chunks = xs[0].shape[wrong] // chunk_size or 1
    pieces = zip(*(x.chunk(num_chunks, dim=wrong) for x in xs), strict=True)
    return torch.cat([forward_fn(*p) for p in pieces], dim=wrong)


def concatenating_along_dim_0(forward_fn, chunk_size, chunk_dim, *xs):  # type: ignore[no-untyped-def]
    if chunk_size == 0:
        return forward_fn(*xs)
    pieces = zip(*(x.split(chunk_size, dim=chunk_dim) for x in xs), strict=True)
    return torch.cat([forward_fn(*p) for p in pieces], dim=0)


def one_chunk_too_few(forward_fn, chunk_size, chunk_dim, *xs):  # type: ignore[no-untyped-def]
    if chunk_size == 0:
        return forward_fn(*xs)
    num_chunks = xs[0].shape[chunk_dim] // chunk_size - 1 or 1  # off by one: chunks come out too long
    pieces = zip(*(x.chunk(num_chunks, dim=chunk_dim) for x in xs), strict=True)
    return torch.cat([forward_fn(*p) for p in pieces], dim=chunk_dim)


def dropping_the_last_chunk(forward_fn, chunk_size, chunk_dim, *xs):  # type: ignore[no-untyped-def]
    if chunk_size == 0:
        return forward_fn(*xs)
    n = xs[0].shape[chunk_dim]
    starts = range(0, n - chunk_size, chunk_size)  # off by one: stops before the last chunk
    outs = [forward_fn(*(x.narrow(chunk_dim, s, chunk_size) for x in xs)) for s in starts]
    return torch.cat(outs, dim=chunk_dim)


def chunking_only_the_first_input(forward_fn, chunk_size, chunk_dim, *xs):  # type: ignore[no-untyped-def]
    if chunk_size == 0:
        return forward_fn(*xs)
    firsts = xs[0].split(chunk_size, dim=chunk_dim)
    return torch.cat([forward_fn(f, *xs[1:]) for f in firsts], dim=chunk_dim)


def reversed_order(forward_fn, chunk_size, chunk_dim, *xs):  # type: ignore[no-untyped-def]
    if chunk_size == 0:
        return forward_fn(*xs)
    pieces = list(zip(*(x.split(chunk_size, dim=chunk_dim) for x in xs), strict=True))
    return torch.cat([forward_fn(*p) for p in reversed(pieces)], dim=chunk_dim)


def crashing_on_zero(forward_fn, chunk_size, chunk_dim, *xs):  # type: ignore[no-untyped-def]
    num_chunks = xs[0].shape[chunk_dim] // max(chunk_size, 1)  # chunk_size=0 chunks into single positions
    pieces = zip(*(x.chunk(num_chunks, dim=chunk_dim) for x in xs), strict=True)
    return torch.cat([forward_fn(*p) for p in pieces], dim=chunk_dim)


def test_check_my_chunking_passes_the_reference_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    check_my_chunking(apply_chunking_to_forward)
    assert capsys.readouterr().out == SUCCESS["my_apply_chunking"]


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (
            chunking_along_the_wrong_dim,
            r"chunks of 2 along dim 1: call 0 of forward_fn got a chunk of shape \(2, 8, 3\), expected \(2, "
            r"2, 3\): slice every input along chunk_dim=1",
        ),
        (
            concatenating_along_dim_0,
            r"output shape is \(8, 2, 3\), expected \(2, 8, 3\): concatenate the chunk outputs along "
            r"chunk_dim=1",
        ),
        (one_chunk_too_few, r"call 0 of forward_fn got a chunk of shape \(2, 3, 3\), expected \(2, 2, 3\)"),
        (
            dropping_the_last_chunk,
            r"forward_fn was called 3 time\(s\), expected 4 \(8 // chunk_size=2 along chunk_dim=1\)",
        ),
        (
            chunking_only_the_first_input,
            r"forward_fn got pieces of shapes \(2, 3, 3\) and \(2, 6, 5\) in one call: chunk every input "
            r"tensor the same way",
        ),
        (
            reversed_order,
            r"chunks of 2 along dim 1: output: 48 of 48 values differ; first at index \[0, 0, 0\]",
        ),
        (
            crashing_on_zero,
            r"chunk_size=0 \(no chunking\): call 0 of forward_fn got a chunk of shape \(2, 1, 3\), expected "
            r"\(2, 8, 3\): chunk_size=0 means no chunking",
        ),
    ],
)
def test_check_my_chunking_names_what_is_wrong(wrong: Callable[..., torch.Tensor], message: str) -> None:
    with pytest.raises(CheckFailed, match=message):
        check_my_chunking(wrong)


def test_check_my_chunking_spots_an_unfinished_exercise() -> None:
    with pytest.raises(ExerciseNotFinished, match="my_apply_chunking"):
        check_my_chunking(not_started)


def test_check_my_chunking_says_when_nothing_is_returned() -> None:
    def returns_nothing(forward_fn, chunk_size, chunk_dim, *xs):  # type: ignore[no-untyped-def]
        apply_chunking_to_forward(forward_fn, chunk_size, chunk_dim, *xs)

    with pytest.raises(CheckFailed, match=r"expected a torch\.Tensor, got NoneType"):
        check_my_chunking(returns_nothing)


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
