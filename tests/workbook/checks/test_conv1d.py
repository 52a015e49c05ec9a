"""Tests for reference_impl.workbook.checks.conv1d: each self-check passes the reference and fails, in plain
words, on the mistakes students make (the transpose forgotten on square and non-square layers, the bias
dropped, the output left flat, a layer aliasing the original's storage), and reports an unfinished exercise as
such.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reference_impl.conv1d import Conv1D, conv1d_to_linear
from reference_impl.workbook.checks._core import CheckFailed, ExerciseNotFinished
from reference_impl.workbook.checks.conv1d import (
    check_conv1d_forward,
    check_conv1d_to_linear,
    check_find_untransposed,
    check_forward_bytes,
    check_split_c_attn,
)

# ------------------------------------------------------------------------------------- exercise 1: the
# forward


def reference_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return torch.addmm(bias, x.reshape(-1, x.shape[-1]), weight).view(*x.shape[:-1], weight.shape[1])


def matmul_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return x @ weight + bias  # right too, by a different route (not bitwise equal to addmm)


def linear_formula_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return x @ weight.T + bias  # the nn.Linear formula applied to a Conv1D weight


def biasless_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return x @ weight


def flat_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return torch.addmm(bias, x.reshape(-1, x.shape[-1]), weight)  # never reshaped back


def detached_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return x @ weight.detach() + bias


def unfinished(*args: object) -> object:
    raise NotImplementedError


@pytest.mark.parametrize("fn", [reference_forward, matmul_forward])
def test_forward_check_passes_correct_answers(fn, capsys: pytest.CaptureFixture[str]) -> None:
    check_conv1d_forward(fn)
    assert capsys.readouterr().out == "✅ my_conv1d_forward: all checks passed\n"


def test_forward_check_names_the_shape_error_of_the_linear_formula_on_a_non_square_weight() -> None:
    with pytest.raises(
        CheckFailed,
        match=r"raised RuntimeError on x of shape \(4,\) with weight \(nx, nf\) = \(4, 6\).*transpose",
    ):
        check_conv1d_forward(linear_formula_forward)


def test_forward_check_catches_the_linear_formula_on_a_square_weight() -> None:
    square_only = pytest.raises(
        CheckFailed, match=r"weight \(nx, nf\) = \(5, 5\).*values differ.*the nn.Linear formula"
    )

    def linear_formula_if_square(x, weight, bias):
        return (
            linear_formula_forward(x, weight, bias)
            if weight.shape[0] == weight.shape[1]
            else matmul_forward(x, weight, bias)
        )

    with square_only:
        check_conv1d_forward(linear_formula_if_square)


def test_forward_check_says_the_bias_is_missing() -> None:
    with pytest.raises(
        CheckFailed, match=r"values differ; first at index \[0\].*without the bias: add the bias"
    ):
        check_conv1d_forward(biasless_forward)


def test_forward_check_says_the_output_was_not_reshaped_back() -> None:
    with pytest.raises(
        CheckFailed, match=r"shape is \(1, 6\), expected \(6,\).*reshape the \(N, nf\) result back"
    ):
        check_conv1d_forward(flat_forward)


def test_forward_check_names_the_missing_gradient() -> None:
    with pytest.raises(CheckFailed, match="no gradient reached weight"):
        check_conv1d_forward(detached_forward)


def test_forward_check_reports_an_unfinished_exercise() -> None:
    with pytest.raises(ExerciseNotFinished, match="my_conv1d_forward"):
        check_conv1d_forward(unfinished)


# ------------------------------------------------------------------------------------ exercise 2: the
# conversion


def manual_conversion(conv: Conv1D) -> nn.Linear:
    linear = nn.Linear(conv.nx, conv.nf)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.T)
        linear.bias.copy_(conv.bias)
    return linear


def conversion_without_transpose(conv: Conv1D) -> nn.Linear:
    linear = nn.Linear(conv.nx, conv.nf)
    with torch.no_grad():
        linear.weight.copy_(conv.weight)  # shape error unless square
        linear.bias.copy_(conv.bias)
    return linear


def conversion_without_transpose_by_assignment(conv: Conv1D) -> nn.Linear:
    linear = nn.Linear(conv.nx, conv.nf)
    linear.weight = nn.Parameter(conv.weight.detach().clone())  # no error at all, even non-square
    linear.bias = nn.Parameter(conv.bias.detach().clone())
    return linear


def conversion_without_bias(conv: Conv1D) -> nn.Linear:
    linear = nn.Linear(conv.nx, conv.nf, bias=False)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.T)
    return linear


def conversion_with_default_bias(conv: Conv1D) -> nn.Linear:
    linear = nn.Linear(conv.nx, conv.nf)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.T)
    return linear  # bias left at nn.Linear's random initialisation


def conversion_with_swapped_features(conv: Conv1D) -> nn.Linear:
    return nn.Linear(conv.nf, conv.nx)  # in and out swapped: a wrong output shape


def conversion_sharing_storage(conv: Conv1D) -> nn.Linear:
    linear = nn.Linear(conv.nx, conv.nf)
    linear.weight = nn.Parameter(conv.weight.detach().T)  # a view of the Conv1D's weight
    linear.bias = conv.bias
    return linear


def returns_a_conv1d(conv: Conv1D) -> nn.Module:
    return conv


@pytest.mark.parametrize("fn", [conv1d_to_linear, manual_conversion])
def test_conversion_check_passes_correct_answers(fn, capsys: pytest.CaptureFixture[str]) -> None:
    check_conv1d_to_linear(fn)
    assert capsys.readouterr().out == "✅ my_conv1d_to_linear: all checks passed\n"


def test_conversion_check_explains_the_shape_error_of_a_forgotten_transpose_on_a_non_square_layer() -> None:
    with pytest.raises(
        CheckFailed, match=r"raised RuntimeError on Conv1D\(nf=6, nx=4\).*transpose is missing or extra"
    ):
        check_conv1d_to_linear(conversion_without_transpose)


def test_conversion_check_catches_a_forgotten_transpose_that_raised_nothing() -> None:
    with pytest.raises(
        CheckFailed, match=r"weight \(expected conv.weight.T\): shape is \(4, 6\), expected \(6, 4\)"
    ):
        check_conv1d_to_linear(conversion_without_transpose_by_assignment)


def test_conversion_check_catches_a_forgotten_transpose_on_a_square_layer() -> None:
    def without_transpose_if_square(conv: Conv1D) -> nn.Linear:
        return conversion_without_transpose(conv) if conv.nx == conv.nf else manual_conversion(conv)

    with pytest.raises(
        CheckFailed, match=r"Conv1D\(nf=5, nx=5\): linear.weight equals conv.weight, not conv.weight.T"
    ):
        check_conv1d_to_linear(without_transpose_if_square)


def test_conversion_check_says_the_bias_is_missing() -> None:
    with pytest.raises(CheckFailed, match="has no bias; Conv1D always has one"):
        check_conv1d_to_linear(conversion_without_bias)


def test_conversion_check_says_the_bias_was_not_copied() -> None:
    with pytest.raises(CheckFailed, match=r"bias: 6 of 6 values differ; first at index \[0\]"):
        check_conv1d_to_linear(conversion_with_default_bias)


def test_conversion_check_names_swapped_in_and_out_features() -> None:
    with pytest.raises(
        CheckFailed, match=r"nn.Linear\(in_features=6, out_features=4\), expected nn.Linear\(4, 6\)"
    ):
        check_conv1d_to_linear(conversion_with_swapped_features)


def test_conversion_check_catches_shared_storage() -> None:
    with pytest.raises(CheckFailed, match="changed the Conv1D's too: they share storage"):
        check_conv1d_to_linear(conversion_sharing_storage)


def test_conversion_check_names_a_wrong_return_type() -> None:
    with pytest.raises(CheckFailed, match=r"returned a Conv1D, expected a torch\.nn\.Linear"):
        check_conv1d_to_linear(returns_a_conv1d)


def test_conversion_check_reports_an_unfinished_exercise() -> None:
    with pytest.raises(ExerciseNotFinished, match="my_conv1d_to_linear"):
        check_conv1d_to_linear(unfinished)


# ---------------------------------------------------------------------- exercise 3: find the untransposed
# layer


def reference_find_untransposed(model: nn.Module, checkpoint: dict[str, torch.Tensor]) -> list[str]:
    found = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and f"{name}.weight" in checkpoint:
            w = checkpoint[f"{name}.weight"]  # (nx, nf)
            if (
                module.weight.shape == w.shape
                and torch.equal(module.weight, w)
                and not torch.equal(module.weight, w.T)
            ):
                found.append(name)
    return sorted(found)


def flags_every_square_layer(model: nn.Module, checkpoint: dict[str, torch.Tensor]) -> list[str]:
    return sorted(
        n for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.in_features == m.out_features
    )


def finds_only_the_first(model: nn.Module, checkpoint: dict[str, torch.Tensor]) -> list[str]:
    return reference_find_untransposed(model, checkpoint)[:1]


def test_find_check_passes_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    check_find_untransposed(reference_find_untransposed)
    assert capsys.readouterr().out == "✅ my_find_untransposed: all checks passed\n"


def test_find_check_catches_flagging_every_square_layer() -> None:
    with pytest.raises(
        CheckFailed,
        match=r"0 untransposed layer\(s\).*wrongly flagged \['h0_attn_c_proj', 'h1_attn_c_proj'\]",
    ):
        check_find_untransposed(flags_every_square_layer)


def test_find_check_names_the_missed_layer() -> None:
    with pytest.raises(CheckFailed, match=r"2 untransposed layer\(s\).*missed \['h1_attn_c_proj'\]"):
        check_find_untransposed(finds_only_the_first)


def test_find_check_refuses_a_non_list() -> None:
    with pytest.raises(CheckFailed, match="returned a str, expected a list"):
        check_find_untransposed(lambda model, checkpoint: "h0_attn_c_proj")


def test_find_check_reports_an_unfinished_exercise() -> None:
    with pytest.raises(ExerciseNotFinished, match="my_find_untransposed"):
        check_find_untransposed(unfinished)


# ------------------------------------------------------------------------------------- splitting c_attn


def reference_split(conv: Conv1D) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
    C = conv.nx
    layers = []
    for i in range(3):
        layer = nn.Linear(C, C)
        with torch.no_grad():
            layer.weight.copy_(conv.weight[:, i * C : (i + 1) * C].T)
            layer.bias.copy_(conv.bias[i * C : (i + 1) * C])
        layers.append(layer)
    return tuple(layers)


def split_without_transpose(conv: Conv1D) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
    layers = reference_split(conv)
    with torch.no_grad():
        for layer in layers:
            layer.weight.copy_(layer.weight.T.clone())
    return layers


def split_rows_instead_of_columns(conv: Conv1D) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
    C = conv.nx
    full = conv1d_to_linear(
        conv
    )  # (3C, C): q, k, v are blocks of rows here, but take them in the wrong order
    layers = []
    for i in (1, 0, 2):
        layer = nn.Linear(C, C)
        with torch.no_grad():
            layer.weight.copy_(full.weight[i * C : (i + 1) * C])
            layer.bias.copy_(full.bias[i * C : (i + 1) * C])
        layers.append(layer)
    return tuple(layers)


def split_sharing_storage(conv: Conv1D) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
    layers = reference_split(conv)
    for i, layer in enumerate(layers):
        layer.weight = nn.Parameter(conv.weight[:, i * conv.nx : (i + 1) * conv.nx].T)  # a view of c_attn
    return layers


def test_split_c_attn_passes_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    check_split_c_attn(reference_split)
    assert capsys.readouterr().out == "✅ my_split_c_attn: all checks passed\n"


@pytest.mark.parametrize(
    "wrong, message",
    [
        (split_without_transpose, "q\\(x\\) differs .* without its transpose"),
        (split_rows_instead_of_columns, "q\\(x\\) differs from the q third"),
        (split_sharing_storage, "changing your layers changed c_attn"),
        (lambda conv: reference_split(conv)[:2], "three nn.Linear"),
    ],
)
def test_split_c_attn_names_the_mistake(wrong, message: str) -> None:
    with pytest.raises(CheckFailed, match=message):
        check_split_c_attn(wrong)


def test_split_c_attn_not_started() -> None:
    def not_yet(conv: Conv1D) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
        raise NotImplementedError

    with pytest.raises(ExerciseNotFinished):
        check_split_c_attn(not_yet)


# ------------------------------------------------------------------------------------- predicting the bytes


def forward_bytes(B: int, T: int, nx: int, nf: int) -> int:
    copy = 4 * B * T * nx if B > 1 and T > 1 else 0  # a size-1 dimension keeps the transpose contiguous
    return 4 * B * T * nf + copy


def test_forward_bytes_passes_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    check_forward_bytes(forward_bytes)
    assert capsys.readouterr().out == "✅ my_forward_bytes: all checks passed\n"


@pytest.mark.parametrize(
    "wrong, message",
    [
        (
            lambda B, T, nx, nf: 4 * B * T * nf,
            r"\(B=2, T=12, nx=32, nf=96\) returned 9216, .* reshape copies it",
        ),
        (lambda B, T, nx, nf: 4 * B * T * (nf + nx), r"\(B=1, T=128.* still contiguous"),
        (lambda B, T, nx, nf: forward_bytes(B, T, nx, nf) // 4, "count bytes, not elements"),
    ],
)
def test_forward_bytes_explains_the_miss(wrong, message: str) -> None:
    with pytest.raises(CheckFailed, match=message):
        check_forward_bytes(wrong)
