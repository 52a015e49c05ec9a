"""Layer-level pruning: prune_linear_layer, prune_conv1d_layer, prune_layer, find_pruneable_heads_and_indices.

Oracles: transformers' `prune_linear_layer` (4.x and 5.x) and, on 4.x only, its `prune_conv1d_layer`,
`prune_layer` and `find_pruneable_heads_and_indices`. On 5.x the Conv1D functions are checked against what
pruning means (the kept outputs equal the original's; dropped inputs equal inputs set to zero).
"""

from __future__ import annotations

import pytest
import torch
import transformers
from hypothesis import given
from hypothesis import strategies as st
from packaging.version import Version
from torch import nn
from transformers import pytorch_utils

from reference_impl.conv1d import Conv1D as OurConv1D
from reference_impl.pruning import (
    find_pruneable_heads_and_indices,
    prune_conv1d_layer,
    prune_layer,
    prune_linear_layer,
)

TRANSFORMERS_4 = Version(transformers.__version__) < Version("5")
TheirConv1D = pytorch_utils.Conv1D


def _linear(out_features: int = 6, in_features: int = 5, bias: bool = True) -> nn.Linear:
    layer = nn.Linear(in_features, out_features, bias=bias)
    if bias:
        nn.init.normal_(layer.bias)  # nonzero, so a wrongly sliced or dropped bias shows
    return layer


def _conv(cls: type = OurConv1D, nf: int = 6, nx: int = 5) -> nn.Module:
    conv = cls(nf, nx)
    nn.init.normal_(conv.bias)
    return conv


# ---------------------------------------------------------------- golden values


def test_find_pruneable_heads_and_indices_golden_value_with_already_pruned_heads() -> None:
    # 7 heads of size 2; heads 1 and 3 gone, so positions 0..4 hold heads 0, 2, 4, 5, 6.
    heads, index = find_pruneable_heads_and_indices(
        [0, 5, 2], n_heads=5, head_size=2, already_pruned_heads={1, 3}
    )
    assert heads == {0, 2, 5}
    assert index.tolist() == [4, 5, 8, 9]  # heads 4 and 6, at positions 2 and 4
    assert index.dtype == torch.long


def test_find_pruneable_heads_skips_already_pruned_heads() -> None:
    heads, index = find_pruneable_heads_and_indices([1, 2], n_heads=3, head_size=1, already_pruned_heads={1})
    assert heads == {2}
    assert index.tolist() == [0, 2]  # positions 0 and 2 hold heads 0 and 3; position 1 (head 2) goes


def test_prune_linear_rows_keeps_rows_and_their_bias_entries() -> None:
    layer = _linear()
    pruned = prune_linear_layer(layer, torch.tensor([4, 1]), dim=0)
    assert (pruned.out_features, pruned.in_features) == (2, 5)
    torch.testing.assert_close(pruned.weight, layer.weight[[4, 1]], rtol=0, atol=0)
    torch.testing.assert_close(pruned.bias, layer.bias[[4, 1]], rtol=0, atol=0)


def test_prune_linear_columns_keeps_the_whole_bias() -> None:
    layer = _linear()
    pruned = prune_linear_layer(layer, torch.tensor([0, 3]), dim=1)
    assert (pruned.out_features, pruned.in_features) == (6, 2)
    torch.testing.assert_close(pruned.weight, layer.weight[:, [0, 3]], rtol=0, atol=0)
    torch.testing.assert_close(pruned.bias, layer.bias, rtol=0, atol=0)


def test_prune_conv1d_columns_are_outputs_and_slice_the_bias() -> None:
    conv = _conv()
    pruned = prune_conv1d_layer(conv, [5, 2])  # default dim=1
    assert (pruned.nf, pruned.nx) == (2, 5)
    torch.testing.assert_close(pruned.weight, conv.weight[:, [5, 2]], rtol=0, atol=0)
    torch.testing.assert_close(pruned.bias, conv.bias[[5, 2]], rtol=0, atol=0)


def test_prune_conv1d_rows_are_inputs_and_keep_the_whole_bias() -> None:
    conv = _conv()
    pruned = prune_conv1d_layer(conv, [0, 4], dim=0)
    assert (pruned.nf, pruned.nx) == (6, 2)
    torch.testing.assert_close(pruned.weight, conv.weight[[0, 4]], rtol=0, atol=0)
    torch.testing.assert_close(pruned.bias, conv.bias, rtol=0, atol=0)


# ---------------------------------------------------------------- what we keep that transformers loses


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
@pytest.mark.parametrize("dim", [0, 1])
def test_prune_linear_keeps_dtype(dtype: torch.dtype, dim: int) -> None:
    layer = _linear().to(dtype)
    pruned = prune_linear_layer(layer, [0, 2], dim=dim)
    assert pruned.weight.dtype == dtype and pruned.bias.dtype == dtype


@pytest.mark.parametrize("cls", [OurConv1D, TheirConv1D], ids=["ours", "transformers"])
def test_prune_conv1d_keeps_dtype_class_requires_grad_and_mode(cls: type) -> None:
    conv = _conv(cls).to(torch.bfloat16).eval()
    conv.weight.requires_grad_(False)
    pruned = prune_conv1d_layer(conv, [1, 3], dim=1)
    assert type(pruned) is cls
    assert pruned.weight.dtype == torch.bfloat16 and pruned.bias.dtype == torch.bfloat16
    assert not pruned.weight.requires_grad and pruned.bias.requires_grad
    assert not pruned.training


def test_prune_linear_keeps_requires_grad_and_training_flag() -> None:
    layer = _linear().eval()
    layer.requires_grad_(False)
    pruned = prune_linear_layer(layer, [0, 1])
    assert not pruned.weight.requires_grad and not pruned.bias.requires_grad
    assert not pruned.training


def test_pruned_layer_owns_fresh_storage_and_leaves_the_original_untouched() -> None:
    layer = _linear()
    before = layer.weight.detach().clone()
    pruned = prune_linear_layer(layer, [0, 1, 2, 3, 4, 5])
    with torch.no_grad():
        pruned.weight.zero_()
    torch.testing.assert_close(layer.weight, before, rtol=0, atol=0)
    assert pruned.weight.untyped_storage().data_ptr() != layer.weight.untyped_storage().data_ptr()


def test_prune_linear_without_bias_stays_without_bias() -> None:
    assert prune_linear_layer(_linear(bias=False), [1], dim=0).bias is None
    assert prune_linear_layer(_linear(bias=False), [1], dim=1).bias is None


def test_prune_layer_dispatches_with_output_defaults() -> None:
    linear, conv = _linear(), _conv()
    assert prune_layer(linear, [0, 1]).out_features == 2  # Linear: dim 0 = outputs
    assert prune_layer(conv, [0, 1]).nf == 2  # Conv1D: dim 1 = outputs
    assert prune_layer(conv, [0, 1], dim=0).nx == 2
    with pytest.raises(
        ValueError, match=r"Can't prune layer of class .*Conv2d.*expected torch.nn.Linear or Conv1D"
    ):
        prune_layer(nn.Conv2d(2, 2, 1), [0])


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("index", "dim", "error", "message"),
    [
        ([0, 5], 0, IndexError, r"index holds 5, out of range for dim=0 .* size 5 \(valid: 0 \.\.\. 4\)"),
        ([-1], 1, IndexError, r"index holds -1, out of range for dim=1"),
        ([1, 1], 0, ValueError, r"index holds 1 more than once"),
        (torch.tensor([0.0, 1.0]), 0, TypeError, r"integer tensor .* got dtype torch.float32"),
        (torch.tensor([True, False, True, False, False]), 0, TypeError, r"not a boolean mask.*mask.nonzero"),
        ([0, 1.5], 0, TypeError, r"got 1.5 \(float\)"),
        (torch.tensor([[0, 1]]), 0, ValueError, r"index must be 1-D, got shape \(1, 2\)"),
        ([0], 2, ValueError, r"dim=2 must be 0 \(keep rows of the weight\) or 1"),
        ([0], -1, ValueError, r"dim=-1 must be 0"),
    ],
)
def test_bad_index_or_dim_is_refused_with_a_message_naming_it(index, dim, error, message) -> None:
    layer = _linear(out_features=5, in_features=5)
    with pytest.raises(error, match=message):
        prune_linear_layer(layer, index, dim=dim)
    with pytest.raises(error, match=message):
        prune_conv1d_layer(_conv(nf=5, nx=5), index, dim=dim)


def test_wrong_layer_type_is_refused() -> None:
    with pytest.raises(TypeError, match=r"layer must be a torch.nn.Linear, got .*Conv1D"):
        prune_linear_layer(_conv(), [0])
    with pytest.raises(TypeError, match=r"layer must be a Conv1D .* got torch.nn.modules.linear.Linear"):
        prune_conv1d_layer(_linear(), [0])


def test_find_pruneable_heads_refuses_heads_out_of_range_including_negative() -> None:
    with pytest.raises(
        IndexError, match=r"head 7 is out of range: the layer had 7 heads \(valid: 0 \.\.\. 6\)"
    ):
        find_pruneable_heads_and_indices([7], n_heads=5, head_size=2, already_pruned_heads={1, 3})
    with pytest.raises(IndexError, match=r"head -1 is out of range"):
        find_pruneable_heads_and_indices([-1], n_heads=4, head_size=2, already_pruned_heads=set())
    with pytest.raises(TypeError, match=r"heads must be integers .* got 1.0"):
        find_pruneable_heads_and_indices([1.0], n_heads=4, head_size=2, already_pruned_heads=set())


# ---------------------------------------------------------------- properties


@st.composite
def _index_case(draw: st.DrawFn) -> tuple[int, int, int, list[int]]:
    out_features = draw(st.integers(1, 8))
    in_features = draw(st.integers(1, 8))
    dim = draw(st.sampled_from([0, 1]))
    size = (out_features, in_features)[dim]
    index = draw(st.lists(st.integers(0, size - 1), unique=True, max_size=size))
    return out_features, in_features, dim, index


@given(_index_case())
def test_pruning_keeps_exactly_the_indexed_units_in_order(case) -> None:
    out_features, in_features, dim, index = case
    layer = _linear(out_features, in_features)
    x = torch.randn(3, in_features)
    pruned = prune_linear_layer(layer, index, dim=dim)
    if dim == 0:  # kept outputs are the original outputs at `index`, in the order listed
        torch.testing.assert_close(pruned(x), layer(x)[:, index], rtol=1e-6, atol=1e-6)
    else:  # kept inputs: the same as the original with every other input set to zero
        x_zeroed = torch.zeros_like(x)
        x_zeroed[:, index] = x[:, index]
        torch.testing.assert_close(pruned(x[:, index]), layer(x_zeroed), rtol=1e-6, atol=1e-6)


@given(_index_case())
def test_conv1d_pruning_matches_linear_pruning_of_the_transposed_weight(case) -> None:
    out_features, in_features, linear_dim, index = case
    conv = _conv(nf=out_features, nx=in_features)
    linear = nn.Linear(in_features, out_features)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.T)
        linear.bias.copy_(conv.bias)
    pruned_conv = prune_conv1d_layer(conv, index, dim=1 - linear_dim)
    pruned_linear = prune_linear_layer(linear, index, dim=linear_dim)
    torch.testing.assert_close(pruned_conv.weight, pruned_linear.weight.T, rtol=0, atol=0)
    torch.testing.assert_close(pruned_conv.bias, pruned_linear.bias, rtol=0, atol=0)


@given(
    st.integers(1, 6).flatmap(
        lambda n: st.tuples(
            st.just(n), st.integers(1, 3), st.sets(st.integers(0, n - 1)), st.sets(st.integers(0, n - 1))
        )
    )
)
def test_two_steps_of_index_arithmetic_equal_one_step(case) -> None:
    n_original, head_size, first, second = case
    all_heads = set(range(n_original))
    _, index_first = find_pruneable_heads_and_indices(first, n_original, head_size, set())
    n_left = n_original - len(first)
    _, index_second = find_pruneable_heads_and_indices(second, n_left, head_size, first)
    _, index_once = find_pruneable_heads_and_indices(first | second, n_original, head_size, set())
    # Composing the two selections picks the same original units as one selection.
    assert index_first[index_second].tolist() == index_once.tolist()
    kept = sorted(all_heads - first - second)
    assert index_once.tolist() == [h * head_size + d for h in kept for d in range(head_size)]


# ---------------------------------------------------------------- oracles


@pytest.mark.oracle
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dim", [0, 1])
def test_prune_linear_layer_equals_transformers(dim: int, bias: bool) -> None:
    layer = _linear(bias=bias)
    index = torch.tensor([4, 0, 2]) if dim == 0 else torch.tensor([1, 3])
    ours = prune_linear_layer(layer, index, dim=dim)
    theirs = pytorch_utils.prune_linear_layer(layer, index, dim=dim)
    assert (ours.in_features, ours.out_features) == (theirs.in_features, theirs.out_features)
    torch.testing.assert_close(ours.weight, theirs.weight, rtol=0, atol=0)
    assert (ours.bias is None) == (theirs.bias is None)
    if bias:
        torch.testing.assert_close(ours.bias, theirs.bias, rtol=0, atol=0)
    x = torch.randn(2, 4, ours.in_features)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


@pytest.mark.oracle
def test_transformers_prune_linear_layer_loses_dtype_and_frozenness_and_ours_keeps_them() -> None:
    # The documented difference, seen on both sides.
    layer = _linear().to(torch.bfloat16)
    layer.requires_grad_(False)
    theirs = pytorch_utils.prune_linear_layer(layer, torch.tensor([0, 1]))
    ours = prune_linear_layer(layer, torch.tensor([0, 1]))
    assert theirs.weight.dtype == torch.float32 and theirs.weight.requires_grad, (
        "transformers' prune_linear_layer now keeps dtype / requires_grad: update the NOTE in "
        "reference_impl/pruning.py and lesson 05"
    )
    assert ours.weight.dtype == torch.bfloat16 and not ours.weight.requires_grad
    torch.testing.assert_close(ours.weight.float(), theirs.weight, rtol=0, atol=0)


@pytest.mark.oracle
def test_version_guard_pruning_helpers_exist_only_in_transformers_4() -> None:
    names = ("prune_conv1d_layer", "prune_layer", "find_pruneable_heads_and_indices")
    present = {name: hasattr(pytorch_utils, name) for name in names}
    expected = TRANSFORMERS_4
    assert all(v == expected for v in present.values()), (
        f"transformers {transformers.__version__}: {present}; we teach that 5.x removed them (PR #41417) and "
        f"4.x has them: update reference_impl/pruning.py, these oracle tests and lesson 05"
    )
    assert hasattr(pytorch_utils, "prune_linear_layer"), (
        "transformers removed prune_linear_layer: update lesson 05"
    )


needs_4 = pytest.mark.skipif(
    not TRANSFORMERS_4, reason="transformers 5 removed prune_conv1d_layer and friends"
)


@pytest.mark.oracle
@needs_4
@pytest.mark.parametrize("dim", [0, 1])
def test_prune_conv1d_layer_equals_transformers_4(dim: int) -> None:
    conv = _conv(TheirConv1D)
    index = torch.tensor([0, 3, 4])
    ours = prune_conv1d_layer(conv, index, dim=dim)
    theirs = pytorch_utils.prune_conv1d_layer(conv, index, dim=dim)
    torch.testing.assert_close(ours.weight, theirs.weight, rtol=0, atol=0)
    torch.testing.assert_close(ours.bias, theirs.bias, rtol=0, atol=0)
    x = torch.randn(2, 3, ours.nx)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
    # and the layer-type dispatch agrees
    torch.testing.assert_close(prune_layer(conv, index).weight, pytorch_utils.prune_layer(conv, index).weight)


@pytest.mark.oracle
@needs_4
@given(
    st.integers(1, 8).flatmap(
        lambda n: st.tuples(
            st.just(n), st.integers(1, 4), st.sets(st.integers(0, n - 1), max_size=n - 1), st.data()
        )
    )
)
def test_find_pruneable_heads_and_indices_equals_transformers_4(case) -> None:
    n_original, head_size, already, data = case
    heads = data.draw(st.lists(st.integers(0, n_original - 1)))
    ours = find_pruneable_heads_and_indices(heads, n_original - len(already), head_size, set(already))
    theirs = pytorch_utils.find_pruneable_heads_and_indices(
        heads, n_original - len(already), head_size, set(already)
    )
    assert ours[0] == theirs[0]
    assert ours[1].tolist() == theirs[1].tolist()
