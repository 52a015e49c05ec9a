"""Tests for reference_impl.chunking: equivalence with transformers, chunked == unchunked, errors, the
probe."""

from __future__ import annotations

import re

import pytest
import torch
import transformers
from hypothesis import given
from hypothesis import strategies as st
from packaging.version import Version
from torch.utils.checkpoint import checkpoint
from transformers import BertModel
from transformers.models.bert import modeling_bert
from transformers.pytorch_utils import apply_chunking_to_forward as hf_apply_chunking_to_forward

from reference_impl.chunking import apply_chunking_to_forward, probe_chunking_safety
from reference_impl.workbook.measure import PeakMemory, SavedTensors, tensor_bytes
from reference_impl.workbook.tiny import tiny_bert_config

TRANSFORMERS = Version(transformers.__version__)

# Chunked vs unchunked matmuls may take different kernels (different row counts), so equality is stated
# with tolerances; transformers' function vs ours run the very same ops and are compared bitwise.
TOLERANCES = {torch.float32: {"atol": 1e-6, "rtol": 1e-5}, torch.bfloat16: {"atol": 1e-2, "rtol": 1.6e-2}}


def make_ffn(c: int = 8, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A BERT-like feed-forward block C -> 4C -> C: position-wise along every dimension but the last."""
    return torch.nn.Sequential(torch.nn.Linear(c, 4 * c), torch.nn.GELU(), torch.nn.Linear(4 * c, c)).to(
        dtype
    )


def tiny_bert(**overrides: int) -> BertModel:
    return BertModel(tiny_bert_config(**overrides)).eval()


class Spy:
    """A position-wise forward_fn (x * 2) that records the shape of every chunk it is called with."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return x * 2


# ------------------------------------------------------------------------------------------------------------
# Golden cases: what gets called, with what


def test_six_positions_in_chunks_of_two_make_three_calls_of_length_two() -> None:
    x = torch.arange(12.0).reshape(1, 6, 2)  # (B=1, T=6, C=2)
    spy = Spy()
    out = apply_chunking_to_forward(spy.forward, 2, 1, x)
    assert spy.shapes == [(1, 2, 2), (1, 2, 2), (1, 2, 2)]
    assert torch.equal(out, x * 2)


def test_chunk_size_zero_is_one_plain_call() -> None:
    x = torch.randn(2, 6, 3)
    spy = Spy()
    out = apply_chunking_to_forward(spy.forward, 0, 1, x)
    assert spy.shapes == [(2, 6, 3)]
    assert torch.equal(out, x * 2)


def test_chunk_size_equal_to_the_length_is_one_call() -> None:
    x = torch.randn(2, 6, 3)
    spy = Spy()
    apply_chunking_to_forward(spy.forward, 6, 1, x)
    assert spy.shapes == [(2, 6, 3)]


def test_inputs_are_unchanged_after_the_call() -> None:
    a, b = torch.randn(2, 8, 3), torch.randn(2, 8, 5)
    a0, b0 = a.clone(), b.clone()
    apply_chunking_to_forward(lambda x, y: x.sum(-1, keepdim=True) * y, 4, 1, a, b)
    assert torch.equal(a, a0) and torch.equal(b, b0)


# ------------------------------------------------------------------------------------------------------------
# Equivalence with transformers (bitwise: same ops, same order)


@pytest.mark.oracle
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("shape", "chunk_size", "chunk_dim"),
    [((2, 8, 8), 2, 1), ((2, 8, 8), 4, -2), ((3, 12, 8), 1, 1), ((4, 6, 8), 2, 0), ((2, 8, 8), 0, 1)],
)
def test_bitwise_equal_to_transformers_forward_and_backward(
    dtype: torch.dtype, shape: tuple[int, ...], chunk_size: int, chunk_dim: int
) -> None:
    ffn = make_ffn(shape[-1], dtype)
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    ours = apply_chunking_to_forward(ffn.forward, chunk_size, chunk_dim, x)
    theirs = hf_apply_chunking_to_forward(ffn.forward, chunk_size, chunk_dim, x)
    torch.testing.assert_close(ours, theirs, atol=0, rtol=0)
    grad_out = torch.randn_like(ours)
    ours_grads = torch.autograd.grad(ours, (x, *ffn.parameters()), grad_out)
    theirs_grads = torch.autograd.grad(theirs, (x, *ffn.parameters()), grad_out)
    for got, expected in zip(ours_grads, theirs_grads, strict=True):
        torch.testing.assert_close(got, expected, atol=0, rtol=0)


@pytest.mark.oracle
def test_bitwise_equal_to_transformers_with_several_inputs_of_different_widths() -> None:
    ffn = make_ffn(4)
    gate = torch.nn.Linear(6, 4)

    def gated(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return ffn(x) * gate(g).sigmoid()  # (B, T, 4) * (B, T, 4)

    x, g = torch.randn(2, 12, 4), torch.randn(2, 12, 6)
    ours = apply_chunking_to_forward(gated, 3, 1, x, g)
    torch.testing.assert_close(ours, hf_apply_chunking_to_forward(gated, 3, 1, x, g), atol=0, rtol=0)
    torch.testing.assert_close(ours, gated(x, g), **TOLERANCES[torch.float32])


@pytest.mark.oracle
def test_tiny_bert_chunked_feed_forward_gives_the_unchunked_hidden_states() -> None:
    model = tiny_bert()
    chunked = tiny_bert(chunk_size_feed_forward=4)
    chunked.load_state_dict(model.state_dict())
    assert all(layer.chunk_size_feed_forward == 4 for layer in chunked.encoder.layer)
    ids = torch.randint(0, 64, (2, 16))
    with torch.no_grad():
        expected = model(ids).last_hidden_state
        theirs = chunked(ids).last_hidden_state
        with pytest.MonkeyPatch.context() as mp:
            # BertLayer calls the name imported into modeling_bert; swapping it runs ours inside the real
            # model.
            mp.setattr(modeling_bert, "apply_chunking_to_forward", apply_chunking_to_forward)
            ours = chunked(ids).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=0, rtol=0)
    torch.testing.assert_close(ours, expected, **TOLERANCES[torch.float32])


@pytest.mark.oracle
def test_version_guard_bert_layer_calls_the_module_level_function_along_dim_1() -> None:
    # The lesson and benchmarks/bench_chunking.py swap ours in by patching this very name.
    layer = tiny_bert(chunk_size_feed_forward=4).encoder.layer[0]
    calls: list[tuple[int, int]] = []

    def recording(forward_fn, chunk_size, chunk_dim, *inputs):  # type: ignore[no-untyped-def]
        calls.append((chunk_size, chunk_dim))
        return apply_chunking_to_forward(forward_fn, chunk_size, chunk_dim, *inputs)

    with pytest.MonkeyPatch.context() as mp, torch.no_grad():
        mp.setattr(modeling_bert, "apply_chunking_to_forward", recording)
        layer(torch.randn(1, 8, 32))
    assert calls == [(4, 1)], (
        f"transformers {transformers.__version__}: BertLayer no longer calls "
        "modeling_bert.apply_chunking_to_forward(feed_forward_chunk, chunk_size_feed_forward, 1, ...); "
        "update benchmarks/bench_chunking.py and lessons/03_chunking_equivalence.ipynb"
    )


@pytest.mark.oracle
def test_version_guard_transformers_treats_a_negative_chunk_size_as_no_chunking() -> None:
    # Ours refuses a negative chunk size (see the NOTE in reference_impl/chunking.py); theirs runs unchunked.
    spy = Spy()
    hf_apply_chunking_to_forward(spy.forward, -2, 1, torch.randn(1, 4, 2))
    assert spy.shapes == [(1, 4, 2)], (
        f"transformers {transformers.__version__} changed how apply_chunking_to_forward treats chunk_size < "
        "0; update the NOTE in reference_impl/chunking.py and this test"
    )
    with pytest.raises(ValueError, match=r"chunk_size=-2 is negative"):
        apply_chunking_to_forward(spy.forward, -2, 1, torch.randn(1, 4, 2))


# ------------------------------------------------------------------------------------------------------------
# Properties: chunked == unchunked for every divisor, whatever transformers says


@st.composite
def length_and_divisor(draw: st.DrawFn) -> tuple[int, int]:
    n = draw(st.integers(1, 24))
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    return n, draw(st.sampled_from(divisors))


@given(
    n_and_c=length_and_divisor(),
    batch=st.integers(1, 3),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    negative_dim=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_chunked_equals_unchunked_for_every_divisor(
    n_and_c: tuple[int, int], batch: int, dtype: torch.dtype, negative_dim: bool, seed: int
) -> None:
    n, c = n_and_c
    torch.manual_seed(seed)
    ffn = make_ffn(8, dtype)
    x = torch.randn(batch, n, 8, dtype=dtype)  # (B, T, C)
    chunk_dim = -2 if negative_dim else 1
    with torch.no_grad():
        got = apply_chunking_to_forward(ffn.forward, c, chunk_dim, x)
        expected = ffn(x)
    torch.testing.assert_close(got, expected, **TOLERANCES[dtype])


@given(n_and_c=length_and_divisor(), seed=st.integers(0, 2**16))
def test_negative_chunk_dim_is_the_same_dimension_counted_from_the_end(
    n_and_c: tuple[int, int], seed: int
) -> None:
    n, c = n_and_c
    torch.manual_seed(seed)
    x = torch.randn(2, n, 3)
    ffn = make_ffn(3)
    with torch.no_grad():
        torch.testing.assert_close(
            apply_chunking_to_forward(ffn.forward, c, -2, x),
            apply_chunking_to_forward(ffn.forward, c, 1, x),
            atol=0,
            rtol=0,
        )


def test_gradients_of_chunked_equal_unchunked() -> None:
    ffn = make_ffn(8)
    x = torch.randn(2, 12, 8, requires_grad=True)
    grad_out = torch.randn(2, 12, 8)
    chunked = torch.autograd.grad(
        apply_chunking_to_forward(ffn.forward, 3, 1, x), (x, *ffn.parameters()), grad_out
    )
    plain = torch.autograd.grad(ffn(x), (x, *ffn.parameters()), grad_out)
    for got, expected in zip(chunked, plain, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------------------
# Functions that mix positions along the chunked dimension


def softmax_over_t(x: torch.Tensor) -> torch.Tensor:
    return x.softmax(dim=1)


def norm_over_t(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.layer_norm(x.transpose(1, 2), (x.shape[1],)).transpose(1, 2)


def cumsum_over_t(x: torch.Tensor) -> torch.Tensor:
    return x.cumsum(dim=1)


@pytest.mark.parametrize("mixing", [softmax_over_t, norm_over_t, cumsum_over_t])
def test_chunking_along_a_dependent_dim_changes_the_result_and_the_probe_says_so(mixing) -> None:  # type: ignore[no-untyped-def]
    x = torch.randn(2, 8, 4)
    changed = (apply_chunking_to_forward(mixing, 4, 1, x) - mixing(x)).abs().max()
    assert changed > 1e-2
    probe = probe_chunking_safety(mixing, 1, x)
    assert not probe
    assert probe.first_unsafe == 1
    assert probe.summary().startswith("UNSAFE along chunk_dim=1: chunk_size=1 changes the result")
    # Along the feature dimension these functions are position-wise, so chunking there is safe.
    assert probe_chunking_safety(mixing, 2, x)


def test_the_probe_finds_a_position_wise_function_safe_and_reports_every_chunk_size() -> None:
    ffn = make_ffn(4)
    probe = probe_chunking_safety(ffn.forward, 1, torch.randn(2, 12, 4))
    assert probe.safe and probe.first_unsafe is None
    assert sorted(probe.max_abs_diff) == [1, 2, 3, 4, 6]
    assert probe.trials == 3
    assert max(probe.max_abs_diff.values()) <= 1e-5


def test_the_probe_can_be_fooled_by_the_given_inputs_but_not_by_random_ones() -> None:
    def centre_over_t(x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(dim=1, keepdim=True)

    constant_along_t = torch.ones(2, 8, 3)  # the mean of every chunk is the mean of the whole
    assert probe_chunking_safety(centre_over_t, 1, constant_along_t, random_trials=0)
    assert not probe_chunking_safety(centre_over_t, 1, constant_along_t, random_trials=1)


def test_the_probe_leaves_the_callers_random_state_alone() -> None:
    state = torch.get_rng_state()
    probe_chunking_safety(softmax_over_t, 1, torch.zeros(1, 4, 2))
    assert torch.equal(torch.get_rng_state(), state)


# ------------------------------------------------------------------------------------------------------------
# Memory: lower at inference, unchanged for backward unless combined with checkpointing


def bert_ffn(c: int = 16) -> torch.nn.Module:
    return tiny_bert(hidden_size=c, intermediate_size=4 * c, num_attention_heads=2).encoder.layer[0]


def test_inference_peak_matches_the_prediction_for_every_chunk_size() -> None:
    # One unit u = B*T*C floats. Unchunked: the 4C-wide output of the first Linear and of GELU, 8u. Chunked by
    # c:
    # the current chunk's 8*c/T u plus the outputs of the previous chunks (T-c)/T u, and never less than 2u
    # (the list of chunk outputs plus their concatenation).
    layer = bert_ffn(16)
    B, T, C = 2, 32, 16
    x = torch.randn(B, T, C)
    before = [x, *layer.parameters()]
    u = B * T * C * 4
    for c in (0, 16, 8, 4, 2):
        with torch.no_grad(), PeakMemory(baseline=before) as mem:
            apply_chunking_to_forward(layer.feed_forward_chunk, c, 1, x)
        peak_u = (mem.peak_bytes - sum(tensor_bytes(t) for t in before)) / u
        predicted = max(1 + 7 * (c or T) / T, 2.0)
        assert peak_u == pytest.approx(predicted, abs=0.05), f"chunk_size={c}"


def test_chunking_alone_saves_nothing_for_backward_but_with_checkpointing_the_training_peak_drops() -> None:
    layer = bert_ffn(16)
    params = list(layer.parameters())
    x = torch.randn(2, 128, 16, requires_grad=True)  # long enough that activations outweigh parameter grads
    ffn = layer.feed_forward_chunk

    def checkpointed_ffn(h: torch.Tensor) -> torch.Tensor:
        return checkpoint(ffn, h, use_reentrant=False)

    saved = {}
    for name, chunk_size in (("plain", 0), ("chunked", 4)):
        with SavedTensors(exclude=params) as s:
            apply_chunking_to_forward(ffn, chunk_size, 1, x)
        saved[name] = s.unique_bytes
    assert saved["chunked"] == saved["plain"] > 8 * x.numel() * 4

    def training_peak(fn, chunk_size: int) -> int:  # type: ignore[no-untyped-def]
        before = [x, *params]
        with PeakMemory(baseline=before) as mem:
            apply_chunking_to_forward(fn, chunk_size, 1, x).backward(torch.ones_like(x))
        for t in before:
            t.grad = None
        return mem.peak_bytes - sum(tensor_bytes(t) for t in before)

    plain, chunked = training_peak(ffn, 0), training_peak(ffn, 8)
    checkpointed, both = training_peak(checkpointed_ffn, 0), training_peak(checkpointed_ffn, 8)
    # Checkpointing the whole block recomputes all of it at once in backward; per chunk, one chunk at a time.
    assert checkpointed >= 0.9 * plain
    assert both < 0.5 * min(plain, chunked, checkpointed)


# ------------------------------------------------------------------------------------------------------------
# Bad input: every error names the argument, its value and what was expected, in transformers' exception type


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def pair(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x + y


BAD_CALLS = {
    "non_divisible": (
        ValueError,
        r"chunk_size=3 must divide input_tensors\[0\]\.shape\[1\]=8",
        (identity, 3, 1, (2, 8)),
    ),
    "mismatched": (
        ValueError,
        r"input_tensors\[1\]\.shape\[1\]=6 differs from input_tensors\[0\]\.shape\[1\]=8",
        (pair, 2, 1, (2, 8), (2, 6)),
    ),
    "arity": (
        ValueError,
        r"forward_fn=identity declares 1 parameter\(s\) \('x',\) but 2 input tensors were given",
        (identity, 2, 1, (2, 8), (2, 8)),
    ),
    "no_inputs": (
        AssertionError,
        r"input_tensors=\(\) is empty: expected at least one tensor",
        (identity, 2, 1),
    ),
    "out_of_range_dim": (
        IndexError,
        r"chunk_dim=2 is out of range for input_tensors\[0\] of shape \(2, 8\): expected -2 <= chunk_dim < 2",
        (identity, 2, 2, (2, 8)),
    ),
}


def _call(fn, args):  # type: ignore[no-untyped-def]
    forward_fn, chunk_size, chunk_dim, *shapes = args
    return fn(forward_fn, chunk_size, chunk_dim, *(torch.zeros(s) for s in shapes))


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bad_input_raises_a_message_naming_argument_value_and_expectation(case: str) -> None:
    error, message, args = BAD_CALLS[case]
    with pytest.raises(error, match=message):
        _call(apply_chunking_to_forward, args)


@pytest.mark.oracle
@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bad_input_raises_the_exception_type_transformers_raises(case: str) -> None:
    error, _, args = BAD_CALLS[case]
    with pytest.raises(error):
        _call(hf_apply_chunking_to_forward, args)


def test_negative_chunk_size_is_refused() -> None:
    with pytest.raises(
        ValueError, match=r"chunk_size=-1 is negative: expected 0 \(no chunking\) or a positive"
    ):
        apply_chunking_to_forward(identity, -1, 1, torch.zeros(2, 8))


@pytest.mark.oracle
def test_passing_a_module_instead_of_its_forward_fails_in_both_and_ours_says_what_to_pass() -> None:
    ffn, x = make_ffn(4), torch.randn(1, 4, 4)
    with pytest.raises(ValueError):
        hf_apply_chunking_to_forward(ffn, 2, 1, x)
    with pytest.raises(ValueError, match=re.escape("pass the bound method Sequential(...).forward")):
        apply_chunking_to_forward(ffn, 2, 1, x)


def test_a_builtin_without_signature_is_refused_with_a_hint_to_wrap_it() -> None:
    with pytest.raises(ValueError, match=r"has no signature inspect can read: wrap it"):
        apply_chunking_to_forward(torch.relu, 2, 1, torch.randn(1, 4))


def test_chunk_dim_is_not_read_when_not_chunking_as_in_transformers() -> None:
    x = torch.randn(2, 8)
    assert torch.equal(
        apply_chunking_to_forward(identity, 0, 5, x), hf_apply_chunking_to_forward(identity, 0, 5, x)
    )


def test_probe_bad_input() -> None:
    with pytest.raises(ValueError, match=r"random_trials=-1 is negative"):
        probe_chunking_safety(identity, 1, torch.zeros(1, 4), random_trials=-1)
    with pytest.raises(
        ValueError, match=r"has \[3\], which do not split length 4; expected sizes c with 1 <= c < 4"
    ):
        probe_chunking_safety(identity, 1, torch.zeros(1, 4), chunk_sizes=[3])
    with pytest.raises(AssertionError, match=r"input_tensors=\(\) is empty"):
        probe_chunking_safety(identity, 1)


def test_transformers_version_is_one_we_support() -> None:
    assert TRANSFORMERS >= Version("4.57"), (
        f"transformers {TRANSFORMERS} is older than the oldest line we test (4.57)"
    )


def softmax_over_t(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x, dim=1)


@pytest.mark.parametrize(
    "sizes", [[0], [4], [2, 4], [-2], [2.0], [True]], ids=["0", "n", "2-and-n", "-2", "2.0", "True"]
)
def test_probe_refuses_chunk_sizes_that_do_not_split_the_dimension(sizes) -> None:
    x = torch.randn(1, 4, 3)
    # sizes 0 ("no chunking") and n (one chunk) would compare softmax over T with itself and call it safe
    assert not probe_chunking_safety(softmax_over_t, 1, x, chunk_sizes=[2])
    with pytest.raises(
        ValueError, match=r"do not split length 4; expected sizes c with 1 <= c < 4 that divide 4 "
    ):
        probe_chunking_safety(softmax_over_t, 1, x, chunk_sizes=sizes)


@pytest.mark.parametrize("name", ["atol", "rtol"])
def test_probe_refuses_a_negative_tolerance(name: str) -> None:
    with pytest.raises(ValueError, match=rf"{name}=-1e-05 is negative; expected a tolerance >= 0"):
        probe_chunking_safety(identity, 1, torch.zeros(1, 4), **{name: -1e-5})
    assert probe_chunking_safety(identity, 1, torch.zeros(1, 4), **{name: 0.0})
