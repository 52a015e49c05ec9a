"""The lesson-08 self-checks pass the reference answers and fail, in plain words, on the usual wrong ones."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
import torch
from torch import nn

from reference_impl.attention import ALL_ATTENTION_FUNCTIONS, eager_attention_forward
from reference_impl.conv1d import linear_to_conv1d
from reference_impl.masking import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask
from reference_impl.registry import scoped_registration
from reference_impl.workbook.checks import (
    CheckFailed,
    ExerciseNotFinished,
    check_capstone_attention,
    check_gpt2_layout_copy,
    check_kept_prediction,
    check_length_plan,
)

ATTENTION = type(ALL_ATTENTION_FUNCTIONS)
MASKS = type(ALL_MASK_ATTENTION_FUNCTIONS)


def query_chunked(module, query, key, value, attention_mask, scaling, dropout=0.0, chunk_size=8, **kwargs):
    """The lesson's solution: eager attention over chunks of queries, each with its rows of the mask."""
    outputs, weights = [], []
    for start in range(0, query.shape[2], chunk_size):
        rows = slice(start, start + chunk_size)
        out, w = eager_attention_forward(
            module,
            query[:, :, rows],
            key,
            value,
            attention_mask[:, :, rows],
            scaling=scaling,
            dropout=dropout,
        )
        outputs.append(out)
        weights.append(w)
    return torch.cat(outputs, dim=1), torch.cat(weights, dim=2)


def chunks_without_mask_rows(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """A common slip: every chunk gets attention_mask=None, read as a bottom-right causal mask per chunk."""
    outs = [
        eager_attention_forward(module, query[:, :, s : s + 8], key, value, None, scaling=scaling)[0]
        for s in range(0, query.shape[2], 8)
    ]
    return torch.cat(outs, dim=1), None


def to_gpt2_layout(model: nn.Module) -> nn.Module:
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(parent, name, linear_to_conv1d(child))
    return model


def test_attention_check_passes_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    with (
        scoped_registration(ATTENTION, "chunked_q", query_chunked),
        scoped_registration(MASKS, "chunked_q", eager_mask),
    ):
        check_capstone_attention("chunked_q")
    assert capsys.readouterr().out == "✅ capstone attention: all checks passed\n"


def test_attention_check_names_a_missing_registration() -> None:
    with pytest.raises(
        CheckFailed, match=r"'nowhere' is not registered: call ALL_ATTENTION_FUNCTIONS.register"
    ):
        check_capstone_attention("nowhere")
    with scoped_registration(ATTENTION, "no_mask", query_chunked):
        with pytest.raises(
            CheckFailed, match=r"'no_mask' has no mask builder: register one under the same name"
        ):
            check_capstone_attention("no_mask")


def test_attention_check_catches_chunks_that_drop_the_mask() -> None:
    with (
        scoped_registration(ATTENTION, "bad", chunks_without_mask_rows),
        scoped_registration(MASKS, "bad", eager_mask),
    ):
        with pytest.raises(CheckFailed, match=r"length 32: logits \d+ of \d+ values differ"):
            check_capstone_attention("bad")


def test_attention_check_catches_a_wrong_gradient() -> None:
    def detached_values(module, query, key, value, attention_mask, **kwargs: Any):
        return query_chunked(module, query, key, value.detach(), attention_mask, **kwargs)

    with (
        scoped_registration(ATTENTION, "bad", detached_values),
        scoped_registration(MASKS, "bad", eager_mask),
    ):
        with pytest.raises(
            CheckFailed, match=r"length 32: gradient of model\.embed_tokens\.weight \d+ of 2048 values differ"
        ):
            check_capstone_attention("bad")


def test_attention_check_says_when_the_exercise_is_not_started() -> None:
    def unfinished(*args: Any, **kwargs: Any):
        raise NotImplementedError

    with scoped_registration(ATTENTION, "todo", unfinished), scoped_registration(MASKS, "todo", eager_mask):
        with pytest.raises(ExerciseNotFinished, match="capstone attention"):
            check_capstone_attention("todo")


def test_length_plan_passes_a_rule_that_reaches_the_target(capsys: pytest.CaptureFixture[str]) -> None:
    check_length_plan(lambda: ("dynamic", 4.0))
    out = capsys.readouterr().out
    assert re.fullmatch(
        r"dynamic with factor 4: accuracy 0\.\d\d at length 128 \(target 0\.6\)\n✅ length plan: all checks "
        r"passed\n",
        out,
    )


@pytest.mark.parametrize(
    ("rule", "factor", "message"),
    [
        ("default", 4.0, r"default with factor 4 reaches accuracy 0\.\d\d at length 128; the target is 0\.6"),
        ("linear", 4.0, r"linear with factor 4 reaches accuracy"),
        ("ntk", 4.0, r"rule='ntk' is not one of \['default', 'linear', 'dynamic', 'yarn', 'llama3'\]"),
        ("yarn", 0.25, r"factor=0.25 must be a number >= 1"),
    ],
)
def test_length_plan_refuses_what_falls_short(rule, factor, message) -> None:
    with pytest.raises(CheckFailed, match=message):
        check_length_plan(lambda: (rule, factor))


def test_gpt2_layout_check_passes_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    check_gpt2_layout_copy(to_gpt2_layout)
    assert capsys.readouterr().out == "✅ GPT-2 layout copy: all checks passed\n"


def test_gpt2_layout_check_finds_a_projection_left_as_linear() -> None:
    def attention_only(model: nn.Module) -> nn.Module:
        for layer in model.model.layers:
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                setattr(layer.self_attn, name, linear_to_conv1d(getattr(layer.self_attn, name)))
        return model

    with pytest.raises(CheckFailed, match=r"6 projections are still nn.Linear, e.g. layers.0.mlp.gate_proj"):
        check_gpt2_layout_copy(attention_only)


def test_gpt2_layout_check_finds_an_untransposed_weight() -> None:
    def square_swap(model: nn.Module) -> nn.Module:
        model = to_gpt2_layout(model)
        conv = model.model.layers[0].self_attn.q_proj
        conv.weight.data = conv.weight.data.T.contiguous()  # square: shapes agree, values do not
        return model

    with pytest.raises(CheckFailed, match=r"logits \d+ of \d+ values differ"):
        check_gpt2_layout_copy(square_swap)


def test_gpt2_layout_check_refuses_a_return_value_that_is_not_a_model() -> None:
    with pytest.raises(CheckFailed, match="to_gpt2_layout returned NoneType"):
        check_gpt2_layout_copy(lambda model: None)


def test_length_plan_wants_a_pair_and_knows_an_unfinished_plan() -> None:
    with pytest.raises(
        CheckFailed, match=r"my_length_plan\(\) returned 'yarn'; expected a pair \(rule, factor\)"
    ):
        check_length_plan(lambda: "yarn")

    def unfinished() -> tuple[str, float]:
        raise NotImplementedError

    with pytest.raises(ExerciseNotFinished, match="length plan"):
        check_length_plan(unfinished)


def kept_units(a: float, e: float, num_layers: int, every_n_layers: int) -> float:
    checkpointed = math.ceil(num_layers / every_n_layers)  # layers 0, k, 2k, ...
    return e + checkpointed + (num_layers - checkpointed) * a


def test_kept_prediction_passes_the_formula(capsys: pytest.CaptureFixture[str]) -> None:
    check_kept_prediction(kept_units)
    out = capsys.readouterr().out
    assert re.fullmatch(
        r"every_n_layers=3: predicted [\d.]+ u, measured [\d.]+ u\n"
        r"every_n_layers=2: predicted [\d.]+ u, measured [\d.]+ u\n✅ memory prediction: all checks passed\n",
        out,
    )


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (lambda a, e, n, k: e + n, r"every_n_layers=3: .* \(that is every layer checkpointed"),
        (lambda a, e, n, k: e + n * a, r"every_n_layers=3: .* \(that is no checkpointing at all\)"),
        (
            lambda a, e, n, k: e + n // k + (n - n // k) * a,
            r"every_n_layers=2: you predict",
        ),  # floor, not ceil
    ],
)
def test_kept_prediction_names_the_usual_mistakes(wrong, message) -> None:
    with pytest.raises(CheckFailed, match=message):
        check_kept_prediction(wrong)
