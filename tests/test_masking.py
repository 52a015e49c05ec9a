"""Mask functions and builders: pictures, properties, bad input, and equality with transformers' builders."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from packaging.version import Version

from reference_impl.masking import (
    and_masks,
    causal_mask_function,
    chunked_causal_mask_function,
    eager_mask,
    mask_picture,
    or_masks,
    packed_sequence_mask_function,
    padding_mask_function,
    sdpa_mask,
    sliding_window_causal_mask_function,
)


def picture(mask_function: Any, q_length: int = 5, kv_length: int = 5, **kwargs: Any) -> str:
    mask = sdpa_mask(
        1, q_length, kv_length, mask_function=mask_function, allow_is_causal_skip=False, **kwargs
    )
    return mask_picture(mask[0, 0], q_offset=kwargs.get("q_offset", 0))


# ---- golden pictures (the same as transformers' docstrings) ----
def test_causal_mask_picture() -> None:
    assert picture(causal_mask_function) == "\n".join(
        [
            "0 ■ ⬚ ⬚ ⬚ ⬚",
            "1 ■ ■ ⬚ ⬚ ⬚",
            "2 ■ ■ ■ ⬚ ⬚",
            "3 ■ ■ ■ ■ ⬚",
            "4 ■ ■ ■ ■ ■",
        ]
    )


def test_sliding_window_of_3_keeps_three_keys_including_the_query_itself() -> None:
    assert picture(sliding_window_causal_mask_function(3)) == "\n".join(
        [
            "0 ■ ⬚ ⬚ ⬚ ⬚",
            "1 ■ ■ ⬚ ⬚ ⬚",
            "2 ■ ■ ■ ⬚ ⬚",
            "3 ⬚ ■ ■ ■ ⬚",
            "4 ⬚ ⬚ ■ ■ ■",
        ]
    )


def test_chunked_mask_of_3_restarts_at_position_3() -> None:
    assert picture(chunked_causal_mask_function(3)) == "\n".join(
        [
            "0 ■ ⬚ ⬚ ⬚ ⬚",
            "1 ■ ■ ⬚ ⬚ ⬚",
            "2 ■ ■ ■ ⬚ ⬚",
            "3 ⬚ ⬚ ⬚ ■ ⬚",
            "4 ⬚ ⬚ ⬚ ■ ■",
        ]
    )


def test_padding_hides_padded_keys_from_every_query() -> None:
    padding = torch.tensor([[0, 0, 1, 1, 1]])
    assert picture(causal_mask_function, attention_mask=padding) == "\n".join(
        [
            "0 ⬚ ⬚ ⬚ ⬚ ⬚",
            "1 ⬚ ⬚ ⬚ ⬚ ⬚",
            "2 ⬚ ⬚ ■ ⬚ ⬚",
            "3 ⬚ ⬚ ■ ■ ⬚",
            "4 ⬚ ⬚ ■ ■ ■",
        ]
    )


def test_a_0_1_int_padding_mask_composes_like_a_bool_one() -> None:
    ints = and_masks(causal_mask_function, padding_mask_function(torch.tensor([[0, 0, 1, 1, 1]])))
    bools = and_masks(
        causal_mask_function, padding_mask_function(torch.tensor([[False, False, True, True, True]]))
    )
    assert picture(ints) == picture(bools)


def test_packed_sequences_attend_only_within_their_own_segment() -> None:
    segments = torch.tensor([[0, 0, 1, 1, 1]])
    fn = and_masks(causal_mask_function, packed_sequence_mask_function(segments))
    assert picture(fn) == "\n".join(
        [
            "0 ■ ⬚ ⬚ ⬚ ⬚",
            "1 ■ ■ ⬚ ⬚ ⬚",
            "2 ⬚ ⬚ ■ ⬚ ⬚",
            "3 ⬚ ⬚ ■ ■ ⬚",
            "4 ⬚ ⬚ ■ ■ ■",
        ]
    )


def test_a_query_offset_draws_the_last_rows_of_the_full_mask() -> None:
    assert picture(causal_mask_function, q_length=2, kv_length=5, q_offset=3) == "3 ■ ■ ■ ■ ⬚\n4 ■ ■ ■ ■ ■"


def test_chunks_of_a_left_padded_row_start_at_its_first_real_token() -> None:
    lp = torch.tensor([2])
    assert picture(chunked_causal_mask_function(2, lp)) == "\n".join(
        [
            "0 ■ ⬚ ⬚ ⬚ ⬚",
            "1 ■ ■ ⬚ ⬚ ⬚",
            "2 ⬚ ⬚ ■ ⬚ ⬚",
            "3 ⬚ ⬚ ■ ■ ⬚",
            "4 ⬚ ⬚ ⬚ ⬚ ■",
        ]
    )


# ---- properties ----
sizes = st.tuples(st.integers(1, 7), st.integers(0, 5), st.integers(1, 6))  # q_length, q_offset, window/chunk


@given(sizes)
def test_sliding_window_is_inside_causal_and_each_row_holds_min_w_and_position_plus_one(
    size: tuple[int, int, int],
) -> None:
    T, q_off, w = size
    S = T + q_off
    causal = sdpa_mask(1, T, S, q_offset=q_off, allow_is_causal_skip=False)
    window = sdpa_mask(
        1,
        T,
        S,
        q_offset=q_off,
        mask_function=sliding_window_causal_mask_function(w),
        allow_is_causal_skip=False,
    )
    assert bool((window <= causal).all())
    positions = torch.arange(T) + q_off
    assert window[0, 0].sum(-1).tolist() == torch.clamp(positions + 1, max=w).tolist()


@given(sizes)
def test_or_masks_contains_each_part_and_and_masks_is_inside_each(size: tuple[int, int, int]) -> None:
    T, q_off, w = size
    S = T + q_off
    parts = [sliding_window_causal_mask_function(w), chunked_causal_mask_function(w)]
    build = lambda fn: sdpa_mask(2, T, S, q_offset=q_off, mask_function=fn, allow_is_causal_skip=False)  # noqa: E731
    union, inter = build(or_masks(*parts)), build(and_masks(*parts))
    for part in parts:
        m = build(part)
        assert bool((m <= union).all()) and bool((inter <= m).all())


@given(st.integers(1, 6), st.integers(0, 4), st.integers(0, 3))
def test_offsets_cut_the_same_window_out_of_the_full_mask(T: int, q_off: int, kv_off: int) -> None:
    kv_off = min(kv_off, q_off)
    S = T + q_off - kv_off
    fn = sliding_window_causal_mask_function(3)
    full = sdpa_mask(1, T + q_off, T + q_off, mask_function=fn, allow_is_causal_skip=False)
    part = sdpa_mask(1, T, S, q_offset=q_off, kv_offset=kv_off, mask_function=fn, allow_is_causal_skip=False)
    assert torch.equal(part, full[:, :, q_off:, kv_off:])


@given(st.lists(st.booleans(), min_size=6, max_size=6), st.sampled_from([torch.float32, torch.bfloat16]))
def test_eager_mask_is_zero_where_sdpa_mask_attends_and_dtype_min_elsewhere(
    pad: list[bool], dtype: torch.dtype
) -> None:
    padding = torch.tensor([pad, [True] * 6])
    bool_mask = sdpa_mask(2, 6, 6, attention_mask=padding, allow_is_causal_skip=False)
    additive = eager_mask(2, 6, 6, attention_mask=padding, dtype=dtype)
    assert additive.dtype == dtype and additive.shape == (2, 1, 6, 6)
    expected = torch.where(bool_mask, torch.tensor(0.0, dtype=dtype), torch.finfo(dtype).min)
    assert torch.equal(additive, expected)
    assert not bool(bool_mask[0, 0][:, ~torch.tensor(pad)].any())  # a padded key is never attended


def test_a_padding_mask_shorter_than_the_keys_masks_the_missing_ones() -> None:
    """A static cache has more key slots than tokens seen: the slots past the 2-D mask are empty, never
    attended."""
    mask = sdpa_mask(1, 2, 6, q_offset=2, attention_mask=torch.ones(1, 4), allow_is_causal_skip=False)
    assert mask_picture(mask[0, 0], q_offset=2) == "2 ■ ■ ■ ⬚ ⬚ ⬚\n3 ■ ■ ■ ■ ⬚ ⬚"


@pytest.mark.oracle
def test_a_short_padding_mask_is_padded_as_transformers_does() -> None:
    padding = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])
    ours = sdpa_mask(2, 3, 8, q_offset=1, attention_mask=padding, allow_is_causal_skip=False)
    theirs = hf_builder(
        "sdpa_mask", 3, 8, 1, 0, batch_size=2, attention_mask=padding, allow_is_causal_skip=False
    )
    assert torch.equal(ours, theirs.expand_as(ours))


def test_builders_leave_their_inputs_unchanged() -> None:
    padding = torch.tensor([[0, 1, 1], [1, 1, 1]])
    before = padding.clone()
    eager_mask(2, 3, 3, attention_mask=padding)
    assert torch.equal(padding, before) and padding.dtype == torch.int64


def test_a_plain_causal_batch_skips_the_mask_only_when_allowed() -> None:
    assert sdpa_mask(2, 4, 4) is None
    assert sdpa_mask(2, 1, 7, q_offset=6) is None  # decoding one token sees everything
    assert (
        sdpa_mask(2, 4, 4, attention_mask=torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])) is not None
    )  # padding
    assert sdpa_mask(2, 4, 4, local_size=3) is not None  # a window shorter than the keys must be drawn
    assert (
        sdpa_mask(2, 3, 7, q_offset=4) is not None
    )  # chunked prefill after a cache: is_causal is top-left aligned
    assert eager_mask(2, 4, 4) is not None


# ---- bad input ----
@pytest.mark.parametrize("factory", [sliding_window_causal_mask_function, chunked_causal_mask_function])
@pytest.mark.parametrize("size", [0, -2, 2.5, True])
def test_window_and_chunk_sizes_must_be_positive_ints(factory: Any, size: Any) -> None:
    with pytest.raises(ValueError, match=rf"=({size!r}) must be a positive int"):
        factory(size)


def test_a_padding_mask_with_another_batch_size_is_refused() -> None:
    with pytest.raises(ValueError, match=r"attention_mask has batch size 3, expected batch_size=2"):
        sdpa_mask(2, 4, 4, attention_mask=torch.ones(3, 4))


def test_a_4d_mask_given_to_a_builder_is_refused() -> None:
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 1, 4, 4\); the builders take a 2-D"):
        eager_mask(2, 4, 4, attention_mask=torch.ones(2, 1, 4, 4))


@pytest.mark.parametrize("name,value", [("q_length", 0), ("kv_length", -1), ("batch_size", 0)])
def test_builder_sizes_must_be_positive(name: str, value: int) -> None:
    sizes = {"batch_size": 1, "q_length": 2, "kv_length": 2, name: value}
    with pytest.raises(ValueError, match=rf"{name}={value} must be a positive int"):
        sdpa_mask(**sizes)


def test_combining_a_non_callable_raises_runtime_error_as_transformers() -> None:
    with pytest.raises(RuntimeError, match=r"and_masks takes mask functions .* got non-callable \[3\]"):
        and_masks(causal_mask_function, 3)
    with pytest.raises(RuntimeError, match="or_masks"):
        or_masks("causal")


def test_mask_functions_need_2d_tensors_and_pictures_need_2d_masks() -> None:
    with pytest.raises(ValueError, match=r"padding_mask must be a 2-D \(B, S\) tensor, got \(4,\)"):
        padding_mask_function(torch.ones(4))
    with pytest.raises(ValueError, match=r"packed_sequence_mask must be a 2-D .* got list"):
        packed_sequence_mask_function([0, 1])  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"mask has shape \(1, 1, 2, 2\); expected a 2-D \(T, S\) mask, e.g. mask\[0, 0\]"
    ):
        mask_picture(torch.ones(1, 1, 2, 2, dtype=torch.bool))
    with pytest.raises(
        ValueError, match=r"mask has dtype torch.int64; expected bool \(True = attend\) or additive float"
    ):
        mask_picture(torch.ones(2, 2, dtype=torch.long))


# ---- oracle: transformers' own builders ----
def _hf() -> Any:
    import transformers.masking_utils as mu

    return mu


def _hf_new_signature() -> bool:
    return "q_length" in inspect.signature(_hf().sdpa_mask).parameters


def hf_builder(name: str, q_length: int, kv_length: int, q_offset: int, kv_offset: int, **kwargs: Any) -> Any:
    """Call transformers' builder with its version's signature (cache_position before 5.0).

    transformers' builders expect a bool padding mask (create_causal_mask converts it first; a 0/1 int mask
    gives an int result); ours convert it themselves, so the oracle gets the bool one and ours the user's 0/1
    ints.
    """
    fn = getattr(_hf(), name)
    if kwargs.get("attention_mask") is not None:
        kwargs["attention_mask"] = kwargs["attention_mask"].bool()
    if _hf_new_signature():
        return fn(q_length=q_length, kv_length=kv_length, q_offset=q_offset, kv_offset=kv_offset, **kwargs)
    cache_position = torch.arange(q_length) + q_offset
    return fn(cache_position=cache_position, kv_length=kv_length, kv_offset=kv_offset, **kwargs)


LEFT_PADDING = torch.tensor([0, 3])
MASK_FUNCTIONS = {
    "causal": lambda mu: (causal_mask_function, mu.causal_mask_function),
    "sliding3": lambda mu: (
        sliding_window_causal_mask_function(3),
        mu.sliding_window_causal_mask_function(3),
    ),
    "chunked3": lambda mu: (
        chunked_causal_mask_function(3, LEFT_PADDING),
        mu.chunked_causal_mask_function(3, LEFT_PADDING),
    ),
}
# (q_length, kv_length, q_offset, kv_offset): prefill, decode after 9 tokens, a chunk after 6, a sliding cache
SIZES = [(10, 10, 0, 0), (1, 10, 9, 0), (4, 10, 6, 0), (3, 5, 8, 6)]


def padding_for(kv_length: int, kv_offset: int, padded: bool) -> torch.Tensor | None:
    if not padded:
        return None
    mask = torch.ones(2, kv_length + kv_offset, dtype=torch.long)
    mask[1, :3] = 0  # row 1 left-padded by 3, as LEFT_PADDING says
    return mask


@pytest.mark.oracle
@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "left-padded"])
@pytest.mark.parametrize("size", SIZES, ids=[f"q{s[0]}kv{s[1]}qo{s[2]}ko{s[3]}" for s in SIZES])
@pytest.mark.parametrize("kind", sorted(MASK_FUNCTIONS))
def test_our_builders_equal_transformers_exactly(
    kind: str, size: tuple[int, int, int, int], padded: bool
) -> None:
    ours_fn, theirs_fn = MASK_FUNCTIONS[kind](_hf())
    T, S, q_off, kv_off = size
    padding = padding_for(S, kv_off, padded)
    common = dict(batch_size=2, attention_mask=padding)
    ours = sdpa_mask(
        q_length=T,
        kv_length=S,
        q_offset=q_off,
        kv_offset=kv_off,
        mask_function=ours_fn,
        allow_is_causal_skip=False,
        **common,
    )
    theirs = hf_builder(
        "sdpa_mask", T, S, q_off, kv_off, mask_function=theirs_fn, allow_is_causal_skip=False, **common
    )
    assert ours.dtype == theirs.dtype == torch.bool
    assert torch.equal(ours, theirs.expand_as(ours)) and ours.shape == (2, 1, T, S)
    for dtype in (torch.float32, torch.bfloat16):
        ours_e = eager_mask(
            q_length=T,
            kv_length=S,
            q_offset=q_off,
            kv_offset=kv_off,
            mask_function=ours_fn,
            dtype=dtype,
            **common,
        )
        theirs_e = hf_builder(
            "eager_mask", T, S, q_off, kv_off, mask_function=theirs_fn, dtype=dtype, **common
        )
        assert ours_e.dtype == theirs_e.dtype == dtype
        assert torch.equal(ours_e, theirs_e.expand_as(ours_e))


SKIP_CASES = [
    (4, 4, 0, 0, False, None),
    (1, 10, 9, 0, False, None),
    (4, 4, 0, 0, True, None),
    (4, 10, 6, 0, False, None),
    (4, 4, 0, 0, False, 3),
    (4, 4, 0, 0, False, 8),
    (4, 10, 0, 0, False, None),
]


@pytest.mark.oracle
@pytest.mark.parametrize("T,S,q_off,kv_off,padded,local_size", SKIP_CASES)
def test_we_skip_the_causal_mask_exactly_when_transformers_does(
    T: int, S: int, q_off: int, kv_off: int, padded: bool, local_size: int | None
) -> None:
    import transformers

    if q_off == 0 and T < S and Version(transformers.__version__) < Version("5.0"):
        pytest.skip(
            "4.x draws the empty-cache prefill mask; see "
            "test_version_guard_empty_cache_prefill_skip_is_new_in_5"
        )
    padding = padding_for(S, kv_off, padded)
    ours = sdpa_mask(2, T, S, q_offset=q_off, kv_offset=kv_off, attention_mask=padding, local_size=local_size)
    theirs = hf_builder(
        "sdpa_mask", T, S, q_off, kv_off, batch_size=2, attention_mask=padding, local_size=local_size
    )
    assert (ours is None) == (theirs is None)
    if ours is not None:
        assert torch.equal(ours, theirs.expand_as(ours))


@pytest.mark.oracle
def test_version_guard_builder_signature() -> None:
    import transformers

    params = inspect.signature(_hf().sdpa_mask).parameters
    if Version(transformers.__version__) >= Version("5.0"):
        assert "q_length" in params and "q_offset" in params and "cache_position" not in params, (
            f"transformers {transformers.__version__} changed sdpa_mask's signature again; update "
            "reference_impl/masking.py, attention._from_cache_position and lesson 06"
        )
    else:
        assert "cache_position" in params and "q_length" not in params, (
            f"transformers {transformers.__version__}: sdpa_mask no longer takes cache_position; "
            "update attention._from_cache_position"
        )


@pytest.mark.oracle
def test_version_guard_empty_cache_prefill_skip_is_new_in_5() -> None:
    """5.x also skips a prefill whose only masked keys come after the queries (q_offset == 0); 4.57 draws
    it."""
    import transformers

    skipped = hf_builder("sdpa_mask", 4, 10, 0, 0, batch_size=1) is None
    ours_skipped = sdpa_mask(1, 4, 10) is None
    expected = Version(transformers.__version__) >= Version("5.0")
    assert ours_skipped and skipped == expected, (
        f"transformers {transformers.__version__}: the empty-cache prefill skip is "
        f"{'gone' if expected else 'present'}; update masking._can_skip_causal_mask and this guard"
    )


# ---- the bidirectional (encoder) skip: None where transformers 5.22 returns None ----
def bidirectional_mask_function(batch_idx: Any, head_idx: Any, q_idx: Any, kv_idx: Any) -> Any:
    """Every query attends to every key (an encoder), as transformers' `bidirectional_mask_function`."""
    return q_idx >= 0


# (T, S, kv_offset, padding of row 1 as (start, stop) or None, local_size)
BIDIRECTIONAL_CASES = [
    (5, 5, 0, None, None),  # no padding: skipped
    (5, 5, 0, (0, 0), None),  # an all-ones padding mask: skipped
    (5, 5, 0, (0, 2), None),  # left padding: drawn
    (5, 5, 0, (3, 5), None),  # right padding: drawn
    (3, 5, 6, (0, 3), None),  # padding before the keys looked at still counts, as in transformers: drawn
    (5, 5, 0, None, 8),  # a window longer than the keys: skipped
    (5, 5, 0, None, 5),  # a window the keys reach: drawn
]


def _bidirectional_padding(S: int, kv_offset: int, rows: tuple[int, int] | None) -> torch.Tensor | None:
    if rows is None:
        return None
    mask = torch.ones(2, S + kv_offset, dtype=torch.bool)
    mask[1, rows[0] : rows[1]] = False
    return mask


@pytest.mark.parametrize("T,S,kv_off,rows,local_size", BIDIRECTIONAL_CASES)
def test_bidirectional_skip_returns_none_only_when_every_key_is_attended(
    T: int, S: int, kv_off: int, rows: tuple[int, int] | None, local_size: int | None
) -> None:
    padding = _bidirectional_padding(S, kv_off, rows)
    common = dict(kv_offset=kv_off, mask_function=bidirectional_mask_function, local_size=local_size)
    skipped = (padding is None or bool(padding.all())) and (local_size is None or S < local_size)
    sdpa = sdpa_mask(2, T, S, attention_mask=padding, allow_is_bidirectional_skip=True, **common)
    eager = eager_mask(2, T, S, attention_mask=padding, allow_is_bidirectional_skip=True, **common)
    assert (sdpa is None) == (eager is None) == skipped
    drawn = sdpa_mask(2, T, S, attention_mask=padding, allow_is_causal_skip=False, **common)
    if skipped:  # None stands for "attend everywhere": the drawn mask must be all True
        assert bool(drawn.all())
    else:
        assert torch.equal(sdpa, drawn) and torch.equal(eager == 0, drawn)
    # off by default, as in transformers: the mask is drawn
    assert sdpa_mask(2, T, S, attention_mask=padding, allow_is_causal_skip=False, **common) is not None
    assert eager_mask(2, T, S, attention_mask=padding, **common) is not None


def test_builder_docstrings_say_when_none_comes_back() -> None:
    sdpa_doc, eager_doc = (" ".join(fn.__doc__.split()) for fn in (sdpa_mask, eager_mask))
    assert (
        "When None comes back" in sdpa_doc
        and "bidirectional skip, if `allow_is_bidirectional_skip`" in sdpa_doc
    )
    assert "None comes back only with `allow_is_bidirectional_skip=True`" in eager_doc


@pytest.mark.oracle
@pytest.mark.parametrize("T,S,kv_off,rows,local_size", BIDIRECTIONAL_CASES)
@pytest.mark.parametrize("allow", [True, False], ids=["skip-allowed", "skip-not-allowed"])
def test_bidirectional_skip_equals_transformers(
    T: int, S: int, kv_off: int, rows: tuple[int, int] | None, local_size: int | None, allow: bool
) -> None:
    import transformers

    mu = _hf()
    if "allow_is_bidirectional_skip" not in inspect.signature(mu.sdpa_mask).parameters:
        pytest.skip(f"transformers {transformers.__version__}'s builders have no allow_is_bidirectional_skip")
    padding = _bidirectional_padding(S, kv_off, rows)
    kw = dict(
        batch_size=2,
        kv_offset=kv_off,
        attention_mask=padding,
        local_size=local_size,
        allow_is_bidirectional_skip=allow,
    )
    ours = sdpa_mask(
        q_length=T, kv_length=S, mask_function=bidirectional_mask_function, allow_is_causal_skip=False, **kw
    )
    theirs = mu.sdpa_mask(
        q_length=T,
        kv_length=S,
        mask_function=mu.bidirectional_mask_function,
        allow_is_causal_skip=False,
        **kw,
    )
    assert (ours is None) == (theirs is None)
    if ours is not None:
        assert torch.equal(ours, theirs.expand_as(ours))
    for dtype in (torch.float32, torch.bfloat16):
        ours_e = eager_mask(
            q_length=T, kv_length=S, mask_function=bidirectional_mask_function, dtype=dtype, **kw
        )
        theirs_e = mu.eager_mask(
            q_length=T, kv_length=S, mask_function=mu.bidirectional_mask_function, dtype=dtype, **kw
        )
        assert (ours_e is None) == (theirs_e is None)
        if ours_e is not None:
            assert ours_e.dtype == theirs_e.dtype and torch.equal(ours_e, theirs_e.expand_as(ours_e))


@pytest.mark.oracle
def test_version_guard_mask_builders_take_the_cache_as_cache_from_5_24():
    """5.24 renamed the builders' `past_key_values` to `cache` (the old keyword still accepted until 5.40)."""
    import transformers
    from transformers import masking_utils

    names = list(inspect.signature(masking_utils.create_causal_mask).parameters)
    expected = "cache" if Version(transformers.__version__) >= Version("5.24") else "past_key_values"
    # the cache comes right before position_ids (5.24+ appends the deprecated past_key_values at the end)
    assert names[names.index("position_ids") - 1] == expected, (
        f"transformers {transformers.__version__}: create_causal_mask takes {names}; expected {expected!r} "
        "(5.24 renamed past_key_values to cache). Update the README's compatibility table (lesson 06)."
    )
    from reference_impl.workbook.envcheck import differences_from_pin

    notes = [d.what for d in differences_from_pin(transformers.__version__) if d.lesson == "06"]
    assert any("take cache=" in n for n in notes) == (expected == "cache"), notes
