"""Self-checks for lessons/08_capstone.ipynb: assemble a piece of the capstone model and prove it on the
trained one.

    check_capstone_attention("my_name")      # an attention function registered under that name, with its mask
    check_length_plan(my_length_plan)        # () -> (rule, factor) that reach 4x the trained length
    check_gpt2_layout_copy(to_gpt2_layout)   # the same weights in GPT-2's Conv1D layout, the same logits
    check_kept_prediction(my_kept_units)     # (a, e, num_layers, every_n_layers) -> units kept for backward

Each prints one success line or raises `CheckFailed` saying, in plain words, what differs; code still raising
NotImplementedError gives `ExerciseNotFinished`.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from reference_impl.attention import ALL_ATTENTION_FUNCTIONS
from reference_impl.conv1d import is_conv1d
from reference_impl.masking import ALL_MASK_ATTENTION_FUNCTIONS
from reference_impl.workbook.capstone import CapstoneConfig, CapstoneForCausalLM
from reference_impl.workbook.capstone_experiment import (
    RULES,
    TRAINED_LENGTH,
    evaluate,
    layer_saved_bytes,
    load_capstone_model,
    step_memory,
    task_batch,
    with_rope,
)
from reference_impl.workbook.checks._core import CheckFailed, first_difference, passed, student_call

__all__ = [
    "LENGTH_PLAN_TARGET",
    "check_capstone_attention",
    "check_gpt2_layout_copy",
    "check_kept_prediction",
    "check_length_plan",
]

#: What `check_length_plan` asks for: accuracy at 4x the trained length, without fine-tuning.
LENGTH_PLAN_TARGET = 0.6


def _with_attention(model: CapstoneForCausalLM, name: str) -> CapstoneForCausalLM:
    """A copy of `model` whose attention is looked up under `name`."""
    other = CapstoneForCausalLM(dataclasses.replace(model.config, attn_implementation=name))
    other.load_state_dict(model.state_dict())
    return other.eval()


def check_capstone_attention(name: str) -> None:
    """Check the attention function registered as `name` gives the trained capstone model eager's logits and
    grads.

    Both registries must know `name`: `ALL_ATTENTION_FUNCTIONS` (the function) and
    `ALL_MASK_ATTENTION_FUNCTIONS` (its mask builder). Lengths 32 and 100 (not a multiple of the usual chunk
    sizes), batch of 2.
    """
    exercise = "capstone attention"
    if name not in ALL_ATTENTION_FUNCTIONS:
        raise CheckFailed(
            f"{name!r} is not registered: call ALL_ATTENTION_FUNCTIONS.register({name!r}, your_function); "
            f"registered: {sorted(ALL_ATTENTION_FUNCTIONS)}"
        )
    if name not in ALL_MASK_ATTENTION_FUNCTIONS:
        raise CheckFailed(
            f"{name!r} has no mask builder: register one under the same name, e.g. "
            f"ALL_MASK_ATTENTION_FUNCTIONS.register({name!r}, eager_mask) (a materialised mask whose query "
            f"rows you can slice; sdpa_mask may return None)"
        )
    model = load_capstone_model()
    reference = _with_attention(model, "eager")
    theirs = _with_attention(model, name)
    for length in (TRAINED_LENGTH, 100):
        ids = torch.randint(
            0, model.config.vocab_size, (2, length), generator=torch.Generator().manual_seed(length)
        )
        expected = reference(ids)
        got = student_call(exercise, theirs, ids)
        problem = first_difference(got, expected, atol=1e-5, rtol=1e-5)
        if problem is not None:
            raise CheckFailed(f"length {length}: logits {problem}")
        expected.sum().backward()
        got.sum().backward()
        for (param_name, p), q in zip(theirs.named_parameters(), reference.parameters(), strict=True):
            if q.grad is None:  # every parameter of the reference takes part in the loss
                raise RuntimeError(f"the reference model's {param_name} got no gradient")
            problem = first_difference(p.grad, q.grad, atol=1e-4, rtol=1e-3)
            if problem is not None:
                raise CheckFailed(f"length {length}: gradient of {param_name} {problem}")
            p.grad = q.grad = None
    passed(exercise)


def check_length_plan(my_length_plan: Callable[[], tuple[str, float]]) -> None:
    """Check `my_length_plan()` returns a `(rule, factor)` with which the shipped model, stretched, reaches
    LENGTH_PLAN_TARGET accuracy at 4x the trained length.

    No fine-tuning: only RoPE changes. 64 held-out sequences of length 4 x TRAINED_LENGTH.
    """
    exercise = "length plan"
    plan = student_call(exercise, my_length_plan)
    if not (isinstance(plan, tuple) and len(plan) == 2):
        raise CheckFailed(
            f"my_length_plan() returned {plan!r}; expected a pair (rule, factor), e.g. ('yarn', 2.0)"
        )
    rule, factor = plan
    if rule not in RULES:
        raise CheckFailed(f"rule={rule!r} is not one of {list(RULES)}")
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor < 1:
        raise CheckFailed(
            f"factor={factor!r} must be a number >= 1 (the length to reach over the trained one)"
        )
    model = load_capstone_model()
    length = 4 * TRAINED_LENGTH
    batch = task_batch(64, length, torch.Generator().manual_seed(7))
    accuracy = evaluate(with_rope(model, rule, factor), batch)[0]
    if accuracy < LENGTH_PLAN_TARGET:
        plain = evaluate(with_rope(model, "default", 1), batch)[0]
        raise CheckFailed(
            f"{rule} with factor {factor:g} reaches accuracy {accuracy:.2f} at length {length}; the target "
            f"is {LENGTH_PLAN_TARGET} (plain RoPE: {plain:.2f}). Look at the length-extension table: which "
            f"rule keeps the one-step head sharp while bringing far keys back into the trained range?"
        )
    print(
        f"{rule} with factor {factor:g}: accuracy {accuracy:.2f} at length {length} (target "
        f"{LENGTH_PLAN_TARGET})"
    )
    passed(exercise)


def check_gpt2_layout_copy(to_gpt2_layout: Callable[[CapstoneForCausalLM], nn.Module]) -> None:
    """Check `to_gpt2_layout(model)` returns the model with every projection of its layers a Conv1D, same
    logits.

    Conv1D stores the weight transposed, (in, out), and computes `addmm(bias, x, W)`: the same numbers as the
    Linear in another memory layout, equal to float32 rounding (not always bitwise: another matmul kernel).
    """
    exercise = "GPT-2 layout copy"
    model = load_capstone_model()
    original = copy.deepcopy(model)
    converted = student_call(exercise, to_gpt2_layout, model)
    if not isinstance(converted, nn.Module):
        raise CheckFailed(f"to_gpt2_layout returned {type(converted).__name__}, expected the converted model")
    # Read by attribute: torch's stubs type a Module's attribute `Tensor | Module`.
    converted_model: Any = converted
    layers = converted_model.model.layers
    expected_names = [
        name for name, m in original.model.layers.named_modules() if isinstance(m, nn.Linear)
    ]  # q, k, v, o, gate, up, down of every layer
    modules = dict(layers.named_modules())
    still_linear = [n for n in expected_names if isinstance(modules.get(n), nn.Linear)]
    if still_linear:
        raise CheckFailed(
            f"{len(still_linear)} projections are still nn.Linear, e.g. layers.{still_linear[0]}"
        )
    missing = [n for n in expected_names if not is_conv1d(modules.get(n))]
    if missing:
        raise CheckFailed(
            f"layers.{missing[0]} is {type(modules.get(missing[0])).__name__}, expected a Conv1D"
        )
    for name in expected_names:
        linear_weight = dict(original.model.layers.named_modules())[name].weight
        if modules[name].weight.shape != linear_weight.T.shape:
            raise CheckFailed(
                f"layers.{name}.weight has shape {tuple(modules[name].weight.shape)}, expected (in, out) = "
                f"{tuple(linear_weight.T.shape)}: Conv1D keeps the Linear's weight transposed"
            )
    ids = torch.randint(
        0, model.config.vocab_size, (4, TRAINED_LENGTH), generator=torch.Generator().manual_seed(3)
    )
    with torch.no_grad():
        problem = first_difference(converted(ids), original(ids), atol=1e-5, rtol=1e-5)
    if problem is not None:
        raise CheckFailed(f"logits {problem}")
    passed(exercise)


def check_kept_prediction(my_kept_units: Callable[[float, float, int, int], float]) -> None:
    """Check `my_kept_units(a, e, num_layers, every_n_layers)` predicts, within 2 units, the bytes a training
    step keeps for backward (after the forward) when every `every_n_layers`-th layer is checkpointed.

    Measured exactly on the capstone architecture with 9 layers, B = 4, T = 128, for every_n_layers 3 and 2;
    `a` is one layer's saved units (`layer_saved_bytes`), `e` the units kept outside the layers under
    checkpointing.
    """
    exercise = "memory prediction"
    config = CapstoneConfig(num_hidden_layers=9, max_position_embeddings=128)
    B, T, L = 4, 128, config.num_hidden_layers
    unit = B * T * config.hidden_size * 4
    a = layer_saved_bytes(config, B, T) / unit
    e = step_memory(config, B, T, "full")[0] / unit - L
    for k in (3, 2):
        predicted = student_call(exercise, my_kept_units, a, e, L, k)
        measured = step_memory(config, B, T, "full", every_n_layers=k)[0] / unit
        if not isinstance(predicted, (int, float)) or abs(predicted - measured) > 2:
            hint = ""
            if isinstance(predicted, (int, float)) and abs(predicted - (e + L)) < 1:
                hint = " (that is every layer checkpointed: only layers 0, k, 2k, ... are)"
            elif isinstance(predicted, (int, float)) and abs(predicted - (e + L * a)) < 2:
                hint = " (that is no checkpointing at all)"
            raise CheckFailed(
                f"every_n_layers={k}: you predict {predicted!r} units kept, measured {measured:.2f}{hint}; "
                f"with a = {a:.2f}, e = {e:.2f}, L = {L}: a checkpointed layer keeps its input (1 unit), "
                "the others a"
            )
        print(f"every_n_layers={k}: predicted {predicted:.2f} u, measured {measured:.2f} u")
    passed(exercise)
