r"""Attention functions registered by name, and the eager reference every one of them must agree with.

Mirrors transformers' `AttentionInterface` / `ALL_ATTENTION_FUNCTIONS` (modeling_utils.py), the models'
`eager_attention_forward` (e.g. models/llama/modeling_llama.py) and integrations/sdpa_attention.py
(transformers 5.22). Taught in lessons/06_attention_registration.ipynb.

The contract every registered function follows, as a model's attention layer calls it:

    attn_output, attn_weights = fn(module, query, key, value, attention_mask, dropout=p, scaling=s, **kwargs)

    query: (B, H, T, D)     key, value: (B, H_kv, S, D), H_kv divides H (grouped-query: NOT repeated yet)
    attention_mask: whatever the mask builder registered under the same name made: additive float (B, 1, T,
        S),
                    bool (B, 1, T, S) with True = attend, or None
    attn_output: (B, T, H, D)   <- transposed back; the caller reshapes to (B, T, H*D) and projects
    attn_weights: (B, H, T, S) or None

    softmax(q k^T * scaling + mask) v, with head h of the query reading key/value head h // (H / H_kv).

# NOTE [ attention_mask=None ]
# `sdpa_mask` returns None for a plainly causal batch, meaning "let SDPA's is_causal do it". An eager function
# that reads None as "no mask" then attends to the future. Ours reads None as SDPA does: causal when the
# module is causal (`module.is_causal`, or an `is_causal=` keyword) and T > 1, aligned to the bottom-right
# (query i sits at key position S - T + i, as after a cache). transformers' eager reads None as "no mask" (the
# two agree on every materialised mask). With no mask builder registered at all, a causal module keeps
# causality but loses padding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from reference_impl.registry import GeneralInterface, scoped_registration

__all__ = [
    "ALL_ATTENTION_FUNCTIONS",
    "AttentionEntropyRecorder",
    "AttentionInterface",
    "checked_attention",
    "eager_attention_forward",
    "registered_in_transformers",
    "repeat_kv",
    "sdpa_attention_forward",
]


def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Repeat each key/value head `n_rep` times, in place order: heads (k0, k1) -> (k0, k0, k1, k1).

    Equals `torch.repeat_interleave(x, n_rep, dim=1)`; NOT `x.repeat(1, n_rep, 1, 1)`, which gives (k0, k1,
    k0, k1) and pairs query head h with key head h % H_kv instead of h // n_rep.
    """
    B, H_kv, S, D = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    expanded = hidden_states[:, :, None, :, :].expand(B, H_kv, n_rep, S, D)  # (B, H_kv, n_rep, S, D), no copy
    return expanded.reshape(B, H_kv * n_rep, S, D)  # (B, H, S, D)


def eager_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Attention in plain PyTorch: `softmax(q k^T * scaling + mask) v`, weights returned.

    Same operations, in the same order, as transformers' eager (so the result is bitwise equal for the same
    mask),
    plus: the grouped-query factor is read from the shapes (H / H_kv), a bool mask is accepted, and None means
    causal for a causal module (NOTE [ attention_mask=None ] above).

    Args:
        module: the calling attention layer; read for `training` (dropout) and `is_causal`.
        query: (B, H, T, D).
        key, value: (B, H_kv, S, D).
        attention_mask: additive float (B or 1, 1 or H, T, S); bool of that shape, True = attend; or None.
            An integer mask is refused (ValueError): added to the scores, a 0/1 keep-mask would mask nothing.
        scaling: multiplies the scores, usually D ** -0.5.
        dropout: probability, applied to the weights only while `module.training`.
        **kwargs: extras the model passes (position_ids, ...); `is_causal` is read, the rest ignored.

    Returns:
        attn_output (B, T, H, D), contiguous; attn_weights (B, H, T, S) in the query's dtype.
    """
    B, H, T = query.shape[:3]
    H_kv, S = key.shape[1], key.shape[2]
    _check_heads(query, key, value)
    key_states = repeat_kv(key, H // H_kv)  # (B, H_kv, S, D) -> (B, H, S, D)
    value_states = repeat_kv(value, H // H_kv)

    attn_weights = (
        torch.matmul(query, key_states.transpose(2, 3)) * scaling
    )  # (B, H, T, D) @ (B, H, D, S) -> (B, H, T, S)
    if attention_mask is None:
        is_causal = kwargs.get("is_causal")
        if is_causal is None:
            is_causal = getattr(module, "is_causal", False)
        if is_causal and T > 1:
            # bottom-right aligned: query i is position S - T + i, so it sees keys 0 .. S - T + i
            causal = torch.ones(T, S, dtype=torch.bool, device=query.device).tril(diagonal=S - T)
            attn_weights = attn_weights.masked_fill(~causal, torch.finfo(attn_weights.dtype).min)
    else:
        _check_mask_dtype(attention_mask)
        _check_mask_shape(attention_mask, B, H, T, S)
        if attention_mask.dtype == torch.bool:
            attn_weights = attn_weights.masked_fill(~attention_mask, torch.finfo(attn_weights.dtype).min)
        else:
            attn_weights = attn_weights + attention_mask

    # softmax in float32 even for half-precision inputs, then back: rows sum to 1 to float32 accuracy
    attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value_states)  # (B, H, T, S) @ (B, H, S, D) -> (B, H, T, D)
    attn_output = attn_output.transpose(1, 2).contiguous()  # (B, H, T, D) -> (B, T, H, D)
    return attn_output, attn_weights


def sdpa_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """The same attention through `torch.nn.functional.scaled_dot_product_attention`; no weights returned.

    As transformers' sdpa integration: keys repeated for grouped-query attention, and `is_causal=True` handed
    to SDPA only when there is no mask and T > 1 (SDPA's own causal mask is top-left aligned, which is why
    `sdpa_mask` returns None only when that alignment is right).

    Bad heads and masks get the same errors as from `eager_attention_forward`: key/value heads that do not
    divide the query heads (transformers' sdpa repeats H // H_kv times and fails inside torch), and an integer
    mask.
    """
    H, T = query.shape[1], query.shape[2]
    _check_heads(query, key, value)
    if attention_mask is not None:
        _check_mask_dtype(attention_mask)
    key = repeat_kv(key, H // key.shape[1])  # (B, H_kv, S, D) -> (B, H, S, D)
    value = repeat_kv(value, H // value.shape[1])
    if is_causal is None:
        is_causal = getattr(module, "is_causal", True)
    is_causal = T > 1 and attention_mask is None and is_causal
    attn_output = F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout if module.training else 0.0,
        scale=scaling,
        is_causal=is_causal,
    )  # (B, H, T, D)
    return attn_output.transpose(1, 2).contiguous(), None  # (B, T, H, D)


def checked_attention(fn: Callable[..., tuple[torch.Tensor, Any]]) -> Callable[..., tuple[torch.Tensor, Any]]:
    """Wrap an attention function so that a wrong output layout raises instead of silently changing the
    logits.

    The caller reshapes the output to (B, T, H*D) whatever its layout, so a (B, H, T, D) output goes through
    and scrambles heads and positions. The wrapper checks the output is (B, T, H, D) for the (B, H, T, D)
    query and says which layout it got (detectable whenever H != T; when H == T the shapes alone cannot tell).

    Correct:    return attn_output.transpose(1, 2).contiguous(), attn_weights   # (B, T, H, D)
    Incorrect:  return attn_output, attn_weights   # (B, H, T, D): no error in the model
    """

    def checked(
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        *args: Any,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, Any]:
        attn_output, attn_weights = fn(module, query, key, value, attention_mask, *args, **kwargs)
        B, H, T, _ = query.shape
        expected = (B, T, H, value.shape[-1])
        got = tuple(attn_output.shape)
        if got != expected:
            hint = (
                " (that is (B, H, T, D): transpose(1, 2) before returning)"
                if got == (B, H, T, value.shape[-1])
                else ""
            )
            raise ValueError(
                f"attention function {getattr(fn, '__name__', fn)!r} returned attn_output of shape "
                f"{got}{hint}; expected (B, T, H, D) = {expected} for query (B, H, T, D) = "
                f"{tuple(query.shape)}"
            )
        return attn_output, attn_weights

    checked.__name__ = f"checked_{getattr(fn, '__name__', 'attention')}"
    checked.__wrapped__ = fn  # type: ignore[attr-defined]
    return checked


def _check_heads(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
    """Grouped-query head counts, checked the same way by every function of the registry."""
    H, H_kv, H_v = query.shape[1], key.shape[1], value.shape[1]
    if H_kv != H_v or H % H_kv != 0:
        raise ValueError(
            f"query has H={H} heads, key H_kv={H_kv} and value {H_v}; expected key and value with the same "
            f"number of heads, dividing H (grouped-query attention: each key/value head serves H / H_kv "
            f"query heads)"
        )


def _check_mask_dtype(mask: torch.Tensor) -> None:
    """An integer mask (0/1 keep-mask) would be *added* to the scores by eager attention: refuse it."""
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise ValueError(
            f"attention_mask has dtype {mask.dtype}; expected a boolean keep-mask (True = attend; a 0/1 mask "
            "becomes one with `mask.bool()`) or an additive float mask (0 = attend, finfo(dtype).min = "
            "masked, as eager_mask makes)"
        )


def _check_mask_shape(mask: torch.Tensor, B: int, H: int, T: int, S: int) -> None:
    ok = (
        mask.ndim == 4
        and mask.shape[0] in (1, B)
        and mask.shape[1] in (1, H)
        and mask.shape[2] == T
        and mask.shape[3] == S
    )
    if not ok:
        raise ValueError(
            f"attention_mask has shape {tuple(mask.shape)}; expected (B or 1, 1 or H, T, S) with B={B}, "
            f"H={H}, T={T} queries, S={S} keys"
        )


class AttentionEntropyRecorder:
    r"""An attention function that records, per layer, how spread out each head's attention is.

    Entropy of one query's attention row, in nats: H = -sum_j p_j log p_j. It is 0 when the query looks at one
    key and log(n) when it spreads evenly over the n keys it may see (the upper bound). Register an instance
    like any attention function; after a forward pass `records[layer_idx]` holds a (B, H, T) tensor (the last
    call's).

        >>> recorder = AttentionEntropyRecorder()
        >>> with registered_in_transformers("entropy", recorder, eager_mask):
        ...     model.set_attn_implementation("entropy"); model(input_ids)
        >>> recorder.records[0].shape          # (B, H, T) for layer 0
    """

    def __init__(
        self, attention: Callable[..., tuple[torch.Tensor, torch.Tensor]] = eager_attention_forward
    ) -> None:
        self.attention = attention
        self.records: dict[int, torch.Tensor] = {}

    def __call__(
        self,
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        scaling: float,
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        attn_output, attn_weights = self.attention(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
        p = attn_weights.detach().float()  # (B, H, T, S)
        # xlogy(p, p) = p log p, and 0 where p = 0 (masked keys), where p * log(p) would give nan
        entropy = -torch.special.xlogy(p, p).sum(dim=-1)  # (B, H, T)
        self.records[getattr(module, "layer_idx", len(self.records))] = entropy
        return attn_output, attn_weights


class AttentionInterface(GeneralInterface):
    """Registry of attention functions by name (`config._attn_implementation`), with transformers' surface.

    Unlike transformers, "eager" is registered (transformers leaves it out and each model passes its own eager
    function as the default of `get_interface`). Registration checks the function can take
    `fn(module, query, key, value, attention_mask, scaling=..., dropout=...)`.
    """

    _global_mapping: ClassVar[dict[str, Callable[..., Any]]] = {
        "eager": eager_attention_forward,
        "sdpa": sdpa_attention_forward,
    }
    _kind = "attention function"
    _example_call = (("module", "query", "key", "value", "attention_mask"), dict(scaling=1.0, dropout=0.0))

    def get_interface(self, attn_implementation: str, default: Callable[..., Any]) -> Callable[..., Any]:
        """transformers 5.x's strict lookup: `default` for "eager" if it is not registered, KeyError if
        unknown."""
        if attn_implementation == "eager" and "eager" not in self:
            return default
        return self[attn_implementation]


ALL_ATTENTION_FUNCTIONS: AttentionInterface = AttentionInterface()


@contextmanager
def registered_in_transformers(
    name: str, attention_function: Callable[..., Any], mask_builder: Callable[..., Any] | None
) -> Iterator[str]:
    """Register an attention function and its mask builder in *transformers'* registries for a `with` block.

    Afterwards both registries are exactly as before (they are global to the process). Inside, any model can
    use it by name: `model.set_attn_implementation(name)`. `mask_builder=None` reproduces the classic trap
    (the model then passes `attention_mask=None`). A builder with our (5.x) signature is adapted to
    transformers 4.53–4.57, whose builders receive `cache_position` instead of `q_length`/`q_offset`.
    """
    import inspect

    import transformers
    from transformers import masking_utils

    AttentionInterface._validate(name, attention_function)
    with ExitStack() as stack:
        stack.enter_context(scoped_registration(transformers.AttentionInterface, name, attention_function))
        if mask_builder is not None:
            if "cache_position" in inspect.signature(masking_utils.sdpa_mask).parameters:
                mask_builder = _from_cache_position(mask_builder)
            stack.enter_context(scoped_registration(masking_utils.AttentionMaskInterface, name, mask_builder))
        yield name


def _from_cache_position(builder: Callable[..., Any]) -> Callable[..., Any]:
    """Adapt a (q_length, q_offset) builder to transformers 4.5x's call with `cache_position` (the query
    positions)."""

    def builder_4x(
        batch_size: int, cache_position: torch.Tensor, kv_length: int, kv_offset: int = 0, **kwargs: Any
    ) -> Any:
        q_offset = int(cache_position[0]) if cache_position.numel() else 0
        kwargs.setdefault("device", cache_position.device)
        return builder(
            batch_size=batch_size,
            q_length=cache_position.shape[0],
            kv_length=kv_length,
            q_offset=q_offset,
            kv_offset=kv_offset,
            **kwargs,
        )

    return builder_4x
