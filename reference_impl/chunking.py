"""Feed-forward chunking: run a position-wise function over slices of one dimension to lower peak memory.

Mirrors `transformers.pytorch_utils.apply_chunking_to_forward` (transformers 5.22.2; identical in 4.57.6),
which BERT-family layers call as `apply_chunking_to_forward(self.feed_forward_chunk,
self.chunk_size_feed_forward, self.seq_len_dim, attention_output)`. Taught in
lessons/03_chunking_equivalence.ipynb.

The idea (Reformer, Kitaev et al. 2020): if `f` is position-wise along dimension `d`, i.e. output position `i`
depends only on input position `i`, then for any chunk size `c` that divides the length `n`

    f(x) = cat_k f(x[k*c : (k+1)*c])      (slices and cat along d, k = 0 .. n/c - 1)

and only one chunk's intermediates are alive at a time: a feed-forward block's peak drops from `B*T*4C` floats
(its wide hidden layer) to `B*c*4C`. The equality fails as soon as `f` mixes positions along `d` (a softmax, a
norm or an attention over `d`); `probe_chunking_safety` looks for that failure empirically.

# NOTE [ Where ours differs from transformers ]
# Same results (bitwise: the same `Tensor.chunk` views, the same calls in the same order, the same
# `torch.cat`) and the same exception types; better messages and four extra checks, each raising the type
# transformers raises for the neighbouring mistake:
# - no input tensors: AssertionError, as transformers, but raised explicitly (its `assert` statement vanishes
#   under `python -O`);
# - `chunk_size < 0`: ValueError (transformers silently treats it as 0, "no chunking");
# - `chunk_dim` out of range for an input: IndexError naming the valid range (transformers: a bare
#   "tuple index out of range"); checked only when chunking, as transformers only reads it then;
# - `forward_fn` without an inspectable signature (a C builtin such as `torch.relu`): ValueError that says to
#   wrap it (transformers: inspect's ValueError "no signature found for builtin").
# The arity rule is transformers' own: `forward_fn` must declare exactly one parameter per input tensor
# (`*args` and parameters with defaults count as one each), so code that fails with theirs fails with ours.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["ChunkingProbe", "apply_chunking_to_forward", "probe_chunking_safety"]


def apply_chunking_to_forward(
    forward_fn: Callable[..., torch.Tensor],
    chunk_size: int,
    chunk_dim: int,
    *input_tensors: torch.Tensor,
) -> torch.Tensor:
    """Apply `forward_fn` to `chunk_size`-long slices of the inputs along `chunk_dim` and concatenate the
    results.

    With `n = input_tensors[0].shape[chunk_dim]` and `num_chunks = n // chunk_size`, returns

        cat([forward_fn(x1[k], x2[k], ...) for k in range(num_chunks)], dim=chunk_dim)

    where `x[k]` is the k-th of `num_chunks` equal slices of `x` along `chunk_dim`. This equals
    `forward_fn(*input_tensors)` only when `forward_fn` is independent across `chunk_dim` (position-wise along
    it); check a function you are unsure of with `probe_chunking_safety`.

    Args:
        forward_fn: called once per chunk with one positional argument per input tensor; it must declare
            exactly `len(input_tensors)` parameters (transformers' rule), so pass a module's bound `.forward`,
            not the module (whose `__call__(*args, **kwargs)` declares two). Returns a tensor whose
            `chunk_dim` is the one the chunks are concatenated along.
        chunk_size: length of each slice along `chunk_dim`; `0` means no chunking (one plain call, as every
            model's default `config.chunk_size_feed_forward = 0`). Must divide `n`.
        chunk_dim: the dimension to slice, negative counting from the end (BERT uses 1, the sequence
            dimension T of a `(B, T, C)` hidden state).
        *input_tensors: at least one tensor; when chunking, all must have the same length `n` along
            `chunk_dim` (other dimensions may differ).

    Returns:
        The concatenated output, e.g. `(B, T, C)` for BERT's feed-forward block.

    Raises:
        AssertionError: no input tensors (transformers' type).
        ValueError: `forward_fn`'s arity does not match, `chunk_size` is negative or does not divide `n`, or
            the inputs have different lengths along `chunk_dim`.
        IndexError: `chunk_dim` is out of range for one of the inputs.

    Example (Correct / Incorrect):
        >>> ffn = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.GELU(), torch.nn.Linear(32, 8))
        >>> x = torch.randn(2, 6, 8)                                   # (B, T, C)
        >>> # Correct: the FFN acts on every position alone, so chunking along T (dim 1) is exact
        >>> torch.allclose(apply_chunking_to_forward(ffn.forward, 2, 1, x), ffn(x), atol=1e-6)
        True
        >>> # Incorrect: softmax over T mixes positions; chunks normalise separately
        >>> soft = lambda h: h.softmax(dim=1)
        >>> torch.allclose(apply_chunking_to_forward(soft, 2, 1, x), soft(x))
        False
    """
    _check_not_empty(input_tensors)
    _check_arity(forward_fn, len(input_tensors))
    if chunk_size < 0:
        raise ValueError(
            f"chunk_size={chunk_size} is negative: expected 0 (no chunking) or a positive length"
        )
    if chunk_size == 0:
        return forward_fn(*input_tensors)

    n = _chunked_length(chunk_dim, input_tensors)
    if n % chunk_size != 0:
        raise ValueError(
            f"chunk_size={chunk_size} must divide input_tensors[0].shape[{chunk_dim}]={n} "
            f"(the length along chunk_dim={chunk_dim}); divisors of {n} up to 64: {_divisors(n, up_to=64)}"
        )
    num_chunks = n // chunk_size

    # Each input becomes num_chunks views (no copy) of length chunk_size along chunk_dim.
    chunks_per_input = [t.chunk(num_chunks, dim=chunk_dim) for t in input_tensors]
    # Call k gets the k-th chunk of every input; only one call's intermediates are alive at a time.
    output_chunks = [forward_fn(*chunk_k) for chunk_k in zip(*chunks_per_input, strict=True)]
    return torch.cat(output_chunks, dim=chunk_dim)


def _check_not_empty(input_tensors: Sequence[torch.Tensor]) -> None:
    if len(input_tensors) == 0:
        raise AssertionError(
            "input_tensors=() is empty: expected at least one tensor after chunk_dim, e.g. "
            "apply_chunking_to_forward(forward_fn, chunk_size, chunk_dim, hidden_states)"
        )


def _check_arity(forward_fn: Callable[..., torch.Tensor], num_inputs: int) -> None:
    """transformers' rule: forward_fn declares one parameter per input tensor (a bound method's self not
    counted)."""
    try:
        parameters = inspect.signature(forward_fn).parameters
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"forward_fn={forward_fn!r} has no signature inspect can read: wrap it in a function with one "
            f"parameter per input tensor, e.g. `def forward_chunk(x): return torch.relu(x)`"
        ) from e
    if len(parameters) != num_inputs:
        plural = "tensor was" if num_inputs == 1 else "tensors were"
        if isinstance(forward_fn, torch.nn.Module):
            # Module.__call__ is (*args, **kwargs): two parameters, whatever forward declares.
            hint = f"; pass the bound method {type(forward_fn).__name__}(...).forward instead of the module"
            name = f"{type(forward_fn).__name__}(...)"
        else:
            hint = ""
            name = getattr(forward_fn, "__qualname__", repr(forward_fn))
        raise ValueError(
            f"forward_fn={name} declares {len(parameters)} parameter(s) {tuple(parameters)} but {num_inputs} "
            f"input {plural} given: expected one parameter per input tensor (each chunk call passes them "
            f"positionally; parameters with defaults and *args count as one each){hint}"
        )


def _chunked_length(chunk_dim: int, input_tensors: Sequence[torch.Tensor]) -> int:
    """The common length of every input along chunk_dim; IndexError/ValueError naming the input that
    differs."""
    lengths = []
    for i, t in enumerate(input_tensors):
        if not -t.dim() <= chunk_dim < t.dim():
            raise IndexError(
                f"chunk_dim={chunk_dim} is out of range for input_tensors[{i}] of shape {tuple(t.shape)}: "
                f"expected {-t.dim()} <= chunk_dim < {t.dim()}"
            )
        lengths.append(t.shape[chunk_dim])
    for i, length in enumerate(lengths):
        if length != lengths[0]:
            raise ValueError(
                f"input_tensors[{i}].shape[{chunk_dim}]={length} differs from "
                f"input_tensors[0].shape[{chunk_dim}]={lengths[0]}: every input must have the same length "
                f"along chunk_dim={chunk_dim} (other dimensions may differ)"
            )
    return lengths[0]


def _divisors(n: int, up_to: int | None = None) -> list[int]:
    return [d for d in range(1, (n if up_to is None else min(n, up_to)) + 1) if n % d == 0]


@dataclass(frozen=True)
class ChunkingProbe:
    """What `probe_chunking_safety` found: per chunk size, how far the chunked output is from the unchunked
    one.

    `safe` is True when every trial stayed within tolerance. Truthiness is `safe`, so `if probe: ...` reads
    well. `max_abs_diff[c]` is the largest |chunked - unchunked| over all trials for chunk size `c`;
    `first_unsafe` is the smallest chunk size that broke the tolerance (None when safe).
    """

    safe: bool
    chunk_dim: int
    length: int
    trials: int
    atol: float
    rtol: float
    max_abs_diff: dict[int, float] = field(default_factory=dict)
    first_unsafe: int | None = None

    def __bool__(self) -> bool:
        return self.safe

    def summary(self) -> str:
        """One line, the same on every machine where the verdict is the same."""
        if self.safe or self.first_unsafe is None:
            # The size of a within-tolerance difference depends on the kernels (machine), so it is left out.
            return (
                f"no counterexample along chunk_dim={self.chunk_dim} (length {self.length}) for chunk sizes "
                f"{sorted(self.max_abs_diff)} over {self.trials} input(s): chunked == unchunked within "
                f"atol={self.atol:g}, rtol={self.rtol:g}"
            )
        return (
            f"UNSAFE along chunk_dim={self.chunk_dim}: chunk_size={self.first_unsafe} changes the result by "
            f"up to {self.max_abs_diff[self.first_unsafe]:.3g} (atol={self.atol:g}, rtol={self.rtol:g})"
        )


def probe_chunking_safety(
    forward_fn: Callable[..., torch.Tensor],
    chunk_dim: int,
    *input_tensors: torch.Tensor,
    chunk_sizes: Sequence[int] | None = None,
    random_trials: int = 2,
    atol: float | None = None,
    rtol: float | None = None,
    seed: int = 0,
) -> ChunkingProbe:
    """Look for evidence that chunking `forward_fn` along `chunk_dim` changes its result.

    For every chunk size `c` in `chunk_sizes` (default: every divisor of the length `n` below `n`, so 1 too,
    the harshest split) it compares `apply_chunking_to_forward(forward_fn, c, chunk_dim, *inputs)` with
    `forward_fn(*inputs)`, on the given inputs and on `random_trials` more drawn with the same shapes and
    dtypes (floating inputs replaced by seeded `randn`, others kept), with `torch.testing.assert_close`'s
    tolerances for the output dtype unless `atol`/`rtol` are given.

    What it can and cannot prove:
    - A difference beyond tolerance is a *counterexample*: chunking really does change the result on those
      inputs. That is a proof of unsafety.
    - No difference is only *evidence* of safety, for these shapes, chunk sizes and inputs. A function may mix
      positions only for some inputs (`x + mask * x.mean(dim)` with an all-zero mask, a cumulative sum of
      zeros), only below the tolerance, or only at other lengths or chunk sizes; the random trials make the
      first kind unlikely to slip through, never impossible. Safety for all inputs is a property of the code
      (every op position-wise along `chunk_dim`), which you prove by reading it.
    - Randomness inside `forward_fn` (dropout in training mode) makes every call differ: probe in eval mode.

    Args:
        forward_fn: as for `apply_chunking_to_forward` (one parameter per input tensor).
        chunk_dim: the dimension to test, negative counting from the end.
        *input_tensors: example inputs, each with the same length `n` along `chunk_dim`; keep them small.
        chunk_sizes: chunk sizes to try, each dividing `n` with 1 <= c < n (0, "no chunking", and n, one
            chunk, would compare the function with itself and are refused); default every divisor of `n` below
            `n`.
        random_trials: extra trials on random inputs of the same shapes and dtypes.
        atol, rtol: tolerances >= 0; default `torch.testing.assert_close`'s for the output dtype.
        seed: seed of the generator that draws the random inputs (the caller's RNG is not touched).

    Returns:
        A `ChunkingProbe` (truthy when no counterexample was found; `.summary()` for one line).
    """
    _check_not_empty(input_tensors)
    n = _chunked_length(chunk_dim, input_tensors)
    sizes = list(_divisors(n)[:-1] if chunk_sizes is None else chunk_sizes)
    if not sizes:
        raise ValueError(
            f"chunk_sizes={chunk_sizes} leaves nothing to try for length {n}: pass sizes dividing {n}"
        )
    # 0 means "no chunking" and n one chunk: both give the unchunked result and would certify anything as safe
    bad = [c for c in sizes if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c < n or n % c]
    if bad:
        raise ValueError(
            f"chunk_sizes={list(sizes)} has {bad}, which do not split length {n}; expected sizes c with "
            f"1 <= c < {n} that divide {n} (divisors: {_divisors(n)[:-1]})"
        )
    if random_trials < 0:
        raise ValueError(f"random_trials={random_trials} is negative: expected 0 or more")
    for name, tol in (("atol", atol), ("rtol", rtol)):
        if tol is not None and not tol >= 0:
            raise ValueError(
                f"{name}={tol} is negative; expected a tolerance >= 0, or None for the dtype's default"
            )

    generator = torch.Generator().manual_seed(seed)
    trials = [tuple(input_tensors)]
    for _ in range(random_trials):
        trials.append(tuple(_random_like(t, generator) for t in input_tensors))

    max_abs_diff = {c: 0.0 for c in sizes}
    first_unsafe = None
    atol_used, rtol_used = atol, rtol
    with torch.no_grad():
        for inputs in trials:
            expected = forward_fn(*inputs)
            default_rtol, default_atol = _default_tolerances(expected.dtype)
            atol_used = default_atol if atol is None else atol
            rtol_used = default_rtol if rtol is None else rtol
            for c in sizes:
                got = apply_chunking_to_forward(forward_fn, c, chunk_dim, *inputs)
                if got.shape != expected.shape:
                    diff, close = math.inf, False
                else:
                    delta = (got.double() - expected.double()).abs()
                    diff = float(delta.max()) if delta.numel() else 0.0
                    close = torch.allclose(got, expected, atol=atol_used, rtol=rtol_used, equal_nan=True)
                max_abs_diff[c] = max(max_abs_diff[c], diff)
                if not close and (first_unsafe is None or c < first_unsafe):
                    first_unsafe = c
    return ChunkingProbe(
        safe=first_unsafe is None,
        chunk_dim=chunk_dim,
        length=n,
        trials=len(trials),
        atol=float(atol_used or 0.0),
        rtol=float(rtol_used or 0.0),
        max_abs_diff=max_abs_diff,
        first_unsafe=first_unsafe,
    )


def _random_like(t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    if not t.is_floating_point():
        return t
    return torch.randn(t.shape, generator=generator, dtype=torch.float32).to(dtype=t.dtype, device=t.device)


def _default_tolerances(dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol) of torch.testing.assert_close for `dtype` (exact for integer dtypes)."""
    table = {
        torch.float16: (1e-3, 1e-5),
        torch.bfloat16: (1.6e-2, 1e-5),
        torch.float32: (1.3e-6, 1e-5),
        torch.float64: (1e-7, 1e-7),
    }
    return table.get(dtype, (0.0, 0.0))
