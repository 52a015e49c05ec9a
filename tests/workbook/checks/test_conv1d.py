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
    check_find_untransposed,
    check_forward_bytes,
    check_split_c_attn,
)


def unfinished(*args: object) -> object:
    raise NotImplementedError


# ------------------------------------------------------------------------------------- finding the
# untransposed layer


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
