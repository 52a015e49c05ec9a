"""Checkpointing policies beyond all-or-nothing: every k-th layer, sqrt(L) segments, and selective recompute.

Not in transformers (which offers "every layer" and, from 5.18, `every_n_layers`); built on
torch.utils.checkpoint. Used by `reference_impl.checkpointing.set_gradient_checkpointing(..., policy=name)`
and taught in lessons/01_checkpointing_tradeoffs.ipynb.

A policy decides, for each of the L checkpointable layers of a model, whether its call is checkpointed and
with which function (the layer calls `func(partial(layer_call, **kwargs), *args)`):

- "full": the chosen layers (every `every_n_layers`-th) are checkpointed whole: keep the input, recompute all.
- "sqrt": Chen et al. 2016. Segments of s = round(sqrt(L)) consecutive layers are checkpointed as one unit:
  only each segment's input is kept, and a segment is recomputed in one go. With 1 unit kept per boundary and
  a units per recomputed layer, memory is M(s) = ceil(L / s) + a * s, minimal near s = sqrt(L / a): sqrt(L)
  for a = 1. For a transformer block, a (its internal activations over its input) is 15 to 35, so s = 1
  ("full") wins there.
- "selective": torch's selective activation checkpointing. The chosen layers keep the outputs of their matmuls
  and attention kernels (the FLOP-heavy ops) and recompute the pointwise ones (norms, activations, dropout,
  adds). Non-reentrant only: it works through the saved-tensor hooks the reentrant variant does not use.
- "selective_attention": the same, keeping only the attention kernels' outputs (recompute the matmuls too).

# NOTE [ How a segment spans several layer calls ]
# A model's forward calls its layers one by one (`for layer in self.layers: h = layer(h, mask=..., ...)`), so
# a segment cannot be one function call from the model's side. The segment's first layer therefore runs the
# *whole* segment inside one checkpoint (its own call, then the later layers with the same other arguments)
# and returns the segment's output; each later layer, when the model calls it, checks that it is being called
# on exactly that output with exactly the same other arguments, and passes it through. Anything else (a model
# that changes the hidden states between layers, or gives each layer different arguments) raises a
# RuntimeError instead of computing something different. The state of a segment lives in one `Segment` object
# a reader can print.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

__all__ = [
    "ATTENTION_OPS",
    "MATMUL_OPS",
    "POLICIES",
    "SELECTIVE_POLICIES",
    "SaveOutputsOf",
    "Segment",
    "checkpointed_region",
    "inside_checkpoint",
    "plan_layers",
    "segment_size",
    "selective_context_fn",
]

_aten = torch.ops.aten
#: Matrix products (nn.Linear and GPT-2's Conv1D lower to these).
MATMUL_OPS: frozenset[Any] = frozenset({_aten.mm.default, _aten.addmm.default, _aten.bmm.default})
#: Fused attention kernels of scaled_dot_product_attention (each backend's forward op).
ATTENTION_OPS: frozenset[Any] = frozenset(
    getattr(_aten, name).default
    for name in (
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_flash_attention_for_cpu",
    )
    if hasattr(_aten, name)
)

#: Policy name -> what it does (the names `set_gradient_checkpointing(policy=...)` accepts).
POLICIES: dict[str, str] = {
    "full": "checkpoint every chosen layer whole (keep its input, recompute everything)",
    "sqrt": "checkpoint segments of round(sqrt(L)) consecutive layers as one unit (Chen et al. 2016)",
    "selective": "keep matmul and attention outputs, recompute pointwise ops (non-reentrant only)",
    "selective_attention": "keep attention outputs only, recompute matmuls and pointwise ops (non-reentrant "
    "only)",
}


_REGION = threading.local()


@contextmanager
def checkpointed_region() -> Iterator[None]:
    """Mark code that runs inside a checkpoint (the first pass or the recompute in backward).

    A layer called inside such a region does not checkpoint again: only the outermost wrapper checkpoints (as
    in transformers 5.23+). The mark is per thread, and is set by the checkpointed function itself, so it
    holds in the recompute too, whichever thread autograd runs it on.
    """
    depth = getattr(_REGION, "depth", 0)
    _REGION.depth = depth + 1
    try:
        yield
    finally:
        _REGION.depth = depth


def inside_checkpoint() -> bool:
    """True while code runs inside a checkpointed layer or segment (see `checkpointed_region`)."""
    return getattr(_REGION, "depth", 0) > 0


@dataclass(frozen=True)
class SaveOutputsOf:
    """A selective-checkpointing policy function: keep the outputs of `ops`, recompute every other op."""

    ops: frozenset[Any]

    def __call__(self, ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
        return CheckpointPolicy.MUST_SAVE if op in self.ops else CheckpointPolicy.PREFER_RECOMPUTE


#: Selective policy name -> the ops whose outputs it saves (every other op of a checkpointed layer is
#: recomputed).
SELECTIVE_POLICIES: dict[str, frozenset[Any]] = {
    "selective": MATMUL_OPS | ATTENTION_OPS,
    "selective_attention": ATTENTION_OPS,
}


def selective_context_fn(policy: str = "selective") -> Callable[[], Any]:
    """The `context_fn` of `torch.utils.checkpoint.checkpoint` for a selective policy, eager or under
    torch.compile.

    Raises:
        ValueError: `policy` is not a key of `SELECTIVE_POLICIES`.
    """
    if policy not in SELECTIVE_POLICIES:
        raise ValueError(
            f"policy={policy!r} is not a selective policy; expected one of {sorted(SELECTIVE_POLICIES)}"
        )
    return functools.partial(create_selective_checkpoint_contexts, SaveOutputsOf(SELECTIVE_POLICIES[policy]))


def segment_size(num_layers: int) -> int:
    """Chen et al.'s segment length: round(sqrt(L)), at least 1 (12 -> 3, 16 -> 4, 24 -> 5)."""
    return max(1, round(math.sqrt(num_layers)))


@dataclass
class Segment:
    """Consecutive layers checkpointed as one unit, and what the first one left for the others to pass on."""

    layers: list[nn.Module]
    checkpoint_func: Callable[..., Any]
    output: torch.Tensor | None = None  # the segment's output, until the last layer has passed it on
    other_args: tuple[
        Any, ...
    ] = ()  # positional arguments after the hidden states, as the first layer got them
    kwargs: dict[str, Any] = field(default_factory=dict)
    next_layer: int = 1  # index in `layers` of the layer the model must call next


def _hidden(output: Any) -> Any:
    """A layer's hidden states: the output itself, or its first element (transformers 4.x blocks return
    tuples)."""
    return output[0] if isinstance(output, tuple) else output


def _same_value(a: Any, b: Any) -> bool:
    """`a is b`, or two tensors that view the same memory the same way.

    A forward pre-hook may hand the layer a new tensor object over the same data: FSDP2's hook passes the
    inputs through an autograd function (to run its post-backward hook), and its checkpoint must still see
    "the previous layer's output".
    """
    if a is b:
        return True
    return (
        isinstance(a, torch.Tensor)
        and isinstance(b, torch.Tensor)
        and a.device == b.device
        and a.dtype == b.dtype
        and a.shape == b.shape
        and a.stride() == b.stride()
        and a.data_ptr() == b.data_ptr()
    )


def _run_segment(first_call: functools.partial, later: Sequence[nn.Module], *args: Any) -> Any:
    with checkpointed_region():
        return _run_segment_layers(first_call, later, *args)


def _run_segment_layers(first_call: functools.partial, later: Sequence[nn.Module], *args: Any) -> Any:
    output = first_call(*args)
    for layer in later:
        # nn.Module.__call__, not layer(...): the later layers' own (checkpointing) __call__ is bypassed.
        output = nn.Module.__call__(layer, _hidden(output), *args[1:], **first_call.keywords)
    return output


@dataclass
class SegmentStart:
    """`_gradient_checkpointing_func` of a segment's first layer: checkpoint the whole segment in one call."""

    segment: Segment

    def __call__(self, layer_call: functools.partial, *args: Any) -> Any:
        seg = self.segment
        later = seg.layers[1:]
        if not all(layer.training and layer.gradient_checkpointing for layer in later):
            return seg.checkpoint_func(
                layer_call, *args
            )  # the others will run themselves: checkpoint this one
        output = seg.checkpoint_func(functools.partial(_run_segment, layer_call, later), *args)
        if later:
            seg.output, seg.other_args, seg.kwargs, seg.next_layer = (
                output,
                args[1:],
                dict(layer_call.keywords),
                1,
            )
        return output


@dataclass
class SegmentContinue:
    """`_gradient_checkpointing_func` of a later layer of a segment: pass on the output the first layer
    computed."""

    segment: Segment
    index: int

    def __call__(self, layer_call: functools.partial, *args: Any) -> Any:
        seg = self.segment
        if seg.output is None:  # the first layer did not run the segment (it was in eval mode): run alone
            return seg.checkpoint_func(layer_call, *args)
        same_call = (
            self.index == seg.next_layer
            and len(args) == len(seg.other_args) + 1
            and _same_value(args[0], _hidden(seg.output))
            and all(_same_value(a, b) for a, b in zip(args[1:], seg.other_args, strict=False))
            and layer_call.keywords.keys() == seg.kwargs.keys()
            and all(layer_call.keywords[k] is v for k, v in seg.kwargs.items())
        )
        if not same_call:
            seg.output = None
            raise RuntimeError(
                f"policy='sqrt': layer {self.index} of a {len(seg.layers)}-layer segment was not called on "
                "the previous layer's output with the same other arguments; segments need a plain chain (h "
                "= layer(h, *same_args, **same_kwargs)). Use policy='full' for this model."
            )
        output = seg.output
        seg.next_layer += 1
        if seg.next_layer == len(seg.layers):
            seg.output = None  # the segment is done; drop our reference
        return output


def plan_layers(
    layers: Sequence[nn.Module],
    policy: str,
    ckpt_kwargs: dict[str, Any],
    every_n_layers: int = 1,
    segment_length: int | None = None,
) -> list[tuple[bool, Callable[..., Any]]]:
    """(checkpointed?, checkpoint function) for each layer of `layers` (in call order) under `policy`."""
    num_layers = len(layers)
    if policy not in POLICIES:
        raise ValueError(
            f"policy={policy!r} is not a checkpointing policy; expected one of {sorted(POLICIES)}"
        )
    plain = functools.partial(checkpoint, **ckpt_kwargs)
    chosen = [i % every_n_layers == 0 for i in range(num_layers)]
    if segment_length is not None and policy != "sqrt":
        raise ValueError(
            f"segment_length={segment_length} applies to policy='sqrt' only, not policy={policy!r}"
        )
    if policy == "full":
        return [(flag, plain) for flag in chosen]
    if policy.startswith("selective"):
        if ckpt_kwargs.get("use_reentrant"):
            raise ValueError(
                f"policy={policy!r} needs use_reentrant=False (selective checkpointing works through "
                "saved-tensor hooks, which the reentrant variant does not use); got "
                f"gradient_checkpointing_kwargs={ckpt_kwargs!r}"
            )
        func = functools.partial(checkpoint, context_fn=selective_context_fn(policy), **ckpt_kwargs)
        return [(flag, func) for flag in chosen]
    # policy == "sqrt"
    if every_n_layers != 1:
        raise ValueError(f"policy='sqrt' chooses its own segments; every_n_layers={every_n_layers} must be 1")
    s = segment_size(num_layers) if segment_length is None else segment_length
    if not isinstance(s, int) or s < 1:
        raise ValueError(
            f"segment_length={segment_length!r} must be an integer >= 1, or None for round(sqrt(L))"
        )
    plan: list[tuple[bool, Callable[..., Any]]] = []
    for start in range(0, num_layers, s):
        seg = Segment(layers=list(layers[start : start + s]), checkpoint_func=plain)
        plan.append((True, SegmentStart(seg)))
        plan.extend((True, SegmentContinue(seg, i)) for i in range(1, len(seg.layers)))
    return plan
