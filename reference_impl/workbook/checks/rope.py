"""Self-checks for the exercises of lessons/04_rope_scaling_plots.ipynb.

- `check_dynamic_ntk_prediction(predicted)`: the dynamic NTK state machine's action and cached length for each
  call of `DYNAMIC_NTK_CALLS`, predicted by hand;
- `check_my_yarn_inv_freq(my_yarn_inv_freq)`: YaRN's frequencies from beta_fast / beta_slow;
- `check_my_relative_score(my_relative_score)`: a RoPE score computed from the distance alone.

Each prints one success line or raises `CheckFailed` saying what differs, and names the classic mistake when
it recognises one (the interleaved layout, multiplying by the factor, the wrong Llama 3 band).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from reference_impl.rope import ROPE_INIT_FUNCTIONS, RotaryEmbedding, apply_rotary_pos_emb
from reference_impl.workbook.checks._core import (
    CheckFailed,
    check_tensor,
    passed,
    student_call,
)

__all__ = [
    "DYNAMIC_NTK_CALLS",
    "DYNAMIC_NTK_CONFIG",
    "check_dynamic_ntk_prediction",
    "check_my_relative_score",
    "check_my_yarn_inv_freq",
]


#: The config of the dynamic NTK prediction exercise: trained on 16 positions, factor 2, 16-dim heads.
DYNAMIC_NTK_CONFIG: dict = {
    "head_dim": 16,
    "max_position_embeddings": 16,
    "rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10_000.0},
}

#: The calls of that exercise: (what the model does, the position ids of the call).
DYNAMIC_NTK_CALLS: list[tuple[str, list[int]]] = [
    ("prefill 20 tokens", list(range(20))),
    ("prefill 12 tokens", list(range(12))),
    ("prefill 30 tokens", list(range(30))),
    ("prefill 25 tokens", list(range(25))),
    ("decode at position 30", [30]),
    ("prefill 16 tokens", list(range(16))),
    ("prefill 15 tokens", list(range(15))),
]


def check_dynamic_ntk_prediction(my_prediction: Callable[[], object]) -> None:
    """`my_prediction()` returns one `(action, cached length after the call)` per call of `DYNAMIC_NTK_CALLS`.

    The action is "grow", "keep" or "reset", as `RotaryEmbedding.rope_state.last_update` reports it. The check
    runs the calls on a fresh dynamic NTK `RotaryEmbedding(DYNAMIC_NTK_CONFIG)` and names the first call that
    differs, with the rule that decides it.
    """
    exercise = "dynamic NTK prediction"
    predicted = student_call(exercise, my_prediction)
    if not isinstance(predicted, (list, tuple)) or len(predicted) != len(DYNAMIC_NTK_CALLS):
        raise CheckFailed(
            f"predicted must be a list of {len(DYNAMIC_NTK_CALLS)} (action, cached length) pairs, one per "
            f"call; got {predicted!r}"
        )
    rotary = RotaryEmbedding(DYNAMIC_NTK_CONFIG)
    x = torch.zeros(1)
    for k, ((name, positions), guess) in enumerate(zip(DYNAMIC_NTK_CALLS, predicted, strict=True)):
        cached_before = rotary.rope_state.max_seq_len_cached
        rotary(x, torch.tensor([positions]))
        state = rotary.rope_state
        actual = (state.last_update, state.max_seq_len_cached)
        if not (isinstance(guess, (list, tuple)) and len(guess) == 2):
            raise CheckFailed(f"call {k} ({name}): expected an (action, cached length) pair, got {guess!r}")
        if (str(guess[0]), guess[1]) == actual:
            continue
        seq_len = max(positions) + 1
        original = state.original_max_seq_len
        why = {
            "grow": f"seq_len {seq_len} > cached {cached_before}: grow, and the cache becomes {seq_len}",
            "reset": f"seq_len {seq_len} < original {original} < cached {cached_before}: reset to {original}",
            "keep": (
                f"seq_len {seq_len} is neither above the cached {cached_before} nor below the original "
                f"{original} (while the cache is larger): keep, the cache stays {cached_before}"
            ),
        }[actual[0]]
        raise CheckFailed(
            f"call {k} ({name}, seq_len = max(position_ids) + 1 = {seq_len}): you predicted {tuple(guess)}, "
            f"the module did {actual}: {why}"
        )
    passed(exercise)


def check_my_yarn_inv_freq(fn: Callable[[float, int, int, float, float, float], torch.Tensor]) -> None:
    """`fn(base, dim, original_max_position_embeddings, factor, beta_fast, beta_slow)` -> YaRN's θ' (dim //
    2,).

    Compared with `ROPE_INIT_FUNCTIONS["yarn"]` (itself bitwise equal to transformers') at rtol 1e-6, on
    configs whose ramp ends inside the pairs. A wrong answer is read back as a ramp (the share of θ_i / s in
    each pair) and the first pair whose share differs is named.
    """
    exercise = "my_yarn_inv_freq"
    for base, dim, S0, s, beta_fast, beta_slow in [
        (10_000.0, 128, 4096, 4.0, 32.0, 1.0),
        (500_000.0, 128, 8192, 8.0, 32.0, 1.0),
        (10_000.0, 64, 2048, 16.0, 16.0, 2.0),
    ]:
        config = {
            "head_dim": dim,
            "max_position_embeddings": int(s * S0),
            "rope_parameters": {
                "rope_type": "yarn",
                "factor": s,
                "rope_theta": base,
                "beta_fast": beta_fast,
                "beta_slow": beta_slow,
                "original_max_position_embeddings": S0,
            },
        }
        expected, _ = ROPE_INIT_FUNCTIONS["yarn"](config)
        default, _ = ROPE_INIT_FUNCTIONS["default"](config)
        got = student_call(exercise, fn, base, dim, S0, s, beta_fast, beta_slow)
        where = (
            f"{exercise}(base={base:g}, dim={dim}, original_max_position_embeddings={S0}, factor={s:g}, "
            f"beta_fast={beta_fast:g}, beta_slow={beta_slow:g})"
        )
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape or got.dtype != expected.dtype:
            check_tensor(where, got, expected)
        if torch.allclose(got, expected, rtol=1e-6, atol=0.0):
            continue
        # Read each answer as a ramp: 0 keeps θ_i, 1 divides it by s.
        share_got = ((default - got) / (default - default / s)).double()
        share_expected = ((default - expected) / (default - default / s)).double()
        differs = ~torch.isclose(got, expected, rtol=1e-6, atol=0.0)
        i = int(differs.nonzero()[0])
        hint = ""
        if torch.allclose(share_got, 1 - share_expected, atol=1e-4):
            hint = (
                " Your ramp runs the wrong way: the fast pairs (small i) keep θ_i, the slow ones get θ_i / s."
            )
        elif float(share_got[0]) > 0.5:
            hint = (
                " The fastest pair turns far more than beta_fast times within the trained length: "
                "it must be kept."
            )
        raise CheckFailed(
            f"{where}: pair {i} gets share {float(share_got[i]):.4f} of θ_i/s, expected "
            f"{float(share_expected[i]):.4f} (θ' = {float(got[i]):.6g}, expected "
            f"{float(expected[i]):.6g}).{hint}"
        )
    passed(exercise)


def _absolute_score(q: torch.Tensor, k: torch.Tensor, m: int, n: int, inv_freq: torch.Tensor) -> float:
    """<RoPE(q, m), RoPE(k, n)> the way a model computes it: both rotated at their absolute positions."""
    angles = torch.tensor([m, n], dtype=torch.float64)[:, None] * inv_freq.double()[None, :]  # (2, d/2)
    emb = torch.cat((angles, angles), dim=-1)  # (2, d)
    cos, sin = emb.cos()[None], emb.sin()[None]  # (1, 2, d)
    x = torch.stack((q, k)).double()[None, None]  # (1, 1, 2, d)
    rotated, _ = apply_rotary_pos_emb(x, x, cos, sin)
    return float((rotated[0, 0, 0] * rotated[0, 0, 1]).sum())


def check_my_relative_score(fn: Callable[[torch.Tensor, torch.Tensor, int, torch.Tensor], float]) -> None:
    """`fn(q, k, delta, inv_freq)` -> the score of q at position m with k at n = m − delta, from delta alone.

    q, k: (d,) float64; inv_freq: (d/2,) float64. Compared at rtol 1e-9 with both vectors rotated at absolute
    positions (m = 1000 and n = m − delta) through `apply_rotary_pos_emb`, for several distances, negative
    ones included.
    """
    exercise = "my_relative_score"
    g = torch.Generator().manual_seed(3)
    d = 8
    inv_freq = 10_000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    q, k = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    for delta in (0, 1, 2, 7, 100, -3):
        m = 1000
        expected = _absolute_score(q, k, m, m - delta, inv_freq)
        got = student_call(exercise, fn, q.clone(), k.clone(), delta, inv_freq.clone())
        try:
            got = float(got)
        except (TypeError, ValueError):
            raise CheckFailed(
                f"{exercise}: expected a number (the score), got {type(got).__name__}"
            ) from None
        if math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12):
            continue
        hint = ""
        if math.isclose(got, _absolute_score(q, k, m, m + delta, inv_freq), rel_tol=1e-9, abs_tol=1e-12):
            hint = (
                " That is the score at distance −delta: the key sits delta positions *before* the query, so "
                "it is turned by −delta·θ relative to it (R_{n−m} with n − m = −delta)."
            )
        elif math.isclose(got, float(q @ k), rel_tol=1e-9):
            hint = " That is the plain dot product: nothing was rotated."
        raise CheckFailed(f"{exercise}(delta={delta}): got {got:.6g}, expected {expected:.6g}.{hint}")
    passed(exercise)
