"""The RoPE lesson's self-checks pass the reference, fail typical wrong answers in plain words, and spot
stubs."""

from __future__ import annotations

import math

import pytest
import torch

from reference_impl.rope import apply_rotary_pos_emb
from reference_impl.workbook.checks._core import CheckFailed, ExerciseNotFinished
from reference_impl.workbook.checks.rope import (
    check_my_apply_rotary,
    check_my_linear_scaling,
    check_my_llama3_untouched,
)


def _half(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]


# --- my_apply_rotary ---


def good_apply(x, cos, sin):
    return apply_rotary_pos_emb(x, x, cos, sin)[0]


def interleaved_apply(x, cos, sin):
    half = x.shape[-1] // 2
    cos_i = cos[..., :half].repeat_interleave(2, dim=-1).unsqueeze(1)
    sin_i = sin[..., :half].repeat_interleave(2, dim=-1).unsqueeze(1)
    return x * cos_i + torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2) * sin_i


def wrong_sign_apply(x, cos, sin):
    x1, x2 = _half(x)
    return x * cos.unsqueeze(1) + torch.cat((x2, -x1), dim=-1) * sin.unsqueeze(1)


def forgot_unsqueeze_apply(x, cos, sin):
    x1, x2 = _half(x)
    return x * cos[:, None, :1] + torch.cat((-x2, x1), dim=-1) * sin[:, None, :1]  # one position for all


def in_place_apply(x, cos, sin):
    out = good_apply(x.clone(), cos, sin)
    x.mul_(1.0)
    x.add_(0.0)
    x[..., 0] = out[..., 0]
    return out


def stub(*args):
    raise NotImplementedError


def test_apply_check_passes_the_reference_with_one_line(capsys):
    check_my_apply_rotary(good_apply)
    assert capsys.readouterr().out == "✅ my_apply_rotary: all checks passed\n"


@pytest.mark.parametrize(
    ("fn", "pattern"),
    [
        (interleaved_apply, r"rotated neighbouring pairs .* interleaved GPT-J layout.* x\[i \+ D/2\]"),
        (wrong_sign_apply, r"rotated the wrong way \(by -mθ\)"),
        (
            forgot_unsqueeze_apply,
            r"for x of shape \(1, 1, 3, 4\), torch.float32: \d+ of 12 values differ; first at",
        ),
        (in_place_apply, r"changed its input x in place"),
    ],
    ids=["interleaved", "wrong-sign", "wrong-values", "in-place"],
)
def test_apply_check_names_the_mistake(fn, pattern):
    with pytest.raises(CheckFailed, match=pattern):
        check_my_apply_rotary(fn)


def test_apply_check_reports_a_stub_as_unfinished():
    with pytest.raises(ExerciseNotFinished, match="my_apply_rotary"):
        check_my_apply_rotary(stub)


# --- my_linear_inv_freq ---


def good_linear(base, dim, factor):
    return 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)) / factor


def multiplied_linear(base, dim, factor):
    return 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)) * factor


def unscaled_linear(base, dim, factor):
    return 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))


def float64_linear(base, dim, factor):
    return good_linear(base, dim, factor).double()


def full_length_linear(base, dim, factor):
    return 1.0 / (base ** (torch.arange(0, dim).float() / dim)) / factor


def test_linear_check_passes_the_reference(capsys):
    check_my_linear_scaling(good_linear)
    assert capsys.readouterr().out == "✅ my_linear_inv_freq: all checks passed\n"


@pytest.mark.parametrize(
    ("fn", "pattern"),
    [
        (multiplied_linear, r"factor=2\): you multiplied θ_i by the factor.*divides: θ_i / s"),
        (unscaled_linear, r"these are the unscaled frequencies θ_i; divide them by the factor"),
        (float64_linear, r"dtype is torch.float64, expected torch.float32"),
        (full_length_linear, r"shape is \(8,\), expected \(4,\)"),
    ],
    ids=["multiplied", "unscaled", "dtype", "shape"],
)
def test_linear_check_names_the_mistake(fn, pattern):
    with pytest.raises(CheckFailed, match=pattern):
        check_my_linear_scaling(fn)


def test_linear_check_reports_a_stub_as_unfinished():
    with pytest.raises(ExerciseNotFinished, match="my_linear_inv_freq"):
        check_my_linear_scaling(stub)


# --- my_llama3_untouched ---


def good_untouched(inv_freq, L0, low, high):
    return 2 * math.pi / inv_freq < L0 / high


def low_band_untouched(inv_freq, L0, low, high):
    return 2 * math.pi / inv_freq < L0 / low  # the blended band counted as untouched


def frequency_not_wavelength(inv_freq, L0, low, high):
    return inv_freq < L0 / high  # compared the frequency, not the wavelength


def as_float(inv_freq, L0, low, high):
    return good_untouched(inv_freq, L0, low, high).float()


def test_llama3_check_passes_the_reference(capsys):
    check_my_llama3_untouched(good_untouched)
    assert capsys.readouterr().out == "✅ my_llama3_untouched: all checks passed\n"


@pytest.mark.parametrize(
    ("fn", "pattern"),
    [
        (
            low_band_untouched,
            r"6 of 64 pairs differ; first pair 29 \(wavelength 2π/θ = \d+ tokens\) you marked "
            r"untouched, but Llama 3 has it blended.*L0/high_freq_factor = 2048 \(kept\)",
        ),
        (
            frequency_not_wavelength,
            r"35 of 64 pairs differ; first pair 29 .* you marked untouched, but Llama 3 "
            r"has it blended",
        ),
        (as_float, r"dtype is torch.float32, expected torch.bool"),
    ],
    ids=["wrong-band", "frequency-vs-wavelength", "dtype"],
)
def test_llama3_check_names_the_wrong_band(fn, pattern):
    with pytest.raises(CheckFailed, match=pattern):
        check_my_llama3_untouched(fn)


def test_llama3_check_reports_a_stub_as_unfinished():
    with pytest.raises(ExerciseNotFinished, match="my_llama3_untouched"):
        check_my_llama3_untouched(stub)


# --- dynamic NTK prediction ---

RIGHT_PREDICTION = [
    ("grow", 20),
    ("reset", 16),
    ("grow", 30),
    ("keep", 30),
    ("grow", 31),
    ("keep", 31),
    ("reset", 16),
]


def test_dynamic_ntk_check_passes_the_right_prediction(capsys):
    from reference_impl.workbook.checks.rope import check_dynamic_ntk_prediction

    check_dynamic_ntk_prediction(lambda: RIGHT_PREDICTION)
    assert "passed" in capsys.readouterr().out


def test_dynamic_ntk_check_names_the_equal_length_trap():
    from reference_impl.workbook.checks.rope import check_dynamic_ntk_prediction

    wrong = list(RIGHT_PREDICTION)
    wrong[5] = ("reset", 16)  # 16 tokens is not below the original 16
    with pytest.raises(
        CheckFailed, match=r"call 5 \(prefill 16 tokens.*neither above the cached 31 nor below"
    ):
        check_dynamic_ntk_prediction(lambda: wrong)


def test_dynamic_ntk_check_refuses_a_short_list_and_spots_a_stub():
    from reference_impl.workbook.checks.rope import check_dynamic_ntk_prediction

    with pytest.raises(CheckFailed, match="list of 7"):
        check_dynamic_ntk_prediction(lambda: RIGHT_PREDICTION[:3])

    def stub():
        raise NotImplementedError

    with pytest.raises(ExerciseNotFinished):
        check_dynamic_ntk_prediction(stub)


# --- YaRN ---


def good_yarn(base, dim, original, factor, beta_fast, beta_slow, rounded=True):
    def pair_index(turns):
        return dim * math.log(original / (turns * 2 * math.pi)) / (2 * math.log(base))

    low, high = pair_index(beta_fast), pair_index(beta_slow)
    if rounded:
        low, high = max(math.floor(low), 0), min(math.ceil(high), dim - 1)
    theta = 1.0 / base ** (torch.arange(0, dim, 2).float() / dim)
    ramp = torch.clamp((torch.arange(dim // 2).float() - low) / (high - low), 0, 1)
    return theta * (1 - ramp) + theta / factor * ramp


def reversed_yarn(base, dim, original, factor, beta_fast, beta_slow):
    theta = 1.0 / base ** (torch.arange(0, dim, 2).float() / dim)
    share = (theta - good_yarn(base, dim, original, factor, beta_fast, beta_slow)) / (theta - theta / factor)
    return theta * share + theta / factor * (1 - share)


def unrounded_yarn(base, dim, original, factor, beta_fast, beta_slow):
    return good_yarn(base, dim, original, factor, beta_fast, beta_slow, rounded=False)


def test_yarn_check_passes_a_correct_answer(capsys):
    from reference_impl.workbook.checks.rope import check_my_yarn_inv_freq

    check_my_yarn_inv_freq(good_yarn)
    assert "passed" in capsys.readouterr().out


def test_yarn_check_names_a_reversed_ramp():
    from reference_impl.workbook.checks.rope import check_my_yarn_inv_freq

    with pytest.raises(CheckFailed, match="wrong way"):
        check_my_yarn_inv_freq(reversed_yarn)


def test_yarn_check_catches_unrounded_bounds_with_the_pair():
    from reference_impl.workbook.checks.rope import check_my_yarn_inv_freq

    with pytest.raises(CheckFailed, match=r"pair \d+ gets share"):
        check_my_yarn_inv_freq(unrounded_yarn)


# --- a score from the distance alone ---


def relative_score(q, k, delta, inv_freq):
    angle = -delta * inv_freq  # the key is turned by (n - m)·θ = -delta·θ relative to the query
    k1, k2 = _half(k)
    rotated = torch.cat((k1 * angle.cos() - k2 * angle.sin(), k2 * angle.cos() + k1 * angle.sin()))
    return float(q @ rotated)


def relative_score_wrong_sign(q, k, delta, inv_freq):
    return relative_score(q, k, -delta, inv_freq)


def test_relative_score_check_passes_the_identity(capsys):
    from reference_impl.workbook.checks.rope import check_my_relative_score

    check_my_relative_score(relative_score)
    assert "passed" in capsys.readouterr().out


def test_relative_score_check_names_the_sign_and_the_unrotated_mistakes():
    from reference_impl.workbook.checks.rope import check_my_relative_score

    with pytest.raises(CheckFailed, match="distance −delta"):
        check_my_relative_score(relative_score_wrong_sign)
    with pytest.raises(CheckFailed, match="plain dot product"):
        check_my_relative_score(lambda q, k, delta, inv_freq: float(q @ k))
