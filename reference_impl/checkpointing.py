"""Gradient checkpointing: keep a layer's input, drop what it computed, recompute it during backward.

Mirrors transformers.modeling_layers.GradientCheckpointingLayer and
PreTrainedModel.gradient_checkpointing_enable / _set_gradient_checkpointing (transformers 5.22; 4.53-5.22
share the layer's semantics), and the names and layer behaviour of transformers 5.23-5.25 where those differ
(NOTE [ forward, not __call__ ], the cache keywords, the entry points at the end). Taught in
lessons/01_checkpointing_tradeoffs.ipynb. The policies beyond "every layer" (every k-th layer, sqrt(L)
segments, selective) live in reference_impl/checkpoint_policies.py.

Memory, per layer of a stack of L layers whose input is 1 unit and whose forward keeps a units for backward:

    no checkpointing:        L * a
    every layer:             L * 1           (+ a while one layer is recomputed in backward)
    every k-th layer:        ceil(L / k) * 1 + (L - ceil(L / k)) * a
    segments of s layers:    ceil(L / s) * 1 (+ s * a while one segment is recomputed)
                             smallest at s = sqrt(L) (Chen 2016)

Time: each checkpointed layer runs its forward twice, so the price is at most one extra forward of those
layers.

# NOTE [ Where we differ from transformers, on purpose ]
# 1. `gradient_checkpointing_kwargs` without "use_reentrant" gets `use_reentrant=False` added. transformers
#    passes the dict through, and torch then warns and falls back to *reentrant* (the 4.x behaviour, with its
#    traps).
# 2. Bad arguments raise before anything is changed: `every_n_layers < 1` is a ValueError (transformers: a
#    ZeroDivisionError for 0, and a flag pattern for negative numbers), kwargs that are not a mapping a
#    TypeError, a model without a checkpointable layer a ValueError naming the classes accepted.
# 3. The cache warning is given once per layer class per `set_gradient_checkpointing(..., enable=True)` (kept
#    in `CACHE_WARNINGS_GIVEN`), so re-running a notebook shows it again; transformers' `warning_once` is once
#    per process.
# 5. Keys of `gradient_checkpointing_kwargs` are checked against what `torch.utils.checkpoint.checkpoint`
#    accepts (a ValueError naming the unknown key and the accepted ones). transformers passes them through,
#    and under `use_reentrant=False` torch forwards an unknown key to the layer's forward, where GPT-2's
#    `**kwargs` swallows it: `{"use_reentrantt": False}` then trains without a word.
# 4. Our `__call__` calls `nn.Module.__call__` by name, not `super().__call__`: a class that mixes our layer
#    with transformers' own (`class X(GradientCheckpointingLayer, GPT2Block)`) then checkpoints once, not
#    twice.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from reference_impl.checkpoint_policies import checkpointed_region, inside_checkpoint, plan_layers

__all__ = [
    "CACHE_WARNINGS_GIVEN",
    "CHECKPOINT_TARGETS",
    "GradientCheckpointingLayer",
    "activation_checkpointing_disable",
    "activation_checkpointing_enable",
    "gradient_checkpointing_disable",
    "gradient_checkpointing_enable",
    "is_activation_checkpointing",
    "is_checkpointable_layer",
    "is_gradient_checkpointing",
    "set_gradient_checkpointing",
]

#: Layer class names whose cache warning was given since the last `set_gradient_checkpointing(enable=True)`.
CACHE_WARNINGS_GIVEN: set[str] = set()

# The keyword arguments by which a layer receives a KV cache: "cache" (transformers 5.24+), "past_key_values"
# (4.x-5.23, deprecated until 5.40), "layer_past" (GPT-2 in 4.x). Under checkpointing they are set to None:
# the recompute would write the cache a second time.
_CACHE_KWARGS = ("cache", "past_key_values", "layer_past")

#: What a checkpoint can wrap: the layer's `forward` (module hooks run once, outside the checkpoint;
#: transformers 5.23+) or its whole `__call__` (hooks run inside, and again in the recompute; transformers
#: 4.53-5.22).
CHECKPOINT_TARGETS = ("forward", "__call__")


class GradientCheckpointingLayer(nn.Module):
    """Base class for a layer that can be checkpointed: off by default, on after `set_gradient_checkpointing`.

    When `self.gradient_checkpointing` is True and the layer is in training mode, a call
    `layer(*args, **kwargs)` becomes
    `self._gradient_checkpointing_func(partial(layer_call, **kwargs), *args)`: only the positional arguments
    are inputs of the checkpoint, the keyword arguments are frozen into the function. Before that,
    `use_cache=True` becomes False and a cache passed as `cache=`/`past_key_values=`/`layer_past=` becomes
    None (unless the class sets `_can_checkpoint_with_cache`), with one warning. In eval mode, and when
    gradients are disabled (`torch.no_grad()`: no backward, nothing to recompute), nothing happens.

    Warning:
        Under `use_reentrant=True`, a tensor that needs a gradient must be passed positionally:

            Correct:    out = layer(hidden_states, attention_mask=mask)
            Incorrect:  out = layer(hidden_states=hidden_states, attention_mask=mask)   # no gradient back

        The reentrant checkpoint runs the forward under `torch.no_grad()` and only re-attaches its positional
        tensor inputs to the graph; a tensor hidden in the keyword arguments is cut off. `use_reentrant=False`
        handles both calls correctly.
    """

    #: Whether a training-mode call is checkpointed; set per layer by `set_gradient_checkpointing`.
    gradient_checkpointing: bool = False
    #: Layers that only read the KV cache may keep it under checkpointing (the recompute reads the same
    #: states).
    _can_checkpoint_with_cache: bool = False
    #: `torch.utils.checkpoint.checkpoint` with its keyword arguments bound; set by
    #: `set_gradient_checkpointing`.
    _gradient_checkpointing_func: Callable[..., Any] = functools.partial(checkpoint, use_reentrant=False)

    #: What the checkpoint wraps, one of `CHECKPOINT_TARGETS`; set per layer by `set_gradient_checkpointing`.
    #: NOTE [ forward, not __call__ ]: hooks on the layer (FSDP2's all-gather among them) stay outside the
    #: checkpoint, so they run once per step, not again during the recompute; transformers moved there in
    #: 5.23.
    checkpoint_target: str = "forward"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Wrap the forward this class resolves to, unless it is already ours (a subclass of a subclass), so
        # that a class mixing our layer with transformers' (`class X(GradientCheckpointingLayer, GPT2Block)`)
        # is covered.
        forward = cls.forward
        if not getattr(forward, "_checkpointing_wrapper", False):
            cls.forward = _checkpointed_forward(forward)

    def _checkpoints_at(self, target: str) -> bool:
        return (
            self.gradient_checkpointing
            and self.training
            and torch.is_grad_enabled()
            and self.checkpoint_target == target
            and not inside_checkpoint()
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._checkpoints_at("__call__"):
            kwargs = _without_cache(type(self), kwargs, self._can_checkpoint_with_cache)
            # nn.Module.__call__ (not a bare forward) so that the module's hooks run inside the checkpoint
            # too.
            layer_call = functools.partial(_in_region, nn.Module.__call__, self, **kwargs)
            return self._gradient_checkpointing_func(layer_call, *args)
        return nn.Module.__call__(self, *args, **kwargs)


def _in_region(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run `function` marked as inside a checkpoint, so that the layers it calls do not checkpoint again."""
    with checkpointed_region():
        return function(*args, **kwargs)


def _checkpointed_forward(forward: Callable[..., Any]) -> Callable[..., Any]:
    """`forward` that checkpoints itself when its layer's `checkpoint_target` is "forward"."""

    @functools.wraps(forward)
    def wrapper(self: GradientCheckpointingLayer, *args: Any, **kwargs: Any) -> Any:
        if self._checkpoints_at("forward"):
            kwargs = _without_cache(type(self), kwargs, self._can_checkpoint_with_cache)
            layer_forward = functools.partial(_in_region, forward, self, **kwargs)
            return self._gradient_checkpointing_func(layer_forward, *args)
        return forward(self, *args, **kwargs)

    wrapper._checkpointing_wrapper = True  # type: ignore[attr-defined]
    return wrapper


def _without_cache(cls: type, kwargs: dict[str, Any], can_keep_cache: bool) -> dict[str, Any]:
    """`kwargs` with `use_cache=False` and the cache set to None; warns once per layer class about what
    changed."""
    changed = []
    if kwargs.get("use_cache"):
        kwargs["use_cache"] = False
        changed.append("`use_cache=False`")
    if not can_keep_cache:
        for name in _CACHE_KWARGS:
            if kwargs.get(name) is not None:
                kwargs[name] = None
                changed.append(f"`{name}=None`")
    if changed and cls.__name__ not in CACHE_WARNINGS_GIVEN:
        CACHE_WARNINGS_GIVEN.add(cls.__name__)
        warnings.warn(
            f"Caching is incompatible with gradient checkpointing in {cls.__name__}. Setting "
            f"{', '.join(changed)}.",
            stacklevel=3,
        )
    return kwargs


def is_checkpointable_layer(module: nn.Module) -> bool:
    """True for our `GradientCheckpointingLayer` and for transformers' (found by name, without importing
    it)."""
    if isinstance(module, GradientCheckpointingLayer):
        return True
    return any(
        cls.__name__ == "GradientCheckpointingLayer" and cls.__module__.startswith("transformers.")
        for cls in type(module).__mro__
    )


def _checkpoint_keywords() -> list[str]:
    """The keyword arguments `torch.utils.checkpoint.checkpoint` takes: its keyword-only parameters, plus
    `preserve_rng_state`, which it reads from `**kwargs` (documented in its docstring)."""
    named = [
        name
        for name, p in inspect.signature(checkpoint).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    return sorted({*named, "preserve_rng_state"})


def _check_checkpoint_kwargs(ckpt_kwargs: Mapping[str, Any]) -> None:
    """Refuse keys `checkpoint` does not take (see NOTE [ Where we differ from transformers ], 5)."""
    accepted = _checkpoint_keywords()
    unknown = [key for key in ckpt_kwargs if key not in accepted]
    if unknown:
        hints = {key: difflib.get_close_matches(str(key), accepted, n=1) for key in unknown}
        guess = "; ".join(f"{key!r}: did you mean {close[0]!r}?" for key, close in hints.items() if close)
        raise ValueError(
            f"gradient_checkpointing_kwargs has unknown key(s) {unknown} (got {dict(ckpt_kwargs)!r}); "
            f"torch.utils.checkpoint.checkpoint accepts {accepted}" + (f". {guess}" if guess else "")
        )


def set_gradient_checkpointing(
    model: nn.Module,
    enable: bool = True,
    gradient_checkpointing_kwargs: Mapping[str, Any] | None = None,
    every_n_layers: int = 1,
    policy: str = "full",
    segment_length: int | None = None,
    checkpoint_target: str | None = None,
) -> list[bool]:
    """Turn gradient checkpointing on (or off) for every checkpointable layer inside `model`.

    Works on any module tree: layers are instances of our `GradientCheckpointingLayer` or of transformers'
    (the decoder blocks of a real model, e.g. `GPT2Block`, `LlamaDecoderLayer`), counted in `model.modules()`
    order. Other modules that carry a `gradient_checkpointing` attribute (e.g. `LlamaModel`) get it set to
    `enable`, as transformers does. A transformers model whose main input is `input_ids` also gets
    `enable_input_require_grads()`, as `gradient_checkpointing_enable` does in transformers 5.x.

    Args:
        model: the module tree to change in place.
        enable: False turns checkpointing off everywhere (the policy's state is dropped).
        gradient_checkpointing_kwargs: keyword arguments for `torch.utils.checkpoint.checkpoint`.
            `use_reentrant` defaults to False when absent (transformers: absent -> torch's reentrant fallback;
            see the NOTE above). A key `checkpoint` does not take is a ValueError (transformers passes it on
            silently).
        every_n_layers: checkpoint layers 0, k, 2k, ... only (`layer_index % k == 0`, as in transformers
            5.18+).
        policy: how the chosen layers are checkpointed, one of `checkpoint_policies.POLICIES`: "full" (whole
            layer), "sqrt" (segments of round(sqrt(L)) consecutive layers, Chen et al. 2016), "selective"
            (keep matmul and attention outputs, recompute the pointwise ops), "selective_attention" (keep
            attention outputs only).
        segment_length: for policy "sqrt" only, the length s of a segment (default round(sqrt(L))), to draw
            Chen's curve M(s) = ceil(L / s) + a * s.
        checkpoint_target: for our layers, what the checkpoint wraps: "forward" (the default; hooks run once)
            or "__call__" (hooks run inside the checkpoint and again in the recompute, as in transformers <=
            5.22). transformers' own layers keep what the installed release does; None leaves every layer as
            it is.

    Returns:
        The per-layer flags, in order (True = that layer's call is checkpointed, or starts/continues a
        segment).
    """
    if not isinstance(enable, bool):
        raise TypeError(
            f"enable={enable!r} must be True or False (gradient_checkpointing_kwargs is the third argument, "
            "or pass it by keyword)"
        )
    if not isinstance(every_n_layers, int) or every_n_layers < 1:
        raise ValueError(
            f"every_n_layers={every_n_layers!r} must be an integer >= 1 (1 checkpoints every layer)"
        )
    if gradient_checkpointing_kwargs is None:
        ckpt_kwargs: dict[str, Any] = {}
    elif isinstance(gradient_checkpointing_kwargs, Mapping):
        ckpt_kwargs = dict(gradient_checkpointing_kwargs)
    else:
        raise TypeError(
            f"gradient_checkpointing_kwargs={gradient_checkpointing_kwargs!r} is a "
            f"{type(gradient_checkpointing_kwargs).__name__}; expected a mapping of keyword arguments for "
            "torch.utils.checkpoint.checkpoint, e.g. {'use_reentrant': False}, or None"
        )
    _check_checkpoint_kwargs(ckpt_kwargs)
    if checkpoint_target is not None and checkpoint_target not in CHECKPOINT_TARGETS:
        raise ValueError(
            f"checkpoint_target={checkpoint_target!r} must be one of {list(CHECKPOINT_TARGETS)} or None"
        )
    # Explicit, documented default: torch would otherwise warn and fall back to the reentrant variant.
    ckpt_kwargs.setdefault("use_reentrant", False)

    layers: list[Any] = [m for m in model.modules() if is_checkpointable_layer(m)]
    if enable and not layers:
        raise ValueError(
            f"{type(model).__name__} contains no checkpointable layer: expected at least one submodule that "
            "is a reference_impl.GradientCheckpointingLayer or a "
            "transformers.modeling_layers.GradientCheckpointingLayer"
        )
    plan = plan_layers(layers, policy, ckpt_kwargs, every_n_layers, segment_length) if enable else None
    plain = functools.partial(checkpoint, **ckpt_kwargs)
    # Plain attributes are set on the modules below; torch's stubs would only allow Tensor | Module values.
    module: Any
    for module in model.modules():
        if hasattr(module, "gradient_checkpointing") and not is_checkpointable_layer(module):
            module.gradient_checkpointing = enable
            module._gradient_checkpointing_func = plain
    flags = []
    for i, layer in enumerate(layers):
        flag, func = plan[i] if plan is not None else (False, plain)
        layer.gradient_checkpointing = flag
        layer._gradient_checkpointing_func = func
        if checkpoint_target is not None and isinstance(layer, GradientCheckpointingLayer):
            layer.checkpoint_target = checkpoint_target
        flags.append(flag)
    if enable:
        CACHE_WARNINGS_GIVEN.clear()
        if getattr(model, "main_input_name", None) == "input_ids" and hasattr(
            model, "enable_input_require_grads"
        ):
            model.enable_input_require_grads()  # type: ignore[operator]  # a PreTrainedModel method
    return flags


# The entry points under transformers' names (methods of PreTrainedModel there, functions of the model here):
# `activation_checkpointing_*` since 5.23, `gradient_checkpointing_*` before (deprecated aliases in 5.23+
# until v6).


def activation_checkpointing_enable(
    model: nn.Module,
    activation_checkpointing_kwargs: Mapping[str, Any] | None = None,
    every_n_layers: int = 1,
    *,
    policy: str = "full",
    segment_length: int | None = None,
    checkpoint_target: str | None = None,
) -> list[bool]:
    """`model.activation_checkpointing_enable(...)` of transformers 5.23+:
    `set_gradient_checkpointing(model, True, ...)`.

    transformers' `offload` argument (keep the saved inputs in host memory) is not re-implemented.
    """
    return set_gradient_checkpointing(
        model,
        True,
        activation_checkpointing_kwargs,
        every_n_layers,
        policy=policy,
        segment_length=segment_length,
        checkpoint_target=checkpoint_target,
    )


def activation_checkpointing_disable(model: nn.Module) -> None:
    """`model.activation_checkpointing_disable()` of transformers 5.23+: every layer's flag off."""
    set_gradient_checkpointing(model, False)


def is_activation_checkpointing(model: nn.Module) -> bool:
    """`model.is_activation_checkpointing` of transformers 5.23+: does any module of `model` checkpoint?"""
    return any(getattr(module, "gradient_checkpointing", False) is True for module in model.modules())


def gradient_checkpointing_enable(
    model: nn.Module,
    gradient_checkpointing_kwargs: Mapping[str, Any] | None = None,
    every_n_layers: int = 1,
    *,
    policy: str = "full",
    segment_length: int | None = None,
    checkpoint_target: str | None = None,
) -> list[bool]:
    """`model.gradient_checkpointing_enable(...)` of transformers <= 5.22 (an alias of
    `activation_checkpointing_enable` in 5.23+, deprecated there until v6)."""
    return activation_checkpointing_enable(
        model,
        gradient_checkpointing_kwargs,
        every_n_layers,
        policy=policy,
        segment_length=segment_length,
        checkpoint_target=checkpoint_target,
    )


def gradient_checkpointing_disable(model: nn.Module) -> None:
    """`model.gradient_checkpointing_disable()` of transformers <= 5.22
    (`activation_checkpointing_disable`)."""
    activation_checkpointing_disable(model)


def is_gradient_checkpointing(model: nn.Module) -> bool:
    """`model.is_gradient_checkpointing` of transformers <= 5.22 (`is_activation_checkpointing`)."""
    return is_activation_checkpointing(model)
