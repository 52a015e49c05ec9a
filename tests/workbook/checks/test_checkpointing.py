"""The lesson's self-checks pass the reference and fail, in plain words, on the typical wrong answers."""

from __future__ import annotations

import math

import pytest

from reference_impl.workbook.checks._core import CheckFailed, ExerciseNotFinished
from reference_impl.workbook.checks.checkpointing import (
    check_checkpointed_loss,
    check_fastest_under_budget,
    check_pick_every_n_layers,
    kept_units_every_n,
)


def right_loss(layers, hidden, scale, cache):
    layers.train()
    for layer in layers:
        hidden = layer(hidden, scale, use_cache=False)
    return hidden.square().mean()


def keyword_loss(layers, hidden, scale, cache):
    layers.train()
    for layer in layers:
        hidden = layer(hidden_states=hidden, scale=scale)
    return hidden.square().mean()


def eval_mode_loss(layers, hidden, scale, cache):
    for layer in layers:
        hidden = layer(hidden, scale)
    return hidden.square().mean()


def cache_loss(layers, hidden, scale, cache):
    layers.train()
    for layer in layers:
        hidden = layer(hidden, scale, past_key_values=cache, use_cache=True)
    return hidden.square().mean()


def sum_loss(layers, hidden, scale, cache):
    layers.train()
    for layer in layers:
        hidden = layer(hidden, scale)
    return hidden.square().sum()


def detached_scale_loss(layers, hidden, scale, cache):
    layers.train()
    for layer in layers:
        hidden = layer(hidden, scale.detach())
    return hidden.square().mean()


def unfinished(*args):
    raise NotImplementedError


def test_checkpointed_loss_passes_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    check_checkpointed_loss(right_loss)
    assert capsys.readouterr().out == "✅ checkpointed loss: all checks passed\n"


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (keyword_loss, r"loss does not require grad.*passed positionally"),
        (eval_mode_loss, r"checkpoint calls per layer: \[0, 0, 0\].*training mode"),
        (cache_loss, r"switch the cache off.*use_cache=False"),
        (sum_loss, r"loss: the value differs|loss: 1 of 1 values differ"),
        (detached_scale_loss, r"gradient of scale is missing"),
    ],
    ids=["keyword-under-reentrant", "eval-mode", "cache-left-on", "sum-not-mean", "detached-input"],
)
def test_checkpointed_loss_fails_wrong_answers_in_plain_words(wrong, message: str) -> None:
    with pytest.raises(CheckFailed, match=message):
        check_checkpointed_loss(wrong)


def test_unfinished_exercises_say_so() -> None:
    with pytest.raises(ExerciseNotFinished, match="checkpointed loss"):
        check_checkpointed_loss(unfinished)
    with pytest.raises(ExerciseNotFinished, match="pick every_n_layers"):
        check_pick_every_n_layers(unfinished)


def right_pick(num_layers: int, a: int, budget: int) -> int | None:
    if a * num_layers <= budget:
        return None
    for k in range(num_layers, 0, -1):
        if kept_units_every_n(num_layers, k, a) <= budget:
            return k
    return 0


def always_one(num_layers: int, a: int, budget: int) -> int | None:
    return None if a * num_layers <= budget else 1


def floor_pick(num_layers: int, a: int, budget: int) -> int | None:
    if a * num_layers <= budget:
        return None
    for k in range(num_layers, 0, -1):
        chosen = num_layers // k  # wrong: layers 0, k, 2k, ... are ceil(L / k)
        if chosen + (num_layers - chosen) * a <= budget:
            return k
    return 0


def never_none(num_layers: int, a: int, budget: int) -> int | None:
    for k in range(num_layers, 0, -1):
        if kept_units_every_n(num_layers, k, a) <= budget:
            return k
    return 0


def test_pick_passes_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    check_pick_every_n_layers(right_pick)
    assert capsys.readouterr().out == "✅ pick every_n_layers: all checks passed\n"


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (
            always_one,
            r"budget=47 units: got every_n_layers=1 \(keeps 16 units, recomputes 16 of 16 layers\), expected "
            r"16",
        ),
        (floor_pick, r"L=10, alpha=3, budget=22 units: got every_n_layers=2 .*expected 3"),
        (never_none, r"budget=48 units: got every_n_layers=16 .*expected None"),
    ],
    ids=["always-every-layer", "floor-not-ceil", "checkpoints-when-not-needed"],
)
def test_pick_fails_wrong_answers_naming_the_case(wrong, message: str) -> None:
    with pytest.raises(CheckFailed, match=message):
        check_pick_every_n_layers(wrong)


def test_kept_units_formula() -> None:
    assert kept_units_every_n(16, None, 3) == 48
    assert kept_units_every_n(16, 1, 3) == 16
    assert kept_units_every_n(10, 3, 3) == math.ceil(10 / 3) + 6 * 3


# ------------------------------------------------------------------------------------- the recorded front


def fastest(results, budget):
    fitting = [(r["time_ratio"], key) for key, r in results.items() if r["mem_ratio"] <= budget]
    return min(fitting)[1] if fitting else None


def test_fastest_under_budget_passes_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    check_fastest_under_budget(fastest)
    assert "fastest under budget: all checks passed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        # The smallest peak, not the fastest step that fits.
        (
            lambda res, b: min(res, key=lambda k: res[k]["mem_ratio"]),
            r"made-up front, budget 1.0: got 'segments'",
        ),
        # A strict < where the budget allows equality.
        (
            lambda res, b: fastest(res, b - 1e-9),
            r"made-up front, budget 1.0: got 'every 2nd' .* expected 'none'",
        ),
        (lambda res, b: "every layer, reentrant", r"is not a key of results"),
    ],
)
def test_fastest_under_budget_names_the_slip(wrong, message: str) -> None:
    with pytest.raises(CheckFailed, match=message):
        check_fastest_under_budget(wrong)
