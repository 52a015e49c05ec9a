"""Tests for reference_impl.conv1d: GPT-2's Conv1D, its conversions to and from nn.Linear, and the width-1
nn.Conv1d.

Oracle tests compare against the installed transformers (4.57.6 and 5.22.2 both hold the same Conv1D); unit
and Hypothesis tests hold whatever the reference says.
"""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from reference_impl.conv1d import Conv1D, conv1d_to_linear, conv1d_to_nn_conv1d, linear_to_conv1d
from reference_impl.workbook.measure import PeakMemory

# fp32 outputs of two different BLAS calls (addmm on W versus F.linear on a contiguous W.T) differ by a few
# ulp.
FP32_TOL = {"atol": 1e-5, "rtol": 1e-5}
SHAPES = [((4,), 4, 6), ((3, 4), 4, 6), ((2, 5, 8), 8, 24), ((2, 3, 5, 16), 16, 16), ((1, 7, 32), 32, 128)]


def transformers_conv1d():  # imported lazily so the unit tests run without transformers installed
    from transformers.pytorch_utils import Conv1D as TheirConv1D

    return TheirConv1D


def twin_layers(nf: int, nx: int, dtype: torch.dtype = torch.float32) -> tuple[Conv1D, nn.Module]:
    """Our Conv1D and transformers' with the same (random, non-zero) weight and bias."""
    ours = Conv1D(nf, nx).to(dtype)
    with torch.no_grad():
        ours.bias.normal_()
    theirs = transformers_conv1d()(nf, nx).to(dtype)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def forward_backward(layer: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Output, input gradient and every parameter gradient of `(layer(x) * g).sum()` for a fixed g."""
    x = x.detach().clone().requires_grad_(True)
    layer.zero_grad(set_to_none=True)
    y = layer(x)
    g = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view(y.shape)
    (y * g).sum().backward()
    return (y.detach(), x.grad, *(p.grad for p in layer.parameters()))


# ------------------------------------------------------------------------------------------------- the layer
# itself


def test_conv1d_stores_the_weight_in_by_out_and_names_things_like_transformers() -> None:
    conv = Conv1D(nf=6, nx=4)
    assert (conv.nf, conv.nx) == (6, 4)
    assert conv.weight.shape == (4, 6)  # (nx, nf): in x out, the transpose of nn.Linear's (out, in)
    assert conv.bias.shape == (6,)
    assert torch.equal(conv.bias, torch.zeros(6))
    assert repr(conv) == "Conv1D(nf=6, nx=4)"
    assert list(conv.state_dict()) == ["weight", "bias"]


def test_conv1d_initialises_weights_with_std_0_02() -> None:
    std = Conv1D(nf=512, nx=512).weight.std().item()
    assert abs(std - 0.02) < 0.0005, f"weight std {std:.5f}, expected 0.02"


def test_conv1d_golden_value_is_x_times_w_plus_b() -> None:
    conv = Conv1D(nf=3, nx=2)
    with torch.no_grad():
        conv.weight.copy_(
            torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
        )  # rows are inputs, columns outputs
        conv.bias.copy_(torch.tensor([0.5, 0.0, -0.5]))
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    expected = torch.tensor([[1.5, 2.0, 2.5], [5.5, 7.0, 8.5]])  # row 0 of W (+b), then row 0 + row 1 (+b)
    assert torch.equal(conv(x), expected)


def test_conv1d_accepts_device_and_dtype_keywords() -> None:
    torch.manual_seed(3)
    plain = Conv1D(5, 3)
    torch.manual_seed(3)
    on_cpu = Conv1D(5, 3, device="cpu")
    assert torch.equal(on_cpu.weight, plain.weight)  # the same random draws as without the keyword
    wide = Conv1D(5, 3, dtype=torch.float64)
    assert wide.weight.dtype == wide.bias.dtype == torch.float64


@pytest.mark.parametrize("shape", [(2, 5), (2, 3, 5), (4, 5)])
def test_conv1d_rejects_a_last_dimension_other_than_nx_naming_nx_and_the_shape(
    shape: tuple[int, ...],
) -> None:
    conv = Conv1D(nf=6, nx=4)
    with pytest.raises(
        RuntimeError, match=rf"nx=4, got shape {shape}".replace("(", r"\(").replace(")", r"\)")
    ):
        conv(torch.randn(shape))


def test_conv1d_rejects_a_zero_dimensional_input() -> None:
    with pytest.raises(RuntimeError, match=r"nx=4, got shape \(\)"):
        Conv1D(nf=6, nx=4)(torch.tensor(1.0))


def test_conv1d_rejects_a_dtype_other_than_the_weights_naming_both() -> None:
    conv = Conv1D(nf=6, nx=4)
    with pytest.raises(RuntimeError, match=r"dtype torch\.bfloat16 but its weight is torch\.float32"):
        conv(torch.randn(2, 4, dtype=torch.bfloat16))


def test_conv1d_works_on_non_contiguous_inputs_as_on_their_contiguous_copy() -> None:
    conv = Conv1D(nf=6, nx=4)
    x = torch.randn(5, 3, 4).transpose(0, 1)  # (3, 5, 4), not contiguous: view(-1, 4) is impossible
    strided = torch.randn(3, 8)[:, ::2]  # (3, 4) with the last dimension strided
    for bad in (x, strided):
        assert not bad.is_contiguous()
        assert torch.equal(conv(bad), conv(bad.contiguous()))


def test_conv1d_copies_only_the_inputs_it_cannot_view() -> None:
    # The NOTE in conv1d.py: reshape is a view on every input view() accepts. Count every storage forward
    # creates.
    conv = Conv1D(nf=6, nx=4)
    out_bytes, in_bytes = 3 * 5 * 6 * 4, 3 * 5 * 4 * 4  # (3, 5, nf) and (3, 5, nx) in fp32
    x = torch.randn(3, 5, 4)
    with PeakMemory(baseline=[x]) as mem:  # the input counts from the start; its views add nothing
        conv(x)
    assert mem.peak_bytes == in_bytes + out_bytes, (
        f"forward allocated {mem.peak_bytes - in_bytes} bytes, not the output's {out_bytes}"
    )
    x_t = torch.randn(5, 3, 4).transpose(0, 1)
    with PeakMemory(baseline=[x_t]) as mem:
        conv(x_t)
    assert mem.peak_bytes == 2 * in_bytes + out_bytes, "a non-contiguous input should be copied exactly once"


def test_conv1d_leaves_its_input_unchanged() -> None:
    x = torch.randn(2, 3, 4)
    before = x.clone()
    Conv1D(nf=6, nx=4)(x)
    assert torch.equal(x, before)


# ----------------------------------------------------------------------------------------------------
# conversions


@pytest.mark.parametrize(
    ("nf", "nx"), [(6, 4), (4, 6), (5, 5)]
)  # square: where a forgotten transpose is silent
def test_conv1d_to_linear_transposes_the_weight_into_fresh_contiguous_storage(nf: int, nx: int) -> None:
    conv = Conv1D(nf=nf, nx=nx)
    linear = conv1d_to_linear(conv)
    assert isinstance(linear, nn.Linear) and (linear.in_features, linear.out_features) == (nx, nf)
    assert torch.equal(linear.weight, conv.weight.T) and torch.equal(linear.bias, conv.bias)
    assert linear.weight.is_contiguous()
    x = torch.randn(3, nx)
    torch.testing.assert_close(linear(x), conv(x), **FP32_TOL)
    with torch.no_grad():
        linear.weight.zero_()
    assert conv.weight.abs().sum() > 0, "the Linear shares storage with the Conv1D"


def test_conversions_keep_dtype_requires_grad_and_training_mode() -> None:
    conv = Conv1D(nf=6, nx=4).to(torch.bfloat16).eval()
    conv.weight.requires_grad_(False)
    linear = conv1d_to_linear(conv)
    assert linear.weight.dtype == linear.bias.dtype == torch.bfloat16
    assert (linear.weight.requires_grad, linear.bias.requires_grad) == (False, True)
    assert not linear.training
    back = linear_to_conv1d(linear)
    assert back.weight.dtype == torch.bfloat16
    assert (back.weight.requires_grad, back.bias.requires_grad) == (False, True)
    assert not back.training


def test_conversions_do_not_consume_random_numbers() -> None:
    conv, linear = Conv1D(nf=6, nx=4), nn.Linear(4, 6)
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    conv1d_to_linear(conv), linear_to_conv1d(linear), conv1d_to_nn_conv1d(conv)
    assert torch.equal(torch.rand(3), expected), (
        "a conversion drew random numbers (initialised then overwrote)"
    )


def test_linear_to_conv1d_turns_a_missing_bias_into_zeros() -> None:
    linear = nn.Linear(4, 6, bias=False)
    conv = linear_to_conv1d(linear)
    assert torch.equal(conv.bias, torch.zeros(6))
    x = torch.randn(3, 4)
    torch.testing.assert_close(conv(x), linear(x), **FP32_TOL)


@pytest.mark.parametrize(
    ("fn", "bad", "type_name"),
    [
        (conv1d_to_linear, nn.Linear(4, 6), "torch.nn.modules.linear.Linear"),
        (conv1d_to_linear, nn.Conv1d(4, 6, 1), "torch.nn.modules.conv.Conv1d"),
        (conv1d_to_linear, torch.randn(4, 6), "torch.Tensor"),
        (conv1d_to_nn_conv1d, nn.Linear(4, 6), "torch.nn.modules.linear.Linear"),
        (linear_to_conv1d, Conv1D(6, 4), "reference_impl.conv1d.Conv1D"),
        (linear_to_conv1d, nn.Conv1d(4, 6, 1), "torch.nn.modules.conv.Conv1d"),
    ],
)
def test_conversions_refuse_other_modules_with_a_type_error_naming_the_type(fn, bad, type_name: str) -> None:
    with pytest.raises(TypeError, match=type_name.replace(".", r"\.")):
        fn(bad)


def test_conv1d_is_a_kernel_size_1_convolution_over_the_sequence() -> None:
    conv = Conv1D(nf=6, nx=4)
    with torch.no_grad():
        conv.bias.normal_()
    pointwise = conv1d_to_nn_conv1d(conv)
    assert pointwise.kernel_size == (1,) and pointwise.weight.shape == (6, 4, 1)
    x = torch.randn(2, 5, 4)  # (B, T, nx)
    y = pointwise(x.transpose(1, 2)).transpose(1, 2)  # (B, nx, T) -> (B, nf, T) -> (B, T, nf)
    torch.testing.assert_close(y, conv(x), **FP32_TOL)


# ------------------------------------------------------------------------------------------------------
# properties

dims = st.integers(min_value=1, max_value=24)


square_or_not = st.one_of(
    st.none(), dims
)  # None: nf = nx, a square layer (a forgotten transpose is silent there)


@given(
    nx=dims,
    nf=square_or_not,
    lead=st.lists(st.integers(1, 4), min_size=0, max_size=2),
    seed=st.integers(0, 2**16),
)
def test_conv1d_equals_linear_of_w_transposed_and_width_1_conv1d(
    nx: int, nf: int | None, lead: list[int], seed: int
) -> None:
    nf = nx if nf is None else nf
    torch.manual_seed(seed)
    conv = Conv1D(nf, nx)
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(*lead, 3, nx)  # (..., T, nx)
    y = conv(x)
    assert y.shape == (*lead, 3, nf)
    torch.testing.assert_close(nn.functional.linear(x, conv.weight.T, conv.bias), y, **FP32_TOL)
    torch.testing.assert_close(conv1d_to_linear(conv)(x), y, **FP32_TOL)
    x_cf = x.reshape(-1, 3, nx).transpose(1, 2)  # (N, T, nx) -> (N, nx, T): channels first
    y_cf = conv1d_to_nn_conv1d(conv)(x_cf).transpose(1, 2).reshape(y.shape)
    torch.testing.assert_close(y_cf, y, **FP32_TOL)


@given(nx=dims, nf=square_or_not, bias=st.booleans(), seed=st.integers(0, 2**16))
def test_round_trips_through_both_conversions_are_exact(
    nx: int, nf: int | None, bias: bool, seed: int
) -> None:
    nf = nx if nf is None else nf
    torch.manual_seed(seed)
    conv = Conv1D(nf, nx)
    again = linear_to_conv1d(conv1d_to_linear(conv))
    assert torch.equal(again.weight, conv.weight) and torch.equal(again.bias, conv.bias)
    linear = nn.Linear(nx, nf, bias=bias)
    back = conv1d_to_linear(linear_to_conv1d(linear))
    assert torch.equal(back.weight, linear.weight)
    assert torch.equal(back.bias, linear.bias if bias else torch.zeros(nf))


# --------------------------------------------------------------------------------------- oracle:
# transformers' Conv1D


@pytest.mark.oracle
def test_same_seed_gives_the_same_weights_repr_and_state_dict_as_transformers() -> None:
    torch.manual_seed(11)
    ours = Conv1D(24, 8)
    torch.manual_seed(11)
    theirs = transformers_conv1d()(24, 8)
    assert repr(ours) == repr(theirs)
    assert (ours.nf, ours.nx) == (theirs.nf, theirs.nx)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()
    }
    assert torch.equal(ours.weight, theirs.weight) and torch.equal(ours.bias, theirs.bias)


@pytest.mark.oracle
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("shape", "nx", "nf"), SHAPES)
def test_forward_and_backward_are_bitwise_equal_to_transformers(
    shape: tuple[int, ...], nx: int, nf: int, dtype: torch.dtype
) -> None:
    ours, theirs = twin_layers(nf, nx, dtype)
    x = torch.randn(shape, dtype=dtype)
    names = ["output", "input grad", "weight grad", "bias grad"]
    for name, a, b in zip(names, forward_backward(ours, x), forward_backward(theirs, x), strict=True):
        assert torch.equal(a, b), f"{name} differs from transformers for shape {shape}, {dtype}"


@pytest.mark.oracle
def test_under_autocast_we_match_transformers() -> None:
    ours, theirs = twin_layers(24, 8)
    x = torch.randn(2, 3, 8, dtype=torch.bfloat16)  # bf16 input, fp32 weights: autocast reconciles them
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = ours(x), theirs(x)
    assert a.dtype == torch.bfloat16 and torch.equal(a, b)


@pytest.mark.oracle
def test_conversions_accept_transformers_conv1d() -> None:
    _, theirs = twin_layers(6, 4)
    assert torch.equal(conv1d_to_linear(theirs).weight, theirs.weight.T)
    assert torch.equal(conv1d_to_nn_conv1d(theirs).weight[..., 0], theirs.weight.T)


@pytest.mark.oracle
def test_bad_inputs_raise_the_same_exception_type_as_transformers() -> None:
    ours, theirs = twin_layers(6, 4)
    for bad in (torch.randn(2, 5), torch.randn(2, 4, dtype=torch.float64)):
        with pytest.raises(RuntimeError):
            theirs(bad)
        with pytest.raises(RuntimeError):
            ours(bad)


@pytest.mark.oracle
def test_transformers_still_refuses_non_contiguous_inputs_where_we_do_not() -> None:
    ours, theirs = twin_layers(6, 4)
    x = torch.randn(5, 3, 4).transpose(0, 1)
    try:
        theirs(x)
    except RuntimeError as e:
        assert "view" in str(e)
    else:
        pytest.fail(
            "transformers' Conv1D now accepts non-contiguous inputs (it used x.view); the difference "
            "documented in reference_impl/conv1d.py (NOTE [ Non-contiguous inputs ]) and lesson 02 is gone: "
            "update both"
        )
    assert torch.equal(ours(x), theirs(x.contiguous()))


def gpt2_tiny():
    from transformers import GPT2LMHeadModel

    from reference_impl.workbook.tiny import tiny_gpt2_config

    config = tiny_gpt2_config(vocab_size=97)
    torch.manual_seed(0)
    return GPT2LMHeadModel(config).eval()


def swap_conv1d_for_ours(model: nn.Module) -> int:
    """Replace every transformers Conv1D in `model` by a fresh Conv1D of ours, in place; return how many."""
    their_class = transformers_conv1d()
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, their_class)]
    for name, m in targets:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, Conv1D(m.nf, m.nx))
    return len(targets)


@pytest.mark.oracle
def test_tiny_gpt2_with_our_conv1d_loads_strictly_and_gives_bitwise_equal_logits_and_grads() -> None:
    original = gpt2_tiny()
    ours = copy.deepcopy(original)
    assert swap_conv1d_for_ours(ours) == 2 * 4  # per block: c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj
    assert not any(isinstance(m, transformers_conv1d()) for m in ours.modules())
    with torch.no_grad():  # scramble our weights, so equality below proves the load
        for p in ours.parameters():
            p.normal_()
    ours.load_state_dict(original.state_dict(), strict=True)
    ids = torch.randint(0, 97, (2, 9))
    out_a, out_b = original(ids, labels=ids), ours(ids, labels=ids)
    assert torch.equal(out_a.logits, out_b.logits)
    out_a.loss.backward()
    out_b.loss.backward()
    grads_b = dict(ours.named_parameters())
    for name, p in original.named_parameters():
        assert torch.equal(p.grad, grads_b[name].grad), f"gradient of {name} differs"


@pytest.mark.oracle
def test_gpt2_checkpoint_weights_need_a_transpose_to_load_into_linear() -> None:
    # What nanoGPT does: the checkpoint's (nx, nf) Conv1D weights go into nn.Linear as .T
    block = gpt2_tiny().transformer.h[0]
    sd = block.state_dict()
    assert sd["attn.c_attn.weight"].shape == (32, 96)  # (C, 3C)
    assert sd["mlp.c_fc.weight"].shape == (32, 128) and sd["mlp.c_proj.weight"].shape == (128, 32)
    linear = nn.Linear(32, 96)
    with pytest.raises(RuntimeError, match="size mismatch"):
        linear.load_state_dict({"weight": sd["attn.c_attn.weight"], "bias": sd["attn.c_attn.bias"]})
    linear.load_state_dict({"weight": sd["attn.c_attn.weight"].T, "bias": sd["attn.c_attn.bias"]})
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(linear(x), block.attn.c_attn(x), **FP32_TOL)
