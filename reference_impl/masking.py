r"""Attention masks as functions of indices, and the builders that turn them into tensors.

Mirrors transformers.masking_utils (added in 4.53; this follows 5.22). Taught in
lessons/06_attention_registration.ipynb.

A *mask function* says, for one (batch, head, query position, key position), whether the query may attend:
`f(batch_idx, head_idx, q_idx, kv_idx) -> bool` (True = attend), the `mask_mod` of FlexAttention. Written with
plain comparisons, it works on broadcast index tensors too, which is how the builders evaluate it on a whole
grid:

    causal          kv <= q                               0 ■ ⬚ ⬚ ⬚ ⬚
    sliding (w)     q - w < kv <= q     (w keys, self incl.) 1 ■ ■ ⬚ ⬚ ⬚    causal, 5 x 5
    chunked (c)     (kv - lp) // c == (q - lp) // c, kv <= q 2 ■ ■ ■ ⬚ ⬚
    padding (m)     m[b, kv]                              3 ■ ■ ■ ■ ⬚
    packed (s)      s[b, q] == s[b, kv]                   4 ■ ■ ■ ■ ■

The *builders* evaluate a mask function over query positions `q_offset + arange(T)` and key positions
`kv_offset + arange(S)` (offsets place a chunk of queries after a cache), AND it with the 2-D padding mask,
and return the format an attention function wants:

- `sdpa_mask`: bool `(B, 1, T, S)`, True = attend, or **None** when the mask is plainly causal and SDPA's
  `is_causal=True` can stand in for it (the attention function must then apply causality itself), or, when the
  caller allows it for an encoder, when a bidirectional mask would attend everywhere (no padding, no window);
- `eager_mask`: float `(B, 1, T, S)`, 0 where attending and `finfo(dtype).min` elsewhere, added to the scores;
  None only in that bidirectional case.

Differences from transformers, on purpose:
- The builders always broadcast (transformers' default non-vmap path); `use_vmap`, `config`, `dtype` (sdpa)
  and other keywords transformers passes are accepted and ignored, so only index-based mask functions work.
- `chunked_causal_mask_function(c)` takes `left_padding=None` (no padding); transformers requires the
  argument.
- Bad sizes raise `ValueError` naming them (transformers fails later with an indexing error, or not at all).
- transformers 4.53–4.57 builders take `cache_position` instead of `q_length`/`q_offset`; see
  `reference_impl.attention.registered_in_transformers` for the bridge.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import torch

from reference_impl.registry import GeneralInterface

__all__ = [
    "ALL_MASK_ATTENTION_FUNCTIONS",
    "AttentionMaskInterface",
    "and_masks",
    "causal_mask_function",
    "chunked_causal_mask_function",
    "chunked_overlay",
    "eager_mask",
    "mask_picture",
    "or_masks",
    "packed_sequence_mask_function",
    "padding_mask_function",
    "sdpa_mask",
    "sliding_window_causal_mask_function",
    "sliding_window_overlay",
]


class MaskFunction(Protocol):
    """`(batch_idx, head_idx, q_idx, kv_idx) -> allowed`: index tensors that broadcast in, a bool tensor out.

    The builders call it once with index grids of shapes (B,1,1,1), (1,1,1,1), (1,1,T,1), (1,1,1,S);
    transformers' vmap path calls it with 0-d tensors. The parameters are positional, so any four names will
    do.
    """

    def __call__(
        self, batch_idx: torch.Tensor, head_idx: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor, /
    ) -> torch.Tensor: ...


# ------------------------------------------------------------------------------------------------------------
# Mask functions
# ------------------------------------------------------------------------------------------------------------
def causal_mask_function(
    batch_idx: torch.Tensor, head_idx: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor
) -> torch.Tensor:
    """Causal: a query attends to itself and to every earlier position, `kv_idx <= q_idx`."""
    return kv_idx <= q_idx


def sliding_window_overlay(sliding_window: int) -> MaskFunction:
    """Only the last `sliding_window` positions up to the query: `kv_idx > q_idx - sliding_window`.

    An overlay, not a mask on its own (it allows the whole future); AND it with `causal_mask_function`.
    """
    _check_positive("sliding_window", sliding_window)

    def sliding_window_mask(
        batch_idx: torch.Tensor, head_idx: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor
    ) -> torch.Tensor:
        return kv_idx > q_idx - sliding_window

    return sliding_window_mask


def sliding_window_causal_mask_function(sliding_window: int) -> MaskFunction:
    """Causal within a window of `sliding_window` keys, the query's own included: `q - w < kv <= q`."""
    return and_masks(sliding_window_overlay(sliding_window), causal_mask_function)


def chunked_overlay(chunk_size: int, left_padding: torch.Tensor | None = None) -> MaskFunction:
    """Same chunk of `chunk_size` positions, counted from each row's first real token.

    `(kv_idx - lp[b]) // c == (q_idx - lp[b]) // c` with `lp[b]` the number of left-padding tokens of row `b`
    (so chunks of a left-padded row line up with those of an unpadded one); `left_padding=None` means none.
    """
    _check_positive("chunk_size", chunk_size)

    def chunked_mask(
        batch_idx: torch.Tensor, head_idx: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor
    ) -> torch.Tensor:
        shift = 0 if left_padding is None else left_padding[batch_idx]
        return (kv_idx - shift) // chunk_size == (q_idx - shift) // chunk_size

    return chunked_mask


def chunked_causal_mask_function(chunk_size: int, left_padding: torch.Tensor | None = None) -> MaskFunction:
    """Causal within the query's chunk only (Llama 4's local attention)."""
    return and_masks(chunked_overlay(chunk_size, left_padding), causal_mask_function)


def padding_mask_function(padding_mask: torch.Tensor) -> MaskFunction:
    """Attend only to real tokens: `padding_mask[batch_idx, kv_idx]`.

    Args:
        padding_mask: `(B, S')`, True or 1 for real tokens, with `S'` at least the largest key position asked
            for. Converted to bool here (transformers expects it bool already: a 0/1 int mask gives int
            results there).
    """
    _check_2d("padding_mask", padding_mask)
    padding_mask = padding_mask.bool()

    def padding_mask_fn(
        batch_idx: torch.Tensor, head_idx: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor
    ) -> torch.Tensor:
        return padding_mask[batch_idx, kv_idx]

    return padding_mask_fn


def packed_sequence_mask_function(packed_sequence_mask: torch.Tensor) -> MaskFunction:
    """Several sequences packed in one row attend only within their own: `s[b, q_idx] == s[b, kv_idx]`.

    Args:
        packed_sequence_mask: `(B, S)` integer segment ids, e.g. `[[0, 0, 1, 1, 1, 2]]` for lengths 2, 3 and
            1.
    """
    _check_2d("packed_sequence_mask", packed_sequence_mask)

    def packed_sequence_mask_fn(
        batch_idx: torch.Tensor, head_idx: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor
    ) -> torch.Tensor:
        return packed_sequence_mask[batch_idx, q_idx] == packed_sequence_mask[batch_idx, kv_idx]

    return packed_sequence_mask_fn


def and_masks(*mask_functions: MaskFunction) -> MaskFunction:
    """Intersection: attend where every mask function allows it. Raises RuntimeError (as transformers) on a
    non-callable."""
    _check_callables("and_masks", mask_functions)

    def and_mask(
        batch_idx: torch.Tensor, head_idx: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor
    ) -> torch.Tensor:
        result = q_idx.new_ones((), dtype=torch.bool)
        for mask in mask_functions:
            result = result & mask(batch_idx, head_idx, q_idx, kv_idx).to(result.device)
        return result

    return and_mask


def or_masks(*mask_functions: MaskFunction) -> MaskFunction:
    """Union: attend where any mask function allows it. Raises RuntimeError (as transformers) on a
    non-callable."""
    _check_callables("or_masks", mask_functions)

    def or_mask(
        batch_idx: torch.Tensor, head_idx: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor
    ) -> torch.Tensor:
        result = q_idx.new_zeros((), dtype=torch.bool)
        for mask in mask_functions:
            result = result | mask(batch_idx, head_idx, q_idx, kv_idx).to(result.device)
        return result

    return or_mask


# ------------------------------------------------------------------------------------------------------------
# Builders
# ------------------------------------------------------------------------------------------------------------
def sdpa_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int = 0,
    kv_offset: int = 0,
    mask_function: MaskFunction = causal_mask_function,
    attention_mask: torch.Tensor | None = None,
    local_size: int | None = None,
    allow_is_causal_skip: bool = True,
    allow_is_bidirectional_skip: bool = False,
    device: torch.device | str = "cpu",
    **kwargs: Any,
) -> torch.Tensor | None:
    """Boolean mask `(B, 1, T, S)`, True = attend, or None when SDPA needs no mask (see "When None comes
    back").

    mask[b, 0, i, j] = mask_function(b, 0, q_offset + i, kv_offset + j) AND attention_mask[b, kv_offset + j]

    Args:
        batch_size: B.
        q_length: T, the number of queries.
        kv_length: S, the number of keys/values.
        q_offset: position of the first query (tokens already in the cache).
        kv_offset: position of the first key (a sliding cache drops the oldest keys).
        mask_function: `(b, h, q, kv) -> bool`, index-based.
        attention_mask: `(B, S')` 2-D padding mask (1/True = real token); padded with False up to
            `kv_offset + S` when shorter (empty static-cache slots are not attended).
        local_size: window or chunk size of local attention; such a mask is never skipped once
            `S >= local_size`.
        allow_is_causal_skip: return None in the pure-causal case below (default True).
        allow_is_bidirectional_skip: return None in the all-attend case below (default False, as in
            transformers 5.22; its `create_bidirectional_mask` passes True for encoders).

    When None comes back (transformers 5.22's rules, eager and untraced; `mask_function` is not inspected, so
    each skip is only right for the kind of mask the caller allows it for):
      - causal skip, if `allow_is_causal_skip`: no padding inside the keys looked at, no window/chunk reaching
        `S >= local_size`, and either `T == 1`, `T == S`, or an empty-cache prefill (`q_offset == 0`) whose
        only masked keys are after the queries. Safe only when the caller passes `is_causal=True` to SDPA (or
        applies causality itself).
      - bidirectional skip, if `allow_is_bidirectional_skip`: `attention_mask` is None or all True (over all
        `kv_offset + S` positions, as transformers checks it) and `local_size` is None or `S < local_size`.
        Safe only for an encoder (bidirectional) mask function: SDPA with no mask and `is_causal=False`
        attends everywhere.
    """
    _check_sizes(batch_size=batch_size, q_length=q_length, kv_length=kv_length)
    padding_mask = _prepare_padding_mask(attention_mask, batch_size, kv_length, kv_offset)
    if allow_is_causal_skip and _can_skip_causal_mask(
        padding_mask, q_length, kv_length, q_offset, kv_offset, local_size
    ):
        return None
    if allow_is_bidirectional_skip and _can_skip_bidirectional_mask(padding_mask, kv_length, local_size):
        return None
    if padding_mask is not None:
        mask_function = and_masks(mask_function, padding_mask_function(padding_mask))
    # Index grids that broadcast against each other: (B,1,1,1), (1,1,1,1), (1,1,T,1), (1,1,1,S).
    b = torch.arange(batch_size, device=device)[:, None, None, None]
    h = torch.arange(1, device=device)[None, :, None, None]
    q = (torch.arange(q_length, device=device) + q_offset)[None, None, :, None]
    kv = (torch.arange(kv_length, device=device) + kv_offset)[None, None, None, :]
    mask = mask_function(b, h, q, kv)
    # A mask function that ignores the batch (causal) gives (1, 1, T, S): expand to (B, 1, T, S).
    return mask.expand(batch_size, -1, q_length, kv_length)


def eager_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int = 0,
    kv_offset: int = 0,
    mask_function: MaskFunction = causal_mask_function,
    attention_mask: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    allow_is_bidirectional_skip: bool = False,
    device: torch.device | str = "cpu",
    **kwargs: Any,
) -> torch.Tensor | None:
    """Additive mask `(B, 1, T, S)` in `dtype`: 0 where `sdpa_mask` is True, `finfo(dtype).min` where it is
    False.

    A causal pattern is always materialised: eager attention has no `is_causal` switch (`allow_is_causal_skip`
    is ignored). None comes back only with `allow_is_bidirectional_skip=True` when the mask would be all zeros
    (no padding over the `kv_offset + S` positions, no window reaching `S`): adding nothing is the same, as in
    transformers 5.22. `min` rather than `-inf` keeps a row whose keys are all masked (a left-padding query)
    finite: softmax makes it uniform, not NaN.
    """
    kwargs.pop("allow_is_causal_skip", None)
    mask = sdpa_mask(
        batch_size,
        q_length,
        kv_length,
        q_offset,
        kv_offset,
        mask_function,
        attention_mask,
        allow_is_causal_skip=False,
        allow_is_bidirectional_skip=allow_is_bidirectional_skip,
        device=device,
        **kwargs,
    )
    if mask is None:  # only the bidirectional skip: nothing to add to the scores
        return None
    return torch.where(mask, torch.zeros((), device=mask.device, dtype=dtype), torch.finfo(dtype).min)


def _prepare_padding_mask(
    attention_mask: torch.Tensor | None, batch_size: int, kv_length: int, kv_offset: int
) -> torch.Tensor | None:
    """The 2-D padding mask as bool, right-padded with False to cover key positions up to `kv_offset + S`."""
    if attention_mask is None:
        return None
    if attention_mask.ndim != 2:
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)}; the builders take a 2-D (B, S) padding "
            "mask (a 4-D mask is already built: pass it to the attention function directly)"
        )
    if attention_mask.shape[0] != batch_size:
        raise ValueError(
            f"attention_mask has batch size {attention_mask.shape[0]}, expected batch_size={batch_size}"
        )
    mask = attention_mask.bool()
    missing = kv_length + kv_offset - mask.shape[-1]
    if missing > 0:
        mask = torch.nn.functional.pad(mask, (0, missing))
    return mask


def _can_skip_causal_mask(
    padding_mask: torch.Tensor | None,
    q_length: int,
    kv_length: int,
    q_offset: int,
    kv_offset: int,
    local_size: int | None,
) -> bool:
    """transformers 5.22's `_ignore_causal_mask_sdpa` for an eager (not traced) call."""
    if padding_mask is not None and padding_mask.shape[-1] > kv_length:
        padding_mask = padding_mask[:, kv_offset : kv_offset + kv_length]  # the keys actually looked at
    if local_size is not None and kv_length >= local_size:
        return False
    if (q_length == 1 or kv_length == q_length) and (padding_mask is None or bool(padding_mask.all())):
        return True
    # Empty-cache prefill: sdpa's upper-left `is_causal` already hides keys after the queries.
    return q_offset == 0 and (
        padding_mask is None
        or (bool(padding_mask[:, :q_length].all()) and not bool(padding_mask[:, q_length:].any()))
    )


def _can_skip_bidirectional_mask(
    padding_mask: torch.Tensor | None, kv_length: int, local_size: int | None
) -> bool:
    """transformers 5.22's `_ignore_bidirectional_mask_sdpa` for an eager (not traced) call off XPU."""
    if local_size is not None and kv_length >= local_size:
        return False
    return padding_mask is None or bool(padding_mask.all())


# ------------------------------------------------------------------------------------------------------------
# The registry
# ------------------------------------------------------------------------------------------------------------
class AttentionMaskInterface(GeneralInterface):
    """Registry of mask builders by attention implementation name; a model looks up the one its attention
    uses.

    A builder is called with keywords only: `(batch_size=, q_length=, kv_length=, q_offset=, kv_offset=,
    mask_function=, attention_mask=, allow_is_causal_skip=, dtype=, config=, use_vmap=, device=)` (5.x), plus
    `allow_is_bidirectional_skip=` from `create_bidirectional_mask`, so it must take `**kwargs`. An attention
    function registered without a builder under the same name gets `attention_mask=None` in transformers:
    causality (and padding) silently lost.
    """

    _global_mapping: ClassVar[dict[str, Callable[..., Any]]] = {"sdpa": sdpa_mask, "eager": eager_mask}
    _kind = "mask builder"
    _example_call = (
        (),
        dict(
            batch_size=1,
            q_length=1,
            kv_length=1,
            q_offset=0,
            kv_offset=0,
            mask_function=causal_mask_function,
            attention_mask=None,
            allow_is_causal_skip=True,
            dtype=torch.float32,
            config=None,
            use_vmap=False,
            device="cpu",
        ),
    )


ALL_MASK_ATTENTION_FUNCTIONS: AttentionMaskInterface = AttentionMaskInterface()


# ------------------------------------------------------------------------------------------------------------
# Pictures and argument checks
# ------------------------------------------------------------------------------------------------------------
def mask_picture(mask: torch.Tensor, q_offset: int = 0) -> str:
    """Draw a `(T, S)` mask (bool, or additive with 0 = attend) as rows of ■ (attend) and ⬚ (masked).

    Each row starts with its query position (`q_offset + i`), as in transformers' docstrings.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask has shape {tuple(mask.shape)}; expected a 2-D (T, S) mask, e.g. mask[0, 0]")
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise ValueError(
            f"mask has dtype {mask.dtype}; expected bool (True = attend) or additive float (0 = attend)"
        )
    allowed = mask if mask.dtype == torch.bool else mask == 0
    width = len(str(q_offset + mask.shape[0] - 1))
    rows = [
        f"{q_offset + i:>{width}} " + " ".join("■" if a else "⬚" for a in row.tolist())
        for i, row in enumerate(allowed)
    ]
    return "\n".join(rows)


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive int")


def _check_2d(name: str, value: object) -> None:
    if not isinstance(value, torch.Tensor) or value.ndim != 2:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"{name} must be a 2-D (B, S) tensor, got {shape}")


def _check_callables(name: str, fns: tuple[object, ...]) -> None:
    bad = [f for f in fns if not callable(f)]
    if bad:
        raise RuntimeError(f"{name} takes mask functions (b, h, q, kv) -> bool; got non-callable {bad!r}")


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive int")
