"""Tests for reference_impl.checkpointing: same numbers with and without checkpointing, the traps, the bytes
kept.

PyTorch's own recipe (test_checkpoint.py): loss, input gradient and every parameter gradient are bitwise equal
with and without checkpointing. The bytes autograd keeps are counted exactly with
`reference_impl.workbook.measure.PeakMemory`.
"""

from __future__ import annotations

import functools
import math
import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from reference_impl.checkpoint_policies import segment_size
from reference_impl.checkpointing import (
    CACHE_WARNINGS_GIVEN,
    GradientCheckpointingLayer,
    activation_checkpointing_disable,
    activation_checkpointing_enable,
    gradient_checkpointing_disable,
    gradient_checkpointing_enable,
    is_activation_checkpointing,
    is_gradient_checkpointing,
    set_gradient_checkpointing,
)
from reference_impl.workbook.envcheck import differences_from_pin
from reference_impl.workbook.measure import HookCalls, PeakMemory
from reference_impl.workbook.models import GatedBlock

B, C = 8, 4
UNIT = B * C * 4  # bytes of one (B, C) fp32 activation

# (policy, gradient_checkpointing_kwargs, every_n_layers): every mode and policy the tests run through.
MODES = [
    ("full", {"use_reentrant": True}, 1),
    ("full", {"use_reentrant": False}, 1),
    ("full", {"use_reentrant": False}, 3),
    ("sqrt", {"use_reentrant": True}, 1),
    ("sqrt", {"use_reentrant": False}, 1),
    ("selective", {"use_reentrant": False}, 1),
    ("selective_attention", {"use_reentrant": False}, 2),
]
MODE_IDS = [f"{p}-{'re' if kw['use_reentrant'] else 'nre'}-k{k}" for p, kw, k in MODES]


def gated_stack(num_layers: int, hidden: int = C) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(*[GatedBlock(hidden) for _ in range(num_layers)]).train()


def loss_and_grads(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    loss = model(x).square().sum()
    loss.backward()
    return loss.detach(), [x.grad, *(p.grad for p in model.parameters())]


def kept_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of activations alive after the forward (what is kept for backward), the input counted, the output
    not."""
    x = x.detach().clone().requires_grad_(True)
    with PeakMemory(baseline=[x]) as mem:
        out = model(x)
    kept = mem.current_bytes - out.untyped_storage().nbytes()
    out.sum().backward()
    return kept


# ----------------------------------------------------------------------------------------------------
# equivalence


@pytest.mark.parametrize(("policy", "kwargs", "k"), MODES, ids=MODE_IDS)
def test_loss_and_every_gradient_are_bitwise_equal_with_checkpointing(policy, kwargs, k) -> None:
    model, x = gated_stack(7), torch.randn(B, C)
    loss0, grads0 = loss_and_grads(model, x)
    set_gradient_checkpointing(model, True, kwargs, every_n_layers=k, policy=policy)
    loss1, grads1 = loss_and_grads(model, x)
    assert torch.equal(loss0, loss1)
    assert len(grads0) == len(grads1) == 8
    for i, (g0, g1) in enumerate(zip(grads0, grads1, strict=False)):
        assert g1 is not None, f"gradient {i} is missing under policy={policy}"
        assert torch.equal(g0, g1), f"gradient {i} differs under policy={policy}"


@given(num_layers=st.integers(1, 12), k=st.integers(1, 5), reentrant=st.booleans())
def test_every_k_keeps_results_and_flags_every_kth_layer(num_layers: int, k: int, reentrant: bool) -> None:
    model, x = gated_stack(num_layers), torch.randn(B, C)
    loss0, grads0 = loss_and_grads(model, x)
    flags = set_gradient_checkpointing(model, True, {"use_reentrant": reentrant}, every_n_layers=k)
    assert flags == [i % k == 0 for i in range(num_layers)]
    assert [layer.gradient_checkpointing for layer in model] == flags
    loss1, grads1 = loss_and_grads(model, x)
    assert torch.equal(loss0, loss1) and all(torch.equal(a, b) for a, b in zip(grads0, grads1, strict=False))


def test_disable_turns_every_flag_off() -> None:
    model = gated_stack(4)
    set_gradient_checkpointing(model, True, policy="sqrt")
    assert set_gradient_checkpointing(model, enable=False) == [False] * 4
    assert not any(layer.gradient_checkpointing for layer in model)


# ---------------------------------------------------------------------------------------------------- bytes
# kept


def predicted_kept_units(policy: str, num_layers: int, k: int = 1, segment: int | None = None) -> int:
    """A GatedBlock keeps a = 3 units (x, tanh(h), sigmoid(h)); a checkpoint keeps its input, 1 unit."""
    a = 3
    if policy == "none":
        return a * num_layers
    if policy == "full":
        chosen = math.ceil(num_layers / k)
        return chosen * 1 + (num_layers - chosen) * a
    if policy == "selective":  # input + the matmul's output h on the chosen layers
        chosen = math.ceil(num_layers / k)
        return chosen * 2 + (num_layers - chosen) * a
    if policy == "sqrt":
        return math.ceil(num_layers / (segment or segment_size(num_layers)))
    raise AssertionError(policy)


@pytest.mark.parametrize(
    ("policy", "kwargs", "k", "units"),
    [
        ("none", None, 1, 48),
        ("full", {"use_reentrant": True}, 1, 16),
        ("full", {"use_reentrant": False}, 1, 16),
        ("full", {"use_reentrant": False}, 2, 8 + 8 * 3),
        ("full", {"use_reentrant": False}, 3, 6 + 10 * 3),
        ("sqrt", {"use_reentrant": True}, 1, 4),
        ("sqrt", {"use_reentrant": False}, 1, 4),
        ("selective", {"use_reentrant": False}, 1, 32),
        ("selective", {"use_reentrant": False}, 4, 4 * 2 + 12 * 3),
    ],
)
def test_bytes_kept_for_backward_match_the_formula_on_16_layers(policy, kwargs, k, units) -> None:
    model, x = gated_stack(16), torch.randn(B, C)
    if policy != "none":
        set_gradient_checkpointing(model, True, kwargs, every_n_layers=k, policy=policy)
    assert predicted_kept_units(policy, 16, k) == units  # the golden value is the formula's
    assert kept_bytes(model, x) == units * UNIT


@given(
    num_layers=st.integers(1, 20), k=st.integers(1, 5), policy=st.sampled_from(["none", "full", "selective"])
)
def test_bytes_kept_match_the_formula_for_any_depth_and_k(num_layers: int, k: int, policy: str) -> None:
    model, x = gated_stack(num_layers), torch.randn(B, C)
    if policy != "none":
        set_gradient_checkpointing(model, True, every_n_layers=k, policy=policy)
    assert kept_bytes(model, x) == predicted_kept_units(policy, num_layers, k) * UNIT


@given(num_layers=st.integers(1, 20), segment=st.integers(1, 6))
def test_sqrt_policy_keeps_one_unit_per_segment(num_layers: int, segment: int) -> None:
    model, x = gated_stack(num_layers), torch.randn(B, C)
    set_gradient_checkpointing(model, True, policy="sqrt", segment_length=segment)
    assert kept_bytes(model, x) == predicted_kept_units("sqrt", num_layers, segment=segment) * UNIT


def test_peak_follows_chens_curve_n_over_s_plus_a_s() -> None:
    """Peak over forward + backward = (ceil(L/s) + 3 s) units kept or recomputed, + 2 units of gradients in
    flight,
    + the weight gradients of the segment being processed (s * C*C*4 bytes): Chen's n/k + k with a = 3."""
    num_layers, batch, hidden = 16, 64, 4
    unit, weight_grad = batch * hidden * 4, hidden * hidden * 4
    x = torch.randn(batch, hidden)
    for s in (1, 2, 4, 8, 16):
        model = gated_stack(num_layers, hidden)
        set_gradient_checkpointing(model, True, policy="sqrt", segment_length=s)
        xx = x.clone().requires_grad_(True)
        with PeakMemory(baseline=[xx]) as mem:
            model(xx).sum().backward()
        predicted = (math.ceil(num_layers / s) + 3 * s + 2) * unit
        assert predicted <= mem.peak_bytes <= predicted + s * weight_grad + 8, (s, mem.peak_bytes - predicted)


# ---------------------------------------------------------------------------------------------------- the
# traps


class KeywordBlock(GradientCheckpointingLayer):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(C, C)

    def forward(self, hidden_states: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        out = torch.tanh(self.linear(hidden_states))
        return out * scale if scale is not None else out


def test_reentrant_with_the_hidden_states_by_keyword_gives_no_gradient() -> None:
    layer = KeywordBlock().train()
    set_gradient_checkpointing(layer, True, {"use_reentrant": True})
    x = torch.randn(B, C, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: "None of the inputs have requires_grad=True"
        out = layer(hidden_states=x)
    assert not out.requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        out.sum().backward()


class KeywordModel(nn.Module):
    """Three checkpointed layers called with the hidden states by keyword, then a plain head (like an LM
    head)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList(KeywordBlock() for _ in range(3))
        self.head = nn.Linear(C, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(hidden_states=x)
        return self.head(x)


def test_reentrant_with_keywords_in_a_model_silently_trains_only_the_head() -> None:
    model = KeywordModel().train()
    set_gradient_checkpointing(model, True, {"use_reentrant": True})
    with pytest.warns(UserWarning, match="None of the inputs have requires_grad=True"):
        loss = model(torch.randn(B, C, requires_grad=True)).sum()
    loss.backward()  # no error: the head's weights require grad
    assert model.head.weight.grad is not None
    assert [layer.linear.weight.grad for layer in model.layers] == [None, None, None]


@pytest.mark.parametrize("by_keyword", [False, True])
def test_non_reentrant_gives_the_right_gradients_either_way(by_keyword: bool) -> None:
    layer = KeywordBlock().train()
    x, scale = torch.randn(B, C, requires_grad=True), torch.randn(B, C, requires_grad=True)
    layer(x, scale=scale).sum().backward()
    expected = (x.grad.clone(), scale.grad.clone(), layer.linear.weight.grad.clone())
    x.grad = scale.grad = None
    layer.zero_grad(set_to_none=True)
    set_gradient_checkpointing(layer, True, {"use_reentrant": False})
    out = layer(hidden_states=x, scale=scale) if by_keyword else layer(x, scale=scale)
    out.sum().backward()
    for got, want in zip((x.grad, scale.grad, layer.linear.weight.grad), expected, strict=False):
        assert torch.equal(got, want)


def frozen_embedding_model() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, C), GatedBlock(C), GatedBlock(C)).train()
    model[0].weight.requires_grad_(False)
    return model


def test_frozen_embeddings_under_reentrant_leave_the_layers_without_gradients() -> None:
    model = frozen_embedding_model()
    set_gradient_checkpointing(model, True, {"use_reentrant": True})
    ids = torch.randint(0, 10, (B,))
    with pytest.warns(UserWarning, match="None of the inputs have requires_grad=True"):
        out = model(ids)
    assert not out.requires_grad  # nothing upstream requires grad, the checkpoints cut the parameters off


@pytest.mark.parametrize("fix", ["non_reentrant", "input_requires_grad"])
def test_frozen_embeddings_are_fixed_by_non_reentrant_or_an_input_that_requires_grad(fix: str) -> None:
    ids = torch.randint(0, 10, (B,))
    model = frozen_embedding_model()
    model(ids).sum().backward()
    expected = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad(set_to_none=True)
    set_gradient_checkpointing(model, True, {"use_reentrant": fix == "input_requires_grad"})
    if fix == "input_requires_grad":  # what transformers' enable_input_require_grads() does with a hook
        model[0].register_forward_hook(lambda module, args, output: output.requires_grad_(True))
    model(ids).sum().backward()
    got = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.equal(g, e) for g, e in zip(got, expected, strict=False))


class CachingBlock(GradientCheckpointingLayer):
    """Records what it was called with, so a test can see what checkpointing changed."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(C, C)
        self.seen: list[tuple[object, object]] = []

    def forward(self, hidden_states, past_key_values=None, use_cache=False):
        self.seen.append((use_cache, past_key_values))
        return self.linear(hidden_states)


def test_cache_is_turned_off_under_checkpointing_with_a_single_warning() -> None:
    layer = CachingBlock().train()
    set_gradient_checkpointing(layer, True)
    x, cache = torch.randn(B, C, requires_grad=True), ["a cache"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layer(x, past_key_values=cache, use_cache=True)
        layer(x, past_key_values=cache, use_cache=True)
    messages = [str(w.message) for w in caught]
    assert messages == [
        "Caching is incompatible with gradient checkpointing in CachingBlock. "
        "Setting `use_cache=False`, `past_key_values=None`."
    ]
    assert layer.seen == [(False, None), (False, None)]
    assert "CachingBlock" in CACHE_WARNINGS_GIVEN


def test_the_cache_warning_is_given_again_after_each_enable() -> None:
    # Documented: once per layer class per `set_gradient_checkpointing(..., enable=True)`, so a re-run
    # notebook shows it again (transformers' warning_once is once per process).
    layer = CachingBlock().train()
    x, cache = torch.randn(B, C, requires_grad=True), ["a cache"]
    per_enable = []
    for _ in range(3):
        set_gradient_checkpointing(layer, True)
        assert "CachingBlock" not in CACHE_WARNINGS_GIVEN
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            layer(x, past_key_values=cache, use_cache=True)
            layer(x, past_key_values=cache, use_cache=True)
        per_enable.append([str(w.message) for w in caught if "Caching is incompatible" in str(w.message)])
    assert [len(messages) for messages in per_enable] == [1, 1, 1], per_enable
    # Disabling does not reset the record: only an enable does.
    set_gradient_checkpointing(layer, False)
    assert "CachingBlock" in CACHE_WARNINGS_GIVEN


def test_a_cache_reading_layer_may_keep_its_cache() -> None:
    class ReadsCache(CachingBlock):
        _can_checkpoint_with_cache = True

    layer = ReadsCache().train()
    set_gradient_checkpointing(layer, True)
    cache = ["a cache"]
    with pytest.warns(UserWarning, match=r"Setting `use_cache=False`\.$"):
        layer(torch.randn(B, C), past_key_values=cache, use_cache=True)
    assert layer.seen == [(False, cache)]


def test_eval_mode_does_nothing_not_even_the_cache() -> None:
    calls = []

    def counting_checkpoint(fn, *args):
        calls.append(1)
        return fn(*args)

    model = gated_stack(4)
    set_gradient_checkpointing(model, True)
    model.eval()
    for layer in model:
        layer._gradient_checkpointing_func = counting_checkpoint
    x = torch.randn(B, C)
    assert (
        kept_bytes(model, x) == predicted_kept_units("none", 4) * UNIT
    )  # grads still on: everything is kept
    assert calls == []
    layer = CachingBlock().eval()
    set_gradient_checkpointing(layer, True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer(torch.randn(B, C), past_key_values=["cache"], use_cache=True)
    assert layer.seen == [(True, ["cache"])]


def test_dropout_masks_are_replayed_and_differ_without_the_rng_state() -> None:
    class DropoutBlock(GradientCheckpointingLayer):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(C, C)

        def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
            return hidden_states + nn.functional.dropout(
                torch.tanh(self.linear(hidden_states)), 0.5, self.training
            )

    torch.manual_seed(0)
    model = nn.Sequential(*[DropoutBlock() for _ in range(3)]).train()
    x = torch.randn(B, C)

    def grads(**kwargs):
        torch.manual_seed(1)
        return loss_and_grads(model, x)[1]

    expected = grads()
    for reentrant in (True, False):
        set_gradient_checkpointing(model, True, {"use_reentrant": reentrant})
        assert all(torch.equal(a, b) for a, b in zip(grads(), expected, strict=False))
        set_gradient_checkpointing(model, True, {"use_reentrant": reentrant, "preserve_rng_state": False})
        assert not all(torch.equal(a, b) for a, b in zip(grads(), expected, strict=False))


def test_sqrt_segments_refuse_a_model_that_is_not_a_plain_chain() -> None:
    class NotAChain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList(GatedBlock(C) for _ in range(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for layer in self.layers:
                x = layer(x * 1.0)  # the hidden states change between layers
            return x

    model = NotAChain().train()
    set_gradient_checkpointing(model, True, policy="sqrt")
    with pytest.raises(RuntimeError, match="was not called on the previous layer's output"):
        model(torch.randn(B, C))


# ---------------------------------------------------------------------------------------------------- bad
# input


def test_default_is_non_reentrant_even_when_other_kwargs_are_given() -> None:
    model = gated_stack(2)
    set_gradient_checkpointing(model, True, {"preserve_rng_state": True})
    assert model[0]._gradient_checkpointing_func.keywords == {
        "preserve_rng_state": True,
        "use_reentrant": False,
    }
    with warnings.catch_warnings():
        warnings.simplefilter(
            "error"
        )  # torch would warn "use_reentrant parameter should be passed explicitly"
        model(torch.randn(B, C, requires_grad=True)).sum().backward()


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: set_gradient_checkpointing(nn.Linear(2, 2)),
            ValueError,
            r"Linear contains no checkpointable layer",
        ),
        (
            lambda: set_gradient_checkpointing(gated_stack(2), {"use_reentrant": False}),
            TypeError,
            r"enable=\{'use_reentrant'",
        ),
        (
            lambda: set_gradient_checkpointing(gated_stack(2), every_n_layers=0),
            ValueError,
            r"every_n_layers=0 must",
        ),
        (
            lambda: set_gradient_checkpointing(gated_stack(2), every_n_layers=-2),
            ValueError,
            r"every_n_layers=-2",
        ),
        (
            lambda: set_gradient_checkpointing(gated_stack(2), policy="fast"),
            ValueError,
            r"policy='fast'.*'full'",
        ),
        (
            lambda: set_gradient_checkpointing(
                gated_stack(2), gradient_checkpointing_kwargs=[("use_reentrant", 1)]
            ),
            TypeError,
            r"is a list; expected a mapping",
        ),
        (
            lambda: set_gradient_checkpointing(
                gated_stack(2), True, {"use_reentrant": True}, policy="selective"
            ),
            ValueError,
            r"needs use_reentrant=False",
        ),
        (
            lambda: set_gradient_checkpointing(gated_stack(4), every_n_layers=2, policy="sqrt"),
            ValueError,
            r"must be 1",
        ),
        (
            lambda: set_gradient_checkpointing(gated_stack(4), segment_length=2),
            ValueError,
            r"policy='sqrt' only",
        ),
    ],
    ids=[
        "no-layer",
        "enable-not-bool",
        "k=0",
        "k<0",
        "unknown-policy",
        "kwargs-not-mapping",
        "selective-reentrant",
        "sqrt-k",
        "seg",
    ],
)
def test_bad_input_names_what_was_given_and_what_is_accepted(call, error, match) -> None:
    with pytest.raises(error, match=match):
        call()


def test_segment_size_is_round_sqrt() -> None:
    assert [segment_size(n) for n in (1, 2, 4, 12, 16, 24, 36)] == [1, 1, 2, 3, 4, 5, 6]


# ---------------------------------------------------------------------------------------------------- since
# 5.23 What transformers 5.23/5.24 changed, on our side (the version guards below assert each transformers
# line).


def counting(func):
    """`func` (a layer's checkpoint function) that appends to `.calls` each time it checkpoints."""

    def wrapper(*args, **kwargs):
        wrapper.calls.append(1)
        return func(*args, **kwargs)

    wrapper.calls = []
    return wrapper


@pytest.mark.parametrize(("target", "per_step"), [("forward", 1), ("__call__", 2)])
@pytest.mark.parametrize("reentrant", [True, False])
def test_hooks_run_once_per_step_around_forward_and_twice_around_call(target, per_step, reentrant) -> None:
    model = gated_stack(3)
    x = torch.randn(B, C)
    loss0, grads0 = loss_and_grads(model, x)
    set_gradient_checkpointing(model, True, {"use_reentrant": reentrant}, checkpoint_target=target)
    with HookCalls(model) as calls:
        loss1, grads1 = loss_and_grads(model, x)
    assert calls.counts == [per_step] * 3, (
        f"checkpoint_target={target!r}: hook calls per layer {calls.counts}"
    )
    assert torch.equal(loss0, loss1)
    assert all(torch.equal(a, b) for a, b in zip(grads0, grads1, strict=True))


def test_without_checkpointing_hooks_run_once_per_step() -> None:
    model = gated_stack(3)
    with HookCalls(model) as calls:
        loss_and_grads(model, torch.randn(B, C))
    assert calls.counts == [1, 1, 1]


class Outer(GradientCheckpointingLayer):
    """A checkpointable layer that holds another one (e.g. a block inside a checkpointed segment)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = GatedBlock(C)

    def forward(self, hidden_states):
        return self.inner(hidden_states) * 2


@pytest.mark.parametrize("target", ["forward", "__call__"])
def test_only_the_outermost_checkpoint_applies(target: str) -> None:
    model = Outer().train()
    set_gradient_checkpointing(model, True, checkpoint_target=target)
    model._gradient_checkpointing_func = counting(model._gradient_checkpointing_func)
    model.inner._gradient_checkpointing_func = counting(model.inner._gradient_checkpointing_func)
    model(torch.randn(B, C, requires_grad=True)).sum().backward()
    assert (
        len(model._gradient_checkpointing_func.calls),
        len(model.inner._gradient_checkpointing_func.calls),
    ) == (
        1,
        0,
    )


class WrappedAgain(GatedBlock):
    """A subclass whose own forward is wrapped again by __init_subclass__ (as FSDP2's `FSDPGatedBlock` would
    be)."""

    def forward(self, hidden_states):
        return super().forward(hidden_states)


@pytest.mark.parametrize("target", ["forward", "__call__"])
def test_a_subclass_wrapped_twice_checkpoints_once(target: str) -> None:
    layer = WrappedAgain(C).train()
    set_gradient_checkpointing(layer, True, checkpoint_target=target)
    layer._gradient_checkpointing_func = counting(layer._gradient_checkpointing_func)
    with HookCalls([layer]) as calls:
        layer(torch.randn(B, C, requires_grad=True)).sum().backward()
    assert len(layer._gradient_checkpointing_func.calls) == 1
    assert calls.counts == [1 if target == "forward" else 2]


@pytest.mark.parametrize("target", ["forward", "__call__"])
def test_without_grad_a_training_layer_neither_checkpoints_nor_drops_the_cache(target: str) -> None:
    layer = CachingBlock().train()
    set_gradient_checkpointing(layer, True, checkpoint_target=target)
    layer._gradient_checkpointing_func = counting(layer._gradient_checkpointing_func)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")
        layer(torch.randn(B, C), past_key_values=["cache"], use_cache=True)
    assert layer.seen == [(True, ["cache"])]
    assert layer._gradient_checkpointing_func.calls == []
    with pytest.warns(UserWarning, match="Caching is incompatible"):  # with grad: checkpointed, cache dropped
        layer(torch.randn(B, C), past_key_values=["cache"], use_cache=True)
    assert layer.seen[-1] == (False, None)
    assert len(layer._gradient_checkpointing_func.calls) == 1


@pytest.mark.parametrize("policy", ["full", "sqrt", "selective"])
def test_without_grad_every_policy_gives_the_plain_output_and_training_still_works(policy: str) -> None:
    model = gated_stack(9)
    x = torch.randn(B, C)
    plain = model(x)
    set_gradient_checkpointing(model, True, policy=policy)
    with torch.no_grad():
        without_grad = model(x)
    with_grad = model(x)
    with_grad.sum().backward()
    assert torch.equal(without_grad, plain) and torch.equal(with_grad, plain)


def test_the_5_24_cache_keyword_is_dropped_too() -> None:
    class NewCachingBlock(GradientCheckpointingLayer):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(C, C)
            self.seen: list[object] = []

        def forward(self, hidden_states, cache=None, use_cache=False):
            self.seen.append((use_cache, cache))
            return self.linear(hidden_states)

    layer = NewCachingBlock().train()
    set_gradient_checkpointing(layer, True)
    with pytest.warns(UserWarning, match=r"Setting `use_cache=False`, `cache=None`\.$"):
        layer(torch.randn(B, C, requires_grad=True), cache=["a cache"], use_cache=True)
    assert layer.seen == [(False, None)]


@pytest.mark.parametrize(
    ("enable", "disable", "is_on"),
    [
        (activation_checkpointing_enable, activation_checkpointing_disable, is_activation_checkpointing),
        (gradient_checkpointing_enable, gradient_checkpointing_disable, is_gradient_checkpointing),
    ],
    ids=["activation_checkpointing (5.23+)", "gradient_checkpointing (<= 5.22)"],
)
def test_both_names_of_the_entry_points_do_what_set_gradient_checkpointing_does(
    enable, disable, is_on
) -> None:
    model = gated_stack(4)
    assert not is_on(model)
    flags = enable(model, {"use_reentrant": True}, 2, checkpoint_target="__call__")
    assert flags == [True, False, True, False]
    assert is_on(model)
    assert [layer.checkpoint_target for layer in model] == ["__call__"] * 4
    assert model[0]._gradient_checkpointing_func.keywords == {"use_reentrant": True}
    assert set_gradient_checkpointing(gated_stack(4), True, {"use_reentrant": True}, 2) == flags
    disable(model)
    assert not is_on(model)
    assert [layer.gradient_checkpointing for layer in model] == [False] * 4


# ---------------------------------------------------------------------------------------------------- oracle

transformers = pytest.importorskip("transformers")
from packaging.version import Version  # noqa: E402

from reference_impl.workbook.tiny import tiny_gpt2_config, tiny_llama_config  # noqa: E402

TF_VERSION = Version(transformers.__version__)


def tiny_model(family: str, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    if family == "gpt2":
        config = tiny_gpt2_config(
            n_layer=4, n_positions=32, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout
        )
        return transformers.GPT2LMHeadModel(config).train()
    config = tiny_llama_config(
        num_hidden_layers=4, attention_dropout=dropout, bos_token_id=0, eos_token_id=0, pad_token_id=0
    )
    return transformers.LlamaForCausalLM(config).train()


def model_loss_and_grads(model: nn.Module, embeds: torch.Tensor, labels: torch.Tensor):
    model.zero_grad(set_to_none=True)
    embeds = embeds.detach().clone().requires_grad_(True)
    torch.manual_seed(1)
    loss = model(inputs_embeds=embeds, labels=labels, use_cache=False).loss
    loss.backward()
    return loss.detach(), {"inputs_embeds": embeds.grad, **{n: p.grad for n, p in model.named_parameters()}}


@pytest.mark.oracle
@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize(("policy", "kwargs", "k"), MODES, ids=MODE_IDS)
def test_real_models_keep_bitwise_equal_loss_and_gradients(family: str, policy, kwargs, k) -> None:
    model = tiny_model(family)
    labels = torch.randint(0, 64, (2, 10))
    embeds = torch.randn(2, 10, 32)
    loss0, grads0 = model_loss_and_grads(model, embeds, labels)
    set_gradient_checkpointing(model, True, kwargs, every_n_layers=k, policy=policy)
    loss1, grads1 = model_loss_and_grads(model, embeds, labels)
    assert torch.equal(loss0, loss1)
    # (Llama's embed_tokens is unused with inputs_embeds: None on both sides)
    differ = [n for n in grads0 if (grads0[n] is None) != (grads1[n] is None)]
    differ += [n for n in grads0 if grads0[n] is not None and not torch.equal(grads0[n], grads1[n])]
    assert sum(g is not None for g in grads0.values()) >= len(grads0) - 1
    assert not differ, f"{family}, policy={policy}: gradients differ for {differ[:5]}"


@pytest.mark.oracle
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_flags_per_layer_match_transformers_every_n_layers(k: int) -> None:
    model = tiny_model("llama")
    ours = set_gradient_checkpointing(model, True, every_n_layers=k)
    assert ours == [i % k == 0 for i in range(4)]
    if TF_VERSION >= Version("5.18"):
        disable_theirs(model)
        enable_theirs(model, {"use_reentrant": False}, every_n_layers=k)
        assert [layer.gradient_checkpointing for layer in model.model.layers] == ours


@pytest.mark.oracle
@pytest.mark.parametrize("reentrant", [True, False])
def test_with_dropout_ours_equals_transformers_and_replays_the_masks(reentrant: bool) -> None:
    labels, embeds = torch.randint(0, 64, (2, 10)), torch.randn(2, 10, 32)
    model = tiny_model("gpt2", dropout=0.1)
    _, plain = model_loss_and_grads(model, embeds, labels)
    enable_theirs(model, {"use_reentrant": reentrant})
    _, theirs = model_loss_and_grads(model, embeds, labels)
    disable_theirs(model)
    set_gradient_checkpointing(model, True, {"use_reentrant": reentrant})
    _, ours = model_loss_and_grads(model, embeds, labels)
    set_gradient_checkpointing(model, True, {"use_reentrant": reentrant, "preserve_rng_state": False})
    _, unreplayed = model_loss_and_grads(model, embeds, labels)
    for name in plain:
        assert torch.equal(ours[name], theirs[name]), name
        # the same masks; the op order of dropout's backward differs in the last bits
        torch.testing.assert_close(ours[name], plain[name], atol=1e-6, rtol=1e-5)
    assert max((unreplayed[n] - plain[n]).abs().max().item() for n in plain) > 1e-3


@pytest.mark.oracle
def test_transformers_layer_with_hidden_states_by_keyword_under_reentrant_has_no_graph() -> None:
    model = tiny_model("llama")
    set_gradient_checkpointing(model, True, {"use_reentrant": True})
    layer = model.model.layers[0]
    h = torch.randn(1, 6, 32, requires_grad=True)
    pos = torch.arange(6)[None]
    cos_sin = model.model.rotary_emb(h, pos)
    assert layer(h, position_embeddings=cos_sin, position_ids=pos).requires_grad
    with pytest.warns(UserWarning, match="None of the inputs have requires_grad=True"):
        out = layer(hidden_states=h, position_embeddings=cos_sin, position_ids=pos)
    assert not out.requires_grad


@pytest.mark.oracle
def test_frozen_embeddings_under_reentrant_train_the_layers_as_transformers_does() -> None:
    ids = torch.randint(0, 64, (2, 10))
    model = tiny_model("llama")
    model.model.embed_tokens.weight.requires_grad_(False)
    model(input_ids=ids, labels=ids).loss.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    set_gradient_checkpointing(model, True, {"use_reentrant": True})  # adds enable_input_require_grads' hook
    model(input_ids=ids, labels=ids).loss.backward()
    params = dict(model.named_parameters())
    for name, grad in expected.items():
        if TF_VERSION.major >= 5:
            assert torch.equal(params[name].grad, grad), name
        else:  # 4.57's reentrant recompute with an input that requires grad: equal to ~2e-8, not bitwise
            torch.testing.assert_close(params[name].grad, grad, atol=1e-7, rtol=1e-5)


@pytest.mark.oracle
def test_real_model_in_training_drops_the_cache() -> None:
    model = tiny_model("llama")
    set_gradient_checkpointing(model, True)
    ids = torch.randint(0, 64, (1, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model(input_ids=ids, use_cache=True)
    assert out.past_key_values is None or out.past_key_values.get_seq_length() == 0
    model.eval()
    assert model(input_ids=ids, use_cache=True).past_key_values.get_seq_length() == 6


@pytest.mark.oracle
def test_version_guard_default_use_reentrant() -> None:
    model = tiny_model("llama")
    enable_theirs(model)
    default = model.model.layers[0]._gradient_checkpointing_func.keywords["use_reentrant"]
    expected = TF_VERSION.major < 5
    assert default is expected, (
        f"transformers {TF_VERSION} defaults to use_reentrant={default}; 4.x used True and 5.0 (PR #43203) "
        "False. Update the lesson's section on the default, and reference_impl/checkpointing.py's NOTE."
    )


# What transformers' GradientCheckpointingLayer does on each line (README's compatibility table, lesson 01's
# "since 5.23" section): (what it checkpoints, the cache keyword it sets to None, whether it checkpoints
# without grad).
LAYER_BEHAVIOUR = {
    "4.53-5.22": ("__call__", "past_key_values", True),
    "5.23": ("forward", "past_key_values", True),
    "5.24+": ("forward", "cache", False),
}


def transformers_line() -> str:
    if TF_VERSION < Version("5.23"):
        return "4.53-5.22"
    return "5.23" if TF_VERSION < Version("5.24") else "5.24+"


def enable_theirs(model: nn.Module, kwargs: dict | None = None, **options) -> None:
    """transformers' own entry point: `activation_checkpointing_enable` from 5.23 (the old name warns
    there)."""
    if TF_VERSION >= Version("5.23"):
        model.activation_checkpointing_enable(kwargs, **options)
    else:
        model.gradient_checkpointing_enable(kwargs, **options)


def disable_theirs(model: nn.Module) -> None:
    if TF_VERSION >= Version("5.23"):
        model.activation_checkpointing_disable()
    else:
        model.gradient_checkpointing_disable()


class OursLlamaDecoderLayer(
    GradientCheckpointingLayer, transformers.models.llama.modeling_llama.LlamaDecoderLayer
):
    """transformers' Llama layer with our checkpointing mixed in (ours comes first, so ours decides)."""


@pytest.mark.oracle
@pytest.mark.parametrize("side", ["transformers", "ours, forward", "ours, __call__"])
@pytest.mark.parametrize("reentrant", [True, False])
def test_hook_calls_per_layer_per_step_on_this_transformers_line(side: str, reentrant: bool) -> None:
    """Ours: once around forward, twice around __call__, on every line. transformers: twice up to 5.22, then
    once."""
    model = tiny_model("llama")
    ids = torch.randint(0, 64, (2, 8))
    model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    if side == "transformers":
        enable_theirs(model, {"use_reentrant": reentrant})
        expected = 2 if LAYER_BEHAVIOUR[transformers_line()][0] == "__call__" else 1
    else:
        for layer in model.model.layers:
            layer.__class__ = OursLlamaDecoderLayer
        target = side.split(", ")[1]
        set_gradient_checkpointing(model, True, {"use_reentrant": reentrant}, checkpoint_target=target)
        expected = 2 if target == "__call__" else 1
    with HookCalls(model.model.layers) as calls:
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
    assert calls.counts == [expected] * 4, (
        f"transformers {TF_VERSION}, {side}: hook calls per layer per step {calls.counts}, expected "
        f"{expected}. "
        "If transformers moved: update LAYER_BEHAVIOUR, the README's compatibility table and lesson 01's "
        "'since 5.23' section."
    )
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, plain[name], atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.oracle
def test_version_guard_what_transformers_layer_checkpoints_and_which_cache_it_drops() -> None:
    from torch.utils.checkpoint import checkpoint
    from transformers.modeling_layers import GradientCheckpointingLayer as Theirs

    class TheirCachingBlock(Theirs):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(C, C)
            self.seen: list[dict] = []

        def forward(self, hidden_states, **kwargs):
            self.seen.append(kwargs)
            return self.linear(hidden_states)

    layer = TheirCachingBlock().train()
    layer.gradient_checkpointing = True
    layer._gradient_checkpointing_func = counting(functools.partial(checkpoint, use_reentrant=False))
    with torch.no_grad():
        layer(torch.randn(B, C), cache="c", past_key_values="p", use_cache=True)
    without_grad = bool(layer._gradient_checkpointing_func.calls)
    layer.seen.clear()
    layer(torch.randn(B, C, requires_grad=True), cache="c", past_key_values="p", use_cache=True)
    dropped = [name for name in ("cache", "past_key_values") if layer.seen[0][name] is None]
    target = "__call__" if "__call__" in vars(Theirs) else "forward"
    line = transformers_line()
    assert (target, *dropped, without_grad) == LAYER_BEHAVIOUR[line], (
        f"transformers {TF_VERSION}: GradientCheckpointingLayer checkpoints {target}, sets {dropped} to "
        f"None, checkpoints without grad: {without_grad}; expected {LAYER_BEHAVIOUR[line]} for {line} "
        "(5.23 wraps forward, 5.24 renames past_key_values to cache and skips checkpointing without grad). "
        "Update LAYER_BEHAVIOUR, reference_impl/checkpointing.py's NOTE, the README and lesson 01."
    )
    assert Theirs.gradient_checkpointing is False
    # envcheck names these differences for lesson 01 exactly on the lines that have them
    notes = [d.what for d in differences_from_pin(str(TF_VERSION)) if d.lesson == "01"]
    assert any("checkpoints forward" in n for n in notes) == (target == "forward"), notes
    assert any("take the cache as cache=" in n for n in notes) == (dropped == ["cache"]), notes


@pytest.mark.oracle
def test_version_guard_entry_point_names() -> None:
    model = tiny_model("llama")
    has_new = all(
        hasattr(model, name)
        for name in (
            "activation_checkpointing_enable",
            "activation_checkpointing_disable",
            "is_activation_checkpointing",
        )
    )
    assert has_new == (TF_VERSION >= Version("5.23")), (
        f"transformers {TF_VERSION}: activation_checkpointing_* present={has_new}; added in 5.23"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.gradient_checkpointing_enable({"use_reentrant": False})
        on = model.is_gradient_checkpointing
    deprecated = any(issubclass(w.category, FutureWarning) and "v6" in str(w.message) for w in caught)
    assert on and is_gradient_checkpointing(model) and is_activation_checkpointing(model)
    assert deprecated == has_new, (
        f"transformers {TF_VERSION}: gradient_checkpointing_enable deprecated={deprecated}; 5.23 made it an "
        f"alias of activation_checkpointing_enable (FutureWarning, removal in v6)"
    )
    gradient_checkpointing_disable(model)
    assert not is_activation_checkpointing(model)
    if has_new:
        assert not model.is_activation_checkpointing


@pytest.mark.oracle
def test_transformers_without_use_reentrant_falls_back_to_reentrant_with_a_warning() -> None:
    model = tiny_model("llama")
    enable_theirs(model, {"preserve_rng_state": True})
    assert "use_reentrant" not in model.model.layers[0]._gradient_checkpointing_func.keywords
    ids = torch.randint(0, 64, (1, 6))
    with pytest.warns(UserWarning, match="use_reentrant parameter should be passed explicitly"):
        model(input_ids=ids, labels=ids, use_cache=False)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"use_reentrantt": False},
            r"unknown key\(s\) \['use_reentrantt'\].*'use_reentrantt': did you mean 'use_reentrant'\?",
        ),
        ({"preserve_rng": True}, r"\['preserve_rng'\].*accepts \[.*'preserve_rng_state'.*\]"),
        ({"use_reentrant": False, "offload": True}, r"\['offload'\].*accepts \['context_fn', 'debug'"),
    ],
    ids=["typo", "truncated", "trainer-only-key"],
)
def test_unknown_checkpoint_kwargs_are_refused_before_anything_changes(kwargs, match) -> None:
    model = gated_stack(2)
    with pytest.raises(ValueError, match=match):
        set_gradient_checkpointing(model, True, kwargs)
    assert not any(getattr(m, "gradient_checkpointing", False) for m in model.modules())


def test_every_key_torch_documents_is_accepted() -> None:
    model = gated_stack(2)
    kwargs = {
        "use_reentrant": False,
        "preserve_rng_state": False,
        "determinism_check": "none",
        "debug": False,
    }
    assert set_gradient_checkpointing(model, True, {**kwargs, "early_stop": True}) == [True, True]


@pytest.mark.oracle
def test_transformers_trains_silently_with_a_misspelled_key_beside_use_reentrant_and_we_refuse_it() -> None:
    labels, embeds = torch.randint(0, 64, (2, 10)), torch.randn(2, 10, 32)
    kwargs = {"use_reentrant": False, "preserve_rng": False}
    model = tiny_model("gpt2")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    # non-reentrant torch hands the unknown key to GPT2Block.forward, whose **kwargs swallows it: no word said
    loss, grads = model_loss_and_grads(model, embeds, labels)
    assert torch.isfinite(loss) and grads["transformer.h.0.attn.c_attn.weight"] is not None
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['preserve_rng'\].*'preserve_rng_state'"):
        set_gradient_checkpointing(tiny_model("gpt2"), True, kwargs)


@pytest.mark.oracle
def test_a_lone_misspelled_key_fails_at_the_first_step_in_transformers_and_at_set_time_here() -> None:
    model = tiny_model("gpt2")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrantt": False})
    # without use_reentrant torch falls back to reentrant, which refuses extra keys, but only in the forward
    with (
        pytest.warns(UserWarning),
        pytest.raises(ValueError, match="Unexpected keyword arguments: use_reentrantt"),
    ):
        model_loss_and_grads(model, torch.randn(2, 10, 32), torch.randint(0, 64, (2, 10)))
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['use_reentrantt'\]"):
        set_gradient_checkpointing(tiny_model("gpt2"), True, {"use_reentrantt": False})


@pytest.mark.parametrize("target", ["forward", "__call__"])
def test_sqrt_segments_accept_a_pre_hook_that_hands_the_layer_an_alias_of_its_input(target: str) -> None:
    # FSDP2's pre-forward hook passes the inputs through an autograd function: a new tensor object over the
    # same data. A segment's later layer must still recognise "the previous layer's output" (by value, not
    # identity).
    torch.manual_seed(0)
    model, reference = gated_stack(4), gated_stack(4)
    reference.load_state_dict(model.state_dict())
    for layer in model:
        layer.register_forward_pre_hook(lambda module, args: (args[0].view_as(args[0]), *args[1:]))
    set_gradient_checkpointing(model, policy="sqrt", checkpoint_target=target)
    x = torch.randn(B, C)
    loss, grads = loss_and_grads(model, x)
    ref_loss, ref_grads = loss_and_grads(reference, x)
    assert torch.equal(loss, ref_loss)
    assert all(torch.equal(g, r) for g, r in zip(grads, ref_grads, strict=True))
