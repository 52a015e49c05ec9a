"""The RoPE lesson's self-checks pass the reference, fail typical wrong answers in plain words, and spot
stubs."""

from __future__ import annotations

import math

import pytest
import torch

from reference_impl.workbook.checks._core import CheckFailed, ExerciseNotFinished


def _half(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]


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
